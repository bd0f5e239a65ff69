"""Turn benchmark rows into report tables: grouping, derived numbers (Δ accuracy, speedup) and formatting.

Everything here is pure (no I/O) so the numbers in a report can be unit-tested against hand-computed
values. Missing optional data becomes ``None`` and renders as "—" rather than failing the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DASH = "—"
NOISY_REL_IQR = 0.10  # IQR/median above this flags a latency as noisy (kept, never dropped)
PAIRED_MARK = "†"
NOISY_MARK = "⚠"


# ---------------------------------------------------------------------------------------------------
# Grouping
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One (task, chain, exit, device) configuration; its benchmark rows keyed by batch size."""

    task: str
    chain: str
    exit: str
    device: str
    rows: dict[int, dict[str, Any]]

    @property
    def info(self) -> dict[str, Any]:
        """Batch-size-independent facts (accuracy, FLOPs, sweep ...) from the smallest batch size."""
        return self.rows[min(self.rows)]["extra_info"]

    @property
    def is_mainnet(self) -> bool:
        return self.exit == "none"

    def get(self, key: str) -> Any:
        return self.info.get(key)


def _variant_order(v: Variant) -> tuple[bool, str, bool, str, str]:
    # Uncompressed chain first, the MainNet row first within each chain: baselines read before variants.
    return (v.chain != "none", v.chain, v.exit != "none", v.exit, v.device)


def group_by_task(results: dict[str, Any]) -> dict[str, list[Variant]]:
    """Group rows by task (first-seen order), then by (chain, exit, device) with one row per batch size."""
    grouped: dict[str, dict[tuple[str, str, str], dict[int, dict[str, Any]]]] = {}
    for row in results.get("benchmarks", []):
        info = row["extra_info"]
        key = (str(info["chain"]), str(info["exit"]), str(info["device"]))
        grouped.setdefault(str(info["task"]), {}).setdefault(key, {})[int(info["batch_size"])] = row
    return {
        task: sorted(
            (Variant(task, c, e, d, dict(sorted(rows.items()))) for (c, e, d), rows in by_key.items()),
            key=_variant_order,
        )
        for task, by_key in grouped.items()
    }


def batch_sizes(variants: Sequence[Variant]) -> list[int]:
    return sorted({bs for v in variants for bs in v.rows})


def baseline_for(variant: Variant, variants: Sequence[Variant]) -> Variant | None:
    """The MainNet row (exit "none") of the same task, chain and device — what Δ and speedup compare to."""
    for v in variants:
        if v.is_mainnet and v.chain == variant.chain and v.device == variant.device:
            return v
    return None


# ---------------------------------------------------------------------------------------------------
# Derived numbers
# ---------------------------------------------------------------------------------------------------


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
    stats = row["stats"]
    iqr, median = as_float(stats.get("iqr")), as_float(stats.get("median"))
    if iqr is None or median is None or median <= 0:
        return None
    return iqr / median


def is_noisy(row: dict[str, Any]) -> bool:
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
    paired = [x for x in (row["extra_info"].get("paired_speedup") or []) if as_float(x) is not None]
    if paired:
        q1, med, q3 = (float(q) for q in np.percentile(np.asarray(paired, dtype=float), [25, 50, 75]))
        return Speedup(med, q1, q3, paired=True)
    base_row = base.rows.get(bs) if base is not None else None
    if base_row is None:
        return None
    mine = latency_per_sample(row)
    return Speedup(latency_per_sample(base_row) / mine) if mine > 0 else None


def flop_speedup(variant: Variant, base: Variant | None) -> float | None:
    """MainNet FLOPs/sample ÷ this row's: the speedup FLOPs predict (compare with the measured one)."""
    if base is None:
        return None
    mine, ref = as_float(variant.get("flops_per_sample")), as_float(base.get("flops_per_sample"))
    if mine is None or ref is None or mine <= 0:
        return None
    return ref / mine


