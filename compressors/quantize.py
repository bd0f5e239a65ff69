"""Quantisation: ``int8`` (CPU; static PTQ for ResNets, dynamic for BERT) and ``fp16`` / ``bf16`` casts.

**int8, ResNet — static PTQ with torch.ao FX, one graph per stage.** The stem (conv1 + bn1 + relu +
maxpool) and each of layer1..layer4 are FX-prepared (``prepare_fx`` with
``get_default_qconfig_mapping(backend)``; conv+bn(+relu) fused), calibrated together on the given
batches, and converted (``convert_fx``) separately. Every converted part quantises its fp32 input and
dequantises its output, and is put back under its own attribute: the fused stem goes to ``conv1`` with
``bn1``/``relu``/``maxpool`` set to ``nn.Identity``; ``layer1``..``layer4`` keep their names. So the
torchvision attribute layout stays, ``split_model(model, "layerK")`` works for every tap, and the state
between stages (what a SideNet reads) is an ordinary fp32 tensor. The price is one dequantise +
quantise per stage boundary (4 boundaries), which is small next to the convolutions. Why not one
graph: a single FX graph would hide the stages, and splitting it into head/rest at compress time would
tie the compressed model to one tap. ``avgpool`` and the classifier ``fc`` stay fp32 unless
``include_head=True`` (then ``fc`` becomes a static int8 linear too).

**int8, ResNet — ``granularity="block"``: one graph per residual block.** Early-exit systems that place
exits after individual residual blocks inside a stage (EENets) need the quantised ResNet cut at block
boundaries, and per-stage graphs hide those. With ``granularity="block"`` every element of
``layer1``..``layer4`` (a BasicBlock) is FX-prepared, calibrated in order on the same batches and
converted as its own graph, and each stage becomes an ``nn.Sequential`` of the converted blocks (so
``model.layer2[0]`` is the first block of layer2, and the state between any two blocks is fp32). The stem
and ``include_head`` are as above. The price is one dequantise + quantise per block boundary instead of
per stage boundary. torch.ao backends only: ``ort``, ``pt2e`` and ``torchao`` refuse it (one-line
UserError); BERT ignores it.

**int8, BERT — dynamic quantisation** (``torch.ao.quantization.quantize_dynamic(layer, {nn.Linear},
torch.qint8)``) of each ``bert.encoder.layer[i]`` in place; embeddings stay fp32 and the pooler +
classifier too unless ``include_head=True``.

**int8, BERT — ``backend="ort"``**: ONNX Runtime dynamic int8 through optimum instead of torch.ao
(:mod:`compressors.ort`): returns an :class:`~compressors.ort.OrtBertClassifier` wrapper (HF call
convention, its own head/rest graphs per tap via ``sidenet_split``); CPU only, BERT only.

The quantised engine is process-global in PyTorch: applying ``int8`` sets
``torch.backends.quantized.engine = config.backend`` (default ``x86``; ``qnnpack`` is accepted only when
asked for — FINDINGS: 2.6× slower than fp32 on this CPU kind).

**fp16 / bf16** cast the stages (ResNet: stem + layer1..4; BERT: encoder layers) and wrap each in a
module that casts its floating inputs to the low precision and its outputs back to fp32, so the split
states and the SideNet stay fp32. Meant for GPUs; allowed on CPU (slow there, useful for tests).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Any, ClassVar

import torch
from torch import nn

from compressors.base import (
    RESNET_STAGES,
    CompressContext,
    CompressorConfig,
    is_quantized,
    model_family,
    record,
    register_compressor,
)
from compressors.flops import register_quantized_formulas
from compressors.torchao_int8 import BACKENDS as TORCHAO_BACKENDS
from compressors.torchao_int8 import apply_int8_torchao
from sidenet_core.errors import UserError

BACKENDS = ("x86", "fbgemm", "onednn", "qnnpack")  # torch.ao quantised engines
ORT_BACKEND = "ort"  # ONNX Runtime dynamic int8 through optimum (BERT only): compressors/ort.py
GRANULARITIES = ("stage", "block")  # ResNet torch.ao int8: one FX graph per stage or per residual block


@contextmanager
def _quiet_torch_ao() -> Iterator[None]:
    """torch.ao.quantization works in torch 2.14 but warns that it is deprecated (migration to torchao is
    tracked in FINDINGS), that observers' ``reduce_range`` will go, and (once per process) that quantised
    tensor dtypes are deprecated; silence exactly these, while compressing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"Please use quant_min and quant_max", category=UserWarning)
        # raised once per process (C++ TORCH_WARN_ONCE) by the first quantised tensor, i.e. during convert
        warnings.filterwarnings(
            "ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel", category=UserWarning
        )
        yield


