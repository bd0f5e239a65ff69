"""The exit-system layer: the registry (:mod:`sidenet.exits.base`) and one module per built-in system family.

The package imports the built-ins so that they register; the registry imports none of them (no circle), and a
user's system registers the same way from its own module.
"""

from sidenet.exits import bolukbasi, eenet, sidenet_systems  # noqa: F401  (each registers its systems)
from sidenet.exits.base import (
    EXIT_SYSTEMS,
    RUNS_ON,
    TAP_SEPARATOR,
    BuiltSystem,
    ExitSystemConfig,
    SystemContext,
    all_taps,
    canonical_exit,
    check_taps,
    check_taps_for,
    default_exits,
    parse_count,
    parse_exit_system,
    register_exit_system,
    resolve_taps,
)
from sidenet.exits.sidenet_systems import MainNetAlone, OracleBound, SideNetMulti, SideNetNoExit, SideNetSystem

# the built-ins' declared defaults, read once they are registered (a system registered later is not a default)
DEFAULT_EXITS: tuple[str, ...] = default_exits()

__all__ = [
    "DEFAULT_EXITS",
    "EXIT_SYSTEMS",
    "RUNS_ON",
    "TAP_SEPARATOR",
    "BuiltSystem",
    "ExitSystemConfig",
    "MainNetAlone",
    "OracleBound",
    "SideNetMulti",
    "SideNetNoExit",
    "SideNetSystem",
    "SystemContext",
    "all_taps",
    "canonical_exit",
    "check_taps",
    "check_taps_for",
    "default_exits",
    "parse_count",
    "parse_exit_system",
    "register_exit_system",
    "resolve_taps",
]
