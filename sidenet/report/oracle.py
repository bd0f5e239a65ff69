"""The oracle bounds of each exit placement (from every exit's recorded outputs on test): not systems, never timed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sidenet.report.exit_rows import exit_variants, fmt_taps, network_selection, placement, taps_of
from sidenet.report.formatting import DASH, md_escape
from sidenet.report.numbers import as_float
from sidenet.report.variants import NONE, Variant

NOT_TIMED = "not timed"
FIRST_RIGHT = "oracle: first right exit"
AGREES = "oracle: agrees with MainNet"
ORACLE_KINDS = (("first_correct", FIRST_RIGHT), ("agree", AGREES))


def oracle_of(v: Variant) -> dict[str, Any] | None:
    o = v.get("oracle")
    return o if isinstance(o, dict) else None


def flops_vs_oracle(v: Variant) -> float | None:
    """The row's FLOPs ÷ the least FLOPs any policy on its exits needs for its accuracy (``oracle.flops_vs_oracle``;
    else computed from ``predicted_flops_per_sample`` and ``oracle.flops_at_accuracy``)."""
    o = oracle_of(v)
    if o is None:
        return None
    recorded = as_float(o.get("flops_vs_oracle"))
    if recorded is not None and recorded > 0:
        return recorded
    floor, mine = as_float(o.get("flops_at_accuracy")), as_float(v.get("predicted_flops_per_sample"))
    return mine / floor if mine is not None and floor is not None and floor > 0 else None


@dataclass(frozen=True)
class OraclePoint:
    """One oracle bound of an exit placement (chain ``none``): not a system, never timed."""

    label: str  # FIRST_RIGHT or AGREES
    kind: str  # "first_correct" or "agree"
    taps: tuple[str, ...]
    accuracy: float | None
    flops_per_sample: float | None
    systems: tuple[str, ...]  # the exit systems whose rows recorded it
    variant: Variant  # the first of them (for its device and baseline)


def oracle_points(variants: Sequence[Variant], chain: str = NONE) -> list[OraclePoint]:
    """Both oracle points per distinct exit placement on ``chain``, in table order. Systems with the same taps
    share a point when they recorded the same numbers (the same heads); otherwise each keeps its own, named."""
    found: dict[tuple[tuple[str, ...], str, float | None, float | None], list[Variant]] = {}
    for v in exit_variants(variants):
        o = oracle_of(v)
        if v.chain != chain or o is None:
            continue
        taps = taps_of(v) or ()
        for kind, _ in ORACLE_KINDS:
            acc, flops = as_float(o.get(f"{kind}_accuracy")), as_float(o.get(f"{kind}_flops_per_sample"))
            if acc is None and flops is None:
                continue
            key = (taps, kind, None if acc is None else round(acc, 9), None if flops is None else round(flops, 3))
            found.setdefault(key, []).append(v)
    per_placement: dict[tuple[tuple[str, ...], str], int] = {}
    for taps, kind, _, _ in found:
        per_placement[(taps, kind)] = per_placement.get((taps, kind), 0) + 1
    points = []
    labels = dict(ORACLE_KINDS)
    for (taps, kind, acc, flops), vs in found.items():
        label = labels[kind]
        if per_placement[(taps, kind)] > 1:  # same taps, other heads: say whose exits
            label += f" ({', '.join(md_escape(v.exit) for v in vs)})"
        points.append(OraclePoint(label, kind, taps, acc, flops, tuple(v.exit for v in vs), vs[0]))
    order = {kind: i for i, (kind, _) in enumerate(ORACLE_KINDS)}
    return sorted(points, key=lambda p: (network_selection(p.variant), len(p.taps), p.taps, order[p.kind], p.label))


def point_placement(p: OraclePoint) -> str:
    """The placement an oracle point belongs to, as the table reads it (a network selection's included)."""
    return (placement(p.variant) or DASH) if network_selection(p.variant) else fmt_taps(p.taps)
