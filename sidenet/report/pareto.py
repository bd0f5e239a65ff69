"""The accuracy-vs-latency Pareto front over every chain × threshold (the Pareto plot's points)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sidenet.report.complementarity import HEADLINE_SYSTEM
from sidenet.report.numbers import as_float, latency_per_sample
from sidenet.report.variants import NONE, Variant, variant_order


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
    for v in sorted(variants, key=variant_order):
        row = v.rows.get(bs)
        acc = as_float(v.get("test_accuracy"))
        if v.exit not in (NONE, HEADLINE_SYSTEM) or row is None:
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
