"""The shared-threshold sweep is exact at every distinct score, however many there are.

Why this file: the sweep once fell back to a 4,000-point quantile grid past 4,000 distinct scores, so on
Fashion-MNIST's validation split (more rows than that) the single SideNet's threshold moved from the one its own
exact sweep chose (0.91245 → 0.91221, exit rate 0.6678 → 0.6681 on test) when it joined the one measuring path.
Both references below are written out independently of the implementation: a brute-force loop over every
candidate, and the single SideNet's cumulative-sum sweep as it was before the one path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sidenet.engine.trace import NEVER_EXIT, ExitTrace, exit_index_at, select_shared, shared_sweep


def _trace(rng: np.random.Generator, n: int, e: int, classes: int = 3) -> ExitTrace:
    labels = rng.integers(0, classes, n)
    exit_logits = rng.normal(size=(n, e, classes))
    exit_logits[:, :, 0] += 1.5 * (labels == 0)[:, None]  # exits often right, not always
    final = rng.normal(size=(n, classes))
    final[np.arange(n), labels] += 2.0
    step = rng.uniform(1.0, 2.0, size=(n, e + 1))
    return ExitTrace(
        exit_logits=torch.tensor(exit_logits, dtype=torch.float32),
        final_logits=torch.tensor(final, dtype=torch.float32),
        labels=torch.tensor(labels),
        cost=np.cumsum(step, axis=1),
        taps=tuple(f"t{i}" for i in range(e)),
    )


def _brute_force(trace: ExitTrace, scores: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """[candidates, 4] exit rate, accuracy, FLOPs, loss at NEVER_EXIT and every distinct score, one by one."""
    correct = trace.correct()
    main = (correct[:, -1] if reference is None else reference).astype(np.float64)
    rows = np.arange(trace.n_rows)
    out = []
    for t in np.concatenate([[NEVER_EXIT], np.unique(scores)[::-1]]):
        idx = exit_index_at(scores, [t] * trace.n_exits)
        right = correct[rows, idx].astype(np.float64)
        loss = (main - right).mean()
        out.append([(idx < trace.n_exits).mean(), main.mean() - loss, trace.cost[rows, idx].mean(), loss])
    return np.array(out)


@pytest.mark.parametrize("exits", [1, 2, 3])
@pytest.mark.parametrize("with_reference", [False, True])
def test_the_sweep_equals_a_brute_force_loop_over_every_candidate_with_ties(exits: int, with_reference: bool) -> None:
    rng = np.random.default_rng(exits + 10 * with_reference)
    trace = _trace(rng, 300, exits)
    scores = np.round(rng.uniform(0.3, 1.0, size=(300, exits)), 2)  # coarse: many ties, within and across exits
    reference = rng.random(300) < 0.8 if with_reference else None
    sw = shared_sweep(trace, scores, reference)
    expected = _brute_force(trace, scores, reference)
    got = np.stack([sw.exit_rate, sw.accuracy, sw.flops, sw.loss], 1)
    assert sw.thresholds[0] == NEVER_EXIT and len(sw.thresholds) == len(np.unique(scores)) + 1
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def _single_sidenet_sweep(conf: np.ndarray, side: np.ndarray, main: np.ndarray) -> tuple[np.ndarray, ...]:
    """The one-exit sweep as the SideNet-only path computed it: cut only where the sorted confidence changes."""
    n = len(conf)
    order = np.argsort(-conf, kind="stable")
    c_sorted, d = conf[order], (main - side)[order]
    cum_d, cum_d2 = np.concatenate([[0.0], np.cumsum(d)]), np.concatenate([[0.0], np.cumsum(d * d)])
    ks = np.array([0] + [k for k in range(1, n + 1) if k == n or c_sorted[k] < c_sorted[k - 1]])
    thresholds = np.array([NEVER_EXIT] + [c_sorted[k - 1] for k in ks[1:]])
    loss = cum_d[ks] / n
    se = np.sqrt(np.maximum(cum_d2[ks] / n - loss**2, 0.0) * n / (n - 1) / n)
    return thresholds, loss, se, main.mean() - loss


def test_one_exit_past_4000_distinct_scores_is_the_single_sidenets_sweep_exactly() -> None:
    rng = np.random.default_rng(7)
    n = 6000
    trace = _trace(rng, n, 1)
    scores = rng.uniform(0.2, 1.0, size=(n, 1)).astype(np.float32).astype(np.float64)  # float32 scores, as traced
    correct = trace.correct().astype(np.float64)
    thresholds, loss, se, accuracy = _single_sidenet_sweep(scores[:, 0], correct[:, 0], correct[:, 1])
    sw = shared_sweep(trace, scores)
    assert len(np.unique(scores)) > 4000
    np.testing.assert_array_equal(sw.thresholds, thresholds)
    np.testing.assert_array_equal(sw.loss, loss)
    np.testing.assert_array_equal(sw.accuracy, accuracy)
    np.testing.assert_allclose(sw.loss_se, se, rtol=0, atol=1e-15)
    for target in (0.1, 0.5, 2.0):
        threshold, _ = select_shared(sw, target, 1.0)
        assert threshold in set(scores[:, 0].tolist()) | {NEVER_EXIT}  # a real score, never an interpolated one


def test_a_cached_test_run_at_another_threshold_is_run_again_not_reported_or_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A selection rule that changes (as the exact sweep did) leaves cached test runs at the old threshold: the
    traces are reused, the cascade's test run is repeated at the new threshold and replaces the cached one."""
    from sidenet.bench import systems
    from sidenet.bench.pipeline import load_or_train_mainnet, load_task_data
    from sidenet.exits import parse_exit_system
    from sidenet.tasks import TASKS
    from sidenet.tasks.compressed import compress_mainnet

    task = TASKS.get("tiny-resnet")
    data = load_task_data(task)
    mainnet, meta = load_or_train_mainnet(task, data.data, data.num_classes, progress=False)
    comp = compress_mainnet(task, mainnet, meta["key"], data.data, "none", progress=False)

    def run() -> systems.PreparedSystem:
        sys_ = parse_exit_system("sidenet")
        return systems.prepare_system(task, data.data, data.num_classes, sys_, comp, mainnet, progress=False)

    first = run()
    real_select = systems.select_shared
    monkeypatch.setattr(systems, "select_shared", lambda sw, *a: (float(sw.thresholds[1]), 1))  # another rule
    moved = run()
    assert moved.thresholds != first.thresholds
    assert moved.test_eval["threshold"] == moved.thresholds[0]  # the test run belongs to the new threshold
    assert moved.test_eval["accuracy"] == pytest.approx(moved.test_eval["predicted_accuracy"])
    monkeypatch.setattr(systems, "select_shared", real_select)
    back = run()
    assert back.thresholds == first.thresholds and back.test_eval["accuracy"] == first.test_eval["accuracy"]
