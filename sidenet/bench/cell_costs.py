"""What each cell cost on this machine, remembered across runs, so a run can say when it will end.

Why: the pace of the cells measured so far is a poor guide at the start of a run (the first cell of a task also
trains or loads its models) and says nothing about cells of another task or batch size. Each finished cell's
wall time is stored here under its cell key (which already names the machine, versions, settings and protocol);
cells that trained or traced something are stored apart from those that only loaded, so a warm run's estimate
is not inflated by the one-off training of an earlier cold run.

One small JSON file in the cache directory, rewritten atomically; unreadable or foreign content is ignored (an
estimate is never worth failing a run for): a file that is not JSON, nests too deeply for the parser, or holds
entries with non-finite, negative or mistyped values is read as far as it is usable and says so in one warning (a
notice: :mod:`sidenet_core.status`); the run's :func:`save` then replaces it with the good entries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sidenet.engine.cache import cache_dir
from sidenet_core import atomic

FILE_NAME = "cell-costs.json"
FORMAT = 1
MAX_ENTRIES = 5000  # a cell key changes with every version bump: keep the newest entries only
MAX_SECONDS = 7 * 24 * 3600.0  # a cell recorded as taking longer than a week is a corrupt record, not a cost

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CellCost:
    seconds: float  # wall time of the whole cell (preparation and timing)
    trained: bool  # whether it trained or traced anything (a one-off cost, cached afterwards)


def _path() -> Path:
    return cache_dir() / FILE_NAME


def load() -> dict[str, CellCost]:
    """The recorded costs by cell key; empty when there is no readable record. Bad content is skipped with one
    warning, never raised: the record only feeds an estimate."""
    path = _path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: nested too deeply to parse
        _warn(path, f"unreadable ({_reason(exc)})")
        return {}
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or not isinstance(raw.get("cells"), dict):
        _warn(path, f"not a format-{FORMAT} record")
        return {}
    out: dict[str, CellCost] = {}
    for key, value in raw["cells"].items():
        cost = _entry(value)
        if cost is not None:
            out[str(key)] = cost
    if len(out) < len(raw["cells"]):
        _warn(path, f"{len(raw['cells']) - len(out)} of {len(raw['cells'])} entries unusable")
    return out


def _entry(value: object) -> CellCost | None:
    """One recorded cell, or None unless it is ``{"seconds": finite number in [0, MAX_SECONDS], "trained": bool}``
    (a NaN or an infinity would poison every estimate it enters)."""
    if not isinstance(value, dict):
        return None
    seconds, trained = value.get("seconds"), value.get("trained")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not isinstance(trained, bool):
        return None
    if not 0 <= seconds <= MAX_SECONDS:  # also False for NaN and the infinities (and never overflows on a huge int)
        return None
    return CellCost(float(seconds), trained)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())
    return text[:120] or type(exc).__name__


def _warn(path: Path, what: str) -> None:
    log.warning("%s: %s; ignored (it only feeds the time-left estimate; the run replaces it)", path, what)


def save(costs: dict[str, CellCost]) -> None:
    """Write ``costs`` (newest last, capped); a failure to write is silently skipped: it only costs an estimate."""
    items = list(costs.items())[-MAX_ENTRIES:]
    blob = {"format": FORMAT, "cells": {k: {"seconds": round(c.seconds, 3), "trained": c.trained} for k, c in items}}
    with contextlib.suppress(OSError):
        atomic.write_json(_path(), blob)


@dataclass
class Estimator:
    """Seconds left for the cells not yet run: each cell's recorded cost from an earlier run when it did not train
    (a warm cost), else the mean warm cost of this run's finished cells of its group (task, batch size), else of all
    this run's warm cells. Cells with no basis at all are counted apart; training is never predicted (a one-off
    that the progress line says it leaves out)."""

    recorded: dict[str, CellCost]
    done: dict[str, list[float]] = field(default_factory=dict)  # group -> warm seconds of this run's cells

    def finished(self, group: str, seconds: float, trained: bool) -> None:
        if not trained:
            self.done.setdefault(group, []).append(seconds)

    def left(self, cells: Iterable[tuple[str, str]]) -> tuple[float, int, int]:
        """(seconds, cells from a record, cells with no basis) for ``cells`` = (cell key, group) pairs."""
        this_run = [s for v in self.done.values() for s in v]
        seconds, from_record, unknown = 0.0, 0, 0
        for key, group in cells:
            rec = self.recorded.get(key)
            if rec is not None and not rec.trained:
                seconds += rec.seconds
                from_record += 1
            elif self.done.get(group):
                seconds += statistics.fmean(self.done[group])
            elif this_run:
                seconds += statistics.fmean(this_run)
            else:
                unknown += 1
        return seconds, from_record, unknown

    def may_train(self, cells: Iterable[tuple[str, str]]) -> bool:
        """Whether any of ``cells`` lacks a warm record: it may train (or trace) first, which is not estimated."""
        return any(not (rec := self.recorded.get(key)) or rec.trained for key, _ in cells)


def record(costs: dict[str, CellCost], key: str, seconds: float, trained: bool) -> None:
    """Remember a finished cell (a later warm measurement replaces a cold one, and the other way round only when
    there was none)."""
    old = costs.pop(key, None)
    if old is not None and trained and not old.trained:
        costs[key] = old  # keep the warm cost: it is what a re-run will cost
        return
    costs[key] = CellCost(seconds, trained)


__all__ = ["CellCost", "Estimator", "load", "record", "save"]
