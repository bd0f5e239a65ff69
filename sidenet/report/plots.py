"""Per-task figures for the report: accuracy vs FLOPs, accuracy vs latency, reliability diagram, (with
compressor chains) the accuracy-vs-latency Pareto plot over every chain × threshold, and (with several exit
systems or oracle bounds) accuracy vs FLOPs per exit system with the oracle points.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot): no global backend or figure
state, so reports can be rendered from tests, threads or a headless box. Which plots exist is decided
by :func:`plan_plots` alone, so the Markdown links and the written files always agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from sidenet.report.exit_systems import (
    exit_variants,
    has_exits,
    is_cascade,
    oracle_points,
    point_placement,
    system_specs,
)
from sidenet.report.tables import (
    NONE,
    Variant,
    as_float,
    batch_sizes,
    best_batch_size,
    compressed_chains,
    devices,
    group_by_task,
    latency_per_sample,
    pareto_front,
    pareto_points,
)
from sidenet_core import atomic

DPI = 110
FIGSIZE = (6.4, 4.4)
LEGEND_ROW_IN = 0.16  # figure height added per legend row: the legend goes below the axes, never over the data
_CHOSEN = "chosen threshold (measured on test)"
KINDS = ("pareto", "exit_systems", "flops", "latency", "reliability")
EXIT_SYSTEMS_FIGSIZE = (7.4, 5.0)
ZOOM_PT = 10.0  # the exit-systems plot shows accuracy from the fp32 MainNet − this many points up
SWEEP_LW_STEP = 0.6  # exit-systems plot: each earlier system's fp32 sweep this much wider (points) ...
POINT_MS_STEP = 1.6  # ... and its operating point this much larger, so coinciding systems stay visible


@dataclass(frozen=True)
class PlotSpec:
    """A figure to write: its file name (inside the plot folder), caption and drawing function."""

    task: str
    kind: str
    filename: str
    caption: str
    draw: Callable[[Axes, Sequence[Variant]], None]
    variants: tuple[Variant, ...]
    device: str | None = None  # the device whose rows it shows, when the figure is per device
    title: str | None = None  # the axes title when shorter than the caption (default: the caption)
    figsize: tuple[float, float] = FIGSIZE


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "task"


def _label(v: Variant, variants: Sequence[Variant]) -> str:
    """Short legend name; the chain is only spelled out when the task has several."""
    name = "MainNet" if v.is_mainnet else v.exit
    return name if len({x.chain for x in variants}) == 1 else f"{name} [{v.chain}]"


def _flops_scale(variants: Sequence[Variant]) -> tuple[float, str]:
    biggest = max((as_float(v.get("flops_per_sample")) or 0.0 for v in variants), default=0.0)
    return (1e9, "GFLOP") if biggest >= 1e9 else (1e6, "MFLOP")


def _sweep(v: Variant) -> dict[str, list[Any]] | None:
    s = v.get("sweep")
    return s if isinstance(s, dict) and s.get("threshold") else None


def _pairs(xs: Sequence[Any], ys: Sequence[Any]) -> tuple[list[float], list[float]]:
    """Drop points where either coordinate is missing, keeping the rest aligned."""
    pts = [
        (float(x), float(y))
        for x, y in zip(xs, ys, strict=False)
        if as_float(x) is not None and as_float(y) is not None
    ]
    return [p[0] for p in pts], [p[1] for p in pts]


# ---------------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------------


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
        sweep = _sweep(v)
        if sweep is not None:
            xs, ys = _pairs(sweep.get("flops_per_sample") or [], sweep.get("test_accuracy") or [])
            pts = sorted(zip(xs, ys, strict=True))
            system = v.exit.split(":")[0]
            ax.plot(
                [x / scale for x, _ in pts],
                [100 * y for _, y in pts],
                linestyle=EXIT_LINESTYLES.get(system, "-"),
                marker=EXIT_MARKERS.get(system, "P"),
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


# one marker per exit system (colour = batch size, hollow = a compressed chain), so every point can be told apart
EXIT_MARKERS = {
    "none": "*",
    "sidenet": "o",
    "sidenet-noexit": "X",
    "sidenet-multi": "s",
    "learned": "^",
    "cascade": "D",
}
EXIT_LINESTYLES = {"sidenet": "-", "sidenet-noexit": ":", "sidenet-multi": "--", "learned": "-.", "cascade": ":"}


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
            marker = EXIT_MARKERS.get(v.exit.split(":")[0], "P")
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
            comp, sweep = row["extra_info"].get("component_latency_s"), _sweep(v)
            if v.is_mainnet or not isinstance(comp, dict) or sweep is None or estimated:
                continue  # one estimated curve per batch size (the exit rows share the sweep)
            head_side, rest = as_float(comp.get("head_side")), as_float(comp.get("rest"))
            if head_side is None or rest is None:
                continue
            rates, accs = _pairs(sweep.get("exit_rate") or [], sweep.get("test_accuracy") or [])
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


_CHAIN_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))


def _fp32_mainnet(variants: Sequence[Variant]) -> Variant | None:
    return next((v for v in variants if v.chain == NONE and v.is_mainnet), None)


def _exit_system_points(variants: Sequence[Variant]) -> list[tuple[float, float]]:
    """Every (FLOPs/sample, accuracy) the exit-systems plot draws, in data units (FLOPs, fraction)."""
    pts: list[tuple[float, float]] = []
    for v in variants:
        acc, flops = as_float(v.get("test_accuracy")), as_float(v.get("flops_per_sample"))
        if (v.is_mainnet or has_exits(v)) and acc is not None and flops is not None:
            pts.append((flops, acc))
    for v in exit_variants(variants):
        sweep = _sweep(v)
        if sweep is not None:
            pts += list(
                zip(*_pairs(sweep.get("flops_per_sample") or [], sweep.get("test_accuracy") or []), strict=True)
            )
    pts += [(p.flops_per_sample, p.accuracy) for p in oracle_points(variants) if p.flops_per_sample and p.accuracy]
    return [(x, y) for x, y in pts if x > 0]


def exit_systems_floor(variants: Sequence[Variant]) -> float | None:
    """The lowest accuracy (%) the exit-systems plot shows when that cuts points off: the fp32 MainNet − ZOOM_PT."""
    main = _fp32_mainnet(variants)
    acc = as_float(main.get("test_accuracy")) if main is not None else None
    if acc is None:
        return None
    floor = 100 * acc - ZOOM_PT
    return floor if any(100 * y < floor for _, y in _exit_system_points(variants)) else None


def _taps_text(taps: Sequence[str]) -> str:
    return f"tap{'s' if len(taps) > 1 else ''} {'/'.join(taps)}" if taps else "taps not recorded"


def _oracle_placement(p: Any) -> str:
    """``taps layer1/layer2``; a network selection's ``small network → MainNet`` (plain text: no Markdown)."""
    if is_cascade(p.variant):
        return point_placement(p).replace("`", "").replace(chr(92) + "|", "|")
    return _taps_text(p.taps)


