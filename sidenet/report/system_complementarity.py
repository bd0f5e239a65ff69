"""Complementarity of every exit system with every compressed chain it ran on (one table per device)."""

from __future__ import annotations

from collections.abc import Sequence

from sidenet.report.complementarity import (
    COMPLEMENTARY_AT,
    PARTLY_AT,
    SUPER_ADDITIVE_ABOVE,
    Quad,
    complementarity,
    complementarity_missing,
    complementarity_quads,
    flop_complementarity,
    fmt_complementarity,
    verdict_word,
)
from sidenet.report.exit_rows import system_specs
from sidenet.report.formatting import DASH, NOISY_MARK, UNPAIRED_MARK, Table, fmt_pt, fmt_ratio, md_escape
from sidenet.report.numbers import NOISY_REL_IQR, Speedup, delta_acc_pt, flop_speedup, speedup
from sidenet.report.variants import Variant


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
