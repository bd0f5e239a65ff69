"""int8 on CPU through torchao: ``Int8Config(backend="pt2e")`` for ResNets, ``backend="torchao"`` for BERT.

**ResNet — ``backend="pt2e"``: static int8 PTQ with torchao PT2E, one graph per stage, each compiled.**
Like the FX path of :mod:`compressors.quantize`, the stem (conv1 + bn1 + relu + maxpool) and each of
layer1..layer4 (and ``fc`` with ``include_head=True``) is quantised on its own: ``torch.export`` with
batch 2 and a dynamic batch dim, ``prepare_pt2e`` with ``X86InductorQuantizer`` (its default static
config: per-channel int8 weights, per-tensor uint8 activations; BN folded into the convs), calibration on
the ``calibration`` batches run through the prepared stages in order, ``convert_pt2e``, then
``torch.compile`` with Inductor *freezing* (which is what rewrites the q/dq graph to oneDNN int8
convolutions with fused ReLU / residual add; without it the convolutions compile as fp32).
Each stage goes back under its own attribute as a :class:`Pt2eStage` (the stem to ``conv1``, with
``bn1``/``relu``/``maxpool`` set to ``nn.Identity``), so the torchvision layout stays,
``split_model(model, "layerK")`` works for every tap, head and rest each run int8 stages, and the state
between stages is an ordinary fp32 tensor. Before export every torchvision ``BasicBlock`` /
``Bottleneck`` gets one ReLU module per use: torchvision calls its one ``relu`` twice (three times in a
Bottleneck), which the quantizer rejects ("Input partition has more than one output node"); the rewritten
block runs the same ops in the same order. The input's channels and H×W are fixed at export (those of
the calibration batches); the batch size is free (1 included).

**BERT — ``backend="torchao"``: dynamic int8** (``quantize_(layer, Int8DynamicActivationInt8WeightConfig())``:
per-token int8 activations, per-channel int8 weights, ``aten._int_mm``) of every ``bert.encoder.layer[i]``
(and pooler + classifier with ``include_head=True``), each wrapped in a :class:`TorchaoInt8Module` that
runs ``torch.compile`` of it (eager torchao int8 is ~2× slower than fp32, compiled ~0.56×: FINDINGS).
``BertSplit`` calls ``layer(hidden, mask)`` on each layer, so head and rest stay int8. No freezing here:
a model's encoder layers share their compiled graphs (weights are graph inputs).

**Compiling.** ``compile=True`` compiles during compression, not on the first timed call, and records the
seconds (``compile_seconds`` in the compression log). Dynamo compiles ``no_grad`` and ``inference_mode``
calls apart, so both are warmed up; calls with grad enabled run under ``no_grad`` (inference only), and
nothing compiles later (the tests check this with ``torch.compiler.set_stance("fail_on_recompile")``):

* ``pt2e``: each stage is compiled on zeros of its input layout (compiled stages take channels-last input)
  with the batch dim marked *unbacked*, so one graph serves every batch size, 1 included. Inductor
  freezing is set around each call of a stage (Dynamo may recompile on any call), never process-wide.
* ``torchao``: an unbacked batch makes torchao's int8 path graph-break, so the batch dim is dynamic but
  batch 1 is specialised: 8 variants (batch 1 / more × mask / none × no_grad / inference_mode), compiled
  on synthetic hidden states. All encoder layers of a model share them (see :func:`compiled_caller`).

A recompile that was not foreseen still works, but costs compile time on that call: e.g. after anything
wipes Dynamo's caches (``torch._dynamo.reset()``, a *strict* ``torch.export`` — which is why the stem
lowering below exports non-strict). A copy (``copy.deepcopy``) drops the compiled code and compiles again
on first use. ``compile=False``
(module-level functions only) runs the uncompiled graphs: correct, but slower than fp32 — for fast tests.

**FLOPs.** Compiled code is opaque to ``FlopCounterMode`` (a TorchDispatchMode): Inductor's generated
kernels never pass through the dispatcher, and what torch.compile does while a dispatch mode is active is
its own business (it may fall back to eager). So while *any* TorchDispatchMode is active the wrappers run
the same module uncompiled: for ``pt2e`` the converted graph the compiler was given (quantize →
dequantize → ``aten.convolution`` / ``aten.linear`` → quantize), for ``torchao`` the eager quantised layer
(``aten._int_mm``, counted by :mod:`compressors.flops`). Same graph, same weights, same shapes, so the
convolutions and matmuls counted are exactly those the compiled kernels compute (fused with their q/dq),
and the count equals the fp32 model's (the project's rule: int8 FLOPs = fp32 FLOPs).

CPU only. ``torchao`` is imported lazily: without it both backends raise a one-line
:class:`~sidenet_core.errors.UserError` naming ``pip install torchao==0.18.0``. Importing torchao's x86 quantizer
registers its Inductor passes globally (``torch._inductor.config.pre_grad_custom_pass``; torchao's doing).
"""

