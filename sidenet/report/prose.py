"""Running-text helpers shared by the Reading and the per-system paragraphs: who a row is, signed points, the
operating point in one clause, and accuracy-at-FLOPs read off a test sweep.
"""

from __future__ import annotations

from collections.abc import Sequence

from sidenet.report.complementarity import BEST_MAX_LOSS_PT
from sidenet.report.exit_rows import exit_variants
from sidenet.report.formatting import DASH, PAIRED_MARK, UNPAIRED_MARK, fmt_flops, md_escape
from sidenet.report.numbers import as_float, delta_acc_pt, flop_speedup, speedup
from sidenet.report.variants import NONE, Variant

EQUAL_FLOPS_TOL = 0.02  # FLOP ratios within ±2% of 1 at equal accuracy count as a tie
_ACC_TOL = 1e-9


def accuracy_target(variants: Sequence[Variant]) -> tuple[float, bool]:
    """(points, recorded): the task's selection target (``target_loss_pt`` of its chain-``none`` exit rows, the
    loosest when they differ), else the report's 1 pt budget (recorded False)."""
    targets = [as_float(v.get("target_loss_pt")) for v in exit_variants(variants) if v.chain == NONE]
    known = [t for t in targets if t is not None and t >= 0]
    return (max(known), True) if known else (BEST_MAX_LOSS_PT, False)


def within_target(v: Variant, base: Variant, target: float) -> bool:
    d = delta_acc_pt(v, base)
    return d is not None and round(d, 2) >= -target


def who_of(v: Variant) -> str:
    name = f"`{md_escape(v.exit)}`"
    return name if v.chain == NONE else f"`{md_escape(v.chain)}` + {name}"


def pt_text(d: float | None) -> str:
    return DASH if d is None else f"{d:+.2f} pt"


def sweep_points(v: Variant) -> list[tuple[float, float]]:
    """The row's threshold sweep on test as (FLOPs/sample, accuracy) points, cheapest first; [] when not recorded."""
    sweep = v.get("sweep")
    if not isinstance(sweep, dict):
        return []
    flops, acc = sweep.get("flops_per_sample"), sweep.get("test_accuracy")
    if not isinstance(flops, list) or not isinstance(acc, list):
        return []
    pts = [(f, a) for f, a in zip(map(as_float, flops), map(as_float, acc), strict=False) if f is not None]
    return sorted((f, a) for f, a in pts if a is not None and f > 0 and 0 <= a <= 1)


def flops_at_accuracy(points: Sequence[tuple[float, float]], accuracy: float) -> float | None:
    """The least FLOPs/sample at which the sweep (piecewise linear, cheapest first) reaches ``accuracy``: the first
    point that reaches it, interpolated linearly from the point before it; None when the sweep never does."""
    prev: tuple[float, float] | None = None
    for f, a in points:
        if a >= accuracy - _ACC_TOL:
            if prev is None:
                return f
            f0, a0 = prev  # a0 < accuracy: else the loop had returned at it
            return f0 + (f - f0) * (accuracy - a0) / (a - a0)
        prev = (f, a)
    return None


def pct_text(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.2f}%"


def speedup_at(v: Variant, base: Variant | None, bs: int | None) -> str:
    s = speedup(v, base, bs) if bs is not None else None
    if s is None:
        return f"{DASH} at bs {bs}" if bs is not None else "not timed at bs 1"
    spread = f" ({s.q1:.2f}–{s.q3:.2f})" if s.paired and s.q1 is not None and s.q3 is not None else ""
    return f"{s.value:.2f}×{spread}{PAIRED_MARK if s.paired else UNPAIRED_MARK} at bs {bs}"


def operating_text(v: Variant, base: Variant | None, bs: int | None) -> str:
    """``91.80% (+1.17 pt), 126 kFLOP/sample (2.06× fewer than the MainNet), 0.71× (0.70–0.72)† at bs 1``."""
    acc = as_float(v.get("test_accuracy"))
    fs = flop_speedup(v, base)
    flops = fmt_flops(v.get("flops_per_sample")) + "/sample"
    flops += f" (FLOP speedup {fs:.2f}×)" if fs is not None else ""
    return f"{pct_text(acc)} ({pt_text(delta_acc_pt(v, base))}), {flops}, {speedup_at(v, base, bs)}"


def brief_row(v: Variant, base: Variant, bs: int | None) -> str:
    """```learned` (2.06× fewer FLOPs, 0.71× (0.70–0.72)† at bs 1, +1.17 pt)``."""
    fs = flop_speedup(v, base)
    flops = DASH if fs is None else f"{fs:.2f}×"
    return f"{who_of(v)} ({flops} fewer FLOPs, {speedup_at(v, base, bs)}, {pt_text(delta_acc_pt(v, base))})"


def on_chain(chain: str) -> str:
    return "on the fp32 MainNet" if chain == NONE else f"on `{md_escape(chain)}`"
