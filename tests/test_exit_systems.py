"""The exit-system axis: multi-exit cascades exit for real, traces predict what executes, the oracle is a floor,
the generic path keeps the SideNet's numbers, exit systems parse like chains, and a task can stage its own model."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from sidenet.bench.pipeline import load_or_train_mainnet, load_task_data, prepare, prepare_system
from sidenet.engine.cascade import Cascade
from sidenet.engine.policies import make_policy
from sidenet.engine.sidenet import SideNet
from sidenet.engine.trace import (
    ExitTrace,
    collect_trace,
    oracle_agree,
    oracle_first_correct,
    oracle_flops_at,
    outcome,
)
from sidenet.exits import EXIT_SYSTEMS, SideNetMulti, canonical_exit, parse_exit_system
from sidenet.tasks import TASKS
from sidenet.tasks.image import ImageTask
from sidenet_core.errors import UserError
from sidenet_core.staged import CallableStaged, ResNetStaged, stage_model

SOFTMAX = make_policy("softmax")


def random_heads(staged: ResNetStaged, example: torch.Tensor, num_classes: int, scale: float = 4.0) -> list[nn.Module]:
    torch.manual_seed(7)
    heads = []
    for i in range(len(staged.taps)):
        side = SideNet(staged.feature_dim(example, i), num_classes, hidden=16).eval()
        with torch.no_grad():
            side.net[-1].weight.mul_(scale)
        heads.append(side)
    return heads


class SegmentRecorder:
    """Wraps ``staged.segment``: which segment ran on how many rows, and on which states."""

    def __init__(self, staged: ResNetStaged) -> None:
        self.real = staged.segment
        self.calls: list[tuple[int, Any]] = []

    def __call__(self, i: int, x: Any) -> Any:
        self.calls.append((i, x))
        return self.real(i, x)

    def rows(self, i: int) -> int:
        return sum(x.shape[0] for j, x in self.calls if j == i)


@pytest.fixture
def multi_case(tiny_resnet: nn.Module) -> tuple[ResNetStaged, list[nn.Module], torch.Tensor, np.ndarray]:
    staged = stage_model(tiny_resnet, ("layer1", "layer2", "layer3"))
    x = torch.randn(16, 1, 16, 16)
    heads = random_heads(staged, x[:2], 4)
    batches = [(x, torch.arange(16))]
    trace = collect_trace(batches, 16, torch.zeros(16, dtype=torch.long), staged, heads)
    return staged, heads, x, trace.scores(SOFTMAX)


def between(scores: np.ndarray, q: float) -> float:
    """A threshold near quantile ``q`` of ``scores`` but midway between two of them, so that rounding differences
    of another batch size (other kernels) cannot move a row across it."""
    values = np.sort(scores)
    gaps = np.diff(values)
    k = int(np.argmax(np.where(np.arange(len(gaps)) >= int(q * (len(values) - 1)), gaps, -1.0)))
    assert gaps[k] > 1e-4, "scores too close to cut robustly"
    return float((values[k] + values[k + 1]) / 2)


def test_multi_exit_rows_leave_at_their_first_confident_exit_and_never_run_later_segments(
    multi_case, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged, heads, x, scores = multi_case
    thresholds = [between(scores[:, e], 0.7) for e in range(3)]
    expected = np.array([next((e for e in range(3) if scores[r, e] >= thresholds[e]), 3) for r in range(16)])
    assert len(set(expected.tolist())) >= 3, "the case must spread rows over the exits"
    rec = SegmentRecorder(staged)
    monkeypatch.setattr(staged, "segment", rec)
    out = Cascade(staged, heads, SOFTMAX, thresholds).run(x)
    assert out.exit_index.tolist() == expected.tolist()
    assert torch.equal(out.exited, torch.from_numpy(expected < 3))
    # segment j (j ≥ 1) runs on exactly the rows that did not leave at exits 0 … j−1
    for j in range(1, 4):
        assert rec.rows(j) == int((expected >= j).sum()), f"segment {j}"
    # and those rows are the survivors themselves: the state segment 3 saw is the survivors' state
    with torch.no_grad():
        full = x
        for j in range(3):
            full = rec.real(j, full)
    last_input = next(s for j, s in rec.calls if j == 3)
    assert torch.equal(last_input, full[torch.from_numpy(expected == 3)])


def _assignment(scores: np.ndarray, gap: float = 1e-3) -> tuple[list[int], list[float]]:
    """Four rows and per-exit thresholds under which row k leaves at exit k (k = 0, 1, 2) and the 4th runs on.

    Each threshold sits midway between the leaver's score and the highest score of the rows that must stay, at
    least ``gap`` apart: a row's scores move by rounding with the size of the batch it runs in (other kernels),
    and a threshold on a score itself would make the test depend on the CPU's kernels, not on the cascade."""
    n = scores.shape[0]
    for rows in itertools.permutations(range(n), 4):
        t = []
        for e in range(3):
            leaver, stayers = scores[rows[e], e], [scores[rows[k], e] for k in range(e + 1, 4)]
            if leaver - max(stayers) < gap:
                break
            t.append(float((leaver + max(stayers)) / 2))
        if len(t) == 3:
            return list(rows), t
    raise AssertionError("no row/exit assignment found")


