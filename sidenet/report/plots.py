"""Per-task figures for the report: accuracy vs FLOPs, accuracy vs latency, reliability diagram, (with
compressor chains) the accuracy-vs-latency Pareto plot over every chain × threshold, and (with several exit
systems or oracle bounds) accuracy vs FLOPs per exit system with the oracle points. This module plans, renders
and writes them; the drawing is in :mod:`sidenet.report.figures` and :mod:`sidenet.report.exit_systems_figure`.

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

from sidenet.report.exit_rows import exit_variants, system_specs
from sidenet.report.exit_systems_figure import ZOOM_PT, draw_exit_systems, exit_systems_floor
from sidenet.report.figures import (
    draw_accuracy_vs_flops,
    draw_accuracy_vs_latency,
    draw_pareto,
    draw_reliability,
    sweep_of,
)
from sidenet.report.numbers import as_float
from sidenet.report.oracle import oracle_points
from sidenet.report.variants import Variant, compressed_chains, devices, group_by_task
from sidenet_core import atomic

DPI = 110
FIGSIZE = (6.4, 4.4)
LEGEND_ROW_IN = 0.16  # figure height added per legend row: the legend goes below the axes, never over the data
KINDS = ("pareto", "exit_systems", "flops", "latency", "reliability")
EXIT_SYSTEMS_FIGSIZE = (7.4, 5.0)


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


def _has_reliability(v: Variant) -> bool:
    rel = v.get("reliability")
    return not v.is_mainnet and isinstance(rel, dict) and any(isinstance(rel.get(k), dict) for k in ("main", "side"))


def _wants_exit_systems_plot(variants: Sequence[Variant]) -> bool:
    """Only where it shows more than the accuracy-vs-FLOPs plot: several exit systems, or oracle points."""
    exits = exit_variants(variants)
    drawable = [v for v in exits if sweep_of(v) is not None or as_float(v.get("flops_per_sample")) is not None]
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
        if any(not v.is_mainnet and sweep_of(v) is not None for v in vs):
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
