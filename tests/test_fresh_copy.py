"""Why a timing worker serves a fresh copy of what it built (sidenet.bench.cells.fresh_copy): a oneDNN int8 convolution
caches one primitive, for the first input shape (and thread count) it ran at, and a call at another shape builds a
new primitive every time. An int8 ResNet first run at a batch of 64 then runs batch 1 several times slower."""

from __future__ import annotations

import copy
import statistics
import time

import pytest
import torch
from torch import nn

from compressors import Int8Config, compress_
from sidenet.bench.cells import fresh_copy
from sidenet_core.layouts import build_resnet


def _int8_resnet(width: int) -> nn.Module:
    if "x86" not in torch.backends.quantized.supported_engines:
        pytest.skip("needs the x86 quantised engine")
    torch.manual_seed(0)
    fp32 = build_resnet("resnet18", width, 1, 10).eval()
    gen = torch.Generator().manual_seed(1)
    calibration = [torch.randn(8, 1, 32, 32, generator=gen) for _ in range(2)]
    return compress_(copy.deepcopy(fp32), Int8Config(), calibration=calibration, example_inputs=calibration[0])


def _packed(model: nn.Module) -> list[object]:
    return [m._packed_params for m in model.modules() if hasattr(m, "_packed_params")]


def test_a_fresh_copy_repacks_every_int8_weight_and_computes_the_same():
    q = _int8_resnet(8)
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        before = q(x)  # the first call: its convs cache a primitive for this shape
    copied, fresh = fresh_copy(q)
    assert fresh and copied is not q
    old, new = _packed(q), _packed(copied)
    assert old and len(old) == len(new) and not any(a is b for a, b in zip(old, new, strict=True))
    with torch.inference_mode():
        assert torch.equal(copied(x), before)


def test_what_cannot_be_copied_is_served_as_built():
    class Session:  # stands in for an ONNX Runtime session, which does not pickle
        def __deepcopy__(self, memo):
            raise TypeError("cannot pickle 'InferenceSession' object")

    s = Session()
    assert fresh_copy(s) == (s, False)


def _bs1_seconds(model: nn.Module, xs: list[torch.Tensor]) -> float:
    with torch.inference_mode():
        for x in xs[:4]:
            model(x)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for x in xs:
                model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


@pytest.mark.slow
def test_an_int8_resnet_first_run_at_another_batch_size_is_slow_at_batch_1_and_its_fresh_copy_is_not():
    """The effect itself, timed (marked slow: a timing on a shared CI machine is not evidence)."""
    torch.set_num_threads(1)
    q = _int8_resnet(64)
    with torch.inference_mode():
        q(torch.randn(64, 1, 32, 32))  # first call at batch 64, as a SideNet's feature pass does
    xs = [torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(48)]
    copied, _ = fresh_copy(q)
    fresh = _bs1_seconds(copied, xs)  # the copy's first call is at batch 1
    poisoned = _bs1_seconds(q, xs)
    assert poisoned > 1.5 * fresh, (poisoned, fresh)
