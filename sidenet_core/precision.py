"""Training precision: bf16 autocast where the CPU computes bf16 natively (≈1.5× faster here), else fp32.

Only training uses it; every evaluation, FLOP count and timing runs the fp32 model.
"""

from __future__ import annotations

import contextlib
import os

import torch

from sidenet_core.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")


def resolve(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UserError(f"train precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if isa_capped_below_bf16():
        return "fp32"
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return "bf16" if native else "fp32"


# oneDNN ISA caps without native bf16 compute (ONEDNN_MAX_CPU_ISA; AVX512_CORE_BF16, AMX … have it)
_NO_BF16_ISAS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")


def isa_capped_below_bf16() -> bool:
    """Whether oneDNN is capped (``ONEDNN_MAX_CPU_ISA``) or ATen is (``ATEN_CPU_CAPABILITY``) below native bf16.

    torch's bf16 check follows oneDNN's cap but not ATen's, so ``ATEN_CPU_CAPABILITY=avx2`` alone on an
    AVX-512-BF16 CPU would still train under bf16 autocast, on AVX2 elementwise kernels — what no real AVX2-only CPU
    does. Honouring both caps makes a capped run the stand-in for those CPUs that the README says it is."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    return isa in _NO_BF16_ISAS or aten in ("default", "avx2")


def autocast(precision: str) -> contextlib.AbstractContextManager[object]:
    if resolve(precision) == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