from __future__ import annotations

import functools
import re
import time
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from typing import Any

import torch
from torch import nn

from compressors.flops import register_quantized_formulas
from sidenet_core.errors import UserError

PT2E_BACKEND = "pt2e"  # static PTQ through torchao PT2E + X86InductorQuantizer (ResNets)
TORCHAO_BACKEND = "torchao"  # dynamic int8 through torchao quantize_ (BERT)
BACKENDS = (PT2E_BACKEND, TORCHAO_BACKEND)
TORCHAO_PIN = "torchao==0.18.0"

_WRONG_FAMILY = {
    PT2E_BACKEND: "int8 backend pt2e is for ResNets; use backend x86 or torchao/ort for BERT",
    TORCHAO_BACKEND: "int8 backend torchao is for BERT; use backend x86 or pt2e for ResNets",
}


def require_torchao(backend: str) -> None:
    """A one-line UserError naming the pip pin when torchao cannot be imported."""
    try:
        import torchao  # noqa: F401
    except ImportError:
        raise UserError(f"int8 backend {backend} needs torchao: pip install {TORCHAO_PIN}") from None


def _check(model: nn.Module, backend: str, family: str) -> None:
    from compressors.base import model_family

    if model_family(model, f"int8 backend {backend}") != family:
        raise UserError(_WRONG_FAMILY[backend])
    if any(t.is_cuda for t in (*model.parameters(), *model.buffers())):
        raise UserError(f"int8 backend {backend} runs on CPU only; move the model to CPU first (model.cpu())")
    require_torchao(backend)


# ---------------------------------------------------------------------------------------------------
# compiled wrappers
# ---------------------------------------------------------------------------------------------------

# Warnings torch.compile emits while compiling these graphs (never at run time): torchao's int8 tensor
# subclass has no stable cache hash; Inductor's oneDNN lowering copy-constructs a tensor.
_COMPILE_WARNINGS = (r".*does not implement _stable_hash_for_caching", r"To copy construct from a tensor")


@contextmanager
def _quiet_compile() -> Iterator[None]:
    with warnings.catch_warnings():
        for message in _COMPILE_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


