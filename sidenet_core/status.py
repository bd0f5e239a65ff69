"""What the run is doing right now (training a MainNet, a SideNet, an EENet …), and what it needs the user to know.

Why a module of its own: the bench's progress line (``sidenet/cli/plugin.py``) should say what a long cell is busy
with, but the library that trains must not import the entry points above it. So the library *announces* and the
entry point *listens*; with no listener an announcement costs a loop over an empty list.

Two channels, because their listeners must treat them differently:

* :func:`announce` — something slow starts (training, tracing). The progress line counts the cell as one that
  trained; a timing worker refuses it (:func:`sidenet.bench.workers.refuse_training`).
* :func:`notify` — a notice the user should see now, not only in the log of a failed cell: a cache entry deleted
  and rebuilt, a wait on another run's lock (which would otherwise look like a hung run), an unusable record
  ignored. Every ``WARNING`` (or worse) logged under the ``sidenet`` logger is a notice too, while anyone listens
  (:class:`_LogBridge`): the library logs as it always did and needs no import of this module to be heard.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

_LISTENERS: list[Callable[[str], None]] = []
_NOTICE_LISTENERS: list[Callable[[str], None]] = []
LOGGER = "sidenet"  # warnings logged under this logger (and its children) are notices


def announce(what: str) -> None:
    """Tell every listener what starts now (one short phrase: "training the fashion-mnist MainNet")."""
    for listener in list(_LISTENERS):
        listener(what)


def listen(listener: Callable[[str], None]) -> Callable[[], None]:
    """Register ``listener``; returns the call that unregisters it."""
    return _register(_LISTENERS, listener)


def notify(message: str) -> None:
    """Tell every notice listener ``message`` (one line); with none, nobody hears it (log it to keep it)."""
    for listener in list(_NOTICE_LISTENERS):
        listener(message)


def listen_notices(listener: Callable[[str], None]) -> Callable[[], None]:
    """Register ``listener`` for notices (and for the ``sidenet`` logger's warnings while it listens); returns the
    call that unregisters it."""
    _BRIDGE.attach()
    stop_listening = _register(_NOTICE_LISTENERS, listener)

    def stop() -> None:
        stop_listening()
        if not _NOTICE_LISTENERS:
            _BRIDGE.detach()

    return stop


def _register(listeners: list[Callable[[str], None]], listener: Callable[[str], None]) -> Callable[[], None]:
    listeners.append(listener)

    def stop() -> None:
        if listener in listeners:
            listeners.remove(listener)

    return stop


class _LogBridge(logging.Handler):
    """Forwards the ``sidenet`` logger's warnings to the notice listeners, attached only while there are any.

    Why a bridge and not a call to :func:`notify` at each warning: the modules that warn (the cache, the results
    store) already log, and pytest keeps their records for a failed cell's report; the bridge adds the user's
    view without changing that. A listener that fails must not turn a warning into a crash: logging's own
    ``handleError`` reports it."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def attach(self) -> None:
        logger = logging.getLogger(LOGGER)
        if self not in logger.handlers:
            logger.addHandler(self)

    def detach(self) -> None:
        logging.getLogger(LOGGER).removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = " ".join(record.getMessage().split())  # one line, whatever the record held
            notify(message)
        except Exception:  # a listener's failure is reported by logging, never raised into the library
            self.handleError(record)


_BRIDGE = _LogBridge()
