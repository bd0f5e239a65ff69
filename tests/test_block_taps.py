"""Block-level ResNet taps (``layerS.B``): segments still reproduce the MainNet exactly, stage taps keep their
module structure (one stage = one module, so per-stage int8 graphs still work) and bad taps fail in one line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sidenet_core.errors import UserError
from sidenet_core.layouts import RESNET_STAGES, build_resnet
from sidenet_core.staged import ResNetStaged, resnet_block_taps, stage_model


def make_resnet(arch: str = "resnet18") -> nn.Module:
    torch.manual_seed(0)
    return build_resnet(arch, 8, 1, 10).eval()


@pytest.fixture
def resnet18() -> nn.Module:
    return make_resnet("resnet18")


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(3, 1, 32, 32)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).detach().abs().max())


def run_segments(staged: ResNetStaged, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The state at every tap and the logits, running the segments in order."""
    states = []
    with torch.no_grad():
        state = x
        for i in range(len(staged.taps)):
            state = staged.segment(i, state)
            states.append(state)
        out = staged.segment(len(staged.taps), state)
    return states, out


def tap_module(model: nn.Module, tap: str) -> nn.Module:
    """The module whose output is the state at ``tap`` (a block, or the whole stage)."""
    stage, _, block = tap.partition(".")
    module = getattr(model, stage)
    return module[int(block)] if block else module


BLOCK_TAP_SETS = [
    ("layer1.0",),
    ("layer4.0",),
    ("layer1.0", "layer1.1"),
    ("layer1.0", "layer2", "layer3.0", "layer4.0"),
    ("layer2.0", "layer3"),
    ("layer1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0"),
    ("layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1", "layer4.0"),
]


# ---------------------------------------------------------------- exactness


@pytest.mark.parametrize("taps", BLOCK_TAP_SETS, ids=lambda t: "+".join(t))
def test_block_taps_equal_forward(resnet18: nn.Module, x: torch.Tensor, taps: tuple[str, ...]) -> None:
    staged = ResNetStaged(resnet18, taps)
    assert staged.taps == taps
    assert staged.tap == taps[0]
    assert staged.n_segments == len(taps) + 1
    with torch.no_grad():
        expected = resnet18(x)
        got = staged(x)
    _, chained = run_segments(staged, x)
    assert got.shape == (3, 10)
    assert max_abs_diff(got, expected) == 0.0
    assert max_abs_diff(chained, expected) == 0.0


@pytest.mark.parametrize("taps", BLOCK_TAP_SETS, ids=lambda t: "+".join(t))
def test_segment_states_equal_block_hooks(resnet18: nn.Module, x: torch.Tensor, taps: tuple[str, ...]) -> None:
    """The state at each tap is the output of that block (or stage), as a forward hook on it sees it."""
    seen: dict[str, torch.Tensor] = {}
    handles = [
        tap_module(resnet18, tap).register_forward_hook(
            lambda _m, _i, out, tap=tap: seen.__setitem__(tap, out.detach().clone())
        )
        for tap in taps
    ]
    try:
        with torch.no_grad():
            resnet18(x)
    finally:
        for h in handles:
            h.remove()
    staged = ResNetStaged(resnet18, taps)
    states, _ = run_segments(staged, x)
    for tap, state in zip(taps, states, strict=True):
        assert torch.equal(state, seen[tap]), tap
        feats = staged.features(state)
        assert torch.equal(feats, seen[tap].mean(dim=(2, 3)))
        assert feats.shape == (3, seen[tap].shape[1])
    for i, tap in enumerate(taps):
        assert staged.feature_dim(x, i) == seen[tap].shape[1]


def test_block_tap_through_stage_model(resnet18: nn.Module, x: torch.Tensor) -> None:
    staged = stage_model(resnet18, ["layer1.0", "layer3.1"])
    assert isinstance(staged, ResNetStaged)
    assert staged.taps == ("layer1.0", "layer3.1")
    with torch.no_grad():
        assert max_abs_diff(staged(x), resnet18(x)) == 0.0


