"""FLOP counting with ``torch.utils.flop_counter.FlopCounterMode`` (true FLOPs: 2 per multiply-add).

It counts what really executes (a cascade's skipped rows cost nothing), but only matmul, convolution
and attention: embeddings, norms, activations and pooling count 0. Reports say so.

torch 2.14 has no formula for the CPU flash-attention kernel that ``scaled_dot_product_attention``
dispatches to on CPU, so BERT attention would count 0 there; we register one (same formula as the
CUDA kernels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

_REGISTERED = False


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def register_extra_formulas() -> None:
    """Register formulas FlopCounterMode lacks (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None and op not in flop_counter.flop_registry and op.default not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(op, get_raw=False)(_sdpa_cpu_flop)
    _REGISTERED = True


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """Run ``fn`` once under FlopCounterMode; return (total FLOPs, fn's result)."""
    register_extra_formulas()
    with torch.no_grad(), FlopCounterMode(display=False) as mode:
        out = fn(*args, **kwargs)
    return int(mode.get_total_flops()), out
