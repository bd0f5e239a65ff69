"""The exit-system comparison of a task: every system with exits at its validation-selected operating point, the
oracle bounds of each exit placement, a reading generated from those numbers (and, where those systems ran, the
Bolukbasi et al. 2017 and EENets paragraphs), and the complementarity of each system with each compressed chain it
ran on.

Pure like :mod:`sidenet.report.tables` (rows in, cells out). The keys read here (``taps``, ``exit_rates``,
``oracle``, ``training_seconds``, ``retrains_backbone``, ``thresholds``, ``predicted_flops_per_sample``,
``system_details``) are newer than many results files and are not fully type-checked by
:func:`sidenet.bench.results.load_results`: every reader below accepts any JSON value and shows "—" for what is
missing or malformed.
"""

from __future__ import annotations

import json
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
    PAIRED_FOOTNOTE,
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
    fmt_params,
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
MULTI = "sidenet-multi"
LEARNED = "learned"  # Bolukbasi et al. 2017: adaptive early exit, a learned policy at each exit
CASCADE = "cascade"  # Bolukbasi et al. 2017: network selection, a small network first, the MainNet for the rest
EENET = "eenet"  # Demir & Akbas 2024: exits with a confidence branch, trained jointly with the MainNet (retrained)
SYSTEM_ORDER = (SIDENET, MULTI, LEARNED, CASCADE)  # table, legend and colour order; other systems after, by name
CASCADE_TAP = "small"  # the one "tap" a network-selection row records: the small network's output
NOT_TIMED = "not timed"
FIRST_RIGHT = "oracle: first right exit"
AGREES = "oracle: agrees with MainNet"
ORACLE_KINDS = (("first_correct", FIRST_RIGHT), ("agree", AGREES))
RETRAINS = "retrains backbone"
COLLAPSED = "⚠ collapsed"  # system cell mark: nearly every input took one exit (system_details.collapse)


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


def _system_order(exit_spec: str) -> tuple[int, str]:
    name = system_name(exit_spec)
    return (SYSTEM_ORDER.index(name) if name in SYSTEM_ORDER else len(SYSTEM_ORDER), exit_spec)


def system_specs(variants: Sequence[Variant]) -> list[str]:
    """The distinct exit systems with exits: ``sidenet``, ``sidenet-multi``, ``learned``, ``cascade`` (each at its
    default first), then the others by name."""
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


def is_cascade(v: Variant) -> bool:
    """A network-selection row (``cascade``): its one exit is a whole small network, not a head on a tap."""
    return system_name(v.exit) == CASCADE


def small_network(v: Variant) -> str:
    """What answers first in a network-selection row: the chain it names (``cascade:small=prune``), else the
    task's small network (its distilled student by default)."""
    system = v.get("exit_system")
    small = system.get("small") if isinstance(system, dict) else None
    return f"`{md_escape(small)}`" if isinstance(small, str) and small not in ("", "task") else "small network"


def placement(v: Variant) -> str | None:
    """Where a row's exits sit, as read in the report: ``layer1/layer2``; a network selection's
    ``small network → MainNet``; None when not recorded."""
    taps = taps_of(v)
    if is_cascade(v) and (taps is None or taps == (CASCADE_TAP,)):
        return f"{small_network(v)} → MainNet"
    return None if not taps else md_escape("/".join(taps))


def fmt_placement(v: Variant) -> str:
    return placement(v) or DASH


def placement_phrase(v: Variant) -> str:
    """``tap layer1``, ``taps layer1/layer2``, ``small network → MainNet`` (for running text)."""
    if is_cascade(v):
        text = fmt_placement(v)
        return f"the {text}" if text.startswith("small network") else text
    return _taps_phrase(taps_of(v))


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


def system_details(v: Variant) -> dict[str, Any] | None:
    """What the system recorded about itself beyond its config (``system_details``; eenet rows); None when missing
    or malformed (results written before the key existed)."""
    details = v.get("system_details")
    return details if isinstance(details, dict) else None


def collapse_of(v: Variant) -> dict[str, Any] | None:
    """The row's collapse check (``system_details.collapse``) when it is flagged — only a JSON true counts, so a
    malformed record never marks a row — else None."""
    details = system_details(v)
    collapse = details.get("collapse") if details is not None else None
    return collapse if isinstance(collapse, dict) and collapse.get("collapsed") is True else None


def _as_int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def collapse_clause(v: Variant, collapse: dict[str, Any]) -> str:
    """``99.6% of validation inputs took exit 1 of 2 (layer1.0)``; the end of the network (exit index = number of
    exits) reads ``ran to the final output``. The record counts exits from 0; the text from 1, as the taps read."""
    details = system_details(v) or {}
    share = as_float(collapse.get("share"))
    split = {"val": "validation", "test": "test"}.get(str(collapse.get("split")), "validation")
    taps = taps_of(v)
    k = _as_int(collapse.get("exit"))
    n = _as_int(details.get("n_exits"))
    n = n if n is not None and n > 0 else (len(taps) if taps else None)
    who = f"{DASH if share is None else f'{100 * share:.1f}%'} of {split} inputs"
    if k is None or k < 0:
        return f"{who} took one exit"
    if n is not None and k >= n:
        return f"{who} ran to the final output"
    tap = f" ({md_escape(taps[k])})" if taps and 0 <= k < len(taps) else ""
    return f"{who} took exit {k + 1}" + (f" of {n}" if n is not None else "") + tap