# ---------------------------------------------------------------------------------------------------
# int8
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Int8Config(CompressorConfig):
    """int8 on CPU: static FX PTQ per stage (or per block) for ResNets (needs ``calibration``), dynamic for BERT."""

    name: ClassVar[str] = "int8"
    cpu_only: ClassVar[str] = "torch.ao / ONNX Runtime"
    dtype: ClassVar[str | None] = "int8"

    # a torch.ao engine (BACKENDS), "ort" (ONNX Runtime, BERT), or torchao: "pt2e" (ResNet) / "torchao" (BERT)
    backend: str = "x86"
    calibration_batches: int = 16  # at most this many batches of ``calibration`` are used
    include_head: bool = False  # also quantise the classifier (ResNet fc; BERT pooler + classifier)
    # ResNet, torch.ao backends: one FX graph per stage ("stage") or per residual block ("block", for exits
    # after single blocks). BERT ignores it; ort / pt2e / torchao refuse "block" (they quantise per stage)
    granularity: str = "stage"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backend not in (*BACKENDS, ORT_BACKEND, *TORCHAO_BACKENDS):
            valid = ", ".join((*BACKENDS, ORT_BACKEND, *TORCHAO_BACKENDS))
            raise UserError(f"int8 backend {self.backend!r} is not one of {valid} (use x86 on x86 CPUs)")
        if self.calibration_batches < 1:
            raise UserError(f"int8 calibration_batches must be >= 1, got {self.calibration_batches}")
        if self.granularity not in GRANULARITIES:
            raise UserError(f"int8 granularity {self.granularity!r} is not one of {', '.join(GRANULARITIES)}")
        if self.granularity == "block" and self.backend not in BACKENDS:
            raise UserError(
                f"int8 granularity=block needs a torch.ao backend ({', '.join(BACKENDS)}), not "
                f"backend={self.backend}: use backend=x86 or drop granularity=block"
            )

    @classmethod
    def with_exits_inside_stages(cls, params: dict[str, str]) -> dict[str, str]:
        """Quantised per residual block (``granularity=block``), unless the user chose a granularity or the pt2e
        backend (which quantises per stage only): a per-stage graph would swallow exits placed inside a stage."""
        if "granularity" in params or params.get("backend", "x86") == "pt2e":
            return params
        return {**params, "granularity": "block"}


def _set_engine(backend: str) -> None:
    engines = torch.backends.quantized.supported_engines
    if backend not in engines:
        raise UserError(f"int8 backend {backend!r} is not supported by this torch build (have: {', '.join(engines)})")
    torch.backends.quantized.engine = backend


