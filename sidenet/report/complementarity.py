"""The headline: does the SideNet still pay off on a compressed MainNet? Quads (fp32 MainNet, chain C alone,
SideNet alone, C + SideNet), their complementarity, verdicts, the best chain and the four-row tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
    fmt_text,
    md_escape,
)
from sidenet.report.numbers import NOISY_REL_IQR, Speedup, aa_noise_floor, as_float, flop_speedup, is_noisy, speedup
from sidenet.report.readings import label_of
from sidenet.report.variants import NONE, Variant, compressed_chains, devices, dtype_of, find_variant

HEADLINE_SYSTEM = "sidenet"  # the exit system the complementarity headline asks about (chain × SideNet)
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
    system: str = HEADLINE_SYSTEM  # the exit system (its canonical spec): ``side`` and ``both`` are its rows

    @property
    def system_label(self) -> str:
        """How the tables name the system: its reading's label for its default config ("SideNet" for ``sidenet``),
        else its spec in backticks."""
        return label_of(self.system) or f"`{md_escape(self.system)}`"


def complementarity_quads(variants: Sequence[Variant], system: str = HEADLINE_SYSTEM) -> list[Quad]:
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


def verdict(c: Complementarity | None, missing: Sequence[str] = (), system: str = HEADLINE_SYSTEM) -> str:
    """One phrase from the measured number (compared as displayed, two decimals); ⚠ when its timings are noisy.
    ``system`` names the exit system in the explanation ("the SideNet" for ``sidenet``)."""
    if c is None:
        return f"{DASH} ({', '.join(missing)})" if missing else f"{DASH} (a speedup is missing)"
    v = round(c.value, 2)
    word = verdict_word(c)
    label = label_of(system)
    who, exits = (f"the {label}", f"the {label}'s exit saves") if label else (f"`{system}`", f"`{system}` saves")
    if word == "super-additive":
        text = f"super-additive ({v:.2f} > {SUPER_ADDITIVE_ABOVE:g}): {who} saves more on the compressed MainNet"
    elif word == "complementary":
        text = f"complementary ({v:.2f} ≥ {COMPLEMENTARY_AT:g})"
    elif word == "partly complementary":
        text = f"partly complementary ({v:.2f})"
    else:
        text = f"overlapping ({v:.2f}): {exits} less on the compressed MainNet"
    return text + (f" {NOISY_MARK} noisy" if c.noisy else "")


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
            cells.append(fmt_speedup_marked(s, noisy=v is not None and _involved_noisy(quad, bs, [v])))
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