def collapse_meaning(v: Variant, collapse: dict[str, Any]) -> str:
    """Why a collapsed row's operating point is not an early-exit trade-off (the footnote and the EENets paragraph)."""
    clause = collapse_clause(v, collapse)
    point = "the final output's accuracy" if "final output" in clause else "that exit's accuracy"
    return (
        f"{clause}: the confidence branches collapsed (seen in the paper's own λ logs); the operating point is "
        f"{point}, not an early-exit trade-off"
    )


def system_cell(v: Variant) -> str:
    return (
        md_escape(v.exit)
        + (f" ({RETRAINS})" if retrains_backbone(v) else "")
        + (f" {COLLAPSED}" if collapse_of(v) is not None else "")
    )


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
    return sorted(points, key=lambda p: (is_cascade(p.variant), len(p.taps), p.taps, order[p.kind], p.label))


def point_placement(p: OraclePoint) -> str:
    """The placement an oracle point belongs to, as the table reads it (a network selection's included)."""
    return (placement(p.variant) or DASH) if is_cascade(p.variant) else fmt_taps(p.taps)


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
    cells = [system_cell(v), md_escape(v.chain), fmt_placement(v), fmt_threshold_of(v)]
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
    cells = [p.label, NONE, point_placement(p) or DASH, DASH, fmt_pct(p.accuracy), fmt_pt(delta), DASH]
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
    if any(system_name(v.exit) in (LEARNED, CASCADE) or v.get("policy") == LEARNED for v in exits):
        notes.append(
            f"`{LEARNED}` and `{CASCADE}` (Bolukbasi et al. 2017): a policy learned on the training split decides at "
            "each exit; their threshold applies to that policy's score (P(leave here)), not to a softmax confidence. "
            f"`{LEARNED}` has a SideNet at each tap, its training (s) = the SideNets' + fitting the policy. "
            f"`{CASCADE}` is network selection: the small network (by default the task's distilled student) answers "
            "every input first, the MainNet runs only for the inputs the policy sends on; its exit rate is the share "
            "the small network answers, its FLOPs count both networks, and its training (s) is fitting the policy "
            "only — the small network is trained (and cached) as its own compressor chain, at a cost not counted here."
        )
    if any(system_name(v.exit) == EENET for v in exits):
        notes.append(
            f"`{EENET}` (EENets, Demir & Akbas 2024): exit blocks with a confidence branch, trained jointly with the "
            f"MainNet under a cost-aware loss, so the backbone itself is retrained ({RETRAINS}); its training (s) "
            "covers the backbone and the exits. See the EENets paragraph below the table."
        )
    for v in exits:
        collapse = collapse_of(v)
        if collapse is not None:
            notes.append(f"{COLLAPSED} ({_who(v)}): {collapse_meaning(v, collapse)}.")
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
        notes.append(f"{PAIRED_MARK} {PAIRED_FOOTNOTE}")
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
    gaps = [f"{_who(v)} {r:.2f}× on {placement_phrase(v)}" for v in plain if (r := flops_vs_oracle(v)) is not None]
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
            f"{point_placement(p) if is_cascade(p.variant) else _taps_phrase(p.taps)} would reach "
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
# Bolukbasi et al. 2017 here: learned policy vs softmax threshold, network selection vs early exit, the headline
# ---------------------------------------------------------------------------------------------------

HEADLINE_FLOPS = 2.8  # Bolukbasi et al. 2017's headline: 2.8× fewer FLOPs than the full network ...
HEADLINE_LATENCY = 2.0  # ... and the project's goal: 2× lower latency at bs 1 ...
HEADLINE_LOSS_PT = BEST_MAX_LOSS_PT  # ... at ≤ 1 pt accuracy loss on test
EQUAL_FLOPS_TOL = 0.02  # FLOP ratios within ±2% of 1 at equal accuracy count as a tie
EARLY_EXIT = (SIDENET, MULTI, LEARNED)  # early exit within one network, what network selection is compared to
_ACC_TOL = 1e-9


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


def _op_flops(v: Variant) -> float | None:
    """The operating point's FLOPs as its sweep counts them (``predicted_flops_per_sample``, from the same trace),
    else the measured FLOPs."""
    for key in ("predicted_flops_per_sample", "flops_per_sample"):
        x = as_float(v.get(key))
        if x is not None and x > 0:
            return x
    return None


def _pct(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.2f}%"


def _bs1(v: Variant, base: Variant | None, bs: int | None) -> str:
    s = speedup(v, base, bs) if bs is not None else None
    if s is None:
        return f"{DASH} at bs {bs}" if bs is not None else "not timed at bs 1"
    spread = f" ({s.q1:.2f}–{s.q3:.2f})" if s.paired and s.q1 is not None and s.q3 is not None else ""
    return f"{s.value:.2f}×{spread}{PAIRED_MARK if s.paired else UNPAIRED_MARK} at bs {bs}"


def _operating(v: Variant, base: Variant | None, bs: int | None) -> str:
    """``91.80% (+1.17 pt), 126 kFLOP/sample (2.06× fewer than the MainNet), 0.71× (0.70–0.72)† at bs 1``."""
    acc = as_float(v.get("test_accuracy"))
    fs = flop_speedup(v, base)
    flops = fmt_flops(v.get("flops_per_sample")) + "/sample"
    flops += f" (FLOP speedup {fs:.2f}×)" if fs is not None else ""
    return f"{_pct(acc)} ({_pt(delta_acc_pt(v, base))}), {flops}, {_bs1(v, base, bs)}"