@register_compressor(
    "int8",
    Int8Config,
    "int8 (CPU): static FX PTQ per ResNet stage (granularity=block: per block), dynamic int8 BERT encoder "
    "(backend=ort: ONNX Runtime; pt2e / torchao: torchao + torch.compile)",
)
def _apply_int8(model: nn.Module, config: Int8Config, ctx: CompressContext) -> nn.Module:
    family = model_family(model, "int8")
    if is_quantized(model):
        raise UserError("model is already int8-quantised; apply int8 once, as the last step of the chain")
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise UserError("int8 needs an fp32 model; do not combine it with fp16/bf16")
    if any(p.is_cuda for p in model.parameters()):
        raise UserError("int8 (torch.ao) runs on CPU only; move the model to CPU first")
    if config.backend == ORT_BACKEND:
        return _apply_int8_ort(model, family, config)
    if config.backend in TORCHAO_BACKENDS:  # torchao + torch.compile: compressors/torchao_int8.py
        return apply_int8_torchao(model, config, ctx)
    register_quantized_formulas()
    _set_engine(config.backend)
    model.eval()
    if family == "resnet":
        if not ctx.calibration:
            raise UserError(
                "int8 on a ResNet is static PTQ and needs calibration data: "
                "pass compress_(..., calibration=[batch, ...])"
            )
        batches = list(islice(ctx.calibration, config.calibration_batches))
        with _quiet_torch_ao():
            _quantize_resnet_static(model, batches, config)
        method = f"static-fx-per-{config.granularity}"  # static-fx-per-stage / static-fx-per-block
        record(model, method=method, backend=config.backend, calibration_batches=len(batches))
    else:
        with _quiet_torch_ao():
            _quantize_bert_dynamic(model, config)
        record(model, method="dynamic", backend=config.backend)
    return model


def _apply_int8_ort(model: nn.Module, family: str, config: Int8Config) -> nn.Module:
    if family != "bert":
        raise UserError("int8 backend ort supports BERT sequence classifiers only; use backend x86 for ResNets")
    from compressors.ort import WEIGHT_BITS, compress_ort

    wrapper = compress_ort(model, include_head=config.include_head)
    record(
        wrapper,
        method="dynamic",
        backend=ORT_BACKEND,
        threads=wrapper.threads,
        int8_matmuls=wrapper.int8_matmuls,
        weight_bits=WEIGHT_BITS,
    )
    return wrapper


def _quantize_resnet_static(model: nn.Module, batches: list[torch.Tensor], config: Int8Config) -> None:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if not all(isinstance(b, torch.Tensor) for b in batches):
        raise UserError("ResNet calibration batches must be input tensors [B, C, H, W]")
    qconfig_mapping = get_default_qconfig_mapping(config.backend)
    # the parts, in forward order: (stage, module); one per stage, or one per residual block of each stage
    parts: list[tuple[str, nn.Module]] = [("stem", nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool))]
    for stage in RESNET_STAGES:
        layer = getattr(model, stage)
        parts += [(stage, block) for block in layer] if config.granularity == "block" else [(stage, layer)]
    if config.include_head:
        parts.append(("fc", nn.Sequential(model.fc)))

    def tail(h: torch.Tensor) -> torch.Tensor:  # between layer4 and fc
        return torch.flatten(model.avgpool(h), 1)

    # example input of every part, from the first calibration batch
    examples, h = [], batches[0].float()
    with torch.no_grad():
        for stage, part in parts:
            h = tail(h) if stage == "fc" else h
            examples.append(h)
            h = part(h)
    prepared = [prepare_fx(p, qconfig_mapping, example_inputs=(x,)) for (_, p), x in zip(parts, examples, strict=True)]
    with torch.no_grad():  # calibrate: run the batches through the prepared parts in order
        for batch in batches:
            h = batch.float()
            for (stage, _), part in zip(parts, prepared, strict=True):
                h = part(tail(h) if stage == "fc" else h)
    converted: dict[str, list[nn.Module]] = {}
    for (stage, _), part in zip(parts, prepared, strict=True):
        converted.setdefault(stage, []).append(convert_fx(part))
    model.conv1 = converted["stem"][0]  # fused conv1 + bn1 + relu + maxpool
    model.bn1, model.relu, model.maxpool = nn.Identity(), nn.Identity(), nn.Identity()
    for stage in RESNET_STAGES:  # per stage: the stage's graph; per block: a Sequential of the blocks' graphs
        graphs = converted[stage]
        setattr(model, stage, nn.Sequential(*graphs) if config.granularity == "block" else graphs[0])
    if config.include_head:
        model.fc = converted["fc"][0]


