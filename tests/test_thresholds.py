"""Threshold sweep/selection and calibration, checked against brute force and hand-computed numbers.

The sweep and selection are the one path's (:func:`sidenet.engine.trace.shared_sweep`, ``select_shared``,
``outcome``) on a one-exit trace: the SideNet's own sweep was that with one exit, and is gone. The helpers below
state the one-exit case in the SideNet's terms (confidence, SideNet right, MainNet right, FLOPs per part)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sidenet.engine.calibration import expected_calibration_error, reliability
from sidenet.engine.trace import NEVER_EXIT, ExitTrace, SharedSweep, outcome, select_shared, shared_sweep


def one_exit_trace(side: np.ndarray, main: np.ndarray, head: np.ndarray, rest: np.ndarray) -> ExitTrace:
    """A one-exit trace whose exit is right where ``side`` and the MainNet where ``main`` (label 0 everywhere)."""
    n = len(side)
    labels = torch.zeros(n, dtype=torch.long)

    def logits(right: np.ndarray) -> torch.Tensor:
        return torch.tensor([[1.0, 0.0] if r else [0.0, 1.0] for r in np.asarray(right, dtype=bool)]).reshape(n, 2)

    cost = np.stack([np.asarray(head, dtype=np.float64), np.asarray(head) + np.asarray(rest)], 1)
    return ExitTrace(logits(side)[:, None], logits(main), labels, cost, ("tap",))


class Sweep:
    """:class:`SharedSweep` in the one-exit terms: how many rows exit at each threshold."""

    def __init__(self, sw: SharedSweep, n: int) -> None:
        self.shared, self.thresholds, self.accuracy, self.loss, self.loss_se = (
            sw,
            sw.thresholds,
            sw.accuracy,
            sw.loss,
            sw.loss_se,
        )
        self.exits = np.rint(sw.exit_rate * n).astype(int)


def sweep(conf: np.ndarray, side: np.ndarray, main: np.ndarray) -> Sweep:
    if len(conf) == 0 or not len(conf) == len(side) == len(main):
        raise ValueError("sweep needs equally long, non-empty arrays")
    n = len(conf)
    trace = one_exit_trace(side, main, np.zeros(n), np.zeros(n))
    return Sweep(shared_sweep(trace, np.asarray(conf, dtype=np.float64)[:, None]), n)


def select_threshold(sw: Sweep, target_pt: float, margin_se: float = 1.0) -> tuple[float, int]:
    return select_shared(sw.shared, target_pt, margin_se)


def outcome_at(t: float, conf: np.ndarray, side: np.ndarray, main: np.ndarray, head: np.ndarray, rest: np.ndarray):
    out = outcome(one_exit_trace(side, main, head, rest), np.asarray(conf, dtype=np.float64)[:, None], [t])
    return {
        "threshold": float(t),
        "accuracy": out.accuracy,
        "exit_rate": float((out.exit_index < 1).mean()),
        "flops_per_sample": out.flops_per_sample,
    }


# A hand example: sorted by confidence the per-row loss if exited (main - side) is 0, 1, 1, -1.
CONF = np.array([0.9, 0.6, 0.3, 0.8])
SIDE = np.array([1, 0, 1, 0])
MAIN = np.array([1, 1, 0, 1])


def brute_force(conf: np.ndarray, side: np.ndarray, main: np.ndarray, t: float) -> tuple[int, float, float, float]:
    """(exits, accuracy, loss, SE of loss) of the cascade at threshold t, row by row."""
    n = len(conf)
    correct = []
    for c, s, m in zip(conf, side, main, strict=True):
        correct.append(float(s) if c >= t else float(m))
    correct_arr = np.array(correct)
    diff = main.astype(float) - correct_arr
    se = float(np.std(diff, ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return int(sum(c >= t for c in conf)), float(correct_arr.mean()), float(diff.mean()), se


def test_sweep_hand_example() -> None:
    sw = sweep(CONF, SIDE, MAIN)
    assert isinstance(sw, Sweep)
    np.testing.assert_array_equal(sw.thresholds, [NEVER_EXIT, 0.9, 0.8, 0.6, 0.3])
    np.testing.assert_array_equal(sw.exits, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(sw.accuracy, [0.75, 0.75, 0.5, 0.25, 0.5], atol=1e-12)
    np.testing.assert_allclose(sw.loss, [0.0, 0.0, 0.25, 0.5, 0.25], atol=1e-12)
    # at k = 2 the per-row differences are (0, 1, 0, 0): sample std 0.5, SE 0.25
    assert sw.loss_se[2] == pytest.approx(0.25)
    assert sw.loss_se[0] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sweep_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 60
    conf = np.round(rng.uniform(0.3, 1.0, n), 2)  # rounding creates ties
    side = rng.uniform(size=n) < conf
    main = rng.uniform(size=n) < 0.8
    sw = sweep(conf, side, main)
    distinct = np.unique(conf)
    assert len(sw.thresholds) == len(distinct) + 1
    assert np.all(np.diff(sw.thresholds) < 0)  # strictly descending
    assert sw.exits[-1] == n
    for t, k, acc, loss, se in zip(sw.thresholds, sw.exits, sw.accuracy, sw.loss, sw.loss_se, strict=True):
        bk, bacc, bloss, bse = brute_force(conf, side, main, t)
        assert k == bk
        assert acc == pytest.approx(bacc, abs=1e-12)
        assert loss == pytest.approx(bloss, abs=1e-12)
        assert se == pytest.approx(bse, abs=1e-12)


def test_ties_are_cut_together() -> None:
    conf = np.array([0.7, 0.9, 0.7, 0.7, 0.5])
    sw = sweep(conf, np.ones(5), np.ones(5))
    np.testing.assert_array_equal(sw.thresholds, [NEVER_EXIT, 0.9, 0.7, 0.5])
    np.testing.assert_array_equal(sw.exits, [0, 1, 4, 5])  # never 2 or 3: the three 0.7s go together


def test_sweep_rejects_bad_arrays() -> None:
    with pytest.raises(ValueError):
        sweep(np.array([]), np.array([]), np.array([]))
    with pytest.raises(ValueError):
        sweep(np.array([0.5, 0.6]), np.array([1]), np.array([1, 0]))


def test_never_exit() -> None:
    conf = np.array([1.0, 1.0, 0.99])  # confidences can reach exactly 1.0
    assert NEVER_EXIT > 1.0
    sw = sweep(conf, np.zeros(3), np.ones(3))
    assert sw.exits[0] == 0 and sw.accuracy[0] == 1.0
    out = outcome_at(NEVER_EXIT, conf, np.zeros(3), np.ones(3), np.full(3, 5.0), np.full(3, 7.0))
    assert out["exit_rate"] == 0.0
    assert out["accuracy"] == 1.0
    assert out["flops_per_sample"] == 12.0


def test_select_threshold_target_zero() -> None:
    sw = sweep(CONF, SIDE, MAIN)
    t, i = select_threshold(sw, 0.0, margin_se=0.0)
    # losses are 0, 0, .25, .5, .25: the most permissive cut with loss <= 0 is k = 1 (t = 0.9)
    assert (t, i) == (0.9, 1)


def test_select_threshold_is_most_permissive_brute_force() -> None:
    rng = np.random.default_rng(7)
    n = 300
    conf = rng.uniform(0.25, 1.0, n)
    side = rng.uniform(size=n) < conf
    main = rng.uniform(size=n) < 0.85
    sw = sweep(conf, side, main)
    for target_pt in (0.0, 0.5, 2.0, 10.0):
        t0, i0 = select_threshold(sw, target_pt, margin_se=0.0)
        ok = [i for i in range(len(sw.loss)) if sw.loss[i] <= target_pt / 100 + 1e-12]
        assert i0 == max(ok)
        assert t0 == sw.thresholds[i0]
        # the chosen cut really meets the target, evaluated row by row
        assert brute_force(conf, side, main, t0)[2] <= target_pt / 100 + 1e-12
        for margin in (1.0, 2.0):
            tm, im = select_threshold(sw, target_pt, margin_se=margin)
            assert tm >= t0 and im <= i0  # at least as conservative
            assert sw.loss[im] + margin * sw.loss_se[im] <= target_pt / 100 + 1e-12 or im == 0


def test_margin_is_strictly_more_conservative_here() -> None:
    # 40 rows: the SideNet is wrong on 1 of the 20 most confident rows (loss 2.5 pt, SE > 0).
    conf = np.linspace(1.0, 0.6, 40)
    side = np.ones(40)
    side[5] = 0
    side[20:] = 0
    main = np.ones(40)
    sw = sweep(conf, side, main)
    t_plain, i_plain = select_threshold(sw, 2.5, margin_se=0.0)
    t_margin, i_margin = select_threshold(sw, 2.5, margin_se=1.0)
    assert sw.exits[i_plain] == 20
    assert sw.exits[i_margin] == 5  # only the rows before the first mistake remain safe
    assert t_margin > t_plain


def test_select_never_exit_when_nothing_meets_target() -> None:
    sw = sweep(np.array([0.9, 0.8]), np.zeros(2), np.ones(2))
    t, i = select_threshold(sw, 0.0, margin_se=0.0)
    assert (t, i) == (NEVER_EXIT, 0)


def test_outcome_at_by_hand() -> None:
    head = np.array([10.0, 10.0, 10.0, 10.0])
    rest = np.array([30.0, 30.0, 30.0, 50.0])
    out = outcome_at(0.7, CONF, SIDE, MAIN, head, rest)
    # exited: rows 0 (0.9) and 3 (0.8); correct = side, main, main, side = 1, 1, 0, 0
    assert out == {"threshold": 0.7, "accuracy": 0.5, "exit_rate": 0.5, "flops_per_sample": (10 + 40 + 40 + 10) / 4}
    at_tie = outcome_at(0.6, CONF, SIDE, MAIN, head, rest)  # inclusive: 0.6 exits
    assert at_tie["exit_rate"] == 0.75
    assert at_tie["accuracy"] == 0.25
    assert at_tie["flops_per_sample"] == (10 + 10 + 40 + 10) / 4


def test_outcome_at_agrees_with_sweep() -> None:
    rng = np.random.default_rng(3)
    n = 50
    conf = rng.uniform(size=n)
    side, main = rng.uniform(size=n) < 0.6, rng.uniform(size=n) < 0.9
    sw = sweep(conf, side, main)
    for t, k, acc in zip(sw.thresholds, sw.exits, sw.accuracy, strict=True):
        out = outcome_at(t, conf, side, main, np.ones(n), np.full(n, 3.0))
        assert out["accuracy"] == pytest.approx(acc, abs=1e-12)
        assert out["exit_rate"] == k / n
        assert out["flops_per_sample"] == pytest.approx(1 + 3 * (n - k) / n)


# ---------------------------------------------------------------- calibration


def test_ece_perfectly_calibrated_is_near_zero() -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    conf = rng.uniform(size=n)
    correct = rng.uniform(size=n) < conf
    ece = expected_calibration_error(conf, correct)
    assert 0.0 <= ece < 0.01


def test_ece_overconfident() -> None:
    n = 10_000
    conf = np.full(n, 0.9)
    correct = np.arange(n) % 2 == 0  # accuracy exactly 0.5
    assert expected_calibration_error(conf, correct) == pytest.approx(0.4, abs=1e-9)
    rng = np.random.default_rng(1)
    noisy = rng.uniform(size=n) < 0.5
    assert expected_calibration_error(conf, noisy) == pytest.approx(0.4, abs=0.02)


def test_ece_by_hand() -> None:
    conf = np.array([0.2, 0.3, 0.8, 0.9])
    correct = np.array([0, 1, 1, 1])
    # bin [0, .5]: conf .25, acc .5; bin (.5, 1]: conf .85, acc 1; each holds half the rows
    assert expected_calibration_error(conf, correct, bins=2) == pytest.approx(0.5 * 0.25 + 0.5 * 0.15)


def test_ece_weights_bins_by_count() -> None:
    conf = np.array([0.2, 0.8, 0.9, 1.0])
    correct = np.ones(4)
    # bin [0, .5]: 1 row, gap .8; bin (.5, 1]: 3 rows, conf .9, gap .1 → .25·.8 + .75·.1
    assert expected_calibration_error(conf, correct, bins=2) == pytest.approx(0.275)


def test_reliability_counts_and_edges() -> None:
    rng = np.random.default_rng(2)
    conf = np.concatenate([rng.uniform(size=997), [0.0, 1.0, 0.5]])
    correct = rng.uniform(size=1000) < 0.7
    rel = reliability(conf, correct, bins=10)
    assert sum(rel["count"]) == 1000
    assert len(rel["count"]) == len(rel["confidence"]) == len(rel["accuracy"]) <= 10
    assert all(0.0 <= a <= 1.0 for a in rel["accuracy"])
    assert rel["confidence"] == sorted(rel["confidence"])
    # bins are (a, b]: 0.5 belongs to the lower half, 0.0 to the first bin and 1.0 to the last
    two = reliability(np.array([0.0, 0.5, 0.5000001, 1.0]), np.array([1, 1, 0, 0]), bins=2)
    assert two["count"] == [2, 2]
    assert two["accuracy"] == [1.0, 0.0]
    assert two["confidence"] == pytest.approx([0.25, 0.75000005])


def test_reliability_skips_empty_bins_and_empty_input() -> None:
    rel = reliability(np.array([0.95, 0.97]), np.array([1, 0]), bins=15)
    assert rel["count"] == [2]
    assert math.isnan(expected_calibration_error(np.array([]), np.array([])))