def draw_exit_systems(ax: Axes, variants: Sequence[Variant]) -> None:
    """Accuracy vs FLOPs/sample per exit system: its sweep over thresholds on test (solid on the fp32 MainNet,
    dashed or dotted on each compressed chain), its validation-selected operating point (filled on the fp32
    MainNet, hollow on a compressed chain), the MainNets (stars) and each exit placement's oracle points
    (triangle: first right exit, diamond: agrees with the MainNet) in the colour of the system that placed them."""
    biggest = max((x for x, _ in _exit_system_points(variants)), default=0.0)
    scale, unit = (1e9, "GFLOP") if biggest >= 1e9 else (1e6, "MFLOP")
    specs = system_specs(variants)
    colors = {spec: f"C{i % 10}" for i, spec in enumerate(specs)}
    # systems whose curves and operating points coincide (a learned policy on the softmax system's heads often
    # lands on it): earlier systems are drawn wider and larger underneath, so each stays visible as a rim
    under = {spec: len(specs) - 1 - i for i, spec in enumerate(specs)}
    chains = list(dict.fromkeys(v.chain for v in exit_variants(variants) if v.chain != NONE))
    styles = {NONE: "-", **{c: _CHAIN_STYLES[i % len(_CHAIN_STYLES)] for i, c in enumerate(chains)}}
    for v in exit_variants(variants):
        sweep, color, plain = _sweep(v), colors[v.exit], v.chain == NONE
        name = v.exit if plain else f"{v.exit} [{v.chain}]"
        if sweep is not None:
            pts = sorted(
                zip(*_pairs(sweep.get("flops_per_sample") or [], sweep.get("test_accuracy") or []), strict=True)
            )
            ax.plot(
                [x / scale for x, _ in pts],
                [100 * y for _, y in pts],
                ls=styles[v.chain],
                lw=(1.4 + SWEEP_LW_STEP * under[v.exit]) if plain else 1.2,
                alpha=1.0 if plain else 0.75,
                color=color,
                zorder=2 + 0.01 * (len(specs) - under[v.exit]),
                label=f"{name}: sweep",
            )
        acc, flops = as_float(v.get("test_accuracy")), as_float(v.get("flops_per_sample"))
        if acc is not None and flops is not None:
            ax.plot(
                flops / scale,
                100 * acc,
                "o",
                ms=8 + POINT_MS_STEP * under[v.exit],
                color=color,
                mfc=color if plain else "white",
                mec="black" if plain else color,
                mew=1.0 if plain else 2.0,
                zorder=4 + 0.01 * (len(specs) - under[v.exit]),
                label="_nolegend_" if sweep is not None else f"{name}: operating point",
            )
    for v in variants:
        acc, flops = as_float(v.get("test_accuracy")), as_float(v.get("flops_per_sample"))
        if not v.is_mainnet or acc is None or flops is None:
            continue
        plain = v.chain == NONE  # a compressed MainNet is a larger hollow star: the fp32 one stays visible inside
        ax.plot(
            flops / scale,
            100 * acc,
            "*",
            ms=13 if plain else 19,
            color="black" if plain else "none",
            mec="black" if plain else "dimgray",
            mew=1.0 if plain else 1.2,
            zorder=6 if plain else 5,
            label="fp32 MainNet" if plain else "_nolegend_",
        )
        if not plain:  # a legend-sized proxy: the big hollow star would crowd the legend's rows
            ax.plot([], [], "*", ms=12, color="none", mec="dimgray", mew=1.2, label=f"MainNet [{v.chain}]")
    for p in oracle_points(variants):
        if p.accuracy is None or p.flops_per_sample is None:
            continue
        ax.plot(
            p.flops_per_sample / scale,
            100 * p.accuracy,
            "^" if p.kind == "first_correct" else "D",
            ms=11 if p.kind == "first_correct" else 6,  # both stay visible where the two points coincide
            color=colors.get(p.systems[0], "gray"),
            mec="black",
            mew=1.0,
            zorder=6,
            label=f"{p.label.replace(chr(92) + '|', '|')} [{_oracle_placement(p)}]",
        )
    # legend proxies (no data): what the operating-point markers mean
    if any(v.chain == NONE for v in exit_variants(variants)):
        ax.plot([], [], "o", ms=8, color="gray", mec="black", label="operating point (chosen on validation)")
    if chains:
        ax.plot([], [], "o", ms=8, mfc="white", mec="gray", mew=2.0, label="operating point, compressed chain")
    _exit_systems_limits(ax, variants, scale)
    ax.set_xlabel(f"FLOPs/sample ({unit})")
    ax.set_ylabel("test accuracy (%)")


