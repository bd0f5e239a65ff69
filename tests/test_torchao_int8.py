"""int8 through torchao: ``Int8Config(backend="pt2e")`` (ResNet, static PT2E per stage) and ``backend="torchao"``
(BERT, dynamic int8 encoder layers), both torch.compile'd (compressors/torchao_int8.py).

Fast tests call the module-level functions with ``compile=False`` (the same quantised graphs, uncompiled);
the compiled path through ``compress_`` costs ~20 s of compilation per model and is marked slow.
Every compressed model must keep ``rest(head(x)) == model(x)`` (a SideNet attaches after compression),
count the fp32 FLOPs, and say it is quantised.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from tiny_models import (
    agreement,
    cosine,
    flops,
    logits,
    make_tiny_bert,
    make_tiny_resnet,
)
from torch import nn

import compressors  # noqa: F401  (registers the compressors and the int8 FLOP formulas)
from compressors import Int8Config, compress_, compression_log
from compressors.base import is_quantized
from compressors.torchao_int8 import (
    Pt2eStage,
    TorchaoInt8Module,
    lower_to_onednn,
    own_relu_blocks,
    quantize_bert_torchao,
    quantize_resnet_pt2e,
)
from sidenet.engine.split import split_model
from sidenet_core.errors import UserError

pytest.importorskip("torchao")


# ---------------------------------------------------------------------------------------------------
# tiny trained models and data (module-scoped)
# ---------------------------------------------------------------------------------------------------


def rows(inputs: Any, n: int) -> Any:
    return {k: v[:n] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[:n]


def assert_splits_exactly(model: nn.Module, tap: Any, inputs: Any) -> None:
    """rest(head(x)) == model(x) at batch 1 and batch 3 (a dynamic batch dim), and on a row selection."""
    split = split_model(model, tap)
    with torch.no_grad():
        for n in (1, 3):
            x = rows(inputs, n)
            assert float((split.rest(split.head(x)) - logits(model, x)).abs().max()) == 0.0
        idx = torch.tensor([0, 2, 4])  # what EarlyExit hands rest: the surviving rows of a state
        state = split.select(split.head(rows(inputs, 8)), idx)
        picked = {k: v[idx] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[idx]
        assert torch.allclose(split.rest(state), logits(model, picked), atol=1e-5)


@contextmanager
def no_recompiles() -> Iterator[None]:
    """Fail if anything compiles inside: compression must have compiled every variant already."""
    with torch.compiler.set_stance("fail_on_recompile"):
        yield


def executed_ops(fn: Any) -> set[str]:
    """Names of the ops a call runs, seen by the profiler (it sees compiled code's kernel calls too)."""
    from torch.profiler import profile

    with torch.no_grad(), profile() as prof:
        fn()
    return {e.key for e in prof.key_averages()}


# ---------------------------------------------------------------------------------------------------
# pt2e (ResNet), uncompiled: fast
# ---------------------------------------------------------------------------------------------------


def test_own_relu_blocks_compute_exactly_what_torchvision_blocks_do(trained_resnet: nn.Module) -> None:
    from torchvision.models.resnet import BasicBlock, Bottleneck

    x = torch.randn(3, 8, 8, 8)
    with torch.no_grad():
        for stage in (trained_resnet.layer1, trained_resnet.layer2):
            rewritten = own_relu_blocks(stage)
            assert not any(isinstance(m, BasicBlock) for m in rewritten.modules())
            y = stage(x) if stage is trained_resnet.layer1 else stage(trained_resnet.layer1(x))
            y2 = rewritten(x) if stage is trained_resnet.layer1 else rewritten(trained_resnet.layer1(x))
            assert torch.equal(y, y2)
        torch.manual_seed(3)
        bottleneck = Bottleneck(16, 4).eval()  # relu used three times
        x = torch.randn(2, 16, 6, 6)
        rewritten = own_relu_blocks(bottleneck)
        assert len({id(m) for m in rewritten.relus}) == 3
        assert torch.equal(bottleneck(x), rewritten(x))


def test_pt2e_resnet_quantises_every_stage_and_splits(trained_resnet: nn.Module, image_data: dict[str, Any]) -> None:
    model = quantize_resnet_pt2e(copy.deepcopy(trained_resnet), image_data["calibration"], compile=False)
    stages = [model.conv1, model.layer1, model.layer2, model.layer3, model.layer4]
    assert all(type(s) is Pt2eStage for s in stages)
    assert all(type(m) is nn.Identity for m in (model.bn1, model.relu, model.maxpool))
    assert type(model.fc) is nn.Linear  # the classifier stays fp32
    assert not any(isinstance(m, nn.Conv2d | nn.BatchNorm2d) for m in model.modules())  # no fp32 conv left
    for stage in stages:  # int8 weights, no fp32 copy of them kept
        assert any(b.dtype == torch.int8 for b in stage.buffers())
        assert all(p.dim() <= 1 for p in stage.parameters())  # only the folded biases stay float
    assert is_quantized(model) and not is_quantized(trained_resnet)

    x = image_data["x"]
    ref, out = logits(trained_resnet, x), logits(model, x)
    assert cosine(out, ref) >= 0.99
    assert agreement(out, ref) >= 0.9
    assert flops(model, x) == flops(trained_resnet, x) > 0
    for tap in ("layer1", "layer2", "layer3"):
        assert_splits_exactly(model, tap, x)
    assert torch.equal(logits(copy.deepcopy(model), x), out)  # copies (the harness deep-copies MainNets)


def test_pt2e_include_head_quantises_fc(trained_resnet: nn.Module, image_data: dict[str, Any]) -> None:
    model = quantize_resnet_pt2e(
        copy.deepcopy(trained_resnet), image_data["calibration"][:1], include_head=True, compile=False
    )
    assert type(model.fc) is Pt2eStage and model.fc.input_shape == (64,)
    x = image_data["x"]
    assert cosine(logits(model, x), logits(trained_resnet, x)) >= 0.99
    assert flops(model, x) == flops(trained_resnet, x)
    assert_splits_exactly(model, "layer2", x)


# ---------------------------------------------------------------------------------------------------
# torchao (BERT), uncompiled: fast
# ---------------------------------------------------------------------------------------------------


def test_torchao_bert_quantises_the_encoder_layers_and_splits(
    trained_bert: nn.Module, text_data: dict[str, Any]
) -> None:
    model = quantize_bert_torchao(copy.deepcopy(trained_bert), compile=False)
    for layer in model.bert.encoder.layer:
        assert type(layer) is TorchaoInt8Module
        for lin in (layer.attention.self.query, layer.attention.output.dense, layer.intermediate.dense):
            assert type(lin.weight).__name__ == "Int8Tensor"  # torchao int8 weights
    assert type(model.classifier.weight) is nn.Parameter and model.classifier.weight.dtype == torch.float32
    assert is_quantized(model) and not is_quantized(trained_bert)

    x = text_data["x"]  # 16 of 64 rows padded
    ref, out = logits(trained_bert, x), logits(model, x)
    assert cosine(out, ref) >= 0.99
    assert agreement(out, ref) >= 0.9
    assert flops(model, x) == flops(trained_bert, x) > 0
    assert_splits_exactly(model, 2, x)
    assert torch.equal(logits(copy.deepcopy(model), x), out)


# ---------------------------------------------------------------------------------------------------
# errors: fast
# ---------------------------------------------------------------------------------------------------


def one_line_error(fn: Any, match: str) -> str:
    with pytest.raises(UserError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_each_backend_refuses_the_other_family(image_data: dict[str, Any]) -> None:
    msg = one_line_error(lambda: compress_(make_tiny_bert(), Int8Config(backend="pt2e")), "pt2e is for ResNets")
    assert "x86" in msg and "torchao" in msg
    one_line_error(
        lambda: compress_(make_tiny_resnet(), Int8Config(backend="torchao"), calibration=image_data["calibration"]),
        "torchao is for BERT",
    )
    one_line_error(lambda: quantize_resnet_pt2e(make_tiny_bert(), image_data["calibration"]), "pt2e is for ResNets")
    one_line_error(lambda: quantize_bert_torchao(make_tiny_resnet()), "torchao is for BERT")


def test_pt2e_needs_calibration_and_backends_are_listed() -> None:
    one_line_error(lambda: compress_(make_tiny_resnet(), Int8Config(backend="pt2e")), "calibration")
    msg = one_line_error(lambda: Int8Config(backend="tensorrt"), "not one of")
    assert "pt2e" in msg and "torchao" in msg


def test_missing_torchao_names_the_pip_pin(monkeypatch: pytest.MonkeyPatch, image_data: dict[str, Any]) -> None:
    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao -> ImportError
    one_line_error(
        lambda: compress_(make_tiny_resnet(), Int8Config(backend="pt2e"), calibration=image_data["calibration"]),
        r"pip install torchao==0\.18\.0",
    )
    one_line_error(lambda: quantize_bert_torchao(make_tiny_bert()), r"pip install torchao==0\.18\.0")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_models_are_refused(image_data: dict[str, Any]) -> None:
    one_line_error(lambda: quantize_resnet_pt2e(make_tiny_resnet().cuda(), image_data["calibration"]), "CPU only")
    one_line_error(lambda: quantize_bert_torchao(make_tiny_bert().cuda()), "CPU only")


# ---------------------------------------------------------------------------------------------------
# compiled, through compress_: slow (~20 s of compilation each)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("channels", [1, 3], ids=["gray-stem-lowered", "rgb-stem-compiled"])
def test_pt2e_compiled_resnet(trained_resnet: nn.Module, image_data: dict[str, Any], channels: int) -> None:
    from sidenet_core.layouts import build_resnet

    if channels == 1:
        fp32, x, calibration = trained_resnet, image_data["x"], image_data["calibration"]
    else:
        torch.manual_seed(0)
        fp32 = build_resnet("resnet10", 8, 3, 4).eval()
        x = torch.randn(64, 3, 16, 16)
        calibration = [torch.randn(32, 3, 16, 16) for _ in range(2)]
    model = compress_(copy.deepcopy(fp32), Int8Config(backend="pt2e"), calibration=calibration)
    step = compression_log(model)[-1]
    assert step["method"] == "static-pt2e-per-stage" and step["backend"] == "pt2e" and step["compile"] is True
    assert step["calibration_batches"] == len(calibration) and step["compile_seconds"] > 0
    assert is_quantized(model)
    assert model.conv1.lowered is (channels == 1)

    def runs_int8_convs_only() -> bool:
        ops = executed_ops(lambda: model(x[:3]))
        fp32_convs = {"aten::convolution", "aten::conv2d", "aten::mkldnn_convolution", "aten::_slow_conv2d_forward"}
        return any(op.startswith("onednn::qconv") for op in ops) and not fp32_convs & ops

    ref = logits(fp32, x)
    assert cosine(logits(model, x), ref) >= 0.99
    if channels == 1:  # trained: predictions carry information
        assert agreement(logits(model, x), ref) >= 0.9
    assert runs_int8_convs_only()  # oneDNN int8 convolutions (Inductor freezing applied), no fp32 ones
    assert flops(model, x) == flops(fp32, x) > 0

    with no_recompiles():  # every batch size, both grad modes, row selections: all compiled already
        assert_splits_exactly(model, "layer1", x)
        assert_splits_exactly(model, "layer3", x)
        with torch.inference_mode():
            assert logits(model, x).shape == (64, 4) and logits(model, x[:1]).shape == (1, 4)
        assert model(x[:2]).shape == (2, 4)  # grad enabled: runs under no_grad, no new variant
        lower_to_onednn(model.layer1.graph, torch.zeros(2, *model.layer1.input_shape))  # must not wipe caches
        assert logits(model, x[:5]).shape == (5, 4)
    if channels == 3:
        return
    torch._dynamo.reset()  # caches wiped by someone else: stages recompile on use, still to int8 kernels
    again = logits(model, x[:3])  # (re)compiles here, outside the profiler
    assert runs_int8_convs_only()
    assert cosine(again, ref[:3]) >= 0.99
    twin = copy.deepcopy(model)  # compiled code is not copied: a copy compiles (and warms up) on first use
    assert all("_compiled_cache" not in m.__dict__ for m in twin.modules())


@pytest.mark.slow
def test_torchao_compiled_bert(trained_bert: nn.Module, text_data: dict[str, Any]) -> None:
    model = compress_(copy.deepcopy(trained_bert), Int8Config(backend="torchao"))
    step = compression_log(model)[-1]
    assert step["method"] == "dynamic-torchao" and step["backend"] == "torchao" and step["compile"] is True
    assert step["compile_seconds"] > 0 and is_quantized(model)

    x = text_data["x"]
    ref, out = logits(trained_bert, x), logits(model, x)
    assert cosine(out, ref) >= 0.99
    assert agreement(out, ref) >= 0.9
    assert "aten::_int_mm" in executed_ops(lambda: model(**rows(x, 3)))
    assert flops(model, x) == flops(trained_bert, x) > 0

    short = {"input_ids": torch.randint(5, 50, (5, 7)), "attention_mask": torch.ones(5, 7, dtype=torch.long)}
    with no_recompiles():
        assert_splits_exactly(model, 2, x)  # padded rows: a mask; below, none padded: no mask
        assert_splits_exactly(model, 1, short)
        with torch.inference_mode():
            for batch in (x, rows(x, 1), short, rows(short, 1)):
                assert cosine(logits(model, batch), logits(trained_bert, batch)) >= 0.99
        assert model(**short).logits.shape == (5, 2)  # grad enabled: runs under no_grad, no new variant