def _brief(v: Variant, base: Variant, bs: int | None) -> str:
    """```learned` (2.06× fewer FLOPs, 0.71× (0.70–0.72)† at bs 1, +1.17 pt)``."""
    fs = flop_speedup(v, base)
    flops = DASH if fs is None else f"{fs:.2f}×"
    return f"{_who(v)} ({flops} fewer FLOPs, {_bs1(v, base, bs)}, {_pt(delta_acc_pt(v, base))})"


def _on_chain(chain: str) -> str:
    return "on the fp32 MainNet" if chain == NONE else f"on `{md_escape(chain)}`"


def _softmax_twin(learned: Variant, rows: Sequence[Variant]) -> Variant | None:
    """The softmax-threshold system on the same placement and chain as a ``learned`` row: ``sidenet-multi`` (else
    ``sidenet``) with the same taps and the softmax policy."""
    taps = taps_of(learned)
    if taps is None:
        return None
    for name in (MULTI, SIDENET):
        for v in rows:
            system = v.get("exit_system")
            policy = system.get("policy") if isinstance(system, dict) else v.get("policy")
            if (
                system_name(v.exit) == name
                and v.chain == learned.chain
                and taps_of(v) == taps
                and policy in (None, "softmax")
            ):
                return v
    return None


@dataclass(frozen=True)
class EqualAccuracy:
    """One side of an equal-accuracy comparison: at ``accuracy`` (``at``'s operating point) ``at`` spends ``own``
    FLOPs/sample and ``other``'s sweep ``needed`` (None: its sweep never reaches that accuracy, or is missing)."""

    accuracy: float
    at: Variant
    other: Variant
    own: float
    needed: float | None
    swept: bool  # ``other`` recorded a sweep at all

    def winner(self) -> Variant | str | None:
        """The row needing fewer FLOPs at this accuracy (ties within EQUAL_FLOPS_TOL: ``"tie"``); the one that
        reaches it when the other's sweep never does; None when the other recorded no sweep."""
        if self.needed is not None:
            ratio = self.needed / self.own
            if ratio > 1 + EQUAL_FLOPS_TOL:
                return self.at
            return self.other if ratio < 1 - EQUAL_FLOPS_TOL else "tie"
        return self.at if self.swept else None

    def clause(self) -> str:
        """``at 91.80% (`learned`'s operating point) `sidenet-multi` needs 0.131 MFLOP/sample vs 0.126: `learned`
        1.04× fewer``."""
        head = f"at {_pct(self.accuracy)} ({_who(self.at)}'s operating point, {fmt_flops(self.own)}/sample) "
        if not self.swept:
            return head + f"{_who(self.other)} recorded no sweep"
        if self.needed is None:
            top = max((a for _, a in sweep_points(self.other)), default=None)
            return head + f"{_who(self.other)}'s sweep never gets there (at most {_pct(top)})"
        text = head + f"{_who(self.other)}'s sweep needs {fmt_flops(self.needed)}/sample: "
        w = self.winner()
        if not isinstance(w, Variant):
            return text + f"the same within {100 * EQUAL_FLOPS_TOL:g}%"
        ratio = self.needed / self.own if w is self.at else self.own / self.needed
        return text + f"{_who(w)} needs {ratio:.2f}× fewer"


def equal_accuracy(learned: Variant, softmax: Variant) -> list[EqualAccuracy]:
    """Both directions: the softmax sweep at the learned operating point's accuracy, the learned sweep at the
    softmax operating point's (operating points with an accuracy and FLOPs only)."""
    out = []
    for at, other in ((learned, softmax), (softmax, learned)):
        acc, own = as_float(at.get("test_accuracy")), _op_flops(at)
        if acc is None or own is None:
            continue
        pts = sweep_points(other)
        out.append(EqualAccuracy(acc, at, other, own, flops_at_accuracy(pts, acc) if pts else None, bool(pts)))
    return out


def learned_vs_softmax(learned: Variant, softmax: Variant | None, base: Variant, bs: int | None) -> str:
    """(a): does the learned policy beat the softmax threshold on the same exits at equal accuracy?"""
    head = f"*Learned policy vs softmax threshold* ({placement_phrase(learned)}, {_on_chain(learned.chain)}): "
    text = head + f"{_who(learned)} at {_operating(learned, base, bs)}"
    if softmax is None:
        return text + "; no softmax-threshold row on the same exits to compare with."
    text += f"; {_who(softmax)} at {_operating(softmax, base, bs)}."
    sides = equal_accuracy(learned, softmax)
    if sides:
        text += " At equal accuracy (test sweeps, interpolated): " + "; ".join(e.clause() for e in sides) + "."
    winners = {system_name(w.exit) if isinstance(w, Variant) else w for e in sides if (w := e.winner()) is not None}
    if not winners:
        return text + " No equal-accuracy comparison can be made from the recorded sweeps."
    if winners == {"tie"}:
        return text + " → No difference here."
    if winners <= {LEARNED, "tie"}:
        return text + " → The learned policy beats the softmax threshold here."
    if winners <= {system_name(softmax.exit), "tie"}:
        return text + " → The softmax threshold beats the learned policy here."
    return text + " → Neither dominates here: which needs fewer FLOPs depends on the accuracy."


