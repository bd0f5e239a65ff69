"""The exit-system comparison of a task: every system with exits at its validation-selected operating point, the
oracle bounds of each exit placement, a reading generated from those numbers, and the complementarity of each
system with each compressed chain it ran on.

Pure like :mod:`sidenet.report.tables` (rows in, cells out). The keys read here (``taps``, ``exit_rates``,
``oracle``, ``training_seconds``, ``retrains_backbone``, ``thresholds``, ``predicted_flops_per_sample``) are newer
than many results files and are not type-checked by :func:`sidenet.results.load_results`: every reader below
accepts any JSON value and shows "—" for what is missing or malformed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sidenet.report.tables import (
    AA_FOOTNOTE,
    AA_MARK,
    BEST_MAX_LOSS_PT,
    COMPLEMENTARY_AT,
    DASH,
    NOISY_MARK,
    NOISY_REL_IQR,
    NONE,
    PAIRED_MARK,
    PARTLY_AT,
    SIDENET,
    SUPER_ADDITIVE_ABOVE,
    UNPAIRED_MARK,
    Quad,
    Speedup,
    Table,
    Variant,
    _variant_order,
    aa_noise_floor,
    as_float,
    best_batch_size,
    complementarity,
    complementarity_missing,
    complementarity_quads,
    delta_acc_pt,
    find_variant,
    flop_complementarity,
    flop_speedup,
    fmt_complementarity,
    fmt_flops,
    fmt_latency,
    fmt_pct,
    fmt_pt,
    fmt_ratio,
    fmt_reference,
    fmt_speedup,
    fmt_threshold,
    is_noisy,
    md_escape,
    sig3,
    speedup,
    verdict_word,
)

NO_EXIT_SYSTEMS = ("none", "sidenet-noexit", "oracle")  # systems whose rows have no exit taken
NOT_TIMED = "not timed"
FIRST_RIGHT = "oracle: first right exit"
AGREES = "oracle: agrees with MainNet"
ORACLE_KINDS = (("first_correct", FIRST_RIGHT), ("agree", AGREES))
RETRAINS = "retrains backbone"


# ---------------------------------------------------------------------------------------------------
# Reading the newer keys of a row (any JSON value; None when missing or malformed)
# ---------------------------------------------------------------------------------------------------


def system_name(exit_spec: str) -> str:
    """The registered name of an exit spec: ``sidenet-multi:taps=layer1/layer2`` → ``sidenet-multi``."""
    return exit_spec.split(":", 1)[0]


def has_exits(v: Variant) -> bool:
    """A row of an exit system that lets inputs leave early (not the MainNet alone, not the never-exit overhead)."""
    return system_name(v.exit) not in NO_EXIT_SYSTEMS and v.get("threshold_source") != "never-exit"


def exit_variants(variants: Sequence[Variant]) -> list[Variant]:
    """Rows of systems with exits, chain ``none`` first, ``sidenet`` first within a chain."""
    return sorted((v for v in variants if has_exits(v)), key=lambda v: (*_variant_order(v)[:2], _system_order(v.exit)))


def _system_order(exit_spec: str) -> tuple[bool, str]:
    return (exit_spec != SIDENET, exit_spec)


def system_specs(variants: Sequence[Variant]) -> list[str]:
    """The distinct exit systems with exits, ``sidenet`` first, the others by name."""
    return sorted({v.exit for v in variants if has_exits(v)}, key=_system_order)


def taps_of(v: Variant) -> tuple[str, ...] | None:
    """Where the system's exits sit (``taps``; rows from before it: the single ``tap``)."""
    taps = v.get("taps")
    if isinstance(taps, list) and taps and all(isinstance(t, (str, int)) and not isinstance(t, bool) for t in taps):
        return tuple(str(t) for t in taps)
    tap = v.get("tap")
    return (str(tap),) if isinstance(tap, (str, int)) and not isinstance(tap, bool) and str(tap) else None


def fmt_taps(taps: Sequence[str] | None) -> str:
    return DASH if not taps else md_escape("/".join(taps))


