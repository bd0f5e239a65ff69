"""The one-tap names of staged models (``head`` → exit → ``rest``), kept for code written against them.

Everything lives in :mod:`sidenet_core.staged` (the staged model protocol and its adapters) and
:mod:`sidenet_core.layouts` (row selection, devices); see there for why.
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
