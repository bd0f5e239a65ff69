"""FlopCounterMode formulas for quantised ops, so an int8 model counts the same FLOPs as its fp32 original.

``torch.utils.flop_counter`` has no formulas for ``torch.ops.quantized.*`` (int8 convs and linears count
0 otherwise). The counts here follow torch's own fp32 formulas exactly: 2 × multiply-adds, bias ignored
(``conv_flop_count`` for convolutions, 2·M·K·N for linears), so ``count(int8) == count(fp32)``.

:func:`register_quantized_formulas` is idempotent; ``import compressors`` calls it, and so does every
int8 compressor, so :func:`sidenet_core.flops.count_flops` picks the formulas up in any process that built a
quantised model through this package.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils import flop_counter

_REGISTERED = False

_LINEAR_OPS = ("linear", "linear_relu", "linear_dynamic", "linear_relu_dynamic", "linear_dynamic_fp16")
_CONV_OPS = (
    "conv1d",
    "conv1d_relu",
    "conv2d",
    "conv2d_relu",
    "conv3d",
    "conv3d_relu",
    "conv2d_add",
    "conv2d_add_relu",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
)


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape)


def _quantized_linear_flop(x: Any, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    """2 · (rows) · in_features · out_features, rows = all leading dims of the input."""
    in_shape, out_shape = _shape(x), _shape(out_val)
    rows = math.prod(in_shape[:-1])
    return 2 * rows * in_shape[-1] * out_shape[-1]


def _packed(args: tuple[Any, ...]) -> Any:
    for a in args:
        if isinstance(a, torch.ScriptObject):
            return a
    raise RuntimeError("quantised conv without packed weights")


def _quantized_conv_flop(x: Any, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    packed = _packed(args)
    weight = packed.unpack()[0]
    transposed = bool(packed.transpose()) if hasattr(packed, "transpose") else False
    w_shape = list(weight.shape)  # the same layout aten.convolution sees for the fp32 module
    return flop_counter.conv_flop_count(list(_shape(x)), w_shape, list(_shape(out_val)), transposed=transposed)


def _int_mm_flop(a_shape: Any, b_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    m, k = a_shape
    _, n = b_shape
    return 2 * m * k * n


def _register(op: Any, formula: Any, get_raw: bool) -> None:
    if op is None or op in flop_counter.flop_registry:
        return
    flop_counter.register_flop_formula(op, get_raw=get_raw)(formula)


def _quantized_op(name: str) -> Any:
    try:
        return getattr(torch.ops.quantized, name)
    except (AttributeError, RuntimeError):
        return None


def register_quantized_formulas() -> None:
    """Register formulas for int8 linears/convs (static + dynamic) and ``aten._int_mm`` (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    for name in _LINEAR_OPS:
        _register(_quantized_op(name), _quantized_linear_flop, get_raw=True)
    for name in _CONV_OPS:
        _register(_quantized_op(name), _quantized_conv_flop, get_raw=True)
    _register(getattr(torch.ops.aten, "_int_mm", None), _int_mm_flop, get_raw=False)
    _REGISTERED = True
