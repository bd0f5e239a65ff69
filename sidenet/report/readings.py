"""The report's reading of each exit system, registered by exit-system name: one registry, one extension point.

Why a registry: what the report says about a system (where it sorts, whether its rows take exits, whether its one
exit is a whole second network, its marker in the figures, the footnote and paragraph of the paper it comes from)
used to be branches on names like ``"cascade"`` spread over the report. Each system family now says it once, in its
own module under :mod:`sidenet.report.systems`, and the generic code asks :func:`reading_of`. A system with no
reading module gets :func:`generic_reading`: first-class rows in every table where rows with exits belong, with
the generic columns, and no paragraph of its own — never dropped.

The exits layer (``sidenet.exits``) sits below the report and never imports it; so the readings live here, on the
report side, keyed by the same names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sidenet.report.variants import Variant
from sidenet_core.registry import Registry

GENERIC_ORDER = 100  # where systems without an ``order`` sort: after every ordered one, then by spec


@dataclass(frozen=True)
class Family:
    """What the report adds once for a family of systems (one paper): a footnote under the exit-systems table when
    any of its rows is there, and a paragraph after the Reading. ``order`` fixes where, among the families."""

    name: str
    order: int
    mentions: Callable[[Variant], bool]  # a row the footnote is about
    footnote: str
    paragraph: Callable[[Sequence[Variant], Sequence[int]], str] | None = None  # one device's rows, batch sizes


@dataclass(frozen=True)
class SystemReading:
    """How the report reads the rows of one exit system (by its registered name, options aside)."""

    name: str
    order: int = GENERIC_ORDER  # table, legend and colour order (lower first; ties by spec)
    has_exits: bool = True  # False: its rows take no exit (the MainNet alone, the never-exit overhead, a bound)
    network_selection: bool = (
        False  # its one exit is a whole small network answering first (placement: small → MainNet)
    )
    within_one_network: bool = False  # an early exit inside one network: what network selection is compared with
    softmax_rank: int | None = None  # a softmax-threshold system a learned policy on the same exits is compared with
    label: str | None = None  # the name tables and legends give its default config ("SideNet"); None: its spec
    marker: str = "P"  # figures: its marker ...
    linestyle: str = "-"  # ... and the line style of its sweep
    family: Family | None = None


READINGS: Registry[SystemReading] = Registry("exit-system reading")


def register_reading(reading: SystemReading) -> SystemReading:
    """Register ``reading`` under its system's name (a module under ``sidenet.report.systems`` calls this)."""
    return READINGS.add(reading.name, reading)


def system_name(exit_spec: str) -> str:
    """The registered name of an exit spec: ``sidenet-multi:taps=layer1/layer2`` → ``sidenet-multi``."""
    return exit_spec.split(":", 1)[0]


def generic_reading(name: str) -> SystemReading:
    """The reading of a system no module describes: rows with exits, sorted after the described ones, generic
    columns and markers, no footnote or paragraph."""
    return SystemReading(name)


def reading_of(exit_spec: str) -> SystemReading:
    """The reading of the system ``exit_spec`` names; the generic reading when none is registered."""
    name = system_name(exit_spec)
    return READINGS.get(name) if name in READINGS else generic_reading(name)


def readings() -> list[SystemReading]:
    """Every registered reading, by name."""
    return [READINGS.get(name) for name in READINGS.names()]


def families() -> list[Family]:
    """The families of the registered readings, in their ``order``."""
    found = {id(r.family): r.family for r in readings() if r.family is not None}
    return sorted(found.values(), key=lambda f: (f.order, f.name))


def label_of(exit_spec: str) -> str | None:
    """The plain name of a system's default config (``sidenet`` → ``SideNet``); None for a spec with options or a
    system without a label."""
    reading = reading_of(exit_spec)
    return reading.label if exit_spec == reading.name else None