def test_last_block_of_stage_is_the_stage(resnet18: nn.Module, x: torch.Tensor) -> None:
    """``layer2.1`` (last block) cuts where ``layer2`` does: same state, and the stage stays one module."""
    by_block = ResNetStaged(resnet18, "layer2.1")
    by_stage = ResNetStaged(resnet18, "layer2")
    with torch.no_grad():
        assert torch.equal(by_block.segment(0, x), by_stage.segment(0, x))
    assert by_block.head_net[-1] is resnet18.layer2
    assert by_block.rest_net[0] is resnet18.layer3


# ---------------------------------------------------------------- module structure


def test_stage_taps_keep_whole_stages(resnet18: nn.Module) -> None:
    staged = ResNetStaged(resnet18, ["layer1", "layer3"])
    first, middle, last = staged.segments
    assert list(first) == [resnet18.conv1, resnet18.bn1, resnet18.relu, resnet18.maxpool, resnet18.layer1]
    assert first[4] is resnet18.layer1
    assert staged.head_net is first
    assert middle[0] is resnet18.layer2 and middle[1] is resnet18.layer3 and len(middle) == 2
    assert last[0] is resnet18.layer4
    assert isinstance(last[2], nn.Flatten) and last[-1] is resnet18.fc
    with pytest.raises(AttributeError):
        _ = staged.rest_net


def test_only_cut_stages_are_expanded(resnet18: nn.Module) -> None:
    staged = ResNetStaged(resnet18, ["layer1.0", "layer3"])
    first, middle, last = staged.segments
    assert first[-1] is resnet18.layer1[0]
    assert len(first) == 5
    # the rest of layer1 as its block, then layer2 and layer3 whole
    assert list(middle) == [resnet18.layer1[1], resnet18.layer2, resnet18.layer3]
    assert middle[1] is resnet18.layer2 and middle[2] is resnet18.layer3
    assert last[0] is resnet18.layer4


def test_layer4_block_tap_structure(resnet18: nn.Module) -> None:
    staged = ResNetStaged(resnet18, "layer4.0")
    assert staged.head_net[-1] is resnet18.layer4[0]
    assert staged.head_net[-2] is resnet18.layer3
    assert staged.rest_net[0] is resnet18.layer4[1]
    assert staged.rest_net[-1] is resnet18.fc


def test_segments_share_modules(resnet18: nn.Module, x: torch.Tensor) -> None:
    staged = ResNetStaged(resnet18, ["layer2.0", "layer4.0"])
    with torch.no_grad():
        resnet18.layer2[1].conv1.weight.mul_(0.5)
        resnet18.layer4[1].bn2.bias.add_(0.25)
        assert max_abs_diff(staged(x), resnet18(x)) == 0.0


# ---------------------------------------------------------------- resnet_block_taps


def test_resnet_block_taps_resnet18(resnet18: nn.Module) -> None:
    assert resnet_block_taps(resnet18) == (
        "layer1.0",
        "layer1.1",
        "layer2.0",
        "layer2.1",
        "layer3.0",
        "layer3.1",
        "layer4.0",
    )


def test_resnet_block_taps_resnet10() -> None:
    assert resnet_block_taps(make_resnet("resnet10")) == ("layer1.0", "layer2.0", "layer3.0")


@pytest.mark.parametrize("arch", ["resnet18", "resnet10"])
def test_every_listed_block_tap_is_valid(arch: str, x: torch.Tensor) -> None:
    model = make_resnet(arch)
    taps = resnet_block_taps(model)
    staged = ResNetStaged(model, taps)
    with torch.no_grad():
        assert max_abs_diff(staged(x), model(x)) == 0.0


def test_resnet10_block_tap_is_stage_end(x: torch.Tensor) -> None:
    model = make_resnet("resnet10")
    staged = ResNetStaged(model, "layer1.0")
    assert staged.head_net[-1] is model.layer1  # one block: layer1.0 is the end of layer1, nothing expanded
    with pytest.raises(UserError, match="distinct"):
        ResNetStaged(model, ["layer1", "layer1.0"])
    with pytest.raises(UserError, match="no rest"):
        ResNetStaged(model, "layer4.0")


def test_resnet_block_taps_rejects_non_resnet() -> None:
    with pytest.raises(UserError, match="torchvision-layout"):
        resnet_block_taps(nn.Sequential(nn.Linear(2, 2)))


# ---------------------------------------------------------------- errors


