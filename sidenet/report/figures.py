"""The per-task figures that read every row alike: accuracy vs FLOPs, accuracy vs latency, the Pareto plot, and the
reliability diagram. Built on a given ``Axes`` (no pyplot state); :mod:`sidenet.report.plots` plans and writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from sidenet.report.numbers import as_float, latency_per_sample
from sidenet.report.pareto import pareto_front, pareto_points
from sidenet.report.readings import label_of, reading_of
from sidenet.report.variants import NONE, Variant, batch_sizes, best_batch_size

_CHOSEN = "chosen threshold (measured on test)"


def _label(v: Variant, variants: Sequence[Variant]) -> str:
    """Short legend name; the chain is only spelled out when the task has several."""
    name = "MainNet" if v.is_mainnet else v.exit
    return name if len({x.chain for x in variants}) == 1 else f"{name} [{v.chain}]"


def _flops_scale(variants: Sequence[Variant]) -> tuple[float, str]:
    biggest = max((as_float(v.get("flops_per_sample")) or 0.0 for v in variants), default=0.0)
    return (1e9, "GFLOP") if biggest >= 1e9 else (1e6, "MFLOP")


def sweep_of(v: Variant) -> dict[str, list[Any]] | None:
    s = v.get("sweep")
    return s if isinstance(s, dict) and s.get("threshold") else None


def xy_pairs(xs: Sequence[Any], ys: Sequence[Any]) -> tuple[list[float], list[float]]:
    """Drop points where either coordinate is missing, keeping the rest aligned."""
    pts = [
        (float(x), float(y))
        for x, y in zip(xs, ys, strict=False)
        if as_float(x) is not None and as_float(y) is not None
    ]
    return [p[0] for p in pts], [p[1] for p in pts]


def draw_accuracy_vs_flops(ax: Axes, variants: Sequence[Variant]) -> None:
    """Threshold sweep as a line per exit system; MainNet as a star, chosen threshold as a ring."""
    scale, unit = _flops_scale(variants)
    chains = list(dict.fromkeys(v.chain for v in variants))
    for v in variants:
        acc, flops = as_float(v.get("test_accuracy")), as_float(v.get("flops_per_sample"))
        color = f"C{chains.index(v.chain) % 10}"  # colour = chain; line style and marker = exit system
        if v.is_mainnet:
            if acc is not None and flops is not None:
                ax.plot(flops / scale, 100 * acc, "*", ms=14, color=color, label=_label(v, variants), zorder=3)
            continue
        sweep = sweep_of(v)
        if sweep is not None:
            xs, ys = xy_pairs(sweep.get("flops_per_sample") or [], sweep.get("test_accuracy") or [])
            pts = sorted(zip(xs, ys, strict=True))
            ax.plot(
                [x / scale for x, _ in pts],
                [100 * y for _, y in pts],
                linestyle=reading_of(v.exit).linestyle,
                marker=reading_of(v.exit).marker,
                ms=3,
                color=color,
                label=f"{_label(v, variants)} sweep",
            )
        if acc is not None and flops is not None and v.get("threshold_source") != "never-exit":
            # a ring, not a text label: with several chains the labels overlapped into an unreadable heap
            # (the thresholds themselves are in the report's operating-point tables)
            ringed = any(line.get_label() == _CHOSEN for line in ax.get_lines())
            ax.plot(
                flops / scale,
                100 * acc,
                "o",
                ms=11,
                mfc="none",
                mew=2,
                color="black",
                zorder=4,
                label="_nolegend_" if ringed else _CHOSEN,
            )
    ax.set_xlabel(f"FLOPs/sample ({unit})")
    ax.set_ylabel("test accuracy (%)")


def draw_accuracy_vs_latency(ax: Axes, variants: Sequence[Variant]) -> None:
    """Measured points per batch size; dashed estimate head_side + (1 − exit_rate(t)) × rest when timed."""
    colors = [f"C{i}" for i in range(10)]
    latencies: list[float] = []
    for i, bs in enumerate(batch_sizes(variants)):
        color = colors[i % len(colors)]
        estimated = False
        for v in variants:
            row = v.rows.get(bs)
            acc = as_float(v.get("test_accuracy"))
            if row is None or acc is None:
                continue
            lat = latency_per_sample(row) * 1e3
            latencies.append(lat)
            marker = reading_of(v.exit).marker
            ax.plot(
                lat,
                100 * acc,
                marker,
                ms=13 if v.is_mainnet else 8,
                color=color,
                markerfacecolor=color if v.chain == NONE else "none",  # hollow: a compressed chain
                markeredgewidth=1.5,
                zorder=3,
                label=f"bs {bs}: {_label(v, variants)} (measured)",
            )
            comp, sweep = row["extra_info"].get("component_latency_s"), sweep_of(v)
            if v.is_mainnet or not isinstance(comp, dict) or sweep is None or estimated:
                continue  # one estimated curve per batch size (the exit rows share the sweep)
            head_side, rest = as_float(comp.get("head_side")), as_float(comp.get("rest"))
            if head_side is None or rest is None:
                continue
            rates, accs = xy_pairs(sweep.get("exit_rate") or [], sweep.get("test_accuracy") or [])
            est = sorted(((head_side + (1.0 - r) * rest) * 1e3, 100 * a) for r, a in zip(rates, accs, strict=True))
            latencies.extend(x for x, _ in est)
            ax.plot(
                [x for x, _ in est],
                [y for _, y in est],
                "--",
                color=color,
                alpha=0.8,
                label=None if estimated else f"bs {bs}: {_label(v, variants)} estimated from component timings",
            )
            estimated = True
    _log_x_if_wide(ax, latencies, ratio=20)
    ax.set_xlabel("latency/sample (ms)")
    ax.set_ylabel("test accuracy (%)")


def _chain_name(chain: str) -> str:
    return "fp32" if chain == NONE else chain


def _log_x_if_wide(ax: Axes, xs: Sequence[float], ratio: float) -> None:
    positive = [x for x in xs if x > 0]
    if positive and max(positive) / min(positive) > ratio:
        log_x(ax)


def log_x(ax: Axes) -> None:
    """A log x axis labelled at 1, 2, 5 × 10^k in plain numbers: a range under a decade would otherwise show one
    label (or none), and minor labels collide."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def draw_pareto(ax: Axes, variants: Sequence[Variant]) -> None:
    """Accuracy vs latency/sample at bs 1 (else the smallest) for every chain × threshold, plus the Pareto front.

    Per chain: the sweep estimated from component timings (line), the MainNet alone (star, measured)
    and the selected threshold (ring, measured). The front is the upper-left envelope of all points.
    """
    bs = best_batch_size(batch_sizes(variants))
    if bs is None:
        return
    points = pareto_points(variants, bs)
    chains = list(dict.fromkeys(p.chain for p in points))
    for i, chain in enumerate(chains):
        color = f"C{i % 10}"
        mine = [p for p in points if p.chain == chain]
        est = sorted((p.latency_s * 1e3, 100 * p.accuracy) for p in mine if p.kind == "estimate")
        if est:
            ax.plot(
                [x for x, _ in est],
                [y for _, y in est],
                ".-",
                ms=4,
                color=color,
                alpha=0.8,
                label=f"{_chain_name(chain)} + SideNet (sweep, estimated)",
            )
        for p in mine:
            if p.kind == "mainnet":
                ax.plot(
                    p.latency_s * 1e3,
                    100 * p.accuracy,
                    "*",
                    ms=13,
                    color=color,
                    zorder=3,
                    label=f"{_chain_name(chain)} MainNet (measured)",
                )
            elif p.kind == "measured":
                ax.plot(
                    p.latency_s * 1e3,
                    100 * p.accuracy,
                    "o",
                    ms=9,
                    mfc="none",
                    mew=2,
                    color=color,
                    zorder=4,
                    label=f"{_chain_name(chain)} + SideNet (chosen, measured)",
                )
    front = pareto_front(points)
    if len(front) > 1:
        ax.step(
            [p.latency_s * 1e3 for p in front],
            [100 * p.accuracy for p in front],
            where="post",
            color="black",
            ls=":",
            lw=1.2,
            zorder=2,
            label="Pareto front",
        )
    _log_x_if_wide(ax, [p.latency_s * 1e3 for p in points], ratio=5)
    ax.set_xlabel(f"latency/sample at bs {bs} (ms)")
    ax.set_ylabel("test accuracy (%)")