def selection_vs_early_exit(
    cascade: Variant, rows: Sequence[Variant], base: Variant, bs: int | None, target: float, recorded: bool
) -> str:
    """(b): network selection vs the best early exit within one network, on the same chain, at the Reading's target."""
    budget = f"≤ {target:g} pt below the fp32 MainNet on test, " + (
        "the task's selection target, as in the Reading" if recorded else "no target recorded: the report's default"
    )
    text = f"*Network selection vs early exit* ({_on_chain(cascade.chain)}; {budget}): {_who(cascade)} at "
    text += _operating(cascade, base, bs)
    rates = per_exit_rates(cascade)
    share = rates[0] if rates else as_float(cascade.get("exit_rate"))
    if share is not None:
        text += f", the {small_network(cascade)} answering {100 * share:.1f}% of inputs alone"
    params, main_params = as_float(cascade.get("params")), as_float(base.get("params"))
    if params is not None:
        text += f", {fmt_params(params)} parameters in both networks"
        text += f" (MainNet {fmt_params(main_params)})" if main_params is not None else ""
    text += "."
    early = [v for v in rows if v.chain == cascade.chain and system_name(v.exit) in EARLY_EXIT]
    within = [v for v in early if _within(v, base, target) and flop_speedup(v, base) is not None]
    best = max(within, key=lambda v: flop_speedup(v, base) or 0.0) if within else None
    mine_ok = _within(cascade, base, target)
    if best is not None:
        text += f" Best early exit within the target: {_brief(best, base, bs)}."
    if best is None and not early:
        return text + " No early-exit row on this chain to compare with."
    if not mine_ok and best is None:
        text += " → Neither stays within the target on test."
    elif not mine_ok:
        text += f" → Early exit within one network wins at this budget: {_who(cascade)} misses the target on test."
    elif best is None:
        text += " → Network selection wins at this budget: no early exit stays within the target on test."
    else:
        text += _selection_verdict(cascade, best, base, bs)
    ref_acc = as_float(base.get("test_accuracy"))
    goal = None if ref_acc is None else ref_acc - target / 100.0
    swept = [(v, flops_at_accuracy(pts, goal)) for v in early if goal is not None and (pts := sweep_points(v))]
    reached = [(v, f) for v, f in swept if f is not None]
    mine_pts = sweep_points(cascade)
    if goal is not None and mine_pts and reached:
        f_mine = flops_at_accuracy(mine_pts, goal)
        v_best, f_best = min(reached, key=lambda vf: vf[1])
        text += f" At exactly the target ({_pct(goal)}) the sweeps need: {_who(cascade)} "
        text += f"{fmt_flops(f_mine)}/sample" if f_mine is not None else "never gets there"
        text += f", the cheapest early exit {_who(v_best)} {fmt_flops(f_best)}/sample."
    return text


def _selection_verdict(cascade: Variant, best: Variant, base: Variant, bs: int | None) -> str:
    """Both within the target: who needs fewer FLOPs (ties within EQUAL_FLOPS_TOL), and who is faster at ``bs``."""
    mine_f, best_f = as_float(cascade.get("flops_per_sample")), as_float(best.get("flops_per_sample"))
    if mine_f is None or best_f is None or mine_f <= 0 or best_f <= 0:
        return f" → {DASH}: a FLOP count is missing."
    ratio = mine_f / best_f
    if ratio > 1 + EQUAL_FLOPS_TOL:
        text = f" → Early exit within one network beats network selection here: {ratio:.2f}× fewer FLOPs"
    elif ratio < 1 - EQUAL_FLOPS_TOL:
        text = f" → Network selection beats early exit within one network here: {1 / ratio:.2f}× fewer FLOPs"
    else:
        text = f" → Network selection and early exit need the same FLOPs here (within {100 * EQUAL_FLOPS_TOL:g}%)"
    s_mine = speedup(cascade, base, bs) if bs is not None else None
    s_best = speedup(best, base, bs) if bs is not None else None
    if s_mine is not None and s_best is not None and min(s_mine.value, s_best.value) > 0:
        faster = _who(best) if s_best.value >= s_mine.value else _who(cascade)
        lat = max(s_best.value, s_mine.value) / min(s_best.value, s_mine.value)
        text += f"; at bs {bs} {faster} is {lat:.2f}× faster"
    return text + "."


def _oracle_bound(v: Variant, base: Variant) -> float | None:
    """FLOP speedup of the least compute any policy on the row's exits needs for the row's test accuracy
    (``oracle.flops_at_accuracy``)."""
    o, ref = oracle_of(v), as_float(base.get("flops_per_sample"))
    flops = as_float(o.get("flops_at_accuracy")) if o is not None else None
    return ref / flops if ref is not None and flops is not None and flops > 0 else None


def _sweep_best(v: Variant, base: Variant, loss_pt: float) -> float | None:
    """FLOP speedup of the cheapest point of the row's test sweep within ``loss_pt`` of the fp32 MainNet."""
    ref_acc, ref_flops = as_float(base.get("test_accuracy")), as_float(base.get("flops_per_sample"))
    pts = sweep_points(v)
    if ref_acc is None or ref_flops is None or not pts:
        return None
    flops = flops_at_accuracy(pts, ref_acc - loss_pt / 100.0)
    return ref_flops / flops if flops else None