def per_exit_rates(v: Variant) -> list[float | None] | None:
    """Share of test inputs leaving at each exit, in tap order (``exit_rates``); None when not recorded."""
    rates = v.get("exit_rates")
    if not isinstance(rates, list) or not rates:
        return None
    return [x if x is not None and 0 <= x <= 1 else None for x in map(as_float, rates)]


def fmt_exit_rates(v: Variant) -> str:
    """``92.9 (11.7 / 64.8 / 16.4)``: the total, then each exit's share when there are several exits."""
    total = fmt_pct(v.get("exit_rate"), decimals=1)
    rates = per_exit_rates(v)
    if rates is None or len(rates) < 2:
        return total
    return f"{total} ({' / '.join(fmt_pct(r, decimals=1) for r in rates)})"


def fmt_threshold_of(v: Variant) -> str:
    """The chosen threshold; per-exit thresholds (``thresholds``) only when they differ from one another."""
    thresholds = v.get("thresholds")
    if isinstance(thresholds, list) and len(thresholds) > 1:
        values = [as_float(t) for t in thresholds]
        if len({round(t, 12) if t is not None else None for t in values}) > 1:
            return " / ".join(fmt_threshold(t) for t in values)
    return fmt_threshold(v.get("threshold"))


def fmt_seconds(x: Any) -> str:
    v = as_float(x)
    return DASH if v is None or v < 0 else sig3(v)


def retrains_backbone(v: Variant) -> bool:
    system = v.get("exit_system")
    recorded = system.get("retrains_backbone") if isinstance(system, dict) else None
    return v.get("retrains_backbone") is True or recorded is True


def system_cell(v: Variant) -> str:
    return md_escape(v.exit) + (f" ({RETRAINS})" if retrains_backbone(v) else "")


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
    return sorted(points, key=lambda p: (len(p.taps), p.taps, order[p.kind], p.label))


# ---------------------------------------------------------------------------------------------------
# The comparison table
# ---------------------------------------------------------------------------------------------------

FLOPS_VS_ORACLE = "FLOPs ÷ oracle at equal acc"


def exit_systems_table(variants: Sequence[Variant], sizes: Sequence[int]) -> Table:
    """One device's exit systems at their operating points, the fp32 MainNet first, the oracle rows of each exit
    placement on chain ``none`` after that chain's systems. Every Δ and speedup is vs the fp32 MainNet."""
    headers = ["system", "chain", "taps", "threshold", "test acc (%)", "Δ acc (pt)", "exit rate (%)", "FLOPs/sample"]
    headers.append("FLOP speedup")
    for bs in sizes:
        headers += [f"p50 latency/sample bs {bs} (IQR)", f"speedup bs {bs}"]
    headers += ["training (s)", FLOPS_VS_ORACLE]
    exits = exit_variants(variants)
    base = find_variant(variants, NONE, NONE, exits[0].device) if exits else None
    marks: set[str] = set()
    rows: list[list[str]] = []
    if base is not None:
        cells = ["MainNet (fp32)", NONE, DASH, DASH, fmt_pct(base.get("test_accuracy")), "ref"]
        cells.append(fmt_pct(base.get("exit_rate"), decimals=1))
        cells += [fmt_flops(base.get("flops_per_sample")), "ref"]
        for bs in sizes:
            row = base.rows.get(bs)
            aa = aa_noise_floor(base, bs)
            marks |= {AA_MARK} if aa is not None else set()
            marks |= {NOISY_MARK} if row is not None and is_noisy(row) else set()
            cells += [fmt_latency(row), fmt_reference(aa) if row is not None else DASH]
        rows.append([*cells, DASH, DASH])
    oracles = oracle_points(variants)
    for i, v in enumerate(exits):
        rows.append(_system_row(v, base, sizes, marks))
        if oracles and v.chain == NONE and (i + 1 == len(exits) or exits[i + 1].chain != NONE):
            rows += [_oracle_row(p, base, sizes) for p in oracles]
    return Table(headers, rows, _footnotes(exits, bool(oracles), marks))