def _quantize_bert_dynamic(model: nn.Module, config: Int8Config) -> None:
    """Per-channel weight scales: per-tensor int8 cost MiniLM-L6 0.9 pt on Rotten Tomatoes (goal ≤ 0.5)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec = {nn.Linear: per_channel_dynamic_qconfig}
    layers = model.bert.encoder.layer
    for i in range(len(layers)):
        quantize_dynamic(layers[i], spec, dtype=torch.qint8, inplace=True)
    if config.include_head:
        if model.bert.pooler is not None:
            quantize_dynamic(model.bert.pooler, spec, dtype=torch.qint8, inplace=True)
        wrapped = quantize_dynamic(nn.Sequential(model.classifier), spec, dtype=torch.qint8, inplace=True)
        model.classifier = wrapped[0]


# ---------------------------------------------------------------------------------------------------
# fp16 / bf16
# ---------------------------------------------------------------------------------------------------


def _cast_floats(obj: Any, dtype: torch.dtype) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, tuple | list):
        return type(obj)(_cast_floats(o, dtype) for o in obj)
    if isinstance(obj, dict):
        return {k: _cast_floats(v, dtype) for k, v in obj.items()}
    return obj


class CastIO(nn.Module):
    """Run ``module`` (already cast to ``dtype``) on inputs cast to ``dtype``; give outputs back in fp32.

    Unknown attributes are looked up on the wrapped module, so code that reaches into it still works.
    """

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module.to(dtype)
        self.dtype_name = str(dtype).removeprefix("torch.")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        dtype = getattr(torch, self.dtype_name)
        out = self.module(*_cast_floats(args, dtype), **_cast_floats(kwargs, dtype))
        return _cast_floats(out, torch.float32)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("module"), name)


@dataclass(frozen=True)
class Fp16Config(CompressorConfig):
    """Cast the MainNet's stages to float16 (GPU-oriented; stage inputs/outputs stay fp32)."""

    name: ClassVar[str] = "fp16"
    dtype: ClassVar[str | None] = "fp16"
    whole_stages: ClassVar[bool] = True

    include_head: bool = False  # also cast the classifier (ResNet fc; BERT pooler + classifier)


@dataclass(frozen=True)
class Bf16Config(CompressorConfig):
    """Cast the MainNet's stages to bfloat16 (GPU-oriented; stage inputs/outputs stay fp32)."""

    name: ClassVar[str] = "bf16"
    dtype: ClassVar[str | None] = "bf16"
    whole_stages: ClassVar[bool] = True

    include_head: bool = False


def _cast(model: nn.Module, dtype: torch.dtype, include_head: bool, what: str) -> nn.Module:
    family = model_family(model, what)
    if is_quantized(model):
        raise UserError(f"{what} cannot cast an int8-quantised model; use either int8 or {what}")
    if any(isinstance(m, CastIO) for m in model.modules()):
        raise UserError(f"model is already cast to low precision; apply one of fp16/bf16 once ({what})")
    if family == "resnet":
        model.conv1 = CastIO(nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool), dtype)
        model.bn1, model.relu, model.maxpool = nn.Identity(), nn.Identity(), nn.Identity()
        for name in ("layer1", "layer2", "layer3", "layer4"):
            setattr(model, name, CastIO(getattr(model, name), dtype))
        if include_head:
            model.fc = CastIO(model.fc, dtype)
    else:
        layers = model.bert.encoder.layer
        for i in range(len(layers)):
            layers[i] = CastIO(layers[i], dtype)
        if include_head:
            if model.bert.pooler is not None:
                model.bert.pooler = CastIO(model.bert.pooler, dtype)
            model.classifier = CastIO(model.classifier, dtype)
    record(model, dtype=str(dtype).removeprefix("torch."))
    return model.eval()


@register_compressor("fp16", Fp16Config, "cast stages to float16, fp32 at stage boundaries (GPU-oriented)")
def _apply_fp16(model: nn.Module, config: Fp16Config, ctx: CompressContext) -> nn.Module:
    return _cast(model, torch.float16, config.include_head, "fp16")


@register_compressor("bf16", Bf16Config, "cast stages to bfloat16, fp32 at stage boundaries (GPU-oriented)")
def _apply_bf16(model: nn.Module, config: Bf16Config, ctx: CompressContext) -> nn.Module:
    return _cast(model, torch.bfloat16, config.include_head, "bf16")