def headline(exits: Sequence[Variant], base: Variant, bs: int | None) -> str:
    """(c): which system reaches the most FLOP reduction vs the fp32 MainNet at ≤ 1 pt on test, its bs-1 speedup,
    and whether that meets the paper's 2.8× FLOPs and the project's 2× latency — else which comes closest and why."""
    text = (
        f"*Headline* (Bolukbasi et al.: ≥ {HEADLINE_FLOPS:g}× fewer FLOPs at ≤ {HEADLINE_LOSS_PT:g} pt loss; the goal "
        f"here adds ≥ {HEADLINE_LATENCY:g}× lower latency at bs 1; both vs the fp32 MainNet, on test): "
    )
    within = [v for v in exits if _within(v, base, HEADLINE_LOSS_PT) and flop_speedup(v, base) is not None]
    if not within:
        return text + f"no exit system with a FLOP count stays within {HEADLINE_LOSS_PT:g} pt on test."
    at = 1 if bs == 1 else None

    def fs(v: Variant) -> float:
        return flop_speedup(v, base) or 0.0

    def lat(v: Variant) -> float | None:
        s = speedup(v, base, 1) if at is not None else None
        return s.value if s is not None else None

    def brief(v: Variant) -> str:
        return _brief(v, base, at)

    best = max(within, key=fs)
    text += f"the most FLOP reduction within {HEADLINE_LOSS_PT:g} pt: {brief(best)}."
    meets = [v for v in within if fs(v) >= HEADLINE_FLOPS and (lat(v) or 0.0) >= HEADLINE_LATENCY]
    if best in meets:
        return text + " → Met."
    if meets:
        return text + f" → Met by {brief(max(meets, key=fs))}."
    if at is None:
        return text + " → Latency not checked: no bs 1 timing."
    near = max(within, key=lambda v: min(fs(v) / HEADLINE_FLOPS, (lat(v) or 0.0) / HEADLINE_LATENCY))
    text += " → Not met."
    if near is not best:
        text += f" Closest to both (the smaller of FLOP speedup ÷ {HEADLINE_FLOPS:g} and bs-1 speedup ÷ "
        text += f"{HEADLINE_LATENCY:g} the largest): {brief(near)}."
    why = []
    if fs(near) < HEADLINE_FLOPS:
        part = f"FLOPs {fs(near):.2f}× < {HEADLINE_FLOPS:g}×"
        swept, bound = _sweep_best(near, base, HEADLINE_LOSS_PT), _oracle_bound(near, base)
        if swept is not None:
            part += f"; its own sweep on test reaches {swept:.2f}× at most within {HEADLINE_LOSS_PT:g} pt"
        if bound is not None:
            part += f"; an oracle policy on the same exits saves {bound:.2f}× at its accuracy" + (
                ", so no policy on these exits gets there at that accuracy" if bound < HEADLINE_FLOPS else ""
            )
        why.append(part)
    l_near = lat(near)
    if l_near is None:
        why.append("latency not measured at bs 1")
    elif l_near < HEADLINE_LATENCY:
        part = f"bs 1 {l_near:.2f}× < {HEADLINE_LATENCY:g}×"
        if fs(near) > 0 and l_near < fs(near):
            part += (
                f"; time falls less than FLOPs (bs-1 speedup ÷ FLOP speedup {l_near / fs(near):.2f}): the skipped "
                "layers cost less time than their FLOP share, or the exits' own overhead dominates"
            )
        why.append(part)
    return text + (f" Why ({_who(near)}): " + "; ".join(why) + "." if why else "")


def bolukbasi_reading(variants: Sequence[Variant], sizes: Sequence[int]) -> str:
    """The paragraph "Bolukbasi et al. 2017 here" (only with ``learned`` or ``cascade`` rows): (a) per ``learned``
    row, the learned policy vs the softmax threshold on the same exits at equal accuracy; (b) per ``cascade`` row,
    network selection vs the best early exit on the same chain at the Reading's target; (c) the headline check.
    Chain ``none`` first, then each compressed chain; every number from the rows."""
    exits = exit_variants(variants)
    ours = [v for v in exits if system_name(v.exit) in (LEARNED, CASCADE)]
    if not ours:
        return ""
    base = find_variant(variants, NONE, NONE, exits[0].device)
    title = "**Bolukbasi et al. 2017 here:**"
    if base is None or as_float(base.get("test_accuracy")) is None:
        return f"{title} no fp32 MainNet row, so nothing to compare the learned policy and network selection to."
    bs = best_batch_size(sizes)
    target, recorded = accuracy_target(variants)
    out = [title]
    for v in ours:
        if system_name(v.exit) == LEARNED:
            out.append(learned_vs_softmax(v, _softmax_twin(v, exits), base, bs))
    for v in ours:
        if is_cascade(v):
            out.append(selection_vs_early_exit(v, exits, base, bs, target, recorded))
    out.append(headline(exits, base, bs))
    return " ".join(out)


# ---------------------------------------------------------------------------------------------------
# EENets here: per trained EENet its placement, training, retrained backbone and test sweep, then each row's
# operating point against the original MainNet, the paper's headline and the SideNet on the same chain
# ---------------------------------------------------------------------------------------------------

EENET_PAPER_COST = 0.20  # Demir & Akbas 2024's headline: similar accuracy at 20% of the original computational cost
EENET_SIMILAR_PT = BEST_MAX_LOSS_PT  # "similar accuracy", read as ≤ 1 pt below the original MainNet on test


