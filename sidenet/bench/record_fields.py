"""The machinery behind :mod:`sidenet.bench.row_record`: frozen records read from and written back to JSON dicts.

Why a record knows "absent" apart from ``None``: a stored row either lacks a key (the MainNet alone has no
``taps``) or carries it as ``null`` (a SideNet's ``batch_composition`` off its selected operating point), and a
record must give back exactly the dict it was made from (:meth:`Record.to_dict`), so stored rows keep their shape.

A field's type hint is the authority on what a value may be; a :class:`Rule` in its metadata adds the range a
reader relies on (a fraction in [0, 1], a positive integer) and the words that name it in an error. Errors are
:class:`RowError` phrases ("has exit_rates[1] = the number 1.5, expected a fraction in [0, 1]") that the results
loader turns into one line naming the row.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeVar

JSONDict = dict[str, Any]


class _Absent:
    """The one value of a field the dict did not carry (falsy, never written back)."""

    _instance: ClassVar[_Absent | None] = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> tuple[type[_Absent], tuple[()]]:
        return (_Absent, ())


ABSENT: Final[Any] = _Absent()  # typed Any so that ``x: float | None = ABSENT`` reads as the field's real type


@dataclass(frozen=True)
class Rule:
    """What a scalar value must also be beyond its type (``ok``), and how an error names it (``expected``). On a
    list field the rule applies to every item."""

    expected: str
    ok: Callable[[Any], bool] = lambda _: True


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


NONEMPTY = Rule("a non-empty string", lambda v: v != "")
TAP_NAME = Rule("a tap name", lambda v: v != "")
POSITIVE = Rule("a positive integer", lambda v: v >= 1)
FRACTION = Rule("a fraction in [0, 1]", lambda v: finite(v) and 0 <= v <= 1)
NONNEG = Rule("a finite number ≥ 0", lambda v: finite(v) and v >= 0)
FINITE = Rule("a finite number", finite)


def rule(r: Rule, default: Any = ABSENT) -> Any:
    """A field with ``r`` in its metadata (``default`` ABSENT: the key may be missing)."""
    return dataclasses.field(default=default, metadata={"rule": r})


class RowError(ValueError):
    """A phrase saying what is wrong with a row ("has taps[1] = the string '', expected a tap name")."""


R = TypeVar("R", bound="Record")


class Record:
    """Base of the frozen dataclasses a row is made of: each converts from its JSON dict and back."""

    def to_dict(self) -> JSONDict:
        """The dict this record was made from: absent fields left out, sub-records as dicts."""
        return {f.name: _out(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name in self.present()}

    def present(self) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not ABSENT)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[R], data: JSONDict, path: str = "", ranges: bool = True) -> R:
        """The record of ``data``; a :class:`RowError` naming the first key that is undeclared, missing (a field
        without default) or of another type (``ranges``: or outside its :class:`Rule`)."""
        hints = hints_of(cls)
        for key in data:
            if key not in hints:
                raise RowError(f"has undeclared key {_join(path, str(key))!r}")
        missing = [f.name for f in dataclasses.fields(cls) if _required(f) and f.name not in data]  # type: ignore[arg-type]
        if missing:
            raise RowError(f"lacks keys {missing}")
        rules = {f.name: f.metadata.get("rule") for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        values = {k: convert(hints[k], v, rules[k], _join(path, k), ranges) for k, v in data.items()}
        return cls(**values)


def _join(path: str, key: str) -> str:
    return f"{path} {key}" if path else key


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _out(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, list):
        return [_out(v) for v in value]
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def hints_of(cls: type) -> dict[str, Any]:
    """``cls``'s resolved field types (cached: records are made per row)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls, globalns=vars(sys.modules[cls.__module__]))
    return _HINTS[cls]


def _options(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _scalar_ok(hint: Any, value: Any) -> bool:
    if hint is Any:
        return True
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typing.get_origin(hint) is dict or hint is dict:
        return isinstance(value, dict)
    return isinstance(value, hint)


def convert(hint: Any, value: Any, r: Rule | None, path: str, ranges: bool = True) -> Any:
    """``value`` (read from JSON) as ``hint`` says: dicts of a :class:`Record` type become that record, lists are
    converted item by item; a :class:`RowError` when it is not of that type."""
    options = _options(hint)
    if value is None and type(None) in options:
        return None
    for option in options:
        if isinstance(option, type) and issubclass(option, Record):
            if isinstance(value, dict):
                return option.from_dict(value, path, ranges)
        elif typing.get_origin(option) is list:
            if isinstance(value, list):
                (item,) = typing.get_args(option) or (Any,)
                return [convert(item, v, r, f"{path}[{i}]", ranges) for i, v in enumerate(value)]
        elif option is not type(None) and _scalar_ok(option, value):
            if ranges and r is not None and not r.ok(value):
                break
            return value
    raise RowError(f"has {path} = {kind(value)}, expected {expected(hint, r)}")


def expected(hint: Any, r: Rule | None) -> str:
    """What a value of ``hint`` must be, in words: the rule's (on a scalar), else the type's; "or null" if None is
    allowed."""
    options = _options(hint)
    nullable = type(None) in options
    words = [_describe(o, r) for o in options if o is not type(None)]
    if nullable and words == ["true or false"]:
        return "true, false or null"
    return " or ".join(dict.fromkeys(words)) + (" or null" if nullable else "")


def _describe(hint: Any, r: Rule | None) -> str:
    if typing.get_origin(hint) is list:
        return "a list"
    if (isinstance(hint, type) and issubclass(hint, Record)) or hint is dict or typing.get_origin(hint) is dict:
        return "an object"
    if r is not None:
        return r.expected
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(hint, "a value")


# ---- how values are named in errors (as the JSON file spells them)


def short(value: Any, limit: int = 60) -> str:
    """``repr`` of ``value`` cut to ``limit`` characters (always one line: repr escapes newlines)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def number_text(x: float) -> str:
    """A number as JSON spells it (NaN, Infinity), so the message matches what the file says."""
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")
    if isinstance(x, int) and abs(x) >= 10**15:
        return f"an integer of {len(str(abs(x)))} digits"
    return short(x, 30)


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"the string {short(value, 30)}"
    if isinstance(value, (int, float)):
        return f"the number {number_text(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


__all__ = [
    "ABSENT",
    "FINITE",
    "FRACTION",
    "NONEMPTY",
    "NONNEG",
    "POSITIVE",
    "TAP_NAME",
    "JSONDict",
    "Record",
    "RowError",
    "Rule",
    "convert",
    "expected",
    "finite",
    "hints_of",
    "kind",
    "number_text",
    "rule",
    "short",
]
