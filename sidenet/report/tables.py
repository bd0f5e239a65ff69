"""Turn benchmark rows into report tables: grouping, derived numbers (Δ accuracy, speedup) and formatting.

Everything here is pure (no I/O) so the numbers in a report can be unit-tested against hand-computed
values. Missing optional data becomes ``None`` and renders as "—" rather than failing the report.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DASH = "—"
NOISY_REL_IQR = 0.10  # IQR/median above this flags a latency as noisy (kept, never dropped)
PAIRED_MARK = "†"
AA_MARK = "§"
NOISY_MARK = "⚠"
UNPAIRED_MARK = "‡"
NONE = "none"  # the empty chain / the exit system "MainNet alone"
SIDENET = "sidenet"


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


def find_variant(variants: Sequence[Variant], chain: str, exit_: str, device: str) -> Variant | None:
    for v in variants:
        if v.chain == chain and v.exit == exit_ and v.device == device:
            return v
    return None


def baseline_for(variant: Variant, variants: Sequence[Variant]) -> Variant | None:
    """The fp32 uncompressed MainNet (chain "none", exit "none") on the same device: what Δ and speedup compare to.

    Every row of every chain compares to this one row, as the harness's paired timings do (each round
    of a row is paired with a round of the fp32 MainNet), so a compressed chain's MainNet shows its own
    speedup and accuracy cost instead of being a reference itself.
    """
    return find_variant(variants, NONE, NONE, variant.device)


def devices(variants: Sequence[Variant]) -> list[str]:
    return list(dict.fromkeys(v.device for v in variants))


def compressed_chains(variants: Sequence[Variant]) -> list[str]:
    """Chains other than "none", in report order."""
    return list(dict.fromkeys(v.chain for v in sorted(variants, key=_variant_order) if v.chain != NONE))


def dtype_of(variant: Variant | None) -> str | None:
    """Compute precision of the row's MainNet; chain "none" is fp32 when the row predates the ``dtype`` key."""
    if variant is None:
        return None
    dtype = variant.get("dtype")
    if isinstance(dtype, str) and dtype:
        return dtype
    return "fp32" if variant.chain == NONE else None


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


def fmt_reference(aa: Speedup | None) -> str:
    """The reference row's speedup cell: ``ref``, with its A/A noise floor when measured."""
    if aa is None or aa.q1 is None or aa.q3 is None:
        return "ref"
    return f"ref; A/A {aa.value:.2f} ({aa.q1:.2f}–{aa.q3:.2f}){AA_MARK}"


PAIRED_FOOTNOTE = (
    "paired speedup: median (q1–q3) of per-round fp32-MainNet/this-row time ratios, rounds timed interleaved."
)
AA_FOOTNOTE = (
    "A/A = the fp32 MainNet paired with itself under the same protocol: median (q1–q3) of ratios that should "
    "be 1.00; a paired speedup inside that band is not distinguishable from no change on this machine."
)


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
    """Three significant digits of the threshold, or of its distance to 1 when it is that close: softmax
    confidences crowd just below 1, and 0.9995, 0.99995 and 0.9999999 are different operating points (with
    ``.3g`` all three read "1"). Above 1 (nothing can exit) it prints as such."""
    v = as_float(x)
    if v is None:
        return DASH
    if v > 1:
        return "> 1 (no exit)"
    if v <= 0.99 or v == 1:
        return f"{v:.3g}"
    decimals = min(15, math.floor(-math.log10(1 - v) + 1e-9) + 3)
    return f"{v:.{decimals}f}".rstrip("0")


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


def fmt_text(x: Any) -> str:
    return DASH if x in (None, "") else md_escape(str(x))


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


# ---------------------------------------------------------------------------------------------------
# Complementarity: does the SideNet still pay off on a compressed MainNet?
# ---------------------------------------------------------------------------------------------------

COMPLEMENTARY_AT = 0.9  # the project's goal: speedup(C+S) keeps ≥ 90% of speedup(C) · speedup(S)
PARTLY_AT = 0.7
SUPER_ADDITIVE_ABOVE = 1.1
BEST_MAX_LOSS_PT = 1.0