def _reference(v: Variant, base: Variant | None, own_key: str, base_key: str) -> float | None:
    """The original (fp32, uncompressed) MainNet's value as the row recorded it (``own_key``), else the fp32 MainNet
    row's (``base_key``): an EENet retrains the MainNet, so "original" is the network before that."""
    x = as_float(v.get(own_key))
    return x if x is not None or base is None else as_float(base.get(base_key))


def _chain_text(chain: Any) -> str | None:
    """```int8``` for a recorded chain; None for ``none``, missing or malformed."""
    return f"`{md_escape(chain)}`" if isinstance(chain, str) and chain not in ("", NONE) else None


def _numbers(x: Any) -> list[float] | None:
    if not isinstance(x, list) or not x:
        return None
    values = [as_float(c) for c in x]
    return None if any(c is None for c in values) else [c for c in values if c is not None]


_GROUP_KEYS = ("taps", "rule", "lam", "loss", "epochs", "lr", "trained_from")  # what makes one trained network


def _eenet_mode(v: Variant) -> str | None:
    """How the row's thresholds were set (``system_details.threshold_mode``: ``0.5`` the paper's rule, ``val``
    chosen on validation); None when missing or malformed."""
    details = system_details(v)
    mode = details.get("threshold_mode") if details is not None else None
    return mode if isinstance(mode, str) else None


def _eenet_order(v: Variant) -> tuple[bool, str, bool, str]:
    """Chain ``none`` first, then the compressed chains; on a chain the paper-rule row before the others."""
    return (v.chain != NONE, v.chain, _eenet_mode(v) != "0.5", v.exit)


def eenet_groups(rows: Sequence[Variant]) -> list[list[Variant]]:
    """The eenet rows grouped by the network they trained (the same ``system_details`` taps, rule, λ, loss, epochs,
    lr and starting chain: e.g. ``eenet`` and ``eenet:threshold=val`` on chains ``none`` and ``int8``), each group
    and each group's rows in :func:`_eenet_order`; a row without ``system_details`` is a group of its own."""
    groups: dict[str, list[Variant]] = {}
    for i, v in enumerate(sorted(rows, key=_eenet_order)):
        details = system_details(v)
        key = (
            json.dumps([details.get(k) for k in _GROUP_KEYS], sort_keys=True, default=str)
            if details is not None
            else f"row {i}"
        )
        groups.setdefault(key, []).append(v)
    return list(groups.values())


def _by_chain(rows: Sequence[Variant]) -> list[Variant]:
    """The first row on each chain, in row order."""
    seen: dict[str, Variant] = {}
    for v in rows:
        seen.setdefault(v.chain, v)
    return list(seen.values())


def _eenet_setup(rows: Sequence[Variant]) -> str:
    """``exits at taps layer1.0/layer1.1 (placement rule `fine`), 18.0% / 30.0% of the plain network's FLOPs up to
    each (exit block included); λ 1, loss v2, 1 epoch at lr 0.0001, training 12.3 s (backbone and exits together)``
    — what the rows' one trained network recorded (its first row's; training seconds as a range when they differ)."""
    v = rows[0]
    d = system_details(v) or {}
    taps = taps_of(v)
    if taps is None and isinstance(d.get("taps"), list) and all(isinstance(t, str) for t in d["taps"]):
        taps = tuple(d["taps"]) or None
    text = f"exits at {_taps_phrase(taps)}"
    if isinstance(d.get("rule"), str) and d["rule"]:
        text += f" (placement rule `{md_escape(d['rule'])}`)"
    costs = _numbers(d.get("exit_costs"))
    if costs is not None:
        text += f", {' / '.join(f'{100 * c:.1f}%' for c in costs)} of the plain network's FLOPs up to "
        text += "each (exit block included)" if len(costs) > 1 else "it (exit block included)"
    parts = []
    lam = as_float(d.get("lam"))
    if lam is not None:
        parts.append(f"λ {lam:g}")
    if isinstance(d.get("loss"), str) and d["loss"]:
        parts.append(f"loss {md_escape(d['loss'])}")
    epochs, lr = _as_int(d.get("epochs")), as_float(d.get("lr"))
    if epochs is not None:
        parts.append(f"{epochs} epoch{'' if epochs == 1 else 's'}" + (f" at lr {lr:g}" if lr is not None else ""))
    seconds = sorted({s for r in rows if (s := as_float(r.get("training_seconds"))) is not None and s >= 0})
    if not seconds:
        parts.append("training time not recorded")
    else:
        span = fmt_seconds(seconds[0]) + (f"–{fmt_seconds(seconds[-1])}" if len(seconds) > 1 else "")
        parts.append(f"training {span} s (backbone and exits together)")
    return text + "; " + ", ".join(parts)


def _eenet_backbone(rows: Sequence[Variant], base: Variant | None) -> str:
    """``Retrained backbone with exits off: 93.10% on test vs the original MainNet's 92.00% (+1.10 pt); after
    `int8`: 92.90% (+0.90 pt)``: what retraining (and each chain's compression after it) did to the network itself,
    apart from where inputs leave."""
    parts: list[str] = []
    said_reference = False
    for v in _by_chain(rows):
        details = system_details(v)
        acc = as_float(details.get("backbone_test_accuracy")) if details is not None else None
        post = _chain_text(details.get("post_chain")) if details is not None else None
        post = post or _chain_text(v.chain)
        where = f"after {post}: " if post else ""
        if acc is None:
            parts.append(f"{where}not recorded")
            continue
        ref_acc = _reference(v, base, "mainnet_test_accuracy", "test_accuracy")
        delta = None if ref_acc is None else 100.0 * (acc - ref_acc)
        if said_reference:
            parts.append(f"{where}{_pct(acc)} ({_pt(delta)})")
        else:
            parts.append(f"{where}{_pct(acc)} on test vs the original MainNet's {_pct(ref_acc)} ({_pt(delta)})")
            said_reference = True
    if not said_reference:
        return "The retrained backbone's own accuracy (exits off) is not recorded"
    return "Retrained backbone with exits off: " + "; ".join(parts)


