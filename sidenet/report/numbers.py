"""Numbers derived from rows: latency per sample, spread, noise flags, Δ accuracy, (paired) speedups, FLOP speedups.

Pure (no I/O) so every number in a report can be unit-tested against hand-computed values. Missing optional data
becomes ``None`` (rendered "—") rather than failing the report.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sidenet.report.variants import Variant

NOISY_REL_IQR = 0.10  # IQR/median above this flags a latency as noisy (kept, never dropped)


def as_float(x: Any) -> float | None:
    """A finite float, or None for missing / null / non-numeric / NaN values."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def samples_per_round(row: dict[str, Any]) -> int:
    info = row["extra_info"]
    n = info.get("timing_samples")
    return int(n) if isinstance(n, int) and n > 0 else int(info["batch_size"])


def latency_per_sample(row: dict[str, Any]) -> float:
    """Median round time divided by the inputs a round processes (seconds per sample)."""
    return float(row["stats"]["median"]) / samples_per_round(row)


def rel_iqr(row: dict[str, Any]) -> float | None:
    """The spread of a row's round times: IQR / median. For timing protocol 4 (``pairing`` = ``aba``) each round is
    first divided by the mean of its slice's two rounds: slices differ in what they cost (a cascade's exit mix, text
    lengths), and that is workload, not timing noise — the paired ratios are taken within a slice for that reason."""
    stats = row["stats"]
    within = _within_slice_rel_iqr(row)
    if within is not None:
        return within
    iqr, median = as_float(stats.get("iqr")), as_float(stats.get("median"))
    if iqr is None or median is None or median <= 0:
        return None
    return iqr / median


def _within_slice_rel_iqr(row: dict[str, Any]) -> float | None:
    info = row.get("extra_info") or {}
    data = row["stats"].get("data")
    if info.get("pairing") != "aba" or not isinstance(data, list) or len(data) < 4 or len(data) % 2:
        return None
    times = [as_float(t) for t in data]
    if any(t is None or t <= 0 for t in times):
        return None
    pairs = [(times[i], times[i + 1]) for i in range(0, len(times), 2)]  # rounds 2k and 2k+1 ran slice k
    ratios = sorted(t / ((a + b) / 2) for a, b in pairs for t in (a, b))  # type: ignore[operator]
    q = statistics.quantiles(ratios, n=4)
    return (q[2] - q[0]) / statistics.median(ratios)


def is_noisy(row: dict[str, Any]) -> bool:
    """IQR/median above the bar, or a timing check flagged the row (``timing_flags``: sidenet.bench.timing_checks)."""
    if row.get("timing_flags"):
        return True
    r = rel_iqr(row)
    return r is not None and r > NOISY_REL_IQR


def delta_acc_pt(variant: Variant, base: Variant | None) -> float | None:
    """Accuracy change in points vs the same chain's MainNet (else the row's own copy of its accuracy)."""
    acc = as_float(variant.get("test_accuracy"))
    ref = as_float(base.get("test_accuracy")) if base is not None else as_float(variant.get("mainnet_test_accuracy"))
    if acc is None or ref is None:
        return None
    return 100.0 * (acc - ref)


@dataclass(frozen=True)
class Speedup:
    value: float
    q1: float | None = None
    q3: float | None = None
    paired: bool = False


def speedup(variant: Variant, base: Variant | None, bs: int) -> Speedup | None:
    """MainNet latency / this latency at ``bs``: paired per-round ratios when recorded, else medians."""
    row = variant.rows.get(bs)
    if row is None:
        return None
    paired = _paired_quartiles(row["extra_info"].get("paired_speedup"))
    if paired is not None:
        return paired
    base_row = base.rows.get(bs) if base is not None else None
    if base_row is None:
        return None
    mine = latency_per_sample(row)
    return Speedup(latency_per_sample(base_row) / mine) if mine > 0 else None


def aa_noise_floor(variant: Variant | None, bs: int) -> Speedup | None:
    """The fp32 MainNet paired with itself at ``bs`` (``aa_paired_ratios``): median (q1–q3) of ratios that
    should be 1. Their spread is how far any paired speedup beside it can move by noise alone."""
    row = variant.rows.get(bs) if variant is not None else None
    return _paired_quartiles((row or {}).get("extra_info", {}).get("aa_paired_ratios"))


def _paired_quartiles(ratios: Any) -> Speedup | None:
    """Median (q1–q3) of recorded per-round ratios; None when none were recorded."""
    values = [float(x) for x in (ratios or []) if as_float(x) is not None]
    if not values:
        return None
    q1, med, q3 = (float(q) for q in np.percentile(np.asarray(values, dtype=float), [25, 50, 75]))
    return Speedup(med, q1, q3, paired=True)


def flop_speedup(variant: Variant, base: Variant | None) -> float | None:
    """MainNet FLOPs/sample ÷ this row's: the speedup FLOPs predict (compare with the measured one)."""
    if base is None:
        return None
    mine, ref = as_float(variant.get("flops_per_sample")), as_float(base.get("flops_per_sample"))
    if mine is None or ref is None or mine <= 0:
        return None
    return ref / mine


def pick_sweep_indices(thresholds: Sequence[float], chosen: float | None, n: int = 5) -> list[int]:
    """About ``n`` indices spread evenly over the sweep, minus the chosen threshold (shown separately)."""
    m = len(thresholds)
    if m == 0:
        return []
    spread = {round(i * (m - 1) / (n - 1)) for i in range(n)} if m > 1 else {0}
    if chosen is not None:
        spread = {i for i in spread if not math.isclose(thresholds[i], chosen, abs_tol=1e-9)}
    return sorted(spread)
