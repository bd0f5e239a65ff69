"""Training-time shortcut: a convolution whose output map is 1×1 is computed as the matrix product it is.

Why: the MainNets keep torchvision's ImageNet stem, so on 32×32 inputs layer4 works on 1×1 maps. A 3×3 convolution
with padding 1 on a 1×1 map only ever multiplies its centre tap with data (the other eight multiply padding zeros),
yet oneDNN's backward pass still runs the whole 3×3 kernel — and without AVX-512 it takes a slow path: profiled on
Zen 4 with the ISA capped to AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``, batch 128), the three 512→512 layer4 convolutions'
backward took 78 ms each, 47% of a training step (9.5 ms each with AVX-512). As ``F.linear`` over the taps that
touch data, the same layer is a 128×512×512 matrix product.

It is exact, not an approximation: an output of 1×1 is one window, so the convolution is the contraction of the input
pixels that window covers with the kernel taps over them (both cropped to that overlap). The forward values are the
same; so are the gradients — the taps left out multiply only padding zeros, so their true gradient is zero, and the
optimiser (momentum, weight decay) still sees the whole weight. A test checks values and gradients against
``nn.Conv2d``. Used only while training: evaluation, FLOP counting and timing run the unmodified model.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


def _single_window(conv: nn.Conv2d, x: torch.Tensor) -> tuple[int, int] | None:
    """(rows, cols) of the input a 1×1 output's window covers, or None when the output is larger than 1×1."""
    if x.dim() != 4:
        return None
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding  # type: ignore[misc]
    h, w = x.shape[-2:]
    if (h + 2 * ph - kh) // sh + 1 != 1 or (w + 2 * pw - kw) // sw + 1 != 1:
        return None
    rows, cols = min(h, kh - ph), min(w, kw - pw)  # the window spans padded rows 0..k-1, i.e. input rows -p..k-1-p
    return (rows, cols) if rows > 0 and cols > 0 else None


def _forward(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    window = _single_window(conv, x)
    if window is None:
        return nn.Conv2d.forward(conv, x)
    rows, cols = window
    (ph, pw) = conv.padding  # type: ignore[misc]
    n = x.shape[0]
    taps = conv.weight[:, :, ph : ph + rows, pw : pw + cols].reshape(conv.out_channels, -1)
    out = F.linear(x[:, :, :rows, :cols].reshape(n, -1), taps, conv.bias)
    return out.view(n, conv.out_channels, 1, 1)


def _eligible(m: nn.Module) -> bool:
    return (
        type(m) is nn.Conv2d
        and m.groups == 1
        and m.dilation == (1, 1)
        and m.padding_mode == "zeros"
        and isinstance(m.padding, tuple)  # not "same"/"valid" strings
    )


@contextlib.contextmanager
def one_by_one_outputs_as_matmuls(*models: nn.Module) -> Iterator[int]:
    """While inside, every plain ``nn.Conv2d`` of ``models`` whose output map is 1×1 runs as ``F.linear`` over the
    taps that touch data (others run as usual). Yields how many convolutions were patched; restores them on exit."""
    patched = list({id(m): m for model in models for m in model.modules() if _eligible(m)}.values())
    for m in patched:
        m.forward = functools.partial(_forward, m)  # type: ignore[method-assign]
    try:
        yield len(patched)
    finally:
        for m in patched:
            if "forward" in vars(m):
                del m.forward


__all__ = ["one_by_one_outputs_as_matmuls"]