def _eenet_similar(rows: Sequence[Variant], base: Variant | None) -> str:
    """The least FLOPs (share of the original MainNet's) at which the test sweep — over all thresholds, not a
    selected operating point — gets within EENET_SIMILAR_PT of the original MainNet's test accuracy: read off the
    paper-rule row's sweep (chain ``none`` first), else any row's; "n/a" when the sweep never gets there."""
    swept = [v for v in rows if sweep_points(v)]
    if not swept:
        return f"Within {EENET_SIMILAR_PT:g} pt of the original MainNet: n/a (no test sweep recorded)"
    v = next((r for r in swept if _eenet_mode(r) == "0.5"), swept[0])
    pts = sweep_points(v)
    head = f"Read off the test sweep of *{_who(v)}* (all thresholds, not a selected operating point): within "
    head += f"{EENET_SIMILAR_PT:g} pt of the original MainNet it needs "
    ref_acc = _reference(v, base, "mainnet_test_accuracy", "test_accuracy")
    ref_flops = _reference(v, base, "mainnet_flops_per_sample", "flops_per_sample")
    if ref_acc is None or ref_flops is None or ref_flops <= 0:
        return head + "n/a (the original MainNet's accuracy or FLOPs is not recorded)"
    needed = flops_at_accuracy(pts, ref_acc - EENET_SIMILAR_PT / 100)
    if needed is None:
        top = max(a for _, a in pts)
        return head + f"n/a: the sweep tops out at {_pct(top)} ({_pt(100.0 * (top - ref_acc))})"
    return head + f"≥ {100 * needed / ref_flops:.1f}% of the FLOPs (paper: {100 * EENET_PAPER_COST:g}%)"


def _eenet_collapse(rows: Sequence[Variant]) -> list[str]:
    """The collapse warning, once when every row says the same, else once per chain that flagged it."""
    flagged = [(v, c) for v in _by_chain(rows) if (c := collapse_of(v)) is not None]
    meanings = [collapse_meaning(v, c) for v, c in flagged]
    if not meanings:
        return []
    if len(flagged) == len(_by_chain(rows)) and len(set(meanings)) == 1:
        return [f"{NOISY_MARK} Collapsed: {meanings[0]}."]
    return [f"{NOISY_MARK} Collapsed {_on_chain(v.chain)}: {m}." for (v, _), m in zip(flagged, meanings, strict=True)]


def _eenet_how(v: Variant, paper_sibling: bool) -> str:
    """How the row's inputs leave: the paper's rule, thresholds chosen on validation (with where the paper's rule
    would send the test inputs when no paper-rule row on the chain says it), or nothing exits."""
    mode = _eenet_mode(v)
    if mode == "0.5":
        return "the paper's rule: exit at confidence ≥ 0.5"
    rate, threshold = as_float(v.get("exit_rate")), as_float(v.get("threshold"))
    if rate == 0 and threshold is not None and threshold > 1:
        target = as_float(v.get("target_loss_pt"))
        goal = f"the {target:g} pt target" if target is not None and target >= 0 else "the accuracy target"
        return f"nothing exits: no threshold met {goal} on validation"
    if mode == "val":
        text = "thresholds chosen on validation"
        details = system_details(v) or {}
        rule = details.get("paper_rule_exit_rates")
        rates = _numbers(rule.get("test")) if isinstance(rule, dict) and not paper_sibling else None
        if rates is not None:
            text += f"; the paper's rule would send {' / '.join(f'{100 * r:.1f}%' for r in rates)} of test inputs out"
        return text
    source = v.get("threshold_source")
    return f"thresholds: {md_escape(source)}" if isinstance(source, str) and source else "thresholds not recorded"


def _eenet_operating(v: Variant, base: Variant | None, bs: int | None) -> tuple[str, float | None, float | None]:
    """(text, Δ pt, FLOPs share): ``91.50% on test (-0.50 pt), 37.5% of the FLOPs, 1.80× (1.70–1.90)† at bs 1`` —
    accuracy, FLOPs and speedup against the original MainNet."""
    ref_acc = _reference(v, base, "mainnet_test_accuracy", "test_accuracy")
    ref_flops = _reference(v, base, "mainnet_flops_per_sample", "flops_per_sample")
    acc, flops = as_float(v.get("test_accuracy")), as_float(v.get("flops_per_sample"))
    delta = None if acc is None or ref_acc is None else 100.0 * (acc - ref_acc)
    share = flops / ref_flops if flops is not None and ref_flops is not None and ref_flops > 0 else None
    cost = f"{100 * share:.1f}% of the FLOPs" if share is not None else f"{fmt_flops(flops)} FLOP/sample"
    return f"{_pct(acc)} on test ({_pt(delta)}), {cost}, {_bs1(v, base, bs)}", delta, share


