"""Weight-only quantisation on CUDA through torchao: ``int8wo`` and ``int4wo`` (the BERT encoder's Linear weights).

Both replace the ``weight`` of every ``nn.Linear`` inside ``bert.encoder.layer[i]`` by a torchao tensor
subclass (``quantize_`` with a Linear filter); activations stay floating point, the weights are
dequantised inside the matmul. Embeddings, pooler and classifier stay as they are (the classifier-head
rule of the other quantisers), and so does anything built afterwards (a SideNet is never touched).
``BertSplit`` calls the same layers, so head and rest both run the quantised weights.

**int8wo** — ``Int8WeightOnlyConfig(set_inductor_config=False)`` (torchao 0.18, config version 2):
symmetric int8 per output channel (``PerRow``), an ``Int8Tensor`` weight. Its linear is
``mm(x, int8_weight.t().to(x.dtype)) * scale``: plain torch ops, no extra kernels. The model stays fp32.
Eager, this is not faster than fp32 (the int8 → fp32 conversion runs every call; torchao's speed-up
comes from torch.compile fusing it into the matmul) — it halves the weight memory.

**int4wo** — ``Int4WeightOnlyConfig(group_size, int4_packing_format="tile_packed_to_4d",
int4_choose_qparams_algorithm="tinygemm", set_inductor_config=False)``: asymmetric uint4 per group of
``group_size`` input features, an ``Int4TilePackedTo4dTensor`` run by ``aten._weight_int4pack_mm`` (the
tinygemm kernel that ships with CUDA torch; compute capability 8.0+). That format only takes bfloat16
weights and computes in bfloat16, so **int4wo first casts every encoder layer to bfloat16** exactly as the
``bf16`` compressor does (:class:`~compressors.quantize.CastIO`: bf16 inside the layer, fp32 between layers,
so the split states and the SideNet stay fp32), then quantises. torchao 0.18's *default* int4 packing
(``plain``, ``Int4Tensor``) needs the separate ``mslk`` kernel package (formerly fbgemm-gpu-genai) and is
not used. ``group_size`` must be one of 32, 64, 128, 256 and divide every quantised layer's in_features
(torchao would silently leave such a layer in bf16; here it is a one-line error).

``set_inductor_config=False``: torchao's default would change ``torch._inductor.config`` for the whole
process (coordinate-descent tuning etc.), i.e. for every other compiled model of a run.

**FLOPs** (the project's rule: a quantised model counts the fp32 FLOPs, 2 per multiply-add). int8wo needs
nothing: its ``aten.mm`` has the fp32 shapes and torch's own formula counts it. tinygemm pads the input
features to a multiple of 1024 and the output features to a multiple of 8, so ``_weight_int4pack_mm``'s
shapes are not the layer's; its formula (registered with :mod:`compressors.flops`' helper, like the int8
ones) counts 2 · rows · in_features · out_features of the :class:`Int4WeightOnlyLinear` that runs it, which
says its shape while a TorchDispatchMode (FlopCounterMode) is active — no cost otherwise.

**Chains.** The quantised Linears count as quantised (:func:`compressors.base.is_quantized`), so
prune / distil / int8 / fp16 / bf16 after them are refused by those compressors; int8wo / int4wo refuse a
model that is already quantised or cast to fp16/bf16 (put them last, on an fp32 model). A model's
``sidenet.tasks.compressed.compute_dtype`` is ``int8wo`` / ``int4wo`` (:func:`weight_only_kind`).

**Device.** CUDA only: a model that is not on CUDA gets a one-line :class:`~sidenet_core.errors.UserError`
(use ``int8`` on CPU). ResNets are refused too: weight-only quantisation touches ``nn.Linear`` only and a
torchvision ResNet's only Linear is its classifier head.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from compressors.base import (
    CompressContext,
    CompressorConfig,
    is_quantized,
    model_family,
    record,
    register_compressor,
)
from compressors.flops import _register
from compressors.quantize import CastIO
from compressors.torchao_int8 import TORCHAO_PIN
from sidenet_core.errors import UserError

INT4_GROUP_SIZES = (32, 64, 128, 256)  # what Int4WeightOnlyConfig and the tinygemm kernel accept
_INT4_MIN_CAPABILITY = (8, 0)  # tinygemm int4 kernels use tensor cores (Ampere+)


# ---------------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Int8WeightOnlyCompressorConfig(CompressorConfig):
    """int8 weights (per output channel), fp32 activations: the BERT encoder's Linears, on CUDA (torchao)."""

    name: ClassVar[str] = "int8wo"
    dtype: ClassVar[str | None] = "int8wo"
    requires_cuda: ClassVar[bool] = True  # for callers that check a chain against the device before running it


