"""The exit-systems figure: accuracy vs FLOPs/sample per exit system, with each placement's oracle points, zoomed
on the region near the fp32 MainNet."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.axes import Axes

from sidenet.report.exit_rows import exit_variants, has_exits, network_selection, system_specs
from sidenet.report.figures import log_x, sweep_of, xy_pairs
from sidenet.report.numbers import as_float
from sidenet.report.oracle import oracle_points, point_placement
from sidenet.report.variants import NONE, Variant

ZOOM_PT = 10.0  # the exit-systems plot shows accuracy from the fp32 MainNet − this many points up
SWEEP_LW_STEP = 0.6  # exit-systems plot: each earlier system's fp32 sweep this much wider (points) ...
POINT_MS_STEP = 1.6  # ... and its operating point this much larger, so coinciding systems stay visible


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
        sweep = sweep_of(v)
        if sweep is not None:
            pts += list(
                zip(*xy_pairs(sweep.get("flops_per_sample") or [], sweep.get("test_accuracy") or []), strict=True)
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
    if network_selection(p.variant):
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
        sweep, color, plain = sweep_of(v), colors[v.exit], v.chain == NONE
        name = v.exit if plain else f"{v.exit} [{v.chain}]"
        if sweep is not None:
            pts = sorted(
                zip(*xy_pairs(sweep.get("flops_per_sample") or [], sweep.get("test_accuracy") or []), strict=True)
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