@dataclass(frozen=True)
class Quad:
    """The four systems one complementarity table compares, for chain ``chain`` on ``device``.

    ``mainnet``: fp32 MainNet (chain none, exit none); ``alone``: the compressed MainNet (chain C, exit
    none); ``side``: fp32 MainNet + SideNet (chain none, exit sidenet); ``both``: chain C + SideNet.
    Any of them may be missing from the results.
    """

    chain: str
    device: str
    mainnet: Variant | None
    alone: Variant | None
    side: Variant | None
    both: Variant | None
    system: str = SIDENET  # the exit system (its canonical spec): ``side`` and ``both`` are its rows

    @property
    def system_label(self) -> str:
        """How the tables name the system: "SideNet" for the default ``sidenet``, else its spec in backticks."""
        return "SideNet" if self.system == SIDENET else f"`{md_escape(self.system)}`"


def complementarity_quads(variants: Sequence[Variant], system: str = SIDENET) -> list[Quad]:
    """One :class:`Quad` per (device, compressed chain) for exit system ``system``, devices in first-seen order,
    chains in report order."""
    quads = []
    for device in devices(variants):
        mine = [v for v in variants if v.device == device]
        for chain in compressed_chains(mine):
            quads.append(
                Quad(
                    chain,
                    device,
                    mainnet=find_variant(mine, NONE, NONE, device),
                    alone=find_variant(mine, chain, NONE, device),
                    side=find_variant(mine, NONE, system, device),
                    both=find_variant(mine, chain, system, device),
                    system=system,
                )
            )
    return quads


def fp32_accuracy(quad: Quad) -> float | None:
    """The fp32 MainNet's test accuracy: its own row, else the copy every row carries."""
    if quad.mainnet is not None and as_float(quad.mainnet.get("test_accuracy")) is not None:
        return as_float(quad.mainnet.get("test_accuracy"))
    for v in (quad.alone, quad.side, quad.both):
        if v is not None and as_float(v.get("mainnet_test_accuracy")) is not None:
            return as_float(v.get("mainnet_test_accuracy"))
    return None


def alone_accuracy(quad: Quad) -> float | None:
    """The compressed MainNet's test accuracy: its own row, else ``chain_test_accuracy`` of the C + SideNet row."""
    if quad.alone is not None and as_float(quad.alone.get("test_accuracy")) is not None:
        return as_float(quad.alone.get("test_accuracy"))
    return as_float(quad.both.get("chain_test_accuracy")) if quad.both is not None else None


def _delta_pt(acc: float | None, ref: float | None) -> float | None:
    return None if acc is None or ref is None else 100.0 * (acc - ref)


def _involved_noisy(quad: Quad, bs: int, members: Sequence[Variant | None]) -> bool:
    """Any timing a speedup at ``bs`` rests on is noisy (the fp32 MainNet's too, when a ratio is unpaired)."""
    rows = [v.rows.get(bs) for v in members if v is not None]
    noisy = any(r is not None and is_noisy(r) for r in rows)
    base_row = quad.mainnet.rows.get(bs) if quad.mainnet is not None else None
    unpaired = any((s := speedup(v, quad.mainnet, bs)) is not None and not s.paired for v in members if v is not None)
    return noisy or (unpaired and base_row is not None and is_noisy(base_row))


@dataclass(frozen=True)
class Complementarity:
    """speedup(C+S) / (speedup(C) · speedup(S)) at one batch size; 1.0 = the two savings multiply."""

    value: float
    lo: float | None = None
    hi: float | None = None
    paired: bool = False  # all three speedups are medians of paired per-round ratios
    noisy: bool = False