def test_a_batch_whose_rows_leave_at_every_exit_equals_each_row_alone(multi_case) -> None:
    staged, heads, x, scores = multi_case
    rows, thresholds = _assignment(scores)
    cascade = Cascade(staged, heads, SOFTMAX, thresholds)
    batch = x[rows]
    out = cascade.run(batch)
    assert out.exit_index.tolist() == [0, 1, 2, 3]
    for k in range(4):
        alone = cascade.run(batch[k : k + 1])
        assert alone.exit_index.tolist() == [k]
        torch.testing.assert_close(out.logits[k : k + 1], alone.logits, rtol=1e-5, atol=1e-5)


def test_the_trace_predicts_what_the_cascade_executes(multi_case) -> None:
    staged, heads, x, scores = multi_case
    labels = torch.arange(16) % 4
    trace = collect_trace([(x[:8], torch.arange(8)), (x[8:], torch.arange(8, 16))], 16, labels, staged, heads)
    thresholds = [between(scores[:, e], 0.6) for e in range(3)]
    predicted = outcome(trace, trace.scores(SOFTMAX), thresholds)
    out = Cascade(staged, heads, SOFTMAX, thresholds).run(x)
    assert out.exit_index.numpy().tolist() == predicted.exit_index.tolist()
    assert (out.logits.argmax(-1) == labels).float().mean().item() == pytest.approx(predicted.accuracy)
    # leaving later never costs less
    assert np.all(np.diff(trace.cost, axis=1) > 0)


def toy_trace() -> ExitTrace:
    """3 rows, 2 exits + the MainNet; class 0 is right for all. Costs 1, 3, 10 at exits 0, 1 and the end.
    row 0: right at exit 0; row 1: wrong at exit 0, right at exit 1; row 2: wrong everywhere."""
    one_hot = torch.eye(2) * 5
    exit_preds = [[0, 0], [1, 0], [1, 1]]
    final_preds = [0, 0, 1]
    exit_logits = torch.stack([torch.stack([one_hot[p] for p in row]) for row in exit_preds])
    final_logits = torch.stack([one_hot[p] for p in final_preds])
    cost = np.array([[1.0, 3.0, 10.0]] * 3)
    return ExitTrace(exit_logits, final_logits, torch.zeros(3, dtype=torch.long), cost, ("a", "b"))


def test_oracle_bounds_on_a_hand_computed_toy() -> None:
    trace = toy_trace()
    assert oracle_first_correct(trace) == {"accuracy": pytest.approx(2 / 3), "flops_per_sample": pytest.approx(5 / 3)}
    # agree: row 0 and row 2 agree with the MainNet at exit 0, row 1 at exit 1
    assert oracle_agree(trace) == {"accuracy": pytest.approx(2 / 3), "flops_per_sample": pytest.approx(5 / 3)}
    assert oracle_flops_at(trace, 0.0) == pytest.approx(1.0)
    assert oracle_flops_at(trace, 1 / 3) == pytest.approx(1.0)  # row 0 right at exit 0 costs nothing extra
    assert oracle_flops_at(trace, 2 / 3) == pytest.approx(5 / 3)
    assert oracle_flops_at(trace, 1.0) is None  # no exit gets row 2 right


