"""EENets (Demir & Akbas 2024; ``eenet``): exits with a confidence branch trained jointly with the MainNet. The
reading, the table footnote and the "EENets here" paragraph: per trained EENet its placement, training, retrained
backbone and test sweep, then each row's operating point against the original MainNet, the paper's headline and the
SideNet on the same chain.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sidenet.report.complementarity import BEST_MAX_LOSS_PT
from sidenet.report.exit_rows import (
    RETRAINS,
    as_int,
    collapse_meaning,
    collapse_of,
    exit_variants,
    fmt_seconds,
    system_details,
    taps_of,
    taps_phrase,
)
from sidenet.report.formatting import DASH, NOISY_MARK, fmt_flops, md_escape
from sidenet.report.numbers import as_float
from sidenet.report.prose import (
    EQUAL_FLOPS_TOL,
    flops_at_accuracy,
    on_chain,
    pct_text,
    pt_text,
    speedup_at,
    sweep_points,
    who_of,
)
from sidenet.report.readings import Family, SystemReading, register_reading, system_name
from sidenet.report.systems.sidenet import SIDENET
from sidenet.report.variants import NONE, Variant, best_batch_size, find_variant

EENET = "eenet"
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
    text = f"exits at {taps_phrase(taps)}"
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
    epochs, lr = as_int(d.get("epochs")), as_float(d.get("lr"))
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
            parts.append(f"{where}{pct_text(acc)} ({pt_text(delta)})")
        else:
            parts.append(
                f"{where}{pct_text(acc)} on test vs the original MainNet's {pct_text(ref_acc)} ({pt_text(delta)})"
            )
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
    head = f"Read off the test sweep of *{who_of(v)}* (all thresholds, not a selected operating point): within "
    head += f"{EENET_SIMILAR_PT:g} pt of the original MainNet it needs "
    ref_acc = _reference(v, base, "mainnet_test_accuracy", "test_accuracy")
    ref_flops = _reference(v, base, "mainnet_flops_per_sample", "flops_per_sample")
    if ref_acc is None or ref_flops is None or ref_flops <= 0:
        return head + "n/a (the original MainNet's accuracy or FLOPs is not recorded)"
    needed = flops_at_accuracy(pts, ref_acc - EENET_SIMILAR_PT / 100)
    if needed is None:
        top = max(a for _, a in pts)
        return head + f"n/a: the sweep tops out at {pct_text(top)} ({pt_text(100.0 * (top - ref_acc))})"
    return head + f"≥ {100 * needed / ref_flops:.1f}% of the FLOPs (paper: {100 * EENET_PAPER_COST:g}%)"


def _eenet_collapse(rows: Sequence[Variant]) -> list[str]:
    """The collapse warning, once when every row says the same, else once per chain that flagged it."""
    flagged = [(v, c) for v in _by_chain(rows) if (c := collapse_of(v)) is not None]
    meanings = [collapse_meaning(v, c) for v, c in flagged]
    if not meanings:
        return []
    if len(flagged) == len(_by_chain(rows)) and len(set(meanings)) == 1:
        return [f"{NOISY_MARK} Collapsed: {meanings[0]}."]
    return [f"{NOISY_MARK} Collapsed {on_chain(v.chain)}: {m}." for (v, _), m in zip(flagged, meanings, strict=True)]


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
    return f"{pct_text(acc)} on test ({pt_text(delta)}), {cost}, {speedup_at(v, base, bs)}", delta, share


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
        return f"SideNet comparison n/a: the SideNet's sweep tops out at {pct_text(max(a for _, a in pts))}"
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
    return f"*{who_of(v)}* ({_eenet_how(v, paper_sibling)}): {operating}; {_eenet_paper(delta, share)}; {sidenet}."


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


FOOTNOTE = (
    f"`{EENET}` (EENets, Demir & Akbas 2024): exit blocks with a confidence branch, trained jointly with the "
    f"MainNet under a cost-aware loss, so the backbone itself is retrained ({RETRAINS}); its training (s) "
    "covers the backbone and the exits. See the EENets paragraph below the table."
)
EENETS = Family(
    "eenet", order=2, mentions=lambda v: system_name(v.exit) == EENET, footnote=FOOTNOTE, paragraph=eenet_reading
)

register_reading(SystemReading(EENET, family=EENETS))
