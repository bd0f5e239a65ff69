"""GPU path (CUDA): the split and the real exit on the device. Skipped cleanly without CUDA."""

from __future__ import annotations

import pytest
import torch

from sidenet.early_exit import EarlyExit
from sidenet.sidenet import SideNet
from sidenet.split import split_model
from sidenet.tasks.image import build_resnet

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available (torch.cuda.is_available() is False)"),
]


def test_resnet_split_and_exit_on_cuda():
    model = build_resnet("resnet10", 8, 1, 4).eval().cuda()
    split = split_model(model, "layer1")
    x = torch.randn(16, 1, 16, 16, device="cuda")
    with torch.no_grad():
        assert torch.equal(split(x), model(x))
        side = SideNet(split.feature_dim(x), 4).cuda().eval()
        seen = []
        rest = split.rest
        split.rest = lambda s: (seen.append(s.shape[0]), rest(s))[1]
        out = EarlyExit(split, side, threshold=0.3).run(x)
    assert out.logits.device.type == "cuda"
    assert (seen or [0])[0] == int((~out.exited).sum())
