"""What the run is doing right now (training a MainNet, a SideNet, an EENet …), for whoever listens.

Why a module of its own: the bench's progress line (``bench/conftest.py``) should say what a long cell is busy
with, but the library that trains must not import the entry points above it. So the library *announces* and the
entry point *listens*; with no listener an announcement costs a loop over an empty list.
"""

from __future__ import annotations

from collections.abc import Callable

_LISTENERS: list[Callable[[str], None]] = []


def announce(what: str) -> None:
    """Tell every listener what starts now (one short phrase: "training the fashion-mnist MainNet")."""
    for listener in list(_LISTENERS):
        listener(what)


def listen(listener: Callable[[str], None]) -> Callable[[], None]:
    """Register ``listener``; returns the call that unregisters it."""
    _LISTENERS.append(listener)

    def stop() -> None:
        if listener in _LISTENERS:
            _LISTENERS.remove(listener)

    return stop