def fmt_ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}×"


def pick_sweep_indices(thresholds: Sequence[float], chosen: float | None, n: int = 5) -> list[int]:
    """About ``n`` indices spread evenly over the sweep, minus the chosen threshold (shown separately)."""
    m = len(thresholds)
    if m == 0:
        return []
    spread = {round(i * (m - 1) / (n - 1)) for i in range(n)} if m > 1 else {0}
    if chosen is not None:
        spread = {i for i in spread if not math.isclose(thresholds[i], chosen, abs_tol=1e-9)}
    return sorted(spread)


# ---------------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------------


def sig3(x: float) -> str:
    """Three significant figures without scientific notation (0.0512, 1.23, 45.6, 789)."""
    if x == 0:
        return "0.00"
    decimals = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def fmt_pct(x: Any, decimals: int = 2) -> str:
    v = as_float(x)
    return DASH if v is None else f"{100.0 * v:.{decimals}f}"


def fmt_pt(x: float | None) -> str:
    return DASH if x is None else f"{x:+.2f}"


def fmt_threshold(x: Any) -> str:
    v = as_float(x)
    return DASH if v is None else f"{v:.3g}"


def fmt_flops(x: Any) -> str:
    v = as_float(x)
    if v is None:
        return DASH
    return f"{sig3(v / 1e9)} GFLOP" if v >= 1e9 else f"{sig3(v / 1e6)} MFLOP"


def fmt_params(x: Any) -> str:
    v = as_float(x)
    if v is None:
        return DASH
    if v >= 1e6:
        return f"{sig3(v / 1e6)} M"
    if v >= 1e3:
        return f"{sig3(v / 1e3)} k"
    return f"{int(v)}"


def fmt_ms(seconds: float) -> str:
    return f"{sig3(seconds * 1e3)} ms"


def fmt_latency(row: dict[str, Any] | None) -> str:
    """``0.512 ms ±4.1%`` (± = IQR/median of round times), with ⚠ when noisy."""
    if row is None:
        return DASH
    text = fmt_ms(latency_per_sample(row))
    r = rel_iqr(row)
    if r is not None:
        text += f" ±{100.0 * r:.1f}%"
    return text + (f" {NOISY_MARK}" if is_noisy(row) else "")


def fmt_speedup(s: Speedup | None, noisy: bool = False) -> str:
    if s is None:
        return DASH
    text = f"{s.value:.2f}×"
    if s.paired:
        if s.q1 is not None and s.q3 is not None:
            text += f" ({s.q1:.2f}–{s.q3:.2f})"
        text += PAIRED_MARK
    elif noisy:
        text += f" {NOISY_MARK}"
    return text


def md_escape(text: str) -> str:
    """Keep table cells intact: a literal ``|`` would split a Markdown table column."""
    return text.replace("|", "\\|")


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    footnotes: list[str]