def _from_compile_warning(exc: BaseException) -> bool:
    """``exc`` (or its cause chain) is one of ``_COMPILE_WARNINGS`` raised as an error (``-W error``)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, UserWarning) and any(re.match(m, str(seen)) for m in _COMPILE_WARNINGS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _observed() -> bool:
    """True while a TorchDispatchMode (e.g. FlopCounterMode) is active or Dynamo is tracing us."""
    return torch._C._len_torch_dispatch_stack() > 0 or torch.compiler.is_compiling()


class _Compiled(nn.Module):
    """Base of the wrappers: runs ``torch.compile`` of ``_target()`` (built lazily, dropped on copy/pickle)."""

    sidenet_int8 = True  # compressors.base.is_quantized: this module computes in int8
    freezing = False  # Inductor freezing while compiling (weights become constants of the compiled graph)

    def __init__(self, compile: bool) -> None:
        super().__init__()
        self.compile_enabled = compile

    def _target(self) -> nn.Module:
        raise NotImplementedError

    def _make_compiled(self) -> Callable[..., Any]:
        return torch.compile(self._target(), dynamic=True)

    def _compiled_fn(self) -> Callable[..., Any]:
        fn = self.__dict__.get("_compiled_cache")
        if fn is None:
            fn = self._make_compiled()
            self.__dict__["_compiled_cache"] = fn
        return fn

    def _run(self, *args: Any) -> Any:
        if torch.is_grad_enabled():  # inference only: no autograd graphs, no compiled variants for them
            with torch.no_grad():
                return self._run(*(a.detach() if isinstance(a, torch.Tensor) else a for a in args))
        if not self.compile_enabled or _observed():
            return self._target()(*args)
        fn = self._compiled_fn()
        if not self.freezing:
            return self._call(fn, args)
        # Freezing is read while (re)compiling, which Dynamo may do on any call (e.g. after a strict
        # torch.export elsewhere wiped its caches): set it around every call (~4 µs), never process-wide.
        config = torch._inductor.config
        previous, config.freezing = config.freezing, True
        try:
            return self._call(fn, args)
        finally:
            config.freezing = previous

    @staticmethod
    def _call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # a recompile hit a known compile-time warning under -W error: retry quietly
            if not _from_compile_warning(exc):
                raise
        with _quiet_compile():
            return fn(*args)

    def compile_now(self, *args: Any) -> Any:
        """Call on example ``args`` (batch dim already marked), silencing the known compile-time warnings."""
        with _quiet_compile():
            return self(*args)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_compiled_cache", None)
        state.pop("_caller", None)
        return state


def compiled_caller() -> Callable[..., Any]:
    """``torch.compile`` of ``call(module, *args) = module(*args)`` through a code object of its own.

    Dynamo caches compiled graphs per code object, at most ``recompile_limit`` (8) of them. Compiling HF
    layers directly would put every layer of every model in the process on one code object
    (``GradientCheckpointingLayer.__call__``); one caller per model's encoder keeps its 8 variants
    (batch 1 / more × mask / none × no_grad / inference_mode) to itself, while its layers, whose weights are
    graph inputs, share the compiled graphs.
    """

    def call(module: nn.Module, *args: Any) -> Any:
        return module(*args)

    fresh = types.FunctionType(call.__code__.replace(), call.__globals__, call.__name__, None, call.__closure__)
    return torch.compile(fresh, dynamic=True)


def _mark_batch(x: Any) -> Any:
    """Mark dim 0 unbacked: one compiled graph for every batch size, 1 included."""
    if isinstance(x, torch.Tensor):
        torch._dynamo.decorators.mark_unbacked(x, 0)
    return x


def _timed_warm_up(run: Callable[[], None]) -> float:
    """``run`` under no_grad and under inference_mode (Dynamo compiles them apart); seconds."""
    start = time.perf_counter()
    for grad_mode in (torch.no_grad, torch.inference_mode):
        with grad_mode():
            run()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------
# ResNet: PT2E static int8 per stage
# ---------------------------------------------------------------------------------------------------


class Pt2eStage(_Compiled):
    """One ResNet stage as a PT2E-converted int8 graph (fp32 in, fp32 out), run compiled.

    ``graph`` is the ``convert_pt2e`` output (q/dq + aten ops, int8 weights as buffers: the state_dict);
    under a TorchDispatchMode (FlopCounterMode) it runs uncompiled (see the module docstring).
    ``input_shape`` is the per-sample input shape fixed at export ((C, H, W), or (C,) for ``fc``).

    A stage whose input has one channel (the stem of a grayscale ResNet) is not handed to torch.compile:
    with a dynamic batch, torch 2.14's Inductor assumes a channels-last output for the oneDNN int8 conv, but
    on a 1-channel input (contiguous and channels-last at once) oneDNN returns a contiguous one and the
    compiled code fails its stride assertion. That stage is *lowered* instead, as torchao's
    ``lower_pt2e_quantized_to_x86`` does but keeping the dynamic batch: Inductor's freezing passes rewrite
    the q/dq graph to the same oneDNN int8 conv (+ fused ReLU) kernels, run eagerly without code generation.
    """

    freezing = True

    def __init__(self, graph: torch.fx.GraphModule, input_shape: Sequence[int], compile: bool = True) -> None:
        super().__init__(compile)
        self.graph = graph
        self.input_shape = tuple(int(d) for d in input_shape)
        self.lowered = compile and len(self.input_shape) == 3 and self.input_shape[0] == 1

    def _target(self) -> nn.Module:
        return self.graph

    def _make_compiled(self) -> Callable[..., Any]:
        if self.lowered:
            return lower_to_onednn(self.graph, torch.zeros(2, *self.input_shape))
        return super()._make_compiled()

    def _compiled_fn(self) -> Callable[..., Any]:
        if "_compiled_cache" not in self.__dict__:  # a copy, or compression skipped the warm-up
            self.warm_up()
        return self.__dict__["_compiled_cache"]

    def warm_up(self) -> float:
        """Compile now, not on a timed call: on zeros of the stage's input layout, batch dim unbacked (one graph
        for every batch size, 1 included), under no_grad and under inference_mode. Returns seconds."""
        start = time.perf_counter()
        self.__dict__["_compiled_cache"] = self._make_compiled()
        for grad_mode in (torch.no_grad, torch.inference_mode):
            with grad_mode():
                self.compile_now(_mark_batch(self._layout(torch.zeros(2, *self.input_shape))))
        return time.perf_counter() - start

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """One input layout for the compiled code: stages hand on channels-last; a row selection may not."""
        if x.dim() == 4 and self.compile_enabled and not self.lowered:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(self._layout(x))

    def train(self, mode: bool = True) -> Pt2eStage:
        """An exported graph refuses ``train()``/``eval()``; it has no mode-dependent ops (BN is folded)."""
        self.training = mode
        return self


def lower_to_onednn(graph: torch.fx.GraphModule, example: torch.Tensor) -> torch.fx.GraphModule:
    """torchao's ``lower_pt2e_quantized_to_x86`` with a dynamic batch dim: re-export (core aten), then
    Inductor's freezing passes (int8 weight prepack, conv + post-op fusion) and constant folding.

    The export is non-strict: torchao's strict one runs Dynamo, which wipes its caches, i.e. the compiled
    code of every stage (and every other torch.compile'd module) in the process."""
    from torch._export.utils import _is_cia_op
    from torch._inductor.constant_folding import constant_fold
    from torch._inductor.fx_passes.freezing_patterns import freezing_passes
    from torch.export._unlift import _check_input_constraints_pre_hook

    decompositions = {k: v for k, v in torch.export.default_decompositions().items() if _is_cia_op(k)}
    with torch.no_grad():
        exported = torch.export.export(
            graph, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), strict=False
        )
        lowered = exported.run_decompositions(decompositions).module()
        for node in list(lowered.graph.nodes):  # as torchao does: aten.t -> aten.permute
            if node.target == torch.ops.aten.t.default:
                with lowered.graph.inserting_before(node):
                    perm = lowered.graph.call_function(torch.ops.aten.permute.default, args=(node.args[0], [1, 0]))
                node.replace_all_uses_with(perm)
                lowered.graph.erase_node(node)
        lowered.graph.lint()
        lowered.recompile()
        freezing_passes(lowered, (example,))
        constant_fold(lowered)
    # freezing_passes re-propagates the example's concrete shapes into the placeholders, so export's input check
    # would now pin batch 2; the graph itself holds nothing batch-dependent (tests run batch 1 and 3)
    hooks = lowered._forward_pre_hooks
    for key in [k for k, hook in hooks.items() if hook is _check_input_constraints_pre_hook]:
        del hooks[key]
        lowered._forward_pre_hooks_with_kwargs.pop(key, None)
    return lowered