def _exit_systems_limits(ax: Axes, variants: Sequence[Variant], scale: float) -> None:
    """Zoom on the interesting region: accuracy from max(lowest point, fp32 MainNet − ZOOM_PT) to the highest point;
    FLOPs over the points inside that band (log when they span more than 8×)."""
    pts = _exit_system_points(variants)
    if not pts:
        return
    floor = exit_systems_floor(variants)
    ys = [100 * y for _, y in pts]
    lo = max(min(ys), floor) if floor is not None else min(ys)
    hi = max(ys)
    pad = max(0.3, 0.06 * (hi - lo))
    ax.set_ylim(lo - pad, min(hi + pad, 100.0 + pad))
    xs = [x / scale for x, y in pts if 100 * y >= lo - pad]
    if not xs:
        return
    x_lo, x_hi = min(xs), max(xs)
    if x_hi / x_lo > 8:
        log_x(ax)
        ax.set_xlim(x_lo / 1.15, x_hi * 1.15)
    else:
        margin = 0.05 * (x_hi - x_lo) or 0.05 * x_hi
        ax.set_xlim(max(0.0, x_lo - margin), x_hi + margin)


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
        name = "SideNet" if v.exit == "sidenet" else v.exit
        _reliability_curve(
            ax, rel.get("side"), f"{name}{suffix}" + (f" (ECE {ece:.3f})" if ece is not None else ""), "o-"
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")


# ---------------------------------------------------------------------------------------------------
# Planning and writing
# ---------------------------------------------------------------------------------------------------


def _has_reliability(v: Variant) -> bool:
    rel = v.get("reliability")
    return not v.is_mainnet and isinstance(rel, dict) and any(isinstance(rel.get(k), dict) for k in ("main", "side"))


def _wants_exit_systems_plot(variants: Sequence[Variant]) -> bool:
    """Only where it shows more than the accuracy-vs-FLOPs plot: several exit systems, or oracle points."""
    exits = exit_variants(variants)
    drawable = [v for v in exits if _sweep(v) is not None or as_float(v.get("flops_per_sample")) is not None]
    return bool(drawable) and (len(system_specs(exits)) > 1 or bool(oracle_points(variants)))


def plan_plots(results: dict[str, Any]) -> list[PlotSpec]:
    """The figures this data supports, in report order; a plot whose data is absent is simply not planned."""
    specs: list[PlotSpec] = []
    used: set[str] = set()
    for task, variants in group_by_task(results).items():
        slug = _slug(task)
        while slug in used:
            slug += "_"
        used.add(slug)
        vs = tuple(variants)
        if compressed_chains(vs):  # the Pareto plot belongs to the complementarity headline
            several = len(devices(vs)) > 1
            for device in devices(vs):
                mine = tuple(v for v in vs if v.device == device)
                if not compressed_chains(mine):
                    continue
                suffix = f"_{_slug(device)}" if several else ""
                specs.append(
                    PlotSpec(
                        task,
                        "pareto",
                        f"{slug}{suffix}_pareto.png",
                        "accuracy vs latency, every chain × threshold, Pareto front"
                        + (f" ({device})" if several else ""),
                        draw_pareto,
                        mine,
                    )
                )
        several = len(devices(vs)) > 1
        for device in devices(vs):
            mine = tuple(v for v in vs if v.device == device)
            if not _wants_exit_systems_plot(mine):
                continue
            suffix = f"_{_slug(device)}" if several else ""
            floor = exit_systems_floor(mine)
            cut = f"; accuracy axis from the fp32 MainNet − {ZOOM_PT:g} pt ({floor:.1f}%)" if floor is not None else ""
            specs.append(
                PlotSpec(
                    task,
                    "exit_systems",
                    f"{slug}{suffix}_exit_systems.png",
                    "accuracy vs FLOPs/sample per exit system: threshold sweep on test (solid: fp32 MainNet; "
                    "dashed/dotted: compressed chains), operating points chosen on validation, MainNets (stars), "
                    f"oracle bounds per exit placement (triangle: first right exit; diamond: agrees with MainNet){cut}"
                    + (f" ({device})" if several else ""),
                    draw_exit_systems,
                    mine,
                    device=device,
                    title="accuracy vs FLOPs per exit system" + (f" ({device})" if several else ""),
                    figsize=EXIT_SYSTEMS_FIGSIZE,
                )
            )
        if any(not v.is_mainnet and _sweep(v) is not None for v in vs):
            specs.append(
                PlotSpec(
                    task,
                    "flops",
                    f"{slug}_accuracy_vs_flops.png",
                    "accuracy vs FLOPs/sample across the threshold sweep",
                    draw_accuracy_vs_flops,
                    vs,
                )
            )
        if any(not v.is_mainnet for v in vs):
            specs.append(
                PlotSpec(
                    task,
                    "latency",
                    f"{slug}_accuracy_vs_latency.png",
                    "accuracy vs latency/sample",
                    draw_accuracy_vs_latency,
                    vs,
                )
            )
        if any(_has_reliability(v) for v in vs):
            specs.append(
                PlotSpec(
                    task,
                    "reliability",
                    f"{slug}_reliability.png",
                    "reliability diagram (test)",
                    draw_reliability,
                    vs,
                )
            )
    return specs


def render_figure(spec: PlotSpec) -> Figure:
    """One figure; its legend sits below the axes (the figure grows to hold it) so it never hides data."""
    fig = Figure(figsize=spec.figsize, layout="constrained")
    ax = fig.subplots()
    spec.draw(ax, spec.variants)
    ax.set_title(f"{spec.task}: {spec.title or spec.caption}", fontsize=10)
    ax.grid(True, alpha=0.3)
    labels = ax.get_legend_handles_labels()[1]
    if labels:
        fits = round(48 * spec.figsize[0] / FIGSIZE[0])  # label characters two legend columns hold side by side
        ncols = 2 if len(labels) > 4 and max(map(len, labels)) <= fits else 1
        fig.set_size_inches(spec.figsize[0], spec.figsize[1] + LEGEND_ROW_IN * -(-len(labels) // ncols))
        fig.legend(loc="outside lower center", fontsize=7, ncols=ncols, frameon=False)
    return fig


def write_plots(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write every planned figure into ``out_dir`` atomically (one file at a time); return the paths."""
    written: list[Path] = []
    for spec in plan_plots(results):
        fig = render_figure(spec)
        path = Path(out_dir) / spec.filename
        atomic.write_with(path, lambda p, fig=fig: fig.savefig(p, format="png", dpi=DPI))
        written.append(path)
    return written
