"""The "Reading" paragraph under the exit-systems table: statements computed from every system's rows, whatever the
system (per-paper paragraphs come from :mod:`sidenet.report.systems`)."""

from __future__ import annotations

from collections.abc import Sequence

from sidenet.report.exit_rows import exit_variants, network_selection, placement_phrase, taps_phrase
from sidenet.report.formatting import fmt_flops, fmt_pct, fmt_ratio
from sidenet.report.numbers import as_float, delta_acc_pt, flop_speedup, speedup
from sidenet.report.oracle import flops_vs_oracle, oracle_points, point_placement
from sidenet.report.prose import accuracy_target, pt_text, who_of, within_target
from sidenet.report.variants import NONE, Variant, best_batch_size, find_variant


def exit_systems_reading(variants: Sequence[Variant], sizes: Sequence[int]) -> str:
    """A paragraph of statements computed from one device's exit-system rows (nothing else is claimed)."""
    exits = exit_variants(variants)
    if not exits:
        return ""
    base = find_variant(variants, NONE, NONE, exits[0].device)
    if base is None or as_float(base.get("test_accuracy")) is None:
        return "**Reading:** no fp32 MainNet row, so nothing to compare the exit systems to."
    target, recorded = accuracy_target(variants)
    where = "the task's selection target" if recorded else "no target recorded; the report's default budget"
    out = [f"**Reading** (target: ≤ {target:g} pt below the fp32 MainNet on test, {where}):"]
    plain = [v for v in exits if v.chain == NONE]
    within = [v for v in plain if within_target(v, base, target)]
    ranked = [v for v in within if flop_speedup(v, base) is not None]
    if ranked:
        best = max(ranked, key=lambda v: flop_speedup(v, base) or 0.0)
        out.append(
            f"on the fp32 MainNet, {who_of(best)} saves the most FLOPs within the target: FLOP speedup "
            f"{fmt_ratio(flop_speedup(best, base))} ({fmt_flops(best.get('flops_per_sample'))}/sample; "
            f"{pt_text(delta_acc_pt(best, base))})."
        )
    elif plain:
        out.append("on the fp32 MainNet, no exit system with a FLOP count stays within the target on test.")
    timed = [bs for bs in dict.fromkeys([best_batch_size(sizes), max(sizes, default=None)]) if bs is not None]
    fastest: dict[str, list[str]] = {}  # who → "bs 1 (1.24×)", ...
    for bs in timed:
        scored = [(s.value, v) for v in within if (s := speedup(v, base, bs)) is not None]
        if scored:
            value, v = max(scored, key=lambda sv: sv[0])
            slower = ", slower than the MainNet" if round(value, 2) < 1 else ""
            fastest.setdefault(who_of(v), []).append(f"bs {bs} ({value:.2f}×{slower})")
    if fastest:
        out.append(
            "Fastest measured within the target: "
            + "; ".join(f"{who} at {' and '.join(where)}" for who, where in fastest.items())
            + "."
        )
    missed = [v for v in plain if v not in within and delta_acc_pt(v, base) is not None]
    if missed:
        out.append(
            "Outside the target on test: "
            + ", ".join(f"{who_of(v)} ({pt_text(delta_acc_pt(v, base))})" for v in missed)
            + "."
        )
    gaps = [f"{who_of(v)} {r:.2f}× on {placement_phrase(v)}" for v in plain if (r := flops_vs_oracle(v)) is not None]
    if gaps:
        out.append(
            "Against the oracle on the same exits (its least FLOPs for the same accuracy): " + ", ".join(gaps) + "."
        )
    first = [p for p in oracle_points(variants) if p.kind == "first_correct" and p.accuracy is not None]
    if first:
        p = max(first, key=lambda p: (p.accuracy or 0.0, -(p.flops_per_sample or 0.0)))
        ref_acc, ref_flops = as_float(base.get("test_accuracy")), as_float(base.get("flops_per_sample"))
        delta = None if ref_acc is None or p.accuracy is None else 100.0 * (p.accuracy - ref_acc)
        ratio = ref_flops / p.flops_per_sample if ref_flops is not None and p.flops_per_sample else None
        out.append(
            f"If each input left at its first right exit, the exits on "
            f"{point_placement(p) if network_selection(p.variant) else taps_phrase(p.taps)} would reach "
            f"{fmt_pct(p.accuracy)}% ({pt_text(delta)}) at {fmt_flops(p.flops_per_sample)}/sample"
            + (f" (FLOP speedup {ratio:.2f}×)." if ratio is not None else ".")
        )
    chained = [v for v in exits if v.chain != NONE]
    bs = best_batch_size(sizes)
    scored = [
        (s.value, v)
        for v in chained
        if within_target(v, base, target) and bs is not None and (s := speedup(v, base, bs)) is not None
    ]
    if scored:
        value, v = max(scored, key=lambda sv: sv[0])
        out.append(
            f"Counting compressed chains, {who_of(v)} is the fastest within the target at bs {bs}: {value:.2f}× "
            f"({pt_text(delta_acc_pt(v, base))})."
        )
    elif chained and not any(within_target(v, base, target) for v in chained):
        out.append("No exit system on a compressed chain stays within the target on test.")
    return " ".join(out)