class _OwnReLUBlock(nn.Module):
    """A torchvision ``BasicBlock`` / ``Bottleneck`` with one ReLU module per use; the same ops in the same order.

    Shares the block's convs, BNs and downsample (no copies); only the extra ReLU modules are new.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        n = 3 if hasattr(block, "conv3") else 2
        self.convs = nn.ModuleList([getattr(block, f"conv{i}") for i in range(1, n + 1)])
        self.bns = nn.ModuleList([getattr(block, f"bn{i}") for i in range(1, n + 1)])
        self.relus = nn.ModuleList([block.relu, *(nn.ReLU(inplace=True) for _ in range(n - 1))])
        self.downsample = block.downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            out = bn(conv(out))
            if i < len(self.convs) - 1:
                out = self.relus[i](out)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relus[-1](out + identity)


def own_relu_blocks(stage: nn.Module) -> nn.Module:
    """``stage`` with every stock torchvision block rewritten as :class:`_OwnReLUBlock` (others kept as they are)."""
    from torchvision.models.resnet import BasicBlock, Bottleneck

    if type(stage) in (BasicBlock, Bottleneck):
        return _OwnReLUBlock(stage)
    if isinstance(stage, nn.Sequential):
        return nn.Sequential(*(own_relu_blocks(b) for b in stage))
    return stage


def _two_rows(x: torch.Tensor) -> torch.Tensor:
    """Batch 2 for export: batch 1 would be specialised (FINDINGS)."""
    return x[:2] if x.shape[0] >= 2 else torch.cat([x, x])


def _drop_unused_attrs(gm: torch.fx.GraphModule) -> None:
    """convert_pt2e folds the int8 weights into new buffers but keeps the fp32 originals: drop what no node reads."""
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name, _ in [*gm.named_parameters(), *gm.named_buffers()]:
        if name not in used:
            owner_name, _, attr = name.rpartition(".")
            delattr(gm.get_submodule(owner_name) if owner_name else gm, attr)
    gm.delete_all_unused_submodules()


def quantize_resnet_pt2e(
    model: nn.Module,
    calibration: Sequence[torch.Tensor],
    *,
    calibration_batches: int = 16,
    include_head: bool = False,
    compile: bool = True,
) -> nn.Module:
    """Quantise a torchvision-layout ResNet in place, stage by stage, with torchao PT2E; returns ``model``.

    ``calibration``: input batches [B, C, H, W] (at most ``calibration_batches`` used; the first also gives
    the export shapes). ``compile=True`` compiles every stage here (seconds in ``model.pt2e_compile_seconds``);
    ``compile=False`` leaves the converted graphs uncompiled (correct, ~2.7× slower than fp32: for tests).
    """
    _check(model, PT2E_BACKEND, "resnet")
    batches = list(islice(calibration or (), calibration_batches))
    if not batches:
        raise UserError(
            "int8 backend pt2e is static PTQ and needs calibration data: pass compress_(..., calibration=[batch, ...])"
        )
    if not all(isinstance(b, torch.Tensor) and b.dim() == 4 for b in batches):
        raise UserError("ResNet calibration batches must be input tensors [B, C, H, W]")
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    register_quantized_formulas()
    model.eval()
    names = ["stem", "layer1", "layer2", "layer3", "layer4"]
    parts: list[nn.Module] = [
        nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool),
        *(own_relu_blocks(getattr(model, n)) for n in names[1:]),
    ]
    if include_head:
        names.append("fc")
        parts.append(nn.Sequential(model.fc))

    def tail(h: torch.Tensor) -> torch.Tensor:  # between layer4 and fc
        return torch.flatten(model.avgpool(h), 1)

    batch_dim = torch.export.Dim("batch", min=1)
    prepared: list[torch.fx.GraphModule] = []
    shapes: list[tuple[int, ...]] = []  # per-sample input shape of every stage
    h = batches[0].float()
    with torch.no_grad():
        for name, part in zip(names, parts, strict=True):
            h = tail(h) if name == "fc" else h
            shapes.append(tuple(h.shape[1:]))
            exported = torch.export.export(part.eval(), (_two_rows(h),), dynamic_shapes=({0: batch_dim},))
            quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
            prepared.append(prepare_pt2e(exported.module(), quantizer))
            h = part(h)
        for batch in batches:  # calibrate: the batches through the prepared stages in order
            h = batch.float()
            for name, part in zip(names, prepared, strict=True):
                h = part(tail(h) if name == "fc" else h)
    stages: list[Pt2eStage] = []
    for part, shape in zip(prepared, shapes, strict=True):
        graph = convert_pt2e(part)
        _drop_unused_attrs(graph)
        stages.append(Pt2eStage(graph, shape, compile=compile))
    by_name = dict(zip(names, stages, strict=True))
    model.conv1 = by_name["stem"]  # conv1 + bn1 + relu + maxpool
    model.bn1, model.relu, model.maxpool = nn.Identity(), nn.Identity(), nn.Identity()
    for name in names[1:5]:
        setattr(model, name, by_name[name])
    if include_head:
        model.fc = by_name["fc"]

    model.pt2e_compile_seconds = sum(stage.warm_up() for stage in stages) if compile else 0.0
    return model


# ---------------------------------------------------------------------------------------------------
# BERT: torchao dynamic int8 per encoder layer
# ---------------------------------------------------------------------------------------------------


class TorchaoInt8Module(_Compiled):
    """A module quantised with torchao ``quantize_`` (int8 weight tensors), run compiled.

    Attribute lookups fall through to the wrapped module (``layer.attention`` still works). The compiled
    function is called as ``module(hidden, mask)`` / ``module(x)`` only; calls with further non-default
    arguments (e.g. ``output_attentions=True``, a head mask) run the eager int8 module instead, so the
    compiled variants stay few (mask / no mask; no_grad / inference_mode).
    """

    def __init__(self, module: nn.Module, compile: bool = True, caller: Callable[..., Any] | None = None) -> None:
        super().__init__(compile)
        self.module = module
        self.__dict__["_caller"] = caller  # a compiled_caller() shared with sibling layers (not copied/pickled)

    def _target(self) -> nn.Module:
        return self.module

    def _make_compiled(self) -> Callable[..., Any]:
        caller = self.__dict__.get("_caller") or compiled_caller()
        return functools.partial(caller, self.module)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        first, rest = args[:2], args[2:]
        if any(a is not None for a in rest) or any(v is not None and v is not False for v in kwargs.values()):
            return self.module(*args, **kwargs)
        return self._run(*first)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("module"), name)


def quantize_bert_torchao(model: nn.Module, *, include_head: bool = False, compile: bool = True) -> nn.Module:
    """Dynamic int8 of every BERT encoder layer (and pooler + classifier if ``include_head``) in place.

    Each quantised module is wrapped in :class:`TorchaoInt8Module`. ``compile=True`` compiles here (seconds in
    ``model.torchao_compile_seconds``); ``compile=False`` runs eager torchao int8 (~2× slower than fp32: tests).
    """
    _check(model, TORCHAO_BACKEND, "bert")
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    register_quantized_formulas()
    model.eval()
    base = model.bert
    layers = base.encoder.layer
    caller = compiled_caller() if compile else None
    for i in range(len(layers)):
        quantize_(layers[i], Int8DynamicActivationInt8WeightConfig())
        layers[i] = TorchaoInt8Module(layers[i], compile=compile, caller=caller)
    if include_head:
        if base.pooler is not None:
            quantize_(base.pooler, Int8DynamicActivationInt8WeightConfig())
            base.pooler = TorchaoInt8Module(base.pooler, compile=compile)
        quantize_(model.classifier, Int8DynamicActivationInt8WeightConfig())
        model.classifier = TorchaoInt8Module(model.classifier, compile=compile)

    def run_layers() -> None:
        from sidenet_core.layouts import bert_layer_mask

        seq, width = min(8, int(base.config.max_position_embeddings)), int(base.config.hidden_size)
        for rows in (2, 1):  # batch 1 is specialised (an unbacked batch dim makes torchao's int8 path graph-break)
            padded = torch.ones(rows, seq, dtype=torch.long)
            padded[-1, seq // 2 :] = 0
            for with_mask in (False, True):  # the model and BertSplit hand layers None when nothing is padded
                h = torch.zeros(rows, seq, width)
                mask = bert_layer_mask(base, padded, h) if with_mask else None
                for layer in layers:
                    out = layer.compile_now(h, mask)
                    h = out[0] if isinstance(out, tuple) else out
            if include_head:
                pooled = base.pooler.compile_now(h) if base.pooler is not None else h[:, 0]
                model.classifier.compile_now(pooled)

    model.torchao_compile_seconds = _timed_warm_up(run_layers) if compile else 0.0
    return model


# ---------------------------------------------------------------------------------------------------
# the int8 compressor's entry point for backend pt2e / torchao (dispatched from compressors.quantize)
# ---------------------------------------------------------------------------------------------------


def apply_int8_torchao(model: nn.Module, config: Any, ctx: Any) -> nn.Module:
    """``Int8Config(backend="pt2e" | "torchao")`` on ``model`` (CPU, fp32, not yet quantised: checked by the caller)."""
    from compressors.base import model_family, record

    family = model_family(model, "int8")
    if config.backend == PT2E_BACKEND:
        if family != "resnet":
            raise UserError(_WRONG_FAMILY[PT2E_BACKEND])
        batches = list(islice(ctx.calibration or (), config.calibration_batches))
        quantize_resnet_pt2e(model, batches, calibration_batches=len(batches) or 1, include_head=config.include_head)
        record(
            model,
            method="static-pt2e-per-stage",
            backend=PT2E_BACKEND,
            calibration_batches=len(batches),
            compile=True,
            compile_seconds=round(model.pt2e_compile_seconds, 2),
        )
    else:
        if family != "bert":
            raise UserError(_WRONG_FAMILY[TORCHAO_BACKEND])
        quantize_bert_torchao(model, include_head=config.include_head)
        record(
            model,
            method="dynamic-torchao",
            backend=TORCHAO_BACKEND,
            compile=True,
            compile_seconds=round(model.torchao_compile_seconds, 2),
        )
    return model