def _system_row(v: Variant, base: Variant | None, sizes: Sequence[int], marks: set[str]) -> list[str]:
    cells = [system_cell(v), md_escape(v.chain), fmt_taps(taps_of(v)), fmt_threshold_of(v)]
    cells += [fmt_pct(v.get("test_accuracy")), fmt_pt(delta_acc_pt(v, base))]
    cells += [fmt_exit_rates(v), fmt_flops(v.get("flops_per_sample")), fmt_ratio(flop_speedup(v, base))]
    for bs in sizes:
        row = v.rows.get(bs)
        s = speedup(v, base, bs)
        base_row = base.rows.get(bs) if base is not None else None
        noisy = (row is not None and is_noisy(row)) or (base_row is not None and is_noisy(base_row))
        if row is not None and is_noisy(row):
            marks.add(NOISY_MARK)
        if s is not None:
            marks.add(PAIRED_MARK if s.paired else UNPAIRED_MARK)
        cells += [fmt_latency(row), _fmt_speedup_marked(s, noisy)]
    return [*cells, fmt_seconds(v.get("training_seconds")), fmt_ratio(flops_vs_oracle(v))]


def _fmt_speedup_marked(s: Speedup | None, noisy: bool) -> str:
    if s is None or s.paired:
        return fmt_speedup(s)
    return f"{s.value:.2f}×{UNPAIRED_MARK}" + (f" {NOISY_MARK}" if noisy else "")


def _oracle_row(p: OraclePoint, base: Variant | None, sizes: Sequence[int]) -> list[str]:
    ref_acc = (
        as_float(base.get("test_accuracy")) if base is not None else as_float(p.variant.get("mainnet_test_accuracy"))
    )
    ref_flops = as_float(base.get("flops_per_sample")) if base is not None else None
    delta = None if p.accuracy is None or ref_acc is None else 100.0 * (p.accuracy - ref_acc)
    ratio = ref_flops / p.flops_per_sample if ref_flops is not None and p.flops_per_sample else None
    cells = [p.label, NONE, fmt_taps(p.taps), DASH, fmt_pct(p.accuracy), fmt_pt(delta), DASH]
    cells += [fmt_flops(p.flops_per_sample), fmt_ratio(ratio)]
    return [*cells, *([NOT_TIMED] * (2 * len(sizes))), DASH, DASH]


def _footnotes(exits: Sequence[Variant], any_oracle: bool, marks: set[str]) -> list[str]:
    notes = [
        "Each system at the threshold chosen on validation for the task's accuracy target; test acc, Δ (pt vs the "
        "fp32 MainNet), exit rate, FLOPs and latency measured on test. exit rate: the share of test inputs that "
        "left at an exit; with several exits, in parentheses the share leaving at each, in tap order.",
        "training (s): wall-clock seconds to train the system's exit heads, as recorded when they were trained "
        f"(cached heads keep that cost); a system that also trains the MainNet says ({RETRAINS}).",
        f"{FLOPS_VS_ORACLE}: the system's predicted FLOPs/sample ÷ the least FLOPs/sample any exit policy on the "
        "same exits (taps, heads, chain) needs to reach the row's test accuracy — every input answered right costs "
        "at least its first right exit, every other input at least the first exit; 1.00× = no policy on these "
        "exits could be cheaper.",
    ]
    if any_oracle:
        notes.append(
            f"{FIRST_RIGHT} / {AGREES}: bounds, not systems, computed from every exit's outputs on test for one exit "
            "placement on chain `none` (never run as a cascade, so not timed): each input leaves at the first exit "
            "(the MainNet's output included) that is right — at the first exit when none is — or at the first exit "
            "whose prediction equals the MainNet's (the MainNet's accuracy at the least compute)."
        )
    if not exits:
        notes.append("No exit-system rows.")
    unrecorded = [
        name
        for name, missing in (
            ("training (s)", any(as_float(v.get("training_seconds")) is None for v in exits)),
            (FLOPS_VS_ORACLE, any(flops_vs_oracle(v) is None for v in exits)),
            ("taps", any(taps_of(v) is None for v in exits)),
        )
        if missing
    ]
    if unrecorded:
        notes.append(
            f"{DASH} in {', '.join(unrecorded)}: not recorded by some rows (results written before exit systems "
            "recorded them, or an oracle that cannot reach the row's accuracy); re-run the bench to fill them in."
        )
    if PAIRED_MARK in marks:
        notes.append(
            f"{PAIRED_MARK} paired speedup: median (q1–q3) of per-round fp32-MainNet/this-row time ratios, rounds "
            "timed interleaved."
        )
    if AA_MARK in marks:
        notes.append(f"{AA_MARK} {AA_FOOTNOTE}")
    if UNPAIRED_MARK in marks:
        notes.append(
            f"{UNPAIRED_MARK} unpaired: ratio of per-sample median latencies vs the fp32 MainNet row (no "
            "paired_speedup recorded)."
        )
    if NOISY_MARK in marks:
        notes.append(f"{NOISY_MARK} = IQR/median > {NOISY_REL_IQR:.2f} (kept, flagged; see the table of all rows).")
    return notes