def complementarity_from(s_c: Speedup | None, s_s: Speedup | None, s_cs: Speedup | None) -> Complementarity | None:
    """Complementarity from the three speedups vs the fp32 MainNet (medians), with a spread when all are paired.

    The spread combines each speedup's q1–q3 at its extremes (interval arithmetic):
    lo = q1(C+S) / (q3(C) · q3(S)), hi = q3(C+S) / (q1(C) · q1(S)). It is deliberately conservative: the
    three rows are timed in separate benchmarks, so their rounds are not paired with each other, and
    multiplying per-round ratios index by index would pair rounds arbitrarily.
    """
    if s_c is None or s_s is None or s_cs is None or s_c.value <= 0 or s_s.value <= 0:
        return None
    value = s_cs.value / (s_c.value * s_s.value)
    paired = s_c.paired and s_s.paired and s_cs.paired
    c_q1, c_q3, s_q1, s_q3, cs_q1, cs_q3 = s_c.q1, s_c.q3, s_s.q1, s_s.q3, s_cs.q1, s_cs.q3
    if not paired or c_q1 is None or c_q3 is None or s_q1 is None or s_q3 is None or cs_q1 is None or cs_q3 is None:
        return Complementarity(value, paired=paired)
    if min(c_q1, s_q1) <= 0:
        return Complementarity(value, paired=True)
    return Complementarity(value, cs_q1 / (c_q3 * s_q3), cs_q3 / (c_q1 * s_q1), paired=True)


def complementarity(quad: Quad, bs: int) -> Complementarity | None:
    """Measured complementarity of ``quad.chain`` and the SideNet at batch size ``bs``."""
    if quad.alone is None or quad.side is None or quad.both is None:
        return None
    c = complementarity_from(*(speedup(v, quad.mainnet, bs) for v in (quad.alone, quad.side, quad.both)))
    if c is None:
        return None
    noisy = _involved_noisy(quad, bs, [quad.alone, quad.side, quad.both])
    return Complementarity(c.value, c.lo, c.hi, c.paired, noisy)


def flop_complementarity(quad: Quad) -> float | None:
    """The same formula with FLOP speedups (precision ignored: int8 FLOPs count like fp32 ones)."""
    if quad.mainnet is None:
        return None
    alone, side, both = (
        flop_speedup(v, quad.mainnet) if v is not None else None for v in (quad.alone, quad.side, quad.both)
    )
    if alone is None or side is None or both is None or alone <= 0 or side <= 0:
        return None
    return both / (alone * side)


def complementarity_missing(quad: Quad, bs: int) -> list[str]:
    """What a complementarity at ``bs`` lacks: absent rows, or rows without a timing at that batch size."""
    missing = []
    chain = f"`{md_escape(quad.chain)}`"
    name = quad.system_label
    for label, v in ((f"{chain} alone", quad.alone), (f"{name} alone", quad.side), (f"{chain} + {name}", quad.both)):
        if v is None:
            missing.append(f"no {label} row")
        elif speedup(v, quad.mainnet, bs) is None:
            missing.append(f"no {label} speedup at bs {bs}")
    return missing


def verdict_word(c: Complementarity) -> str:
    """The verdict's class from the number as displayed (two decimals): super-additive, complementary, partly
    complementary or overlapping."""
    v = round(c.value, 2)
    if v > SUPER_ADDITIVE_ABOVE:
        return "super-additive"
    if v >= COMPLEMENTARY_AT:
        return "complementary"
    return "partly complementary" if v >= PARTLY_AT else "overlapping"


def verdict(c: Complementarity | None, missing: Sequence[str] = (), system: str = SIDENET) -> str:
    """One phrase from the measured number (compared as displayed, two decimals); ⚠ when its timings are noisy.
    ``system`` names the exit system in the explanation ("the SideNet" for ``sidenet``)."""
    if c is None:
        return f"{DASH} ({', '.join(missing)})" if missing else f"{DASH} (a speedup is missing)"
    v = round(c.value, 2)
    word = verdict_word(c)
    who, exits = (
        ("the SideNet", "the SideNet's exit saves") if system == SIDENET else (f"`{system}`", f"`{system}` saves")
    )
    if word == "super-additive":
        text = f"super-additive ({v:.2f} > {SUPER_ADDITIVE_ABOVE:g}): {who} saves more on the compressed MainNet"
    elif word == "complementary":
        text = f"complementary ({v:.2f} ≥ {COMPLEMENTARY_AT:g})"
    elif word == "partly complementary":
        text = f"partly complementary ({v:.2f})"
    else:
        text = f"overlapping ({v:.2f}): {exits} less on the compressed MainNet"
    return text + (f" {NOISY_MARK} noisy" if c.noisy else "")


