"""A tiny name → object registry, one per extension point (tasks, exit policies, compressors).

Why not entry points: users register from their own code (``@register_task("my-task")``) and the
test-suite registers tiny variants next to the real ones, so the real code path runs in CI.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from sidenet_core.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps unique names to objects; unknown names fail with the closest valid name suggested."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if not name or name != name.strip():
            raise ValueError(f"{self.kind} name must be a non-empty string without surrounding spaces")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered; pick another name")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form: ``@REGISTRY.register("name")``."""

        def deco(item: T) -> T:
            return self.add(name, item)

        return deco

    def remove(self, name: str) -> None:
        """Unregister (used by tests that register temporary entries)."""
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UserError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._items), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        valid = ", ".join(sorted(self._items)) or "(none registered)"
        return f"unknown {self.kind} {name!r}{hint} (valid: {valid})"

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