def test_no_policy_beats_the_oracle_at_equal_accuracy() -> None:
    gen = torch.Generator().manual_seed(3)
    n, e, c = 300, 3, 4
    labels = torch.randint(0, c, (n,), generator=gen)
    exit_logits = torch.randn(n, e, c, generator=gen) * 2
    final_logits = torch.randn(n, c, generator=gen) * 2
    final_logits[torch.arange(n), labels] += 2.5  # the MainNet is mostly right, the exits less so
    for k in range(e):
        exit_logits[torch.arange(n), k, labels] += 0.8 * (k + 1)
    step = np.array([1.0, 2.0, 3.0, 6.0])
    cost = np.cumsum(step)[None, :] * (1 + torch.rand(n, 1, generator=gen).numpy())
    trace = ExitTrace(exit_logits, final_logits, labels, cost, ("a", "b", "c"))
    scores = trace.scores(SOFTMAX)
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        thresholds = rng.uniform(0.2, 1.0, size=e)
        out = outcome(trace, scores, thresholds)
        floor = oracle_flops_at(trace, out.accuracy)
        assert floor is not None and floor <= out.flops_per_sample + 1e-9
        checked += 1
    assert checked == 300
    first = oracle_first_correct(trace)
    assert oracle_flops_at(trace, first["accuracy"]) == pytest.approx(first["flops_per_sample"])
    agree = oracle_agree(trace)
    assert agree["accuracy"] == pytest.approx(float((final_logits.argmax(-1) == labels).float().mean()))


@pytest.mark.parametrize("task_name", ["tiny-resnet", "tiny-bert"])
def test_the_generic_path_keeps_the_sidenets_numbers(task_name: str) -> None:
    """``prepare`` (the one-exit view library code reads) is the ``sidenet`` system's measurement on the one path:
    same threshold, accuracy, exit rate, FLOPs and oracle; the multi-exit system and another policy are other cells
    on the same heads. (That these are the numbers the SideNet-only path gave: tests/test_one_path.py.)"""
    task = TASKS.get(task_name)
    data = load_task_data(task)
    trained = load_or_train_mainnet(task, data.data, data.num_classes, progress=False)
    p = prepare(task_name, task_data=data, trained_mainnet=trained, progress=False)
    s = prepare_system(task, data.data, data.num_classes, parse_exit_system("sidenet"), p.compressed, p.baseline)
    assert s.thresholds == [p.threshold]
    for key in ("accuracy", "exit_rate", "flops_per_sample"):
        assert s.test_eval[key] == p.cascade_eval[key], key
    assert s.oracle == p.oracle
    multi = prepare_system(
        task, data.data, data.num_classes, parse_exit_system("sidenet-multi"), p.compressed, p.baseline
    )
    assert len(multi.test_eval["exit_rates"]) == len(multi.built.staged.taps) >= 2
    assert multi.test_eval["accuracy"] == pytest.approx(multi.test_eval["predicted_accuracy"])
    assert multi.test_eval["flops_per_sample"] == pytest.approx(multi.test_eval["predicted_flops_per_sample"])
    # a policy is selected per system: the same head under entropy scores is another operating point
    ent = prepare_system(
        task, data.data, data.num_classes, parse_exit_system("sidenet:policy=entropy"), p.compressed, p.baseline
    )
    assert ent.built.policy.name == "entropy" and ent.built.identity["heads"] == s.built.identity["heads"]
    assert ent.logs["evals_key"] != s.logs["evals_key"]
    # the single SideNet is the multi system's head at the same tap: one cache entry
    at = multi.built.staged.taps.index(p.split.tap)
    assert multi.built.identity["heads"][at] == s.built.identity["heads"][0]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("eenet:epochs=²", "eenet epochs must be an integer in [1, 100], got '²'"),
        ("eenet:exits=١", "eenet exits must be an integer in [1, 64], got '١'"),
        ("eenet:epochs=101", "eenet epochs must be an integer in [1, 100]"),
        ("eenet:exits=" + "9" * 5000, "eenet exits must be an integer in [1, 64]"),
        ("learned:fit_rows=²⁰⁰⁰", "learned fit_rows must be an integer in [100, "),
        ("cascade:fit_rows=٢٠٠", "cascade fit_rows must be an integer in [100, "),
        ("learned:fit_rows=" + "9" * 5000, "learned fit_rows must be an integer"),
        ("sidenet-multi:taps=layer²", "give distinct tap names (ASCII"),
        ("cascade:small=distl", "cascade small='distl': unknown compressor 'distl'; did you mean 'distil'?"),
    ],
)
def test_exit_system_counts_are_ascii_bounded_integers_and_chains_exist(spec: str, message: str) -> None:
    """Unicode digits pass ``str.isdigit`` but not ``int`` (a traceback, an INTERNALERROR through ``pytest bench/``),
    counts had no upper bound, and the cascade's small network chain was looked up only after training."""
    with pytest.raises(UserError) as info:
        parse_exit_system(spec)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_malformed_exit_specs_are_not_called_chains() -> None:
    with pytest.raises(UserError) as info:
        parse_exit_system("sidenet:")
    text = str(info.value)
    assert text.startswith("malformed exit system 'sidenet:' (--bench-exit)")
    assert "sidenet-multi:taps=layer1/layer2" in text and "chain" not in text and "prune" not in text