# ---------------------------------------------------------------------------------------------------
# The reading: plain-language statements, each computed from the rows above
# ---------------------------------------------------------------------------------------------------


def accuracy_target(variants: Sequence[Variant]) -> tuple[float, bool]:
    """(points, recorded): the task's selection target (``target_loss_pt`` of its chain-``none`` exit rows, the
    loosest when they differ), else the report's 1 pt budget (recorded False)."""
    targets = [as_float(v.get("target_loss_pt")) for v in exit_variants(variants) if v.chain == NONE]
    known = [t for t in targets if t is not None and t >= 0]
    return (max(known), True) if known else (BEST_MAX_LOSS_PT, False)


def _within(v: Variant, base: Variant, target: float) -> bool:
    d = delta_acc_pt(v, base)
    return d is not None and round(d, 2) >= -target


def _who(v: Variant) -> str:
    name = f"`{md_escape(v.exit)}`"
    return name if v.chain == NONE else f"`{md_escape(v.chain)}` + {name}"


def _pt(d: float | None) -> str:
    return DASH if d is None else f"{d:+.2f} pt"


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
    within = [v for v in plain if _within(v, base, target)]
    ranked = [v for v in within if flop_speedup(v, base) is not None]
    if ranked:
        best = max(ranked, key=lambda v: flop_speedup(v, base) or 0.0)
        out.append(
            f"on the fp32 MainNet, {_who(best)} saves the most FLOPs within the target: FLOP speedup "
            f"{fmt_ratio(flop_speedup(best, base))} ({fmt_flops(best.get('flops_per_sample'))}/sample; "
            f"{_pt(delta_acc_pt(best, base))})."
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
            fastest.setdefault(_who(v), []).append(f"bs {bs} ({value:.2f}×{slower})")
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
            + ", ".join(f"{_who(v)} ({_pt(delta_acc_pt(v, base))})" for v in missed)
            + "."
        )
    gaps = [f"{_who(v)} {r:.2f}× on {_taps_phrase(taps_of(v))}" for v in plain if (r := flops_vs_oracle(v)) is not None]
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
            f"If each input left at its first right exit, the exits on {_taps_phrase(p.taps)} would reach "
            f"{fmt_pct(p.accuracy)}% ({_pt(delta)}) at {fmt_flops(p.flops_per_sample)}/sample"
            + (f" (FLOP speedup {ratio:.2f}×)." if ratio is not None else ".")
        )
    chained = [v for v in exits if v.chain != NONE]
    bs = best_batch_size(sizes)
    scored = [
        (s.value, v)
        for v in chained
        if _within(v, base, target) and bs is not None and (s := speedup(v, base, bs)) is not None
    ]
    if scored:
        value, v = max(scored, key=lambda sv: sv[0])
        out.append(
            f"Counting compressed chains, {_who(v)} is the fastest within the target at bs {bs}: {value:.2f}× "
            f"({_pt(delta_acc_pt(v, base))})."
        )
    elif chained and not any(_within(v, base, target) for v in chained):
        out.append("No exit system on a compressed chain stays within the target on test.")
    return " ".join(out)


