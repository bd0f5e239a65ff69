"""``Int8Config(granularity="block")``: static FX int8 of a ResNet with one graph per residual block
(compressors/quantize.py), next to the default one graph per stage, on a tiny untrained ResNet-18."""

from __future__ import annotations

import copy

import pytest
import torch
from test_weight_only import needs_x86, one_line_error  # one copy of the int8 test helpers
from torch import fx, nn

from compressors import Int8Config, compress_, compression_log, config_from_step
from compressors.base import RESNET_STAGES, count_model_flops, is_quantized
from sidenet.engine.split import split_model
from sidenet.tasks.compressed import normalize_chain
from sidenet_core.layouts import build_resnet


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).float().mean())


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).norm() / ref.norm())


@pytest.fixture(scope="module")
def fp32() -> nn.Module:
    torch.manual_seed(0)
    return build_resnet("resnet18", 8, 1, 10).eval()


@pytest.fixture(scope="module")
def calibration() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(8, 1, 32, 32, generator=gen) for _ in range(4)]


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(64, 1, 32, 32, generator=torch.Generator().manual_seed(2))


def quantise(model: nn.Module, config: Int8Config, calibration: list[torch.Tensor]) -> nn.Module:
    if "x86" not in torch.backends.quantized.supported_engines:
        pytest.skip("needs the x86 quantised engine")
    return compress_(copy.deepcopy(model), config, calibration=calibration, example_inputs=calibration[0])


@pytest.fixture(scope="module")
def per_stage(fp32: nn.Module, calibration: list[torch.Tensor]) -> nn.Module:
    return quantise(fp32, Int8Config(), calibration)


@pytest.fixture(scope="module")
def per_block(fp32: nn.Module, calibration: list[torch.Tensor]) -> nn.Module:
    return quantise(fp32, Int8Config(granularity="block"), calibration)


def run(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(inputs)


# ---------------------------------------------------------------------------------------------------
# the quantised model
# ---------------------------------------------------------------------------------------------------


@needs_x86
def test_block_output_is_close_to_stage_and_fp32(
    fp32: nn.Module, per_stage: nn.Module, per_block: nn.Module, x: torch.Tensor
) -> None:
    ref, stage, block = run(fp32, x), run(per_stage, x), run(per_block, x)
    assert not torch.equal(block, ref)  # it is quantised
    assert agreement(block, stage) >= 0.9 and rel_error(block, stage) < 0.05
    assert agreement(block, ref) >= 0.85 and rel_error(block, ref) < 0.2


@needs_x86
def test_every_stage_is_a_sequential_of_block_graphs(fp32: nn.Module, per_block: nn.Module) -> None:
    assert is_quantized(per_block)
    for stage in RESNET_STAGES:
        layer = getattr(per_block, stage)
        assert type(layer) is nn.Sequential, stage
        assert len(layer) == len(getattr(fp32, stage)) == 2, stage  # resnet18: two BasicBlocks per stage
        assert all(isinstance(block, fx.GraphModule) for block in layer), stage
        assert all(is_quantized(block) for block in layer), stage
    assert not any(type(m) is nn.Conv2d for m in per_block.modules())  # every conv is int8
    assert isinstance(per_block.conv1, fx.GraphModule)  # the stem as one graph, as per stage
    assert all(type(getattr(per_block, n)) is nn.Identity for n in ("bn1", "relu", "maxpool"))
    assert type(per_block.fc) is nn.Linear  # the head stays fp32 without include_head


@needs_x86
def test_blocks_run_one_after_another_equal_the_stage(per_block: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        h = per_block.conv1(x)  # the fused stem
        by_block = per_block.layer1[1](per_block.layer1[0](h))
        assert torch.equal(by_block, per_block.layer1(h))
        h = per_block.layer1(h)
        assert torch.equal(per_block.layer2[1](per_block.layer2[0](h)), per_block.layer2(h))
    assert by_block.dtype == torch.float32  # the state between blocks is fp32


@needs_x86
@pytest.mark.parametrize("tap", ["layer1", "layer3"])
def test_block_model_splits_exactly(per_block: nn.Module, x: torch.Tensor, tap: str) -> None:
    split = split_model(per_block, tap)
    with torch.no_grad():
        assert float((split.rest(split.head(x[:16])) - per_block(x[:16])).abs().max()) == 0.0


@needs_x86
def test_the_log_says_per_block(per_stage: nn.Module, per_block: nn.Module) -> None:
    (step,) = compression_log(per_block)
    assert step["method"] == "static-fx-per-block" and step["calibration_batches"] == 4
    assert step["config"]["granularity"] == "block"
    assert compression_log(per_stage)[0]["method"] == "static-fx-per-stage"


@needs_x86
def test_block_flops_match_stage_flops(per_stage: nn.Module, per_block: nn.Module, x: torch.Tensor) -> None:
    stage, block = count_model_flops(per_stage, x[:8]), count_model_flops(per_block, x[:8])
    assert block > 0 and stage > 0
    assert abs(block - stage) <= 0.03 * stage


@needs_x86
def test_block_with_include_head_quantises_fc(
    fp32: nn.Module, calibration: list[torch.Tensor], x: torch.Tensor
) -> None:
    model = quantise(fp32, Int8Config(granularity="block", include_head=True), calibration)
    assert isinstance(model.fc, fx.GraphModule) and is_quantized(model.fc)
    assert type(model.layer4) is nn.Sequential and len(model.layer4) == 2
    assert agreement(run(model, x), run(fp32, x)) >= 0.8


# ---------------------------------------------------------------------------------------------------
# the config and the chain grammar
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["blocks", "Stage", "layer", ""])
def test_a_bad_granularity_is_a_one_line_error(value: str) -> None:
    msg = one_line_error(lambda: Int8Config(granularity=value), "granularity")
    assert "stage" in msg and "block" in msg
    one_line_error(lambda: config_from_step("int8", {"granularity": value or "none"}), "granularity")


def test_granularity_must_be_a_string() -> None:
    one_line_error(lambda: Int8Config(granularity=1), "granularity must be str")  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["ort", "pt2e", "torchao"])
def test_block_needs_a_torch_ao_backend(backend: str) -> None:
    msg = one_line_error(lambda: Int8Config(backend=backend, granularity="block"), "granularity=block")
    assert backend in msg and "backend=x86" in msg
    assert Int8Config(backend=backend).granularity == "stage"  # the default stays valid with every backend


def test_the_chain_grammar_sets_granularity() -> None:
    assert Int8Config().granularity == "stage"
    assert config_from_step("int8", {"granularity": "block"}) == Int8Config(granularity="block")
    assert config_from_step("int8", {"granularity": " block "}) == Int8Config(granularity="block")
    config = Int8Config(granularity="block", backend="onednn")
    assert Int8Config.from_json(config.to_json()) == config


def test_normalize_chain_writes_block_and_drops_stage() -> None:
    assert normalize_chain("int8") == "int8"
    assert normalize_chain("int8:granularity=stage") == "int8"
    assert normalize_chain("int8:granularity=block") == "int8:granularity=block"
    assert normalize_chain(normalize_chain("int8:granularity=block")) == "int8:granularity=block"
    assert normalize_chain("int8:backend=x86,granularity=block") == "int8:granularity=block"
