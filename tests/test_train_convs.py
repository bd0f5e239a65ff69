"""The training-time 1×1-output shortcut (sidenet_core.train_convs) is exact: same values, same gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sidenet_core.layouts import build_resnet
from sidenet_core.train_convs import one_by_one_outputs_as_matmuls


@pytest.mark.parametrize(
    ("conv", "size"),
    [
        (nn.Conv2d(8, 6, 3, 1, 1, bias=False), 1),  # layer4's 3×3 on a 1×1 map: the centre tap only
        (nn.Conv2d(8, 6, 3, 2, 1, bias=False), 2),  # layer4's first conv: 2×2 → 1×1, stride 2
        (nn.Conv2d(8, 6, 1, 2, 0, bias=True), 2),  # its 1×1 downsample, stride 2: one input pixel
        (nn.Conv2d(8, 6, 3, 1, 0, bias=True), 3),  # no padding: the whole kernel
        (nn.Conv2d(8, 6, 3, 1, 1, bias=False), 4),  # a 4×4 output: left to nn.Conv2d
    ],
)
def test_values_and_gradients_match_the_convolution(conv: nn.Conv2d, size: int) -> None:
    conv = conv.double()
    x = torch.randn(5, 8, size, size, dtype=torch.float64, requires_grad=True)
    ref = conv(x)
    grads_ref = torch.autograd.grad(ref.square().sum(), [x, *conv.parameters()])
    with one_by_one_outputs_as_matmuls(conv) as patched:
        assert patched == 1
        out = conv(x)
        grads = torch.autograd.grad(out.square().sum(), [x, *conv.parameters()])
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref)
    for g, r in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, r)
    assert "forward" not in vars(conv)  # restored


def test_a_resnet_trains_the_same_with_and_without_the_shortcut() -> None:
    """Two SGD steps (momentum, weight decay) on a ResNet-18 at 32×32 (layer4 on 1×1 maps): the same weights."""

    def two_steps(shortcut: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = build_resnet("resnet18", 16, 1, 10).double()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(6, 1, 32, 32, dtype=torch.float64, generator=gen)
        y = torch.randint(0, 10, (6,), generator=gen)
        with one_by_one_outputs_as_matmuls(model) if shortcut else torch.autograd.set_grad_enabled(True):
            for _ in range(2):
                loss = nn.functional.cross_entropy(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    plain, fast = two_steps(False), two_steps(True)
    for name in plain:
        torch.testing.assert_close(fast[name], plain[name], msg=name)


def test_several_models_are_patched_together_and_a_shared_conv_once() -> None:
    shared = nn.Conv2d(4, 4, 3, 1, 1)
    a, b = nn.Sequential(shared, nn.Conv2d(4, 2, 3, 1, 1)), nn.Sequential(shared)
    with one_by_one_outputs_as_matmuls(a, b) as patched:
        assert patched == 2
    assert all("forward" not in vars(m) for m in (*a, *b))