@dataclass(frozen=True)
class Int4WeightOnlyCompressorConfig(CompressorConfig):
    """int4 weights (groups of ``group_size`` inputs), bf16 activations: the BERT encoder's Linears, on CUDA."""

    name: ClassVar[str] = "int4wo"
    dtype: ClassVar[str | None] = "int4wo"
    requires_cuda: ClassVar[bool] = True

    group_size: int = 128  # input features per int4 scale/zero-point group: 32, 64, 128 or 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.group_size not in INT4_GROUP_SIZES:
            valid = ", ".join(str(g) for g in INT4_GROUP_SIZES)
            raise UserError(f"int4wo group_size must be one of {valid} (torchao int4), got {self.group_size}")


WeightOnlyConfig = Int8WeightOnlyCompressorConfig | Int4WeightOnlyCompressorConfig


# ---------------------------------------------------------------------------------------------------
# the quantised Linears
# ---------------------------------------------------------------------------------------------------


class WeightOnlyLinear(nn.Linear):
    """An ``nn.Linear`` whose weight is a torchao weight-only tensor (its class is set on the quantised module:
    same attributes, same state_dict, still an ``nn.Linear``)."""

    sidenet_int8 = True  # compressors.base.is_quantized: quantisation is the last step of a chain
    kind: ClassVar[str] = ""  # "int8wo" / "int4wo": compute_dtype of a model holding it


class Int8WeightOnlyLinear(WeightOnlyLinear):
    """int8wo: weight is a torchao ``Int8Tensor`` (its ``aten.mm`` counts the fp32 FLOPs as it is)."""

    kind = "int8wo"


_counting = threading.local()  # .shapes: (in_features, out_features) of the int4 Linears running under a mode


def _shape_stack() -> list[tuple[int, int]]:
    stack = getattr(_counting, "shapes", None)
    if stack is None:
        stack = _counting.shapes = []
    return stack


class Int4WeightOnlyLinear(WeightOnlyLinear):
    """int4wo: weight is a torchao ``Int4TilePackedTo4dTensor`` (tinygemm). Under a TorchDispatchMode (e.g.
    FlopCounterMode) it says its shape for the ``_weight_int4pack_mm`` FLOP formula; otherwise a plain Linear."""

    kind = "int4wo"

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack() == 0:
            return F.linear(input, self.weight, self.bias)
        stack = _shape_stack()
        stack.append((self.in_features, self.out_features))
        try:
            return F.linear(input, self.weight, self.bias)
        finally:
            stack.pop()


_LINEAR_CLASS: dict[str, type[WeightOnlyLinear]] = {"int8wo": Int8WeightOnlyLinear, "int4wo": Int4WeightOnlyLinear}


def weight_only_kind(model: nn.Module) -> str | None:
    """``int8wo`` / ``int4wo`` when ``model`` holds weight-only quantised Linears (this module's), else None."""
    for m in model.modules():
        if isinstance(m, WeightOnlyLinear):
            return m.kind
    return None


# ---------------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------------


