"""Build functions for timing workers in tests (a worker imports this module to unpickle them by name)."""

from __future__ import annotations

import os
import time
from typing import Any

from sidenet.bench.workers import Served
from sidenet_core.status import announce


def sleeper(spec: dict[str, Any]) -> Served:
    """A worker whose round sleeps ``delay`` seconds per batch; it records when each batch started
    (``CLOCK_MONOTONIC``, comparable across processes) and can be slowed down on purpose (``set_delay``)."""
    state = {"delay": float(spec["delay"]), "stamps": []}

    def run(batch: Any) -> None:
        state["stamps"].append(time.monotonic())
        time.sleep(state["delay"])

    def set_delay(slices: Any, sync: Any, delay: float) -> float:
        state["delay"] = float(delay)
        return state["delay"]

    return Served(
        run=run,
        check=lambda batch: [0],
        extra={"stamps": lambda slices, sync: list(state["stamps"]), "set_delay": set_delay},
        facts={"label": spec["label"]},
    )


def trainer(spec: dict[str, Any]) -> Served:
    """A build that would train: the library announces training before it starts."""
    announce("training the tiny MainNet")
    raise AssertionError("unreachable: the worker refuses before training starts")


def where_am_i(spec: dict[str, Any]) -> Served:
    """Reports the process it was built in; trains first where ``spec`` says so."""
    if spec.get("train"):
        announce("training the tiny MainNet")
    return Served(run=lambda batch: None, facts={"built_in": os.getpid()})