def best_batch_size(sizes: Sequence[int]) -> int | None:
    """The batch size the headline speedup is quoted at: 1 when measured, else the smallest."""
    return 1 if 1 in sizes else (min(sizes) if sizes else None)


@dataclass(frozen=True)
class Best:
    quad: Quad
    bs: int
    speedup: Speedup
    delta_pt: float


def best_quad(quads: Sequence[Quad], bs: int | None, max_loss_pt: float = BEST_MAX_LOSS_PT) -> Best | None:
    """The C + SideNet system with the highest speedup at ``bs`` among those within ``max_loss_pt`` of fp32."""
    best: Best | None = None
    if bs is None:
        return None
    for q in quads:
        if q.both is None:
            continue
        delta = _delta_pt(as_float(q.both.get("test_accuracy")), fp32_accuracy(q))
        s = speedup(q.both, q.mainnet, bs)
        if delta is None or s is None or round(delta, 2) < -max_loss_pt:
            continue
        if best is None or s.value > best.speedup.value:
            best = Best(q, bs, s, delta)
    return best


def best_sentence(quads: Sequence[Quad], bs: int | None, max_loss_pt: float = BEST_MAX_LOSS_PT) -> str:
    best = best_quad(quads, bs, max_loss_pt)
    if best is None:
        where = f" with a measured bs {bs} speedup" if bs is not None else ""
        return f"No chain + SideNet stays within {max_loss_pt:g} pt of the fp32 MainNet's test accuracy{where}."
    q = best.quad
    text = (
        f"Best chain + SideNet at ≤{max_loss_pt:g} pt: `{md_escape(q.chain)}`, {best.speedup.value:.2f}× at bs "
        f"{best.bs} (Δ {best.delta_pt:+.2f} pt vs the fp32 MainNet"
    )
    side = speedup(q.side, q.mainnet, best.bs) if q.side is not None else None
    alone = speedup(q.alone, q.mainnet, best.bs) if q.alone is not None else None
    if side is not None:
        text += f"; SideNet alone {side.value:.2f}×"
    if alone is not None:
        text += f", `{md_escape(q.chain)}` alone {alone.value:.2f}×"
    return text + ")."


def fmt_complementarity(c: Complementarity | None) -> str:
    if c is None:
        return DASH
    text = f"{c.value:.2f}"
    if c.lo is not None and c.hi is not None:
        text += f" ({c.lo:.2f}–{c.hi:.2f})"
    if not c.paired:
        text += UNPAIRED_MARK
    return text + (f" {NOISY_MARK}" if c.noisy else "")


def _fmt_speedup_marked(s: Speedup | None, noisy: bool) -> str:
    """Like :func:`fmt_speedup`, with unpaired ratios of medians marked ‡ (the table mixes both kinds)."""
    if s is None or s.paired:
        return fmt_speedup(s)
    return f"{s.value:.2f}×{UNPAIRED_MARK}" + (f" {NOISY_MARK}" if noisy else "")


def compression_line(quad: Quad) -> str | None:
    """What each chain step recorded (scalar facts only), e.g. ``prune`` flops_ratio=0.49; None when not recorded."""
    source = next(
        (v.get("compression") for v in (quad.alone, quad.both) if v is not None and v.get("compression")), None
    )
    if not isinstance(source, list):
        return None
    parts = []
    for step in source:
        if not isinstance(step, dict):
            continue
        name = md_escape(str(step.get("compressor", "?")))
        facts = [
            f"{md_escape(str(k))}={float(val):.3g}" if isinstance(val, float) else f"{md_escape(str(k))}={val}"
            for k, val in sorted(step.items())  # sorted: the same line whether rendered live or from the JSON
            if k not in ("compressor", "config") and isinstance(val, (str, int, float)) and not isinstance(val, bool)
        ]
        parts.append(f"`{name}`" + (f" ({', '.join(facts)})" if facts else ""))
    return "Compression steps: " + "; ".join(parts) + "." if parts else None