def one_line_error(model: nn.Module, taps: object) -> str:
    with pytest.raises(UserError) as info:
        ResNetStaged(model, taps)  # type: ignore[arg-type]
    msg = str(info.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("tap", ["layer4", "layer4.1"])
def test_end_of_network_is_not_a_tap(resnet18: nn.Module, tap: str) -> None:
    msg = one_line_error(resnet18, tap)
    assert repr(tap) in msg
    assert "no rest" in msg
    assert "layer1.0" in msg and "layer4.0" in msg and "layer3" in msg  # the valid taps are listed


@pytest.mark.parametrize("tap", ["layer1.9", "layer2.2", "layerX", "layer5.0", "layer0", "layer1.", "layer1.01", "1"])
def test_bad_tap_names(resnet18: nn.Module, tap: str) -> None:
    msg = one_line_error(resnet18, tap)
    assert repr(tap) in msg
    assert "layer1.0" in msg


def test_bad_block_index_names_the_block_count(resnet18: nn.Module) -> None:
    assert "layer1 has 2 blocks" in one_line_error(resnet18, "layer1.9")


@pytest.mark.parametrize(
    "taps",
    [
        ["layer1", "layer1.1"],
        ["layer1.1", "layer1"],
        ["layer2.0", "layer2.0"],
        ["layer3", "layer3"],
        ["layer2", "layer1.0"],
        ["layer1.1", "layer1.0"],
        ["layer4.0", "layer3.1"],
        ["layer2.0", "layer1"],
    ],
    ids=lambda t: "+".join(t),
)
def test_duplicate_or_out_of_order(resnet18: nn.Module, taps: list[str]) -> None:
    assert "distinct" in one_line_error(resnet18, taps)


def test_no_taps(resnet18: nn.Module) -> None:
    assert "at least one tap" in one_line_error(resnet18, [])


# ---------------------------------------------------------------- stages not indexable as blocks (int8 per stage)


@pytest.fixture
def traced_layer2() -> nn.Module:
    """A ResNet-18 whose layer2 is one FX graph (as int8 per-stage quantisation leaves it): not indexable."""
    model = make_resnet("resnet18")
    model.layer2 = torch.fx.symbolic_trace(model.layer2)
    assert not isinstance(model.layer2, nn.Sequential)
    return model


def test_graph_stage_works_with_stage_taps(traced_layer2: nn.Module, x: torch.Tensor) -> None:
    reference = make_resnet("resnet18")
    with torch.no_grad():
        expected = reference(x)
        assert max_abs_diff(traced_layer2(x), expected) == 0.0
    for taps in (["layer1", "layer2", "layer3"], ["layer2"], ["layer1.0", "layer2", "layer4.0"]):
        staged = ResNetStaged(traced_layer2, taps)
        with torch.no_grad():
            assert max_abs_diff(staged(x), expected) == 0.0, taps
    staged = ResNetStaged(traced_layer2, ["layer1", "layer2"])
    assert staged.segments[1][0] is traced_layer2.layer2


@pytest.mark.parametrize("tap", ["layer2.0", "layer2.1"])
def test_graph_stage_rejects_block_tap(traced_layer2: nn.Module, tap: str) -> None:
    msg = one_line_error(traced_layer2, ["layer1", tap])
    assert msg == (
        f"ResNet tap {tap!r} cuts inside stage layer2, which is quantised as one graph; "
        "quantise per block: int8:granularity=block"
    )


def test_graph_stage_has_no_block_taps(traced_layer2: nn.Module) -> None:
    taps = resnet_block_taps(traced_layer2)
    assert taps == ("layer1.0", "layer1.1", "layer3.0", "layer3.1", "layer4.0")
    assert "layer2.0" not in one_line_error(traced_layer2, "layer4")


def test_all_stages_as_graphs(x: torch.Tensor) -> None:
    model = make_resnet("resnet18")
    with torch.no_grad():
        expected = model(x)
    for stage in RESNET_STAGES:
        setattr(model, stage, torch.fx.symbolic_trace(getattr(model, stage)))
    assert resnet_block_taps(model) == ()
    staged = ResNetStaged(model, ["layer1", "layer2", "layer3"])
    with torch.no_grad():
        assert max_abs_diff(staged(x), expected) == 0.0
    assert "quantised as one graph" in one_line_error(model, "layer4")
