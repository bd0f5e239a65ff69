"""Threshold sweep and selection, computed from stored outputs (no retraining, no re-running).

A cascade at threshold ``t`` answers with the SideNet on rows with confidence ≥ t and with the
MainNet elsewhere, so its accuracy for every ``t`` follows from per-row correctness and confidences.

Selection is on validation and deliberately conservative: with ~1,300–1,900 validation texts a
0.5 pt target is only ~6–10 samples, and picking the largest exit rate whose *observed* loss meets the
target overfits the noise (FINDINGS.md: thresholds chosen that way lost ~1 pt on test). We require
``loss + margin · SE(loss) ≤ target`` where SE is the standard error of the paired per-row
difference between MainNet and cascade correctness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEVER_EXIT = 1.000001  # any threshold above 1 means no row exits (confidences lie in [0, 1])


@dataclass(frozen=True)
class Sweep:
    """Cascade outcomes for every distinct threshold, most permissive (all exit) last."""

    thresholds: np.ndarray  # descending; thresholds[0] = NEVER_EXIT (k = 0 rows exit)
    exits: np.ndarray  # number of rows exiting at each threshold
    accuracy: np.ndarray  # cascade accuracy at each threshold
    loss: np.ndarray  # MainNet accuracy − cascade accuracy (fraction)
    loss_se: np.ndarray  # standard error of ``loss``


def sweep(confidence: np.ndarray, side_correct: np.ndarray, main_correct: np.ndarray) -> Sweep:
    conf = np.asarray(confidence, dtype=np.float64)
    side = np.asarray(side_correct, dtype=np.float64)
    main = np.asarray(main_correct, dtype=np.float64)
    n = len(conf)
    if n == 0 or not (len(side) == len(main) == n):
        raise ValueError("sweep needs equally long, non-empty arrays")
    order = np.argsort(-conf, kind="stable")
    c_sorted = conf[order]
    d = (main - side)[order]  # per-row loss if that row exits
    cum_d = np.concatenate([[0.0], np.cumsum(d)])
    cum_d2 = np.concatenate([[0.0], np.cumsum(d * d)])
    # Only cut where the confidence changes: a threshold exits every row tied at that confidence.
    ks = [0] + [k for k in range(1, n + 1) if k == n or c_sorted[k] < c_sorted[k - 1]]
    ks_arr = np.array(ks)
    thresholds = np.array([NEVER_EXIT] + [c_sorted[k - 1] for k in ks[1:]])
    loss = cum_d[ks_arr] / n
    mean_sq = cum_d2[ks_arr] / n
    var = np.maximum(mean_sq - loss**2, 0.0) * n / max(n - 1, 1)
    loss_se = np.sqrt(var / n)
    accuracy = main.mean() - loss
    return Sweep(thresholds, ks_arr, accuracy, loss, loss_se)


def select_threshold(sw: Sweep, target_loss_pt: float, margin_se: float = 1.0) -> tuple[float, int]:
    """Most permissive threshold whose bounded loss meets the target; (threshold, index in sweep)."""
    ok = sw.loss + margin_se * sw.loss_se <= target_loss_pt / 100.0 + 1e-12
    ok[0] = True  # never exiting always meets any non-negative target
    idx = int(np.flatnonzero(ok)[-1])
    return float(sw.thresholds[idx]), idx


def outcome_at(
    threshold: float,
    confidence: np.ndarray,
    side_correct: np.ndarray,
    main_correct: np.ndarray,
    head_flops: np.ndarray,
    rest_flops: np.ndarray,
) -> dict[str, float]:
    """Accuracy, exit rate and FLOPs/sample of the cascade at one threshold, from per-row data."""
    exited = np.asarray(confidence) >= threshold
    correct = np.where(exited, side_correct, main_correct)
    flops = np.asarray(head_flops) + np.where(exited, 0.0, rest_flops)
    return {
        "threshold": float(threshold),
        "accuracy": float(np.mean(correct)),
        "exit_rate": float(np.mean(exited)),
        "flops_per_sample": float(np.mean(flops)),
    }
