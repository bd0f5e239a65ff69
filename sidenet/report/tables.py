"""The table of every row of a task, and each exit row's threshold sweep and calibration line.

``fmt_threshold`` is re-exported here: it was this module's before the report was split, and callers import it so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sidenet.report.formatting import (
    AA_FOOTNOTE,
    AA_MARK,
    DASH,
    NOISY_MARK,
    PAIRED_MARK,
    Table,
    fmt_flops,
    fmt_latency,
    fmt_params,
    fmt_pct,
    fmt_pt,
    fmt_ratio,
    fmt_reference,
    fmt_speedup,
    fmt_text,
    fmt_threshold,
    md_escape,
)
from sidenet.report.numbers import (
    aa_noise_floor,
    as_float,
    delta_acc_pt,
    flop_speedup,
    is_noisy,
    pick_sweep_indices,
    rel_iqr,
    speedup,
)
from sidenet.report.variants import Variant, baseline_for, batch_sizes, compressed_chains, dtype_of


def main_table(variants: Sequence[Variant]) -> Table:
    """One row per (chain, exit[, device]); latency and speedup columns for each batch size present.

    Δ acc, FLOP speedup and speedup compare every row to the fp32 uncompressed MainNet (:func:`baseline_for`).
    A ``dtype`` column appears once the task has compressed chains (int8 FLOPs are counted like fp32 ones).
    """
    sizes = batch_sizes(variants)
    show_device = len({v.device for v in variants}) > 1
    show_dtype = show_dtype_column(variants)
    headers = ["chain", "exit", *(["device"] if show_device else [])]
    headers += ["threshold", "test acc (%)", "Δ acc (pt)", "exit rate (%)", "FLOPs/sample"]
    headers += [*(["dtype"] if show_dtype else []), "FLOP speedup", "params"]
    for bs in sizes:
        headers += [f"p50 latency/sample bs {bs} (IQR)", f"speedup bs {bs}"]
    rows: list[list[str]] = []
    noisy_notes: list[str] = []
    any_paired = any_aa = False
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
            *([fmt_text(dtype_of(v))] if show_dtype else []),
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
                aa = aa_noise_floor(v, bs)
                any_aa = any_aa or aa is not None
                cells.append(fmt_reference(aa))
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
            f"{PAIRED_MARK} paired speedup: median (q1–q3) of per-round fp32-MainNet/this-row time ratios, rounds "
            "timed interleaved; unmarked speedups are ratios of median latencies."
        )
    if any_aa:
        footnotes.append(f"{AA_MARK} {AA_FOOTNOTE}")
    return Table(headers, rows, footnotes)


def show_dtype_column(variants: Sequence[Variant]) -> bool:
    """A dtype column only when precision can differ: compressed chains, or a row that records a non-fp32 dtype."""
    return bool(compressed_chains(variants)) or any(dtype_of(v) not in (None, "fp32") for v in variants)


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


__all__ = ["calibration_line", "fmt_threshold", "main_table", "show_dtype_column", "sweep_table"]
