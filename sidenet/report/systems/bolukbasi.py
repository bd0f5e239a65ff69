"""Bolukbasi et al. 2017 (``learned``: a learned policy at each exit; ``cascade``: network selection, a small
network first, the MainNet for the rest): their readings, the table footnote and the "Bolukbasi et al. 2017 here"
paragraph — (a) learned policy vs softmax threshold at equal accuracy, (b) network selection vs early exit, (c) the
headline check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sidenet.report.complementarity import BEST_MAX_LOSS_PT
from sidenet.report.exit_rows import (
    exit_variants,
    network_selection,
    per_exit_rates,
    placement_phrase,
    small_network,
    taps_of,
)
from sidenet.report.formatting import DASH, fmt_flops, fmt_params
from sidenet.report.numbers import as_float, flop_speedup, speedup
from sidenet.report.oracle import oracle_of
from sidenet.report.prose import (
    EQUAL_FLOPS_TOL,
    accuracy_target,
    brief_row,
    flops_at_accuracy,
    on_chain,
    operating_text,
    pct_text,
    sweep_points,
    who_of,
    within_target,
)
from sidenet.report.readings import Family, SystemReading, reading_of, readings, register_reading, system_name
from sidenet.report.variants import NONE, Variant, best_batch_size, find_variant

LEARNED = "learned"  # adaptive early exit: a learned policy at each exit
CASCADE = "cascade"  # network selection: a small network first, the MainNet for the rest
HEADLINE_FLOPS = 2.8  # Bolukbasi et al. 2017's headline: 2.8× fewer FLOPs than the full network ...
HEADLINE_LATENCY = 2.0  # ... and the project's goal: 2× lower latency at bs 1 ...
HEADLINE_LOSS_PT = BEST_MAX_LOSS_PT  # ... at ≤ 1 pt accuracy loss on test


def _op_flops(v: Variant) -> float | None:
    """The operating point's FLOPs as its sweep counts them (``predicted_flops_per_sample``, from the same trace),
    else the measured FLOPs."""
    for key in ("predicted_flops_per_sample", "flops_per_sample"):
        x = as_float(v.get(key))
        if x is not None and x > 0:
            return x
    return None


def _softmax_twin(learned: Variant, rows: Sequence[Variant]) -> Variant | None:
    """The softmax-threshold system on the same placement and chain as a ``learned`` row: the first by
    ``softmax_rank`` of the readings that have one (``sidenet-multi``, else ``sidenet``) with the same taps and the
    softmax policy."""
    taps = taps_of(learned)
    if taps is None:
        return None
    ranked = sorted((r for r in readings() if r.softmax_rank is not None), key=lambda r: r.softmax_rank or 0)
    for name in (r.name for r in ranked):
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
        head = f"at {pct_text(self.accuracy)} ({who_of(self.at)}'s operating point, {fmt_flops(self.own)}/sample) "
        if not self.swept:
            return head + f"{who_of(self.other)} recorded no sweep"
        if self.needed is None:
            top = max((a for _, a in sweep_points(self.other)), default=None)
            return head + f"{who_of(self.other)}'s sweep never gets there (at most {pct_text(top)})"
        text = head + f"{who_of(self.other)}'s sweep needs {fmt_flops(self.needed)}/sample: "
        w = self.winner()
        if not isinstance(w, Variant):
            return text + f"the same within {100 * EQUAL_FLOPS_TOL:g}%"
        ratio = self.needed / self.own if w is self.at else self.own / self.needed
        return text + f"{who_of(w)} needs {ratio:.2f}× fewer"


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
    head = f"*Learned policy vs softmax threshold* ({placement_phrase(learned)}, {on_chain(learned.chain)}): "
    text = head + f"{who_of(learned)} at {operating_text(learned, base, bs)}"
    if softmax is None:
        return text + "; no softmax-threshold row on the same exits to compare with."
    text += f"; {who_of(softmax)} at {operating_text(softmax, base, bs)}."
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
    text = f"*Network selection vs early exit* ({on_chain(cascade.chain)}; {budget}): {who_of(cascade)} at "
    text += operating_text(cascade, base, bs)
    rates = per_exit_rates(cascade)
    share = rates[0] if rates else as_float(cascade.get("exit_rate"))
    if share is not None:
        text += f", the {small_network(cascade)} answering {100 * share:.1f}% of inputs alone"
    params, main_params = as_float(cascade.get("params")), as_float(base.get("params"))
    if params is not None:
        text += f", {fmt_params(params)} parameters in both networks"
        text += f" (MainNet {fmt_params(main_params)})" if main_params is not None else ""
    text += "."
    early = [v for v in rows if v.chain == cascade.chain and reading_of(v.exit).within_one_network]
    within = [v for v in early if within_target(v, base, target) and flop_speedup(v, base) is not None]
    best = max(within, key=lambda v: flop_speedup(v, base) or 0.0) if within else None
    mine_ok = within_target(cascade, base, target)
    if best is not None:
        text += f" Best early exit within the target: {brief_row(best, base, bs)}."
    if best is None and not early:
        return text + " No early-exit row on this chain to compare with."
    if not mine_ok and best is None:
        text += " → Neither stays within the target on test."
    elif not mine_ok:
        text += f" → Early exit within one network wins at this budget: {who_of(cascade)} misses the target on test."
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
        text += f" At exactly the target ({pct_text(goal)}) the sweeps need: {who_of(cascade)} "
        text += f"{fmt_flops(f_mine)}/sample" if f_mine is not None else "never gets there"
        text += f", the cheapest early exit {who_of(v_best)} {fmt_flops(f_best)}/sample."
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
        faster = who_of(best) if s_best.value >= s_mine.value else who_of(cascade)
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
    within = [v for v in exits if within_target(v, base, HEADLINE_LOSS_PT) and flop_speedup(v, base) is not None]
    if not within:
        return text + f"no exit system with a FLOP count stays within {HEADLINE_LOSS_PT:g} pt on test."
    at = 1 if bs == 1 else None

    def fs(v: Variant) -> float:
        return flop_speedup(v, base) or 0.0

    def lat(v: Variant) -> float | None:
        s = speedup(v, base, 1) if at is not None else None
        return s.value if s is not None else None

    def brief(v: Variant) -> str:
        return brief_row(v, base, at)

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
    return text + (f" Why ({who_of(near)}): " + "; ".join(why) + "." if why else "")


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
        if network_selection(v):
            out.append(selection_vs_early_exit(v, exits, base, bs, target, recorded))
    out.append(headline(exits, base, bs))
    return " ".join(out)


def _mentions(v: Variant) -> bool:
    """A row the footnote is about: ``learned`` or ``cascade``, or any system deciding with the learned policy."""
    return system_name(v.exit) in (LEARNED, CASCADE) or v.get("policy") == LEARNED


FOOTNOTE = (
    f"`{LEARNED}` and `{CASCADE}` (Bolukbasi et al. 2017): a policy learned on the training split decides at "
    "each exit; their threshold applies to that policy's score (P(leave here)), not to a softmax confidence. "
    f"`{LEARNED}` has a SideNet at each tap, its training (s) = the SideNets' + fitting the policy. "
    f"`{CASCADE}` is network selection: the small network (by default the task's distilled student) answers "
    "every input first, the MainNet runs only for the inputs the policy sends on; its exit rate is the share "
    "the small network answers, its FLOPs count both networks, and its training (s) is fitting the policy "
    "only — the small network is trained (and cached) as its own compressor chain, at a cost not counted here."
)
BOLUKBASI = Family("bolukbasi", order=1, mentions=_mentions, footnote=FOOTNOTE, paragraph=bolukbasi_reading)

register_reading(SystemReading(LEARNED, order=2, within_one_network=True, marker="^", linestyle="-.", family=BOLUKBASI))
register_reading(SystemReading(CASCADE, order=3, network_selection=True, marker="D", linestyle=":", family=BOLUKBASI))