def batch_composition_line(quad: Quad) -> str | None:
    """The cascade's batch-composition effect on this chain's test predictions (``batch_composition`` of the
    ``chain + SideNet`` row), stated where it is non-zero or the chain quantises dynamically; None otherwise."""
    v = quad.both
    bc = v.get("batch_composition") if v is not None else None
    if not isinstance(bc, dict) or not all(isinstance(bc.get(k), int) for k in ("survivors", "changed")):
        return None
    steps = v.get("compression") if isinstance(v.get("compression"), list) else []
    dynamic = any(isinstance(s, dict) and s.get("method") == "dynamic" for s in steps)
    if not bc["changed"] and not dynamic:
        return None
    n, k = bc["survivors"], bc["changed"]
    share = f" ({100 * k / n:.1f}%)" if n else ""
    delta = bc.get("correct_delta")
    net = f"; net {delta:+d} correct" if isinstance(delta, int) else ""
    return (
        f"Batch composition: {k} of {n} test rows that did not exit{share} changed prediction because the rest "
        f"ran on the survivors only instead of the full batch of {bc.get('eval_batch', DASH)}{net}. Dynamic "
        "int8 scales each activation tensor by its range over the batch, so a smaller batch is quantised "
        "differently; rows of a static or float network do not depend on their batch-mates."
    )


def complementarity_table(quad: Quad, sizes: Sequence[int]) -> Table:
    """MainNet (fp32) | C alone | SideNet alone | C + SideNet, every number vs the fp32 MainNet."""
    chain = f"`{md_escape(quad.chain)}`"
    ref_acc = fp32_accuracy(quad)
    headers = ["system", "dtype", "test acc (%)", "Δ acc (pt)", "exit rate (%)", "FLOPs/sample", "FLOP speedup"]
    for bs in sizes:
        headers += [f"p50 latency/sample bs {bs} (IQR)", f"speedup bs {bs}"]
    headers += [*(f"complementarity bs {bs}" for bs in sizes), "FLOP complementarity"]
    members: list[tuple[str, Variant | None, float | None, str | None]] = [
        ("MainNet (fp32)", quad.mainnet, ref_acc, dtype_of(quad.mainnet) or "fp32"),
        (f"{chain} alone", quad.alone, alone_accuracy(quad), dtype_of(quad.alone) or dtype_of(quad.both)),
        (
            "SideNet alone",
            quad.side,
            as_float(quad.side.get("test_accuracy")) if quad.side else None,
            dtype_of(quad.side) or "fp32",
        ),
        (
            f"{chain} + SideNet",
            quad.both,
            as_float(quad.both.get("test_accuracy")) if quad.both else None,
            dtype_of(quad.both) or dtype_of(quad.alone),
        ),
    ]
    rows: list[list[str]] = []
    marks: set[str] = set()
    for i, (label, v, acc, dtype) in enumerate(members):
        is_ref = i == 0
        cells = [
            label,
            fmt_text(dtype),
            fmt_pct(acc),
            "ref" if is_ref else fmt_pt(_delta_pt(acc, ref_acc)),
            fmt_pct(v.get("exit_rate"), decimals=1) if v is not None else DASH,
            fmt_flops(v.get("flops_per_sample")) if v is not None else DASH,
            "ref" if is_ref else fmt_ratio(flop_speedup(v, quad.mainnet) if v is not None else None),
        ]
        for bs in sizes:
            row = v.rows.get(bs) if v is not None else None
            cells.append(fmt_latency(row))
            if is_ref:
                aa = aa_noise_floor(v, bs)
                if aa is not None:
                    marks.add(AA_MARK)
                cells.append(fmt_reference(aa) if row is not None else DASH)
                continue
            s = speedup(v, quad.mainnet, bs) if v is not None else None
            if s is not None:
                marks.add(PAIRED_MARK if s.paired else UNPAIRED_MARK)
            cells.append(_fmt_speedup_marked(s, noisy=v is not None and _involved_noisy(quad, bs, [v])))
        if i == 3:
            for bs in sizes:
                c = complementarity(quad, bs)
                if c is not None and c.noisy:
                    marks.add(NOISY_MARK)
                cells.append(fmt_complementarity(c))
            fc = flop_complementarity(quad)
            cells.append(DASH if fc is None else f"{fc:.2f}")
        else:
            cells += [""] * (len(sizes) + 1)
        rows.append(cells)
    notes = [
        "complementarity = speedup(C + SideNet) / (speedup(C) · speedup(SideNet)), each speedup vs the fp32 "
        f"MainNet at the same batch size, from medians: 1.0 = the savings multiply, ≥ {COMPLEMENTARY_AT:g} "
        "counts as complementary. In parentheses: a conservative spread, the speedups' q1–q3 combined at "
        "their extremes (the three rows are timed in separate benchmarks, so their rounds are not paired "
        "with each other and per-round products would pair rounds arbitrarily).",
        "FLOP complementarity: the same formula with FLOP speedups; FLOPs ignore precision (an int8 "
        "multiply-add counts like an fp32 one), so it only tells whether the exit skips the same share of work.",
    ]
    if PAIRED_MARK in marks:
        notes.append(f"{PAIRED_MARK} {PAIRED_FOOTNOTE}")
    if AA_MARK in marks:
        notes.append(f"{AA_MARK} {AA_FOOTNOTE}")
    if UNPAIRED_MARK in marks:
        notes.append(
            f"{UNPAIRED_MARK} unpaired: ratio of per-sample median latencies vs the fp32 MainNet row (the row "
            "records no paired_speedup); no spread is given for a complementarity that uses one."
        )
    if NOISY_MARK in marks:
        notes.append(
            f"{NOISY_MARK} rests on a timing with IQR/median > {NOISY_REL_IQR:.2f} (kept; see the table below)."
        )
    return Table(headers, rows, notes)