def _taps_phrase(taps: Sequence[str] | None) -> str:
    if not taps:
        return "exits not recorded"
    return f"tap{'s' if len(taps) > 1 else ''} {fmt_taps(taps)}"


# ---------------------------------------------------------------------------------------------------
# Complementarity of every exit system with every compressed chain it ran on
# ---------------------------------------------------------------------------------------------------


def system_quads(variants: Sequence[Variant]) -> list[Quad]:
    """One :class:`Quad` per (exit system with exits, compressed chain it ran on), one device's rows."""
    return [
        q for system in system_specs(variants) for q in complementarity_quads(variants, system) if q.both is not None
    ]


def _short_speedup(s: Speedup | None) -> str:
    return DASH if s is None else f"{s.value:.2f}×" + ("" if s.paired else UNPAIRED_MARK)


def system_verdict(quad: Quad, sizes: Sequence[int]) -> str:
    """``bs 1: complementary · bs 64: overlapping ⚠``; what is missing where a number cannot be computed."""
    parts = []
    for bs in sizes:
        c = complementarity(quad, bs)
        if c is None:
            parts.append(f"bs {bs}: {DASH} ({', '.join(complementarity_missing(quad, bs)) or 'a speedup is missing'})")
        else:
            parts.append(f"bs {bs}: {verdict_word(c)}" + (f" {NOISY_MARK}" if c.noisy else ""))
    return " · ".join(parts) if parts else DASH


def system_complementarity_table(variants: Sequence[Variant], sizes: Sequence[int]) -> Table | None:
    """speedup(C + S) / (speedup(C) · speedup(S)) per exit system S and compressed chain C, per batch size, and the
    FLOP version; None when no system ran on a compressed chain."""
    quads = system_quads(variants)
    if not quads:
        return None
    headers = ["system", "chain", "Δ acc C + S (pt)"]
    for bs in sizes:
        headers += [f"speedup C, S, C + S bs {bs}", f"complementarity bs {bs}"]
    headers += ["FLOP speedup C, S, C + S", "FLOP complementarity", "verdict"]
    rows = []
    marks: set[str] = set()
    for q in quads:
        cells = [md_escape(q.system), md_escape(q.chain), fmt_pt(delta_acc_pt(q.both, q.mainnet) if q.both else None)]
        for bs in sizes:
            members = [speedup(v, q.mainnet, bs) if v is not None else None for v in (q.alone, q.side, q.both)]
            marks |= {UNPAIRED_MARK for s in members if s is not None and not s.paired}
            c = complementarity(q, bs)
            marks |= {NOISY_MARK} if c is not None and c.noisy else set()
            cells += [", ".join(_short_speedup(s) for s in members), fmt_complementarity(c)]
        flops = [flop_speedup(v, q.mainnet) if v is not None else None for v in (q.alone, q.side, q.both)]
        fc = flop_complementarity(q)
        cells += [", ".join(fmt_ratio(f) for f in flops), DASH if fc is None else f"{fc:.2f}", system_verdict(q, sizes)]
        rows.append(cells)
    notes = [
        "complementarity = speedup(C + S) / (speedup(C) · speedup(S)) for exit system S on compressed chain C: each "
        "speedup the median vs the same fp32 MainNet rows, timed on this device at the same batch size; 1.0 = the "
        f"savings multiply, ≥ {COMPLEMENTARY_AT:g} counts as complementary, < {PARTLY_AT:g} overlapping, "
        f"> {SUPER_ADDITIVE_ABOVE:g} super-additive. "
        "In parentheses: the speedups' q1–q3 combined at their extremes. FLOP complementarity: the same formula with "
        "FLOP speedups (precision ignored). S alone is the system on the uncompressed fp32 MainNet.",
    ]
    if UNPAIRED_MARK in marks:
        notes.append(f"{UNPAIRED_MARK} unpaired: a ratio of per-sample median latencies (no paired ratios recorded).")
    if NOISY_MARK in marks:
        notes.append(f"{NOISY_MARK} rests on a timing with IQR/median > {NOISY_REL_IQR:.2f} (kept).")
    return Table(headers, rows, notes)