def _eenet_paper(delta: float | None, share: float | None) -> str:
    """The row against the paper's headline (≤ EENET_PAPER_COST of the FLOPs within EENET_SIMILAR_PT): ``met``,
    ``not met on FLOPs``, ``… on accuracy``, ``… on FLOPs and accuracy``."""
    head = "paper's headline: "
    if delta is None or share is None:
        return head + f"{DASH} (an accuracy or a FLOP count is missing)"
    cheap = share <= EENET_PAPER_COST + 1e-9
    similar = round(delta, 2) >= -EENET_SIMILAR_PT
    if cheap and similar:
        return head + "met"
    return head + "not met on " + " and ".join(p for p, ok in (("FLOPs", cheap), ("accuracy", similar)) if not ok)


def _eenet_vs_sidenet(v: Variant, sidenet: Variant | None) -> str:
    """The SideNet on the same chain: the FLOPs its test sweep needs for the EENet's test accuracy (interpolated)
    vs the EENet's FLOPs/sample, in one clause; "n/a" with the reason when there is no such reading."""
    if sidenet is None:
        return f"no `{SIDENET}` row on this chain to compare with"
    acc, mine = as_float(v.get("test_accuracy")), as_float(v.get("flops_per_sample"))
    if acc is None or mine is None or mine <= 0:
        return "SideNet comparison n/a: the EENet's accuracy or FLOPs is missing"
    pts = sweep_points(sidenet)
    if not pts:
        return "SideNet comparison n/a: no SideNet sweep recorded"
    needed = flops_at_accuracy(pts, acc)
    if needed is None:
        return f"SideNet comparison n/a: the SideNet's sweep tops out at {_pct(max(a for _, a in pts))}"
    ratio = needed / mine
    if ratio > 1 + EQUAL_FLOPS_TOL:
        return f"this EENet needs {ratio:.2f}× fewer FLOPs than the SideNet on the same chain at this accuracy"
    if ratio < 1 - EQUAL_FLOPS_TOL:
        return f"the SideNet on the same chain needs {1 / ratio:.2f}× fewer FLOPs at this accuracy"
    return f"the SideNet on the same chain needs the same FLOPs (±{100 * EQUAL_FLOPS_TOL:g}%) at this accuracy"


def eenet_row_reading(
    v: Variant, variants: Sequence[Variant], base: Variant | None, bs: int | None, paper_sibling: bool = False
) -> str:
    """One line on one eenet row: how it exits, its test accuracy, FLOPs share and speedup vs the original MainNet,
    the paper's headline and the SideNet on the same chain. ``paper_sibling``: a paper-rule row of the same trained
    network on the same chain is shown too (so a validation-selected row need not say where that rule sends inputs)."""
    operating, delta, share = _eenet_operating(v, base, bs)
    sidenet = _eenet_vs_sidenet(v, find_variant(variants, v.chain, SIDENET, v.device))
    return f"*{_who(v)}* ({_eenet_how(v, paper_sibling)}): {operating}; {_eenet_paper(delta, share)}; {sidenet}."


def _eenet_config(rows: Sequence[Variant], variants: Sequence[Variant], base: Variant | None, bs: int | None) -> str:
    """The bullet of one trained EENet (its setup, backbone, test-sweep reading and collapse warning, once) and one
    nested bullet per row."""
    first = rows[0]
    details = system_details(first)
    names = ", ".join(dict.fromkeys(f"`{md_escape(v.exit)}`" for v in rows))
    if details is not None:
        trained = _chain_text(details.get("trained_from"))
        head = f"**{names}** (EENet-trained from {trained or 'the fp32 MainNet'}): {_eenet_setup(rows)}."
    else:
        head = f"**{names}**: {_eenet_setup(rows)}; no system details recorded (older results)."
    sentences = [head, _eenet_backbone(rows, base) + ".", _eenet_similar(rows, base) + ".", *_eenet_collapse(rows)]
    lines = ["- " + " ".join(sentences)]
    for v in rows:
        sibling = any(r is not v and r.chain == v.chain and _eenet_mode(r) == "0.5" for r in rows)
        lines.append("  - " + eenet_row_reading(v, variants, base, bs, sibling))
    return "\n".join(lines)


def eenet_reading(variants: Sequence[Variant], sizes: Sequence[int]) -> str:
    """The "EENets here" block (only with ``eenet`` rows): a lead sentence (the paper's headline, how it is read),
    then one bullet per trained EENet (:func:`eenet_groups`) stating its setup once, with one nested line per row
    (chain ``none`` first, the paper-rule row first on a chain). Every number from the rows; speedups at bs 1 when
    timed there, else the smallest batch size."""
    exits = exit_variants(variants)
    ours = [v for v in exits if system_name(v.exit) == EENET]
    if not ours:
        return ""
    base = find_variant(variants, NONE, NONE, ours[0].device)
    bs = best_batch_size(sizes)
    lead = (
        f"**EENets here** (Demir & Akbas 2024: similar accuracy at {100 * EENET_PAPER_COST:g}% of the original "
        f'network\'s computational cost; "similar" read here as ≤ {EENET_SIMILAR_PT:g} pt below the original '
        "MainNet on test). An EENet retrains the MainNet, so every Δ and FLOPs share below is vs the original "
        "MainNet. Each trained EENet's setup is stated once, then one line per row; a row's SideNet comparison is "
        "the FLOPs the SideNet on the same chain needs for that row's test accuracy, read off the SideNet's test sweep."
    )
    return "\n\n".join([lead, "\n".join(_eenet_config(g, variants, base, bs) for g in eenet_groups(ours))])


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