@pytest.mark.parametrize(
    ("task", "spec", "message"),
    [
        ("tiny-resnet", "sidenet-multi:taps=layer9", "sidenet-multi taps 'layer9' do not fit task 'tiny-resnet': "),
        ("tiny-resnet", "learned:taps=1/2", "learned taps '1/2' do not fit task 'tiny-resnet'"),
        ("tiny-bert", "sidenet-multi:taps=layer1", "do not fit task 'tiny-bert': BERT tap must be a layer index"),
        ("tiny-bert", "learned:taps=1/9", "do not fit task 'tiny-bert': BERT tap 9 is outside 1..3"),
    ],
)
def test_taps_are_checked_against_the_tasks_model_without_training(task: str, spec: str, message: str) -> None:
    """A tap the task's MainNet does not have fails when the settings are checked, not after the MainNet trained;
    the check builds the untrained architecture only and leaves the global RNG as it was."""
    before = torch.random.get_rng_state()
    with pytest.raises(UserError) as info:
        parse_exit_system(spec).check_task(TASKS.get(task))
    assert message in str(info.value) and "\n" not in str(info.value)
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.parametrize(
    ("task", "spec"),
    [
        ("tiny-resnet", "sidenet-multi:taps=layer1/layer3"),
        ("tiny-resnet", "learned:taps=layer2"),
        ("tiny-bert", "sidenet-multi:taps=1/3"),
        ("tiny-resnet", "sidenet-multi"),
        ("tiny-resnet", "cascade"),
        ("tiny-resnet", "cascade:small=prune"),
        ("tiny-bert", "eenet:epochs=100,exits=64"),
    ],
)
def test_valid_system_configs_pass_the_task_check(task: str, spec: str) -> None:
    parse_exit_system(spec).check_task(TASKS.get(task))


def test_exit_systems_parse_like_chain_steps() -> None:
    assert canonical_exit("sidenet:policy=softmax") == "sidenet"
    assert canonical_exit("sidenet-multi:taps=layer1/layer3") == "sidenet-multi:taps=layer1/layer3"
    cfg = parse_exit_system("sidenet-multi:policy=entropy,taps=1/2")
    assert isinstance(cfg, SideNetMulti) and cfg.to_dict() == {
        "system": "sidenet-multi",
        "taps": "1/2",
        "policy": "entropy",
    }
    assert not EXIT_SYSTEMS.get("oracle").timed and EXIT_SYSTEMS.get("sidenet-multi").timed
    for spec, message in [
        ("sidenet-mutli", "did you mean 'sidenet-multi'"),
        ("sidenet:tap=layer2", "has no parameter 'tap'"),
        ("sidenet:policy=nope", "exit policy"),
        ("sidenet-multi:taps=layer1//layer2", "distinct tap names"),
        ("sidenet multi", "whitespace"),
    ]:
        with pytest.raises(UserError, match=message):
            parse_exit_system(spec)


class Wrapped(nn.Module):
    """A MainNet no adapter knows: a torchvision ResNet hidden inside another module."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


class WrappedTask(ImageTask):
    def build_mainnet(self, num_classes: int) -> nn.Module:
        return Wrapped(super().build_mainnet(num_classes))


class StagedWrappedTask(WrappedTask):
    def staged_model(self, model: nn.Module, taps: Any) -> CallableStaged:
        m = model.inner
        head = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1)
        rest = nn.Sequential(m.layer2, m.layer3, m.layer4, m.avgpool, nn.Flatten(1), m.fc)
        return CallableStaged([head, rest], taps=tuple(taps))


def test_a_task_can_hand_the_pipeline_its_own_staged_model() -> None:
    base = TASKS.get("tiny-resnet")
    plain = WrappedTask(replace(base.config, name="tiny-wrapped", epochs=1))
    own = StagedWrappedTask(replace(base.config, name="tiny-wrapped-staged", epochs=1))
    for task in (plain, own):
        TASKS.add(task.name, task)
    try:
        with pytest.raises(UserError, match="staged_model"):
            prepare("tiny-wrapped", progress=False)
        p = prepare("tiny-wrapped-staged", progress=False)
        assert isinstance(p.split, CallableStaged) and p.split.taps == ("layer1",)
        assert 0.0 <= p.cascade_eval["exit_rate"] <= 1.0 and p.cascade_eval["flops_per_sample"] > 0
    finally:
        for task in (plain, own):
            TASKS.remove(task.name)
