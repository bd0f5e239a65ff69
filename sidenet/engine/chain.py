"""The axes of a benchmark cell besides task and batch size: compressor chains and exit systems.

Kept free of torch and of the task registry so ``sidenet-bench list`` and input validation stay light.

Compressor chain specs: ``prune:ratio=0.5+int8`` → an ordered tuple of :class:`ChainStep`.

Grammar (no spaces anywhere)::

    CHAIN  := "none" | STEP ("+" STEP)*
    STEP   := NAME [":" PARAM ("," PARAM)*]
    PARAM  := KEY "=" VALUE

``none`` is the empty chain (the plain MainNet). Steps run in the order written; a step's parameters
are kept sorted by key, so :func:`format_chain` gives one canonical string per chain and
``parse_chain(format_chain(steps)) == steps``. Names are checked against ``compressors.COMPRESSORS``;
values stay strings (each compressor converts its own).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Any

from sidenet_core.errors import UserError

NONE = "none"

GRAMMAR = "NAME[:KEY=VALUE[,KEY=VALUE...]] joined by '+' (e.g. 'prune:ratio=0.5+int8'), or 'none'"
# an exit system is one step of the same grammar; its errors name its own flag and example, not a chain's
EXIT_GRAMMAR = (
    "NAME[:KEY=VALUE[,KEY=VALUE...]] (e.g. 'sidenet-multi:taps=layer1/layer2,policy=entropy'; "
    "systems: `sidenet-bench list`)"
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VALUE = re.compile(r"[^\s+:,=]+")


@dataclass(frozen=True)
class ChainStep:
    """One compressor in a chain: its registered name and its ``key=value`` parameters, sorted by key."""

    name: str
    params: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}:" + ",".join(f"{k}={v}" for k, v in self.params)


def _malformed(spec: str, why: str) -> UserError:
    return UserError(f"malformed chain {spec!r}: {why}; expected {GRAMMAR}")


def _malformed_exit(spec: str, why: str) -> UserError:
    """Why apart from :func:`_malformed`: an ``--exit`` spec called a "chain", with a compressor chain as the example,
    sends the user to the wrong flag. ``--bench-exit`` is pytest's spelling; the CLI says ``--exit``."""
    return UserError(f"malformed exit system {spec!r} (--bench-exit): {why}; expected {EXIT_GRAMMAR}")


def _parse_step(spec: str, text: str, allow_none: bool = False, exit_system: bool = False) -> ChainStep:
    malformed = _malformed_exit if exit_system else _malformed
    name, colon, rest = text.partition(":")
    if not _NAME.fullmatch(name):
        raise malformed(spec, f"{name!r} is not {'an exit system' if exit_system else 'a compressor'} name")
    if name == NONE and not allow_none:
        raise malformed(spec, "'none' cannot be combined with compressors")
    if not colon:
        return ChainStep(name)
    if not rest:
        raise malformed(spec, f"step {text!r} has no parameters after ':'")
    params: dict[str, str] = {}
    for item in rest.split(","):
        if item.count("=") != 1:
            why = "lacks '=VALUE'" if "=" not in item else "has more than one '='"
            raise malformed(spec, f"parameter {item!r} of {name!r} {why}")
        key, value = item.split("=")
        if not _KEY.fullmatch(key):
            raise malformed(spec, f"parameter {item!r} of {name!r} has no valid key")
        if not _VALUE.fullmatch(value):
            raise malformed(spec, f"parameter {item!r} of {name!r} has no value")
        if key in params:
            raise malformed(spec, f"parameter {key!r} of {name!r} is given twice")
        params[key] = value
    return ChainStep(name, tuple(sorted(params.items())))


def parse_step(spec: str) -> ChainStep:
    """One exit system spec ``NAME[:KEY=VALUE,...]`` (the grammar of one chain step); names unchecked. Errors speak
    of an exit system, not a chain: this is what ``--exit`` / ``--bench-exit`` values go through."""
    if not isinstance(spec, str) or not spec:
        raise _malformed_exit(str(spec) if spec is not None else "", "it is empty")
    if any(ch.isspace() for ch in spec) or "+" in spec:
        raise _malformed_exit(spec, "it contains whitespace or '+' (one system per --bench-exit; repeat the flag)")
    return _parse_step(spec, spec, allow_none=True, exit_system=True)


def parse_chain(spec: str, registry: Any = None, *, check_names: bool = True) -> tuple[ChainStep, ...]:
    """Parse a chain spec; one-line :class:`UserError` for bad grammar or an unknown compressor.

    ``registry`` defaults to ``compressors.COMPRESSORS``; ``check_names=False`` checks the grammar only.
    """
    if not isinstance(spec, str) or not spec:
        raise _malformed(str(spec) if spec is not None else "", "it is empty")
    if any(ch.isspace() for ch in spec):
        raise _malformed(spec, "it contains whitespace")
    if spec == NONE:
        return ()
    parts = spec.split("+")
    if any(not p for p in parts):
        raise _malformed(spec, "an empty step (leading, trailing or doubled '+')")
    steps = tuple(_parse_step(spec, p) for p in parts)
    if check_names:
        registry = _default_registry() if registry is None else registry
        for step in steps:
            if step.name not in registry:
                raise UserError(_unknown_compressor(registry, step.name))
    return steps


def _default_registry() -> Any:
    try:
        return importlib.import_module("compressors").COMPRESSORS
    except (ImportError, AttributeError) as exc:  # a broken install, not bad input; still one line
        raise UserError(
            f"cannot check compressor names: compressors.COMPRESSORS is unavailable ({type(exc).__name__}: {exc}); "
            "reinstall the package (pip install -e .)"
        ) from None


def _unknown_compressor(registry: Any, name: str) -> str:
    if len(registry) == 0:
        return (
            f"unknown compressor {name!r}: no compressors are registered yet (they arrive with issue #3); "
            "use the chain 'none'"
        )
    return str(registry.unknown_message(name))


def format_chain(steps: tuple[ChainStep, ...] | list[ChainStep]) -> str:
    """The canonical spec of a chain (``none`` when empty); round-trips through :func:`parse_chain`."""
    return "+".join(str(s) for s in steps) if steps else NONE


def canonical_chain(spec: str, registry: Any = None) -> str:
    """``format_chain(parse_chain(spec))``: equal chains written differently map to one string."""
    return format_chain(parse_chain(spec, registry))


__all__ = [
    "EXIT_GRAMMAR",
    "GRAMMAR",
    "NONE",
    "ChainStep",
    "canonical_chain",
    "format_chain",
    "parse_chain",
    "parse_step",
]
