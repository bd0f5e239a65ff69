"""Reading the exit-system keys of a row: which rows have exits and in what order, where the exits sit, exit rates,
thresholds, training, retraining and collapse.

The keys read here (``taps``, ``exit_rates``, ``training_seconds``, ``retrains_backbone``, ``thresholds``,
``system_details``) are newer than many results files: the loader types them where present
(:meth:`sidenet.bench.row_record.RowRecord.load`), and every reader here still gives None ("—") for what a row
lacks. What differs by exit system is asked of :mod:`sidenet.report.readings`, never of a name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sidenet.report.formatting import DASH, fmt_pct, fmt_threshold, md_escape, sig3
from sidenet.report.numbers import as_float
from sidenet.report.readings import reading_of
from sidenet.report.variants import Variant, variant_order

CASCADE_TAP = "small"  # the one "tap" a network-selection row records: the small network's output
RETRAINS = "retrains backbone"
COLLAPSED = "⚠ collapsed"  # system cell mark: nearly every input took one exit (system_details.collapse)


def has_exits(v: Variant) -> bool:
    """A row of an exit system that lets inputs leave early (not the MainNet alone, not the never-exit overhead)."""
    return reading_of(v.exit).has_exits and v.get("threshold_source") != "never-exit"


def exit_variants(variants: Sequence[Variant]) -> list[Variant]:
    """Rows of systems with exits, chain ``none`` first, ``sidenet`` first within a chain."""
    return sorted((v for v in variants if has_exits(v)), key=lambda v: (*variant_order(v)[:2], _system_order(v.exit)))


def _system_order(exit_spec: str) -> tuple[int, str]:
    return (reading_of(exit_spec).order, exit_spec)


def system_specs(variants: Sequence[Variant]) -> list[str]:
    """The distinct exit systems with exits in their readings' order (``sidenet``, ``sidenet-multi``, ``learned``,
    ``cascade``, each at its default first), then the others by name."""
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


def network_selection(v: Variant) -> bool:
    """A network-selection row (``cascade``, by its reading): its one exit is a whole small network, not a head on a
    tap."""
    return reading_of(v.exit).network_selection


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
    if network_selection(v) and (taps is None or taps == (CASCADE_TAP,)):
        return f"{small_network(v)} → MainNet"
    return None if not taps else md_escape("/".join(taps))


def fmt_placement(v: Variant) -> str:
    return placement(v) or DASH


def placement_phrase(v: Variant) -> str:
    """``tap layer1``, ``taps layer1/layer2``, ``small network → MainNet`` (for running text)."""
    if network_selection(v):
        text = fmt_placement(v)
        return f"the {text}" if text.startswith("small network") else text
    return taps_phrase(taps_of(v))


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


def as_int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def collapse_clause(v: Variant, collapse: dict[str, Any]) -> str:
    """``99.6% of validation inputs took exit 1 of 2 (layer1.0)``; the end of the network (exit index = number of
    exits) reads ``ran to the final output``. The record counts exits from 0; the text from 1, as the taps read."""
    details = system_details(v) or {}
    share = as_float(collapse.get("share"))
    split = {"val": "validation", "test": "test"}.get(str(collapse.get("split")), "validation")
    taps = taps_of(v)
    k = as_int(collapse.get("exit"))
    n = as_int(details.get("n_exits"))
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


def taps_phrase(taps: Sequence[str] | None) -> str:
    if not taps:
        return "exits not recorded"
    return f"tap{'s' if len(taps) > 1 else ''} {fmt_taps(taps)}"
