"""GPU weight-only quantisation through torchao: ``int8wo`` and ``int4wo`` (compressors/weight_only.py).

CPU (CI): configs, chain strings, the one-line errors (model not on CUDA, ResNet, chain order), the int8
weight-only mechanics through ``quantize_encoder_weight_only`` (torchao's Int8Tensor also runs on CPU), and
the int4 FLOP formula on fake CUDA tensors (torchao's real int4 linear, no GPU). GPU (``-m gpu``, skipped
without CUDA): both compressors through ``compress_`` on a CUDA model — quantised encoder weights, the head
untouched, outputs close to fp32, the fp32 FLOP count, an exact split, and a SideNet whose exits skip ``rest``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
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

import compressors
from compressors import (
    COMPRESSORS,
    Bf16Config,
    CompressorConfig,
    DistilConfig,
    Fp16Config,
    Int4WeightOnlyCompressorConfig,
    Int8Config,
    Int8WeightOnlyCompressorConfig,
    PruneConfig,
    compose_,
    compress_,
    compression_log,
    config_from_step,
)
from compressors.base import is_quantized
from compressors.quantize import CastIO
from compressors.weight_only import (
    INT4_GROUP_SIZES,
    Int4WeightOnlyLinear,
    Int8WeightOnlyLinear,
    quantize_encoder_weight_only,
    register_weight_only_formulas,
    weight_only_kind,
)
from sidenet.engine.chain import canonical_chain
from sidenet.engine.early_exit import EarlyExit
from sidenet.engine.sidenet import SideNet
from sidenet.engine.split import TextState, split_model
from sidenet.tasks.compressed import chain_configs, compute_dtype
from sidenet_core.errors import UserError
from sidenet_core.flops import count_flops

pytest.importorskip("torchao")

I8 = Int8WeightOnlyCompressorConfig
I4 = Int4WeightOnlyCompressorConfig

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA not available (torch.cuda.is_available() is False)"
)
needs_x86 = pytest.mark.skipif(
    "x86" not in torch.backends.quantized.supported_engines, reason="int8 tests need the x86 quantised engine"
)


def one_line_error(fn: Callable[[], Any], match: str) -> str:
    with pytest.raises(UserError, match=match) as info:
        fn()
    assert "\n" not in str(info.value)
    return str(info.value)


def encoder_linears(model: nn.Module) -> list[nn.Linear]:
    return [m for layer in model.bert.encoder.layer for m in layer.modules() if isinstance(m, nn.Linear)]


def plain_fp32(lin: nn.Linear) -> bool:
    """An untouched Linear: a plain fp32 Parameter, not a torchao tensor subclass."""
    return type(lin) is nn.Linear and type(lin.weight) is nn.Parameter and lin.weight.dtype == torch.float32


# ---------------------------------------------------------------------------------------------------
# tiny data and a trained tiny BERT (module-scoped; only the GPU tests train)
# ---------------------------------------------------------------------------------------------------


def rows(inputs: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    return {k: v[:n] for k, v in inputs.items()}


def to(inputs: dict[str, torch.Tensor], device: str) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in inputs.items()}


def assert_splits_exactly(model: nn.Module, tap: int, x: dict[str, torch.Tensor], atol: float) -> None:
    """rest(head(x)) == model(x) at batch 1 and 3; a row selection (what EarlyExit hands rest) within ``atol``."""
    split = split_model(model, tap)
    with torch.no_grad():
        for n in (1, 3):
            assert torch.equal(split.rest(split.head(rows(x, n))), logits(model, rows(x, n)))
        idx = torch.tensor([0, 2, 4], device=x["input_ids"].device)
        state = split.select(split.head(rows(x, 8)), idx)
        picked = {k: v[idx] for k, v in x.items()}
        assert torch.allclose(split.rest(state), logits(model, picked), atol=atol)


# ---------------------------------------------------------------------------------------------------
# CPU: registry, configs, chain strings
# ---------------------------------------------------------------------------------------------------


def test_both_are_registered_with_one_line_descriptions() -> None:
    for name, cls in (("int8wo", I8), ("int4wo", I4)):
        entry = COMPRESSORS.get(name)
        assert entry.config_cls is cls and cls.name == name
        assert "CUDA" in entry.description and "\n" not in entry.description
        assert cls.requires_cuda is True
    assert compressors.Int8WeightOnlyCompressorConfig is I8 and compressors.Int4WeightOnlyCompressorConfig is I4


def test_int4wo_group_size_defaults_to_128_and_is_validated() -> None:
    assert I4().group_size == 128
    assert [I4(group_size=g).group_size for g in INT4_GROUP_SIZES] == [32, 64, 128, 256]
    for bad in (0, 16, 48, 100, 512, -32):
        msg = one_line_error(lambda bad=bad: I4(group_size=bad), "group_size must be one of 32, 64, 128, 256")
        assert str(bad) in msg
    one_line_error(lambda: I4(group_size="64"), "group_size must be int")  # type: ignore[arg-type]
    one_line_error(lambda: I4(group_size=64.0), "group_size must be int")  # type: ignore[arg-type]


@pytest.mark.parametrize("config", [I8(), I4(), I4(group_size=32)], ids=lambda c: f"{c.name}-{c.to_json()}")
def test_configs_round_trip_through_dict_and_json(config: CompressorConfig) -> None:
    d = config.to_dict()
    assert json.loads(json.dumps(d)) == d and d["name"] == config.name
    assert CompressorConfig.from_dict(d) == config
    assert CompressorConfig.from_json(config.to_json()) == config
    assert type(CompressorConfig.from_json(config.to_json())) is type(config)


def test_config_from_step_and_chain_strings() -> None:
    assert config_from_step("int4wo", {"group_size": "64"}) == I4(group_size=64)
    assert config_from_step("int4wo", {}) == I4(group_size=128)
    assert config_from_step("int8wo", {}) == I8()
    assert chain_configs("int4wo:group_size=64") == [I4(group_size=64)]
    assert chain_configs("prune:ratio=0.5+int8wo") == [PruneConfig(ratio=0.5), I8()]
    assert canonical_chain("int4wo:group_size=32") == "int4wo:group_size=32"
    one_line_error(lambda: config_from_step("int4wo", {"group_size": "48"}), "must be one of 32, 64, 128, 256")
    one_line_error(lambda: config_from_step("int4wo", {"group_size": "big"}), "must be an integer")
    one_line_error(lambda: chain_configs("int8wo:group_size=64"), "unknown parameter")
    one_line_error(lambda: CompressorConfig.from_dict({"name": "int4wo", "bits": 4}), "unknown int4wo parameter")


def test_sidenet_bench_list_shows_both(capsys: pytest.CaptureFixture[str]) -> None:
    from sidenet.cli import main

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in ("int8wo", "int4wo"):
        (line,) = [ln for ln in lines if ln.split()[:1] == [name]]
        assert COMPRESSORS.get(name).description in line


# ---------------------------------------------------------------------------------------------------
# CPU: one-line errors
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [I8(), I4(group_size=32)], ids=lambda c: c.name)
def test_a_model_not_on_cuda_is_refused(config: CompressorConfig) -> None:
    model = make_tiny_bert()
    msg = one_line_error(lambda: compress_(model, config), f"{config.name} is a CUDA compressor")
    assert "model is on cpu" in msg and "use int8 on CPU" in msg
    assert all(plain_fp32(lin) for lin in encoder_linears(model))  # nothing was changed on the way


@pytest.mark.parametrize("config", [I8(), I4()], ids=lambda c: c.name)
def test_resnets_and_other_models_are_refused(config: CompressorConfig) -> None:
    msg = one_line_error(lambda: compress_(make_tiny_resnet(), config), "only Linear is its classifier head")
    assert "nn.Linear" in msg and "int8" in msg and "bf16" in msg
    one_line_error(lambda: compress_(nn.Sequential(nn.Linear(4, 2)), config), "BERT sequence classifiers only")


def test_int4wo_group_size_must_divide_every_encoder_linear() -> None:
    # tiny BERT: hidden 32, intermediate 64, so only 32 divides every in_features (checked before the device)
    msg = one_line_error(lambda: compress_(make_tiny_bert(), I4()), "group_size=128 does not divide the 32")
    assert "bert.encoder.layer.0." in msg and "use int4wo:group_size=32" in msg
    one_line_error(lambda: compress_(make_tiny_bert(), I4(group_size=64)), "use int4wo:group_size=32")


@pytest.mark.parametrize(
    ("first", "second", "fragment"),
    [
        (Fp16Config(), I8(), "int8wo needs an fp32 model"),
        (Bf16Config(), I4(group_size=32), "int4wo needs an fp32 model"),
        (Bf16Config(include_head=True), I8(), "do not combine it with fp16/bf16"),
    ],
    ids=["fp16-int8wo", "bf16-int4wo", "bf16head-int8wo"],
)
def test_weight_only_after_a_cast_is_refused(first: CompressorConfig, second: CompressorConfig, fragment: str) -> None:
    one_line_error(lambda: compose_(make_tiny_bert(), [first, second]), fragment)


@needs_x86
@pytest.mark.parametrize("second", [I8(), I4(group_size=32)], ids=lambda c: c.name)
def test_weight_only_after_int8_is_refused(second: CompressorConfig) -> None:
    one_line_error(lambda: compose_(make_tiny_bert(), [Int8Config(), second]), "already quantised")


def test_missing_torchao_names_the_pip_pin(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao -> ImportError
    one_line_error(lambda: quantize_encoder_weight_only(make_tiny_bert(), I8()), r"pip install torchao==0\.18\.0")


@pytest.fixture
def int8wo_cpu_bert() -> nn.Module:
    """int8 weight-only on CPU (the CUDA check is compress_'s): to test what may follow it in a chain."""
    return quantize_encoder_weight_only(make_tiny_bert(), I8())


def test_nothing_compresses_after_a_weight_only_model(int8wo_cpu_bert: nn.Module) -> None:
    model = int8wo_cpu_bert
    one_line_error(lambda: compress_(model, PruneConfig(finetune_epochs=0)), "put prune before int8")
    train = [({"input_ids": torch.randint(5, 50, (4, 6))}, torch.zeros(4, dtype=torch.long))]
    one_line_error(lambda: compress_(model, DistilConfig(), train_batches=lambda: train), "put distil before int8")
    one_line_error(lambda: compress_(model, Int8Config()), "already int8-quantised")
    one_line_error(lambda: compress_(model, Bf16Config()), "cannot cast an int8-quantised model")
    one_line_error(lambda: compress_(model, I8()), "already quantised; int8wo must be the only quantiser")
    one_line_error(lambda: compress_(model, I4(group_size=32)), "already quantised; int4wo")


# ---------------------------------------------------------------------------------------------------
# CPU: int8 weight-only mechanics (torchao Int8Tensor runs on CPU too) and the int4 FLOP formula
# ---------------------------------------------------------------------------------------------------


def test_int8_weight_only_quantises_the_encoder_linears_only(text_data: dict[str, Any]) -> None:
    from torchao.quantization import Int8Tensor

    ref = make_tiny_bert()
    model = quantize_encoder_weight_only(copy.deepcopy(ref), I8())
    linears = encoder_linears(model)
    assert len(linears) == 4 * 6
    for lin in linears:
        assert type(lin) is Int8WeightOnlyLinear and isinstance(lin.weight, Int8Tensor)
        assert lin.weight.qdata.dtype == torch.int8
    assert plain_fp32(model.classifier) and plain_fp32(model.bert.pooler.dense)
    assert is_quantized(model) and weight_only_kind(model) == "int8wo" and compute_dtype(model) == "int8wo"
    assert weight_only_kind(ref) is None and compute_dtype(ref) == "fp32"

    x = text_data["x"]
    ref_out, out = logits(ref, x), logits(model, x)
    assert cosine(out, ref_out) >= 0.99 and agreement(out, ref_out) >= 0.9
    assert flops(model, x) == flops(ref, x) > 0  # aten.mm with the fp32 shapes
    assert_splits_exactly(model, 2, x, atol=1e-5)
    assert torch.equal(logits(copy.deepcopy(model), x), out)


def _fake_int4_linear(in_features: int, out_features: int, group_size: int) -> tuple[nn.Linear, nn.Linear]:
    """(an int4 Linear as int4wo leaves it, its bf16 original): fake CUDA tensors, tinygemm's padded layout."""
    from torchao.quantization import Int4TilePackedTo4dTensor

    k, n = -(-in_features // 1024) * 1024, -(-out_features // 8) * 8  # tinygemm pads K to 1024s, N to 8s
    packed = torch.empty(n // 8, k // 128, 32, 4, dtype=torch.int32, device="cuda")
    scale_and_zero = torch.empty(k // group_size, n, 2, dtype=torch.bfloat16, device="cuda")
    weight = Int4TilePackedTo4dTensor(packed, scale_and_zero, [1, group_size], torch.Size([out_features, in_features]))
    lin = nn.Linear(in_features, out_features, device="cuda", dtype=torch.bfloat16)
    lin.weight = nn.Parameter(weight, requires_grad=False)
    lin.__class__ = Int4WeightOnlyLinear
    return lin, nn.Linear(in_features, out_features, device="cuda", dtype=torch.bfloat16)


def test_int4_linear_counts_the_fp32_flops_not_the_padded_kernel() -> None:
    """torchao's real int4 linear (pad → aten._weight_int4pack_mm → slice) on fake CUDA tensors: no GPU needed."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    register_weight_only_formulas()
    register_weight_only_formulas()  # idempotent
    with FakeTensorMode():
        lin, ref = _fake_int4_linear(96, 20, 32)
        x = torch.empty(3, 5, 96, device="cuda", dtype=torch.bfloat16)
        int4, out = count_flops(lin, x)
        fp, _ = count_flops(ref, x)
        assert out.shape == (3, 5, 20)
        assert int4 == fp == 2 * 15 * 96 * 20
        lin.__class__ = nn.Linear  # the same weight in a plain Linear: the kernel's padded shapes (1024 × 24)
        assert count_flops(lin, x)[0] == 2 * 15 * 1024 * 24


# ---------------------------------------------------------------------------------------------------
# GPU: through compress_ on a CUDA model
# ---------------------------------------------------------------------------------------------------

GPU_CONFIGS = [I8(), I4(group_size=32)]  # tiny BERT: hidden 32, so int4 groups of 32


@pytest.mark.parametrize("config", GPU_CONFIGS, ids=lambda c: c.name)
@gpu
@needs_cuda
def test_weight_only_on_cuda_quantises_the_encoder_and_keeps_close(
    config: CompressorConfig, trained_bert: nn.Module, text_data: dict[str, Any]
) -> None:
    from torchao.quantization import Int4TilePackedTo4dTensor, Int8Tensor

    ref = copy.deepcopy(trained_bert).cuda()
    model = compress_(copy.deepcopy(trained_bert).cuda(), config)
    int4 = config.name == "int4wo"
    linears = encoder_linears(model)
    assert len(linears) == 4 * 6
    for lin in linears:
        assert type(lin) is (Int4WeightOnlyLinear if int4 else Int8WeightOnlyLinear)
        assert isinstance(lin.weight, Int4TilePackedTo4dTensor if int4 else Int8Tensor) and lin.weight.is_cuda
    if int4:  # bf16 inside each encoder layer, fp32 between layers (the split state and the SideNet stay fp32)
        assert all(type(layer) is CastIO and layer.dtype_name == "bfloat16" for layer in model.bert.encoder.layer)
    assert plain_fp32(model.classifier) and plain_fp32(model.bert.pooler.dense)
    assert model.bert.embeddings.word_embeddings.weight.dtype == torch.float32
    assert compute_dtype(model) == config.name and is_quantized(model)
    (step,) = compression_log(model)
    assert step["compressor"] == config.name and step["linears"] == 24
    assert step["dtype"] == ("bfloat16" if int4 else "float32")

    x = to(text_data["x"], "cuda")
    ref_out, out = logits(ref, x), logits(model, x)
    assert out.dtype == torch.float32 and out.device.type == "cuda"
    assert cosine(out, ref_out) >= 0.99 and agreement(out, ref_out) >= 0.9
    assert flops(model, x) == flops(ref, x) > 0  # int4: tinygemm pads K to 1024 here; still the fp32 count
    assert_splits_exactly(model, 2, x, atol=3e-2 if int4 else 1e-4)


@pytest.mark.parametrize("config", GPU_CONFIGS, ids=lambda c: c.name)
@gpu
@needs_cuda
def test_sidenet_attaches_on_cuda_and_exits_skip_rest(
    config: CompressorConfig, trained_bert: nn.Module, text_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = compress_(copy.deepcopy(trained_bert).cuda(), config)
    x = to(text_data["x"], "cuda")
    split = split_model(model, 2)
    with torch.no_grad():
        side = SideNet(split.feature_dim(x), 2).cuda().eval()
        full = logits(model, x)
    seen: list[int] = []
    real_rest = split.rest

    def rest(state: TextState) -> torch.Tensor:
        seen.append(int(state.hidden.shape[0]))
        assert state.hidden.dtype == torch.float32  # the state between layers stays fp32 (int4wo: CastIO)
        return real_rest(state)

    monkeypatch.setattr(split, "rest", rest)
    with torch.no_grad():
        out = EarlyExit(split, side, threshold=0.0).run(x)  # everyone exits: rest never runs
        assert bool(out.exited.all()) and sum(seen) == 0
        out = EarlyExit(split, side, threshold=2.0).run(x)  # nobody exits: the compressed MainNet's own output
        assert not bool(out.exited.any()) and sum(seen) == 64
        assert torch.equal(out.logits, full)
        seen.clear()
        out = EarlyExit(split, side, threshold=float(out.confidence.median())).run(x)  # rest sees the survivors
    assert out.logits.device.type == "cuda"
    assert sum(seen) == int((~out.exited).sum())