def main_table(variants: Sequence[Variant]) -> Table:
    """One row per (chain, exit[, device]); latency and speedup columns for each batch size present."""
    sizes = batch_sizes(variants)
    show_device = len({v.device for v in variants}) > 1
    headers = ["chain", "exit", *(["device"] if show_device else [])]
    headers += ["threshold", "test acc (%)", "Δ acc (pt)", "exit rate (%)", "FLOPs/sample", "FLOP speedup", "params"]
    for bs in sizes:
        headers += [f"p50 latency/sample bs {bs} (IQR)", f"speedup bs {bs}"]
    rows: list[list[str]] = []
    noisy_notes: list[str] = []
    any_paired = False
    for v in variants:
        base = baseline_for(v, variants)
        is_ref = base is v
        cells = [md_escape(v.chain), md_escape(v.exit), *([md_escape(v.device)] if show_device else [])]
        cells += [
            fmt_threshold(v.get("threshold")),
            fmt_pct(v.get("test_accuracy")),
            "ref" if is_ref else fmt_pt(delta_acc_pt(v, base)),
            fmt_pct(v.get("exit_rate"), decimals=1),
            fmt_flops(v.get("flops_per_sample")),
            "ref" if is_ref else fmt_ratio(flop_speedup(v, base)),
            fmt_params(v.get("params")),
        ]
        for bs in sizes:
            row = v.rows.get(bs)
            cells.append(fmt_latency(row))
            if row is not None and is_noisy(row):
                noisy_notes.append(
                    f"{NOISY_MARK} chain `{md_escape(v.chain)}`, exit `{md_escape(v.exit)}`, bs {bs} — "
                    f"noisy: IQR/median = {rel_iqr(row):.2f} (kept; re-run with more rounds to confirm)"
                )
            if is_ref:
                cells.append("ref")
                continue
            s = speedup(v, base, bs)
            any_paired = any_paired or (s is not None and s.paired)
            base_row = base.rows.get(bs) if base is not None else None
            noisy = (row is not None and is_noisy(row)) or (base_row is not None and is_noisy(base_row))
            cells.append(fmt_speedup(s, noisy=noisy))
        rows.append(cells)
    footnotes = list(noisy_notes)
    if any_paired:
        footnotes.append(
            f"{PAIRED_MARK} paired speedup: median (q1–q3) of per-round MainNet/this-row time ratios, rounds "
            "timed interleaved; unmarked speedups are ratios of median latencies."
        )
    return Table(headers, rows, footnotes)


def sweep_table(variant: Variant, base: Variant | None) -> Table | None:
    """A few operating points from the threshold sweep, plus the chosen one; None without a sweep."""
    sweep = variant.get("sweep")
    if not isinstance(sweep, dict) or not sweep.get("threshold"):
        return None
    thresholds = [float(t) for t in sweep["threshold"]]
    chosen = as_float(variant.get("threshold"))
    base_flops = as_float(base.get("flops_per_sample")) if base is not None else None

    def col(name: str, i: int) -> Any:
        values = sweep.get(name) or []
        return values[i] if i < len(values) else None

    points: list[tuple[float, Any, Any, Any, bool]] = [
        (thresholds[i], col("test_accuracy", i), col("exit_rate", i), col("flops_per_sample", i), False)
        for i in pick_sweep_indices(thresholds, chosen)
    ]
    if chosen is not None:
        points.append(
            (
                chosen,
                variant.get("test_accuracy"),
                variant.get("exit_rate"),
                variant.get("flops_per_sample"),
                True,
            )
        )
    points.sort(key=lambda p: p[0])
    ref_acc = (
        as_float(base.get("test_accuracy")) if base is not None else as_float(variant.get("mainnet_test_accuracy"))
    )
    rows = []
    for thr, acc, rate, flops, is_chosen in points:
        acc_v, flops_v = as_float(acc), as_float(flops)
        delta = None if acc_v is None or ref_acc is None else 100.0 * (acc_v - ref_acc)
        rel_flops = DASH if flops_v is None or not base_flops else f"{100.0 * flops_v / base_flops:.1f}"
        rows.append(
            [
                fmt_threshold(thr),
                fmt_pct(acc),
                fmt_pt(delta),
                fmt_pct(rate, decimals=1),
                fmt_flops(flops),
                rel_flops,
                "← chosen" if is_chosen else "",
            ]
        )
    headers = [
        "threshold",
        "test acc (%)",
        "Δ acc (pt)",
        "exit rate (%)",
        "FLOPs/sample",
        "FLOPs vs MainNet (%)",
        "",
    ]
    return Table(headers, rows, [])


def calibration_line(variant: Variant) -> str:
    def ece(key: str) -> str:
        v = as_float(variant.get(key))
        return DASH if v is None else f"{v:.3f}"

    return f"Calibration (ECE, 15 bins, test): MainNet {ece('main_ece')} · SideNet {ece('side_ece')}"