def _reliability_curve(ax: Axes, curve: Any, label: str, style: str) -> None:
    if not isinstance(curve, dict):
        return
    counts = curve.get("count") or [1] * len(curve.get("confidence") or [])
    pts = [
        (float(c), float(a))
        for c, a, n in zip(curve.get("confidence") or [], curve.get("accuracy") or [], counts, strict=False)
        if as_float(c) is not None and as_float(a) is not None and (as_float(n) or 0) > 0
    ]
    if pts:
        ax.plot([c for c, _ in pts], [a for _, a in pts], style, label=label)


def draw_reliability(ax: Axes, variants: Sequence[Variant]) -> None:
    """Accuracy vs confidence per bin, MainNet and each SideNet; the diagonal is perfect calibration."""
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
    seen_main: set[str] = set()
    for v in variants:
        rel = v.get("reliability")
        if v.is_mainnet or not isinstance(rel, dict):
            continue
        suffix = "" if len({x.chain for x in variants}) == 1 else f" [{v.chain}]"
        if v.chain not in seen_main:
            seen_main.add(v.chain)
            ece = as_float(v.get("main_ece"))
            _reliability_curve(
                ax,
                rel.get("main"),
                f"MainNet{suffix}" + (f" (ECE {ece:.3f})" if ece is not None else ""),
                "s-",
            )
        ece = as_float(v.get("side_ece"))
        name = label_of(v.exit) or v.exit
        _reliability_curve(
            ax, rel.get("side"), f"{name}{suffix}" + (f" (ECE {ece:.3f})" if ece is not None else ""), "o-"
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
