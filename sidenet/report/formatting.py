"""How numbers read in the report: marks, footnote texts, number formats and the Table container.

One place for formats, so a value reads the same in every table and paragraph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sidenet.report.numbers import Speedup, as_float, is_noisy, latency_per_sample, rel_iqr

DASH = "—"
PAIRED_MARK = "†"
AA_MARK = "§"
NOISY_MARK = "⚠"
UNPAIRED_MARK = "‡"


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


def fmt_ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}×"


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


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    footnotes: list[str]


def fmt_speedup_marked(s: Speedup | None, noisy: bool) -> str:
    """Like :func:`fmt_speedup`, with unpaired ratios of medians marked ‡ (the table mixes both kinds)."""
    if s is None or s.paired:
        return fmt_speedup(s)
    return f"{s.value:.2f}×{UNPAIRED_MARK}" + (f" {NOISY_MARK}" if noisy else "")
