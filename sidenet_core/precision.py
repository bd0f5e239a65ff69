"""Training precision: bf16 autocast where the CPU computes bf16 natively (≈1.5× faster here), else fp32.

Only training uses it; every evaluation, FLOP count and timing runs the fp32 model.
"""

from __future__ import annotations

import contextlib

import torch

from sidenet_core.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")


def resolve(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UserError(f"train precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return "bf16" if native else "fp32"


def autocast(precision: str) -> contextlib.AbstractContextManager[object]:
    if resolve(precision) == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