def _int4pack_mm_flop(x: Any, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    """``_weight_int4pack_mm(x[rows, K_padded], packed, group_size, scale_and_zero)``: 2 · rows · K · N with the
    K, N of the :class:`Int4WeightOnlyLinear` running it (fp32 count); the padded shapes when called directly."""
    stack = _shape_stack()
    in_features, out_features = stack[-1] if stack else (x.shape[-1], out_val.shape[-1])
    return 2 * math.prod(x.shape[:-1]) * in_features * out_features


def register_weight_only_formulas() -> None:
    """Register the FlopCounterMode formula for tinygemm's ``aten._weight_int4pack_mm`` (idempotent)."""
    _register(getattr(torch.ops.aten, "_weight_int4pack_mm", None), _int4pack_mm_flop, get_raw=True)


# ---------------------------------------------------------------------------------------------------
# checks and quantisation
# ---------------------------------------------------------------------------------------------------


def _encoder_linears(model: nn.Module) -> Iterator[tuple[str, nn.Linear]]:
    for i, layer in enumerate(model.bert.encoder.layer):
        for name, m in layer.named_modules():
            if isinstance(m, nn.Linear):
                yield f"bert.encoder.layer.{i}.{name}", m


def _check_model(model: nn.Module, config: WeightOnlyConfig) -> None:
    """Family and chain order (before the device: a wrong chain cannot be fixed by moving the model)."""
    what = config.name
    try:
        family = model_family(model, what)
    except UserError:
        raise UserError(f"{what} supports BERT sequence classifiers only, not {type(model).__name__}") from None
    if family == "resnet":
        raise UserError(
            f"{what} quantises nn.Linear weights only, and a ResNet's only Linear is its classifier head (fc), "
            "which stays as it is: use int8 (CPU), fp16 or bf16 for ResNets"
        )
    if is_quantized(model):
        raise UserError(
            f"model is already quantised; {what} must be the only quantiser (int8, int8wo or int4wo), last in the chain"
        )
    if any(isinstance(m, CastIO) for m in model.modules()) or any(p.dtype != torch.float32 for p in model.parameters()):
        raise UserError(
            f"{what} needs an fp32 model; do not combine it with fp16/bf16 (int4wo casts the encoder to bf16 itself)"
        )
    if isinstance(config, Int4WeightOnlyCompressorConfig):
        g = config.group_size
        for name, lin in _encoder_linears(model):
            if lin.in_features % g:
                fits = [s for s in INT4_GROUP_SIZES if all(m.in_features % s == 0 for _, m in _encoder_linears(model))]
                fix = f"use int4wo:group_size={fits[-1]}" if fits else "prune with round_to a multiple of 32 first"
                raise UserError(
                    f"int4wo group_size={g} does not divide the {lin.in_features} in_features of {name}; {fix}"
                )


def _check_device(model: nn.Module, config: WeightOnlyConfig) -> None:
    bits = "int8" if isinstance(config, Int8WeightOnlyCompressorConfig) else "int4"
    params = list(model.parameters())
    if not params or not all(p.is_cuda for p in params):
        where = next((str(p.device) for p in params if not p.is_cuda), "cpu")
        fix = "move it to the GPU first (model.cuda())" if torch.cuda.is_available() else "run it on a GPU machine"
        raise UserError(
            f"{config.name} is a CUDA compressor (torchao weight-only {bits}) and the model is on {where}: "
            f"{fix}, or use int8 on CPU"
        )
    if bits == "int4":
        device = next(p.device for p in params)
        capability = tuple(torch.cuda.get_device_capability(device))
        if capability < _INT4_MIN_CAPABILITY:
            raise UserError(
                f"int4wo needs a GPU of compute capability 8.0+ (tinygemm int4 kernels); this one is "
                f"{capability[0]}.{capability[1]}: use int8wo or bf16"
            )


def _require_torchao(what: str) -> None:
    try:
        import torchao  # noqa: F401
    except ImportError:
        raise UserError(f"{what} needs torchao: pip install {TORCHAO_PIN}") from None


def _torchao_config(config: WeightOnlyConfig) -> Any:
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig

    if isinstance(config, Int8WeightOnlyCompressorConfig):
        return Int8WeightOnlyConfig(set_inductor_config=False)
    return Int4WeightOnlyConfig(
        group_size=config.group_size,
        int4_packing_format="tile_packed_to_4d",  # tinygemm (plain torch); the default "plain" needs mslk
        int4_choose_qparams_algorithm="tinygemm",
        set_inductor_config=False,
    )


def _expected_weight(config: WeightOnlyConfig) -> type:
    from torchao.quantization import Int4TilePackedTo4dTensor, Int8Tensor

    return Int8Tensor if isinstance(config, Int8WeightOnlyCompressorConfig) else Int4TilePackedTo4dTensor


def _quantize(model: nn.Module, config: WeightOnlyConfig) -> nn.Module:
    from torchao.quantization import quantize_

    register_weight_only_formulas()
    model.eval()
    layers = model.bert.encoder.layer
    int4 = isinstance(config, Int4WeightOnlyCompressorConfig)
    ao_config, expected, linear_cls = _torchao_config(config), _expected_weight(config), _LINEAR_CLASS[config.name]
    for i in range(len(layers)):
        if int4:  # Int4TilePackedTo4dTensor takes bf16 weights only and computes in bf16
            layers[i] = CastIO(layers[i], torch.bfloat16)
        target = layers[i].module if int4 else layers[i]
        linears = [m for m in target.modules() if isinstance(m, nn.Linear)]
        quantize_(target, ao_config, filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
        for lin in linears:
            if not isinstance(lin.weight, expected):  # torchao skips what it cannot quantise, silently
                raise RuntimeError(f"torchao left a Linear of encoder layer {i} as {type(lin.weight).__name__}")
            lin.__class__ = linear_cls
    return model


def quantize_encoder_weight_only(model: nn.Module, config: WeightOnlyConfig) -> nn.Module:
    """Quantise the BERT encoder's Linear weights in place (int4wo: the encoder layers cast to bf16 first) and
    return ``model``, without recording a compression step. Unlike ``compress_`` it does not insist on CUDA for
    int8wo: torchao's int8 weight-only tensor also runs on CPU (no faster than fp32 there), which the tests use.
    int4 packing needs CUDA either way.
    """
    _check_model(model, config)
    if isinstance(config, Int4WeightOnlyCompressorConfig):
        _check_device(model, config)
    _require_torchao(config.name)
    return _quantize(model, config)


def _apply(model: nn.Module, config: WeightOnlyConfig) -> nn.Module:
    _check_model(model, config)
    _check_device(model, config)
    _require_torchao(config.name)
    model = _quantize(model, config)
    linears = sum(1 for m in model.modules() if isinstance(m, WeightOnlyLinear))
    if isinstance(config, Int4WeightOnlyCompressorConfig):
        record(
            model,
            method="weight-only-torchao",
            weights="int4",
            group_size=config.group_size,
            dtype="bfloat16",
            linears=linears,
        )
    else:
        record(model, method="weight-only-torchao", weights="int8", dtype="float32", linears=linears)
    return model


@register_compressor(
    "int8wo",
    Int8WeightOnlyCompressorConfig,
    "int8 weight-only (CUDA, torchao): BERT encoder Linear weights int8 per channel, fp32 activations",
)
def _apply_int8wo(model: nn.Module, config: Int8WeightOnlyCompressorConfig, ctx: CompressContext) -> nn.Module:
    return _apply(model, config)


@register_compressor(
    "int4wo",
    Int4WeightOnlyCompressorConfig,
    "int4 weight-only (CUDA, torchao tinygemm): BERT encoder cast to bf16, Linear weights int4 per group_size",
)
def _apply_int4wo(model: nn.Module, config: Int4WeightOnlyCompressorConfig, ctx: CompressContext) -> nn.Module:
    return _apply(model, config)
