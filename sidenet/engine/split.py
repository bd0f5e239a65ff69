"""The one-tap names of staged models (``head`` → exit → ``rest``): a documented alias module, kept for code written
against it (the README's "Library use" and ``sidenet``'s public names import ``split_model``, ``CallableSplit``,
``ResNetSplit``, ``BertSplit`` and ``Split`` from here).

Nothing inside the package imports this module: everything lives in :mod:`sidenet_core.staged` (the staged model
protocol and its adapters) and :mod:`sidenet_core.layouts` (row selection, devices), which library code imports
directly; see there for why.
"""

from __future__ import annotations

from sidenet_core.layouts import Inputs, batch_size_of, select_rows, to_device
from sidenet_core.staged import (
    BertSplit,
    BertStaged,
    CallableSplit,
    CallableStaged,
    ResNetSplit,
    ResNetStaged,
    Split,
    StagedModel,
    TextState,
    split_model,
    stage_model,
)

__all__ = [
    "BertSplit",
    "BertStaged",
    "CallableSplit",
    "CallableStaged",
    "Inputs",
    "ResNetSplit",
    "ResNetStaged",
    "Split",
    "StagedModel",
    "TextState",
    "batch_size_of",
    "select_rows",
    "split_model",
    "stage_model",
    "to_device",
]