# ---------------------------------------------------------------------------------------------------
# Pareto front: accuracy vs latency over every chain × threshold
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParetoPoint:
    chain: str
    kind: str  # "mainnet" (chain C alone, measured), "measured" (selected threshold), "estimate" (sweep)
    latency_s: float  # per sample
    accuracy: float
    threshold: float | None = None


def pareto_points(variants: Sequence[Variant], bs: int) -> list[ParetoPoint]:
    """Every chain's MainNet alone and SideNet operating points at ``bs`` (one device's variants).

    Sweep points are estimated as head_side + (1 − exit_rate(t)) · rest from the row's component timings,
    as the accuracy-vs-latency plot does; the selected threshold is also shown as measured.
    """
    points: list[ParetoPoint] = []
    for v in sorted(variants, key=_variant_order):
        row = v.rows.get(bs)
        acc = as_float(v.get("test_accuracy"))
        if v.exit not in (NONE, SIDENET) or row is None:
            continue
        if acc is not None and latency_per_sample(row) > 0:
            kind = "mainnet" if v.is_mainnet else "measured"
            points.append(ParetoPoint(v.chain, kind, latency_per_sample(row), acc, as_float(v.get("threshold"))))
        comp, sweep = row["extra_info"].get("component_latency_s"), v.get("sweep")
        if v.is_mainnet or not isinstance(comp, dict) or not isinstance(sweep, dict):
            continue
        head_side, rest = as_float(comp.get("head_side")), as_float(comp.get("rest"))
        if head_side is None or rest is None:
            continue
        columns = [sweep.get(k) or [] for k in ("threshold", "exit_rate", "test_accuracy")]
        for thr, rate, a in zip(*columns, strict=False):
            rate_v, acc_v = as_float(rate), as_float(a)
            if rate_v is not None and acc_v is not None:
                points.append(ParetoPoint(v.chain, "estimate", head_side + (1.0 - rate_v) * rest, acc_v, as_float(thr)))
    return points


def pareto_front(points: Sequence[ParetoPoint]) -> list[ParetoPoint]:
    """The upper-left envelope: points no other point beats on both latency (≤) and accuracy (≥), fastest first."""
    front: list[ParetoPoint] = []
    for p in sorted(points, key=lambda p: (p.latency_s, -p.accuracy)):
        if not front or p.accuracy > front[-1].accuracy:
            front.append(p)
    return front
