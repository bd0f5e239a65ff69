"""The exit-system comparison table of one device: every system with exits at its validation-selected operating
point, the fp32 MainNet first, the oracle rows of each placement; footnotes per system family from the registry.
"""

from __future__ import annotations

from collections.abc import Sequence

from sidenet.report.exit_rows import (
    COLLAPSED,
    RETRAINS,
    collapse_meaning,
    collapse_of,
    exit_variants,
    fmt_exit_rates,
    fmt_placement,
    fmt_seconds,
    fmt_threshold_of,
    system_cell,
    taps_of,
)
from sidenet.report.formatting import (
    AA_FOOTNOTE,
    AA_MARK,
    DASH,
    NOISY_MARK,
    PAIRED_FOOTNOTE,
    PAIRED_MARK,
    UNPAIRED_MARK,
    Table,
    fmt_flops,
    fmt_latency,
    fmt_pct,
    fmt_pt,
    fmt_ratio,
    fmt_reference,
    fmt_speedup_marked,
    md_escape,
)
from sidenet.report.numbers import (
    NOISY_REL_IQR,
    aa_noise_floor,
    as_float,
    delta_acc_pt,
    flop_speedup,
    is_noisy,
    speedup,
)
from sidenet.report.oracle import (
    AGREES,
    FIRST_RIGHT,
    NOT_TIMED,
    OraclePoint,
    flops_vs_oracle,
    oracle_points,
    point_placement,
)
from sidenet.report.prose import who_of
from sidenet.report.readings import families
from sidenet.report.variants import NONE, Variant, find_variant

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
        cells += [fmt_latency(row), fmt_speedup_marked(s, noisy)]
    return [*cells, fmt_seconds(v.get("training_seconds")), fmt_ratio(flops_vs_oracle(v))]


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
    for family in families():  # each paper's note, once, where any of its rows is in the table
        if any(family.mentions(v) for v in exits):
            notes.append(family.footnote)
    for v in exits:
        collapse = collapse_of(v)
        if collapse is not None:
            notes.append(f"{COLLAPSED} ({who_of(v)}): {collapse_meaning(v, collapse)}.")
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
