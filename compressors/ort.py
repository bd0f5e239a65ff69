"""``Int8Config(backend="ort")``: ONNX Runtime dynamic int8 for BERT sequence classifiers, through optimum.

:func:`compress_ort` turns an fp32 ``BertForSequenceClassification`` (or
:class:`~sidenet.models.mean_pool_bert.MeanPoolBertForSequenceClassification`, or a pruned / distilled
one: the export traces the modules as they are) into an :class:`OrtBertClassifier`. It runs on CPU only.

**How each graph is made.** A part of the torch model is exported with
``torch.onnx.export(..., dynamo=False)`` (opset 17, dynamic batch and sequence axes), then quantised
with optimum's ``ORTQuantizer`` and ``AutoQuantizationConfig.avx512_vnni(is_static=False)`` (dynamic
int8: uint8 activations quantised per call, int8 symmetric weights, per channel, see
:data:`PER_CHANNEL`, in 7 bits, see :data:`WEIGHT_BITS`). ``ORTQuantizer`` takes the bare ONNX file of
a sub-graph as well as a whole model (we hand it the BERT config explicitly), so no fallback to
``onnxruntime.quantization`` is needed. Only
the ``MatMul`` nodes whose second input is a weight initializer are quantised (``nodes_to_quantize``),
i.e. exactly the ``nn.Linear`` layers of the encoder, as torch's own dynamic int8 path does; left to
its defaults, optimum would also quantise the activation × activation attention products (which
``onnxruntime.quantization.quantize_dynamic`` leaves alone by default) and the embedding ``Gather``.
Embeddings stay fp32, and so do the pooler and classifier unless ``Int8Config(include_head=True)``: the
exporter emits them as ``Gemm``, which we then rewrite as ``MatMul + Add`` and add to the quantised nodes
(ORT's quantiser would rewrite ``Gemm`` itself, under names of its own choosing). The quantised bytes
are loaded into an ``onnxruntime.InferenceSession`` (CPU provider; ``intra_op_num_threads =
torch.get_num_threads()`` when the session is created, ``inter_op_num_threads = 1``, sequential
execution: the benchmark pins and records threads; intra-op threads do not spin-wait, see
:class:`OrtPart`); the temporary files live only in a ``TemporaryDirectory`` during the export.

**Graphs.** The full model (``forward``) is built at compress time. :meth:`OrtBertClassifier.sidenet_split`
(called by :func:`sidenet_core.staged.split_model`) builds, once per tap and lazily, two more graphs: *head* =
embeddings + the first ``tap`` encoder layers → hidden states, and *rest* = the remaining layers +
pooling ([CLS] pooler or masked mean) + classifier → logits. They are separate sessions, so rows that
exit at the SideNet never run the rest. The state between them is :class:`sidenet_core.staged.TextState` of
torch tensors, and the SideNet feature is the same masked mean as :class:`sidenet_core.staged.BertSplit`'s.

**FLOPs.** ``FlopCounterMode`` cannot see inside ONNX Runtime, so every session call goes through the
custom op ``torch.ops.sidenet_ort.run``, with a FLOP formula that returns the FLOPs of the fp32 torch part
the graph was exported from, counted by :func:`sidenet_core.flops.count_flops` on the same inputs (memoised
per input shape: the count depends on shapes only). The project's rule is that int8 FLOPs equal the fp32
count (reported with a dtype column), so ``count_flops(split.head, x)``, ``count_flops(split.rest, state)``
and ``count_flops(lambda x: model(**x).logits, x)`` give the fp32 numbers of what really ran. The fp32 torch
model is kept inside the wrapper (as ``fp32``) for that count and for lazy per-tap exports; it never runs on
the inference path.

The wrapper counts as quantised (:func:`compressors.base.is_quantized`), so int8 stays the terminal step of
a chain: prune / distil / fp16 / int8 applied afterwards fail with a one-line :class:`~sidenet_core.errors.UserError`.
"""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils import flop_counter

from sidenet_core.errors import UserError
from sidenet_core.layouts import masked_mean
from sidenet_core.staged import BertSplit, Split, TextState

if TYPE_CHECKING:
    import onnx

__all__ = [
    "PER_CHANNEL",
    "WEIGHT_BITS",
    "OrtBertClassifier",
    "OrtBertSplit",
    "compress_ort",
    "int8_weight_range",
    "register_ort_flop_formula",
]

# optimum's avx512_vnni default: one weight scale per output column. On MiniLM-L6 (random head, 40 texts) it
# kept logits at cosine 0.993 vs fp32 where per-tensor scales gave 0.960, for ~6% more bs1 CPU time.
PER_CHANNEL = True
# Weights are quantised to 7 bits ([-64, 64], optimum's ``reduce_range``) on every CPU. Without AVX-512 VNNI
# (e.g. this project's Zen 3 machines: AVX2 only) ONNX Runtime's u8×s8 kernel multiplies with vpmaddubsw,
# which adds two u8·s8 products into a saturating int16: 255·127·2 = 64,770 overflows 32,767, 255·64·2 = 32,640
# does not. With 8-bit weights the same model gave other logits there (tiny-BERT test: cosine vs fp32 0.987 on
# an emulated Zen 3 vs 0.9999 with VNNI); with 7-bit weights no sum can saturate, and the logits were
# bit-identical with and without VNNI (QEMU EPYC-Milan vs this Zen 4), so an ORT row means the same on any
# x86-64 CPU. Cost: one bit of weight precision (that cosine 0.99994 → 0.99983), no speed: a MiniLM-shaped BERT at
# bs 1, seq 32, 2 threads on Zen 4 ran 3.32 ms (IQR 3.19-3.38) with 8-bit and 3.33 ms (3.22-3.48) with 7-bit
# weights, per-round ratio 1.004 (0.991-1.041) over 15 interleaved rounds.
WEIGHT_BITS = 7
OPSET = 17  # LayerNormalization is one node from opset 17
_HEAD_SCOPES = ("/pooler/", "/classifier/")  # ONNX node-name scopes of the pooler and classifier
_EXPORT_BATCH, _EXPORT_SEQ = 2, 8  # trace shapes; both axes are exported as dynamic


# ---------------------------------------------------------------------------------------------------
# one ONNX Runtime graph, called through a torch custom op so FlopCounterMode can count it
# ---------------------------------------------------------------------------------------------------


class OrtPart:
    """An ``InferenceSession`` plus the fp32 torch callable it was exported from (for FLOP counting only).

    ORT's intra-op pool spin-waits for work after each run by default. Between a cascade's head session and
    rest session the torch SideNet runs, and so does the paired fp32 torch MainNet between rounds: spinning
    ORT threads then compete with torch's threads for the same cores. Measured on 2 cores, bs 1, Rotten
    Tomatoes (ms/sample, median of 7 rounds): cascade on ORT 5.02 → 3.18 without spinning, ORT alone 4.56 →
    4.64 (unchanged), and the fp32 torch MainNet timed in the same process 17.3 → 14.4.
    """

    def __init__(
        self,
        name: str,
        model_bytes: bytes,
        input_names: Sequence[str],
        output_names: Sequence[str],
        reference: Callable[..., Any],
    ) -> None:
        import onnxruntime as ort

        self.name = name
        self.threads = torch.get_num_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # see the class docstring
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: ORT's optimiser logs benign warnings per session
        self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self.nbytes = len(model_bytes)  # size of the int8 ONNX graph
        self.weight_range = int8_weight_range(model_bytes)  # what the quantiser really wrote (WEIGHT_BITS)
        have = [i.name for i in self.session.get_inputs()]
        if list(input_names) != have:
            raise RuntimeError(f"ONNX graph {name} has inputs {have}, expected {list(input_names)}")
        self.input_names = tuple(input_names)
        self.output_names = list(output_names)
        self._reference = reference
        self._flops: dict[tuple[tuple[int, ...], ...], int] = {}
        self.key = f"{name}#{next(_KEYS)}"
        _PARTS[self.key] = self

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        return torch.ops.sidenet_ort.run(self.key, [t.contiguous() for t in inputs])

    def run_numpy(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(self.input_names, inputs, strict=True)}
        return [torch.from_numpy(out) for out in self.session.run(self.output_names, feeds)]

    def reference_flops(self, inputs: Sequence[torch.Tensor]) -> int:
        """fp32 FLOPs of the torch part on inputs of these shapes (counted once per shape)."""
        shapes = tuple(tuple(t.shape) for t in inputs)
        if shapes not in self._flops:
            from sidenet_core.flops import count_flops

            self._flops[shapes] = count_flops(self._reference, *inputs)[0]
        return self._flops[shapes]


def int8_weight_range(model_bytes: bytes) -> tuple[int, int]:
    """(min, max) over the int8 weight initializers of a quantised ONNX graph; (0, 0) when it has none."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
    lo, hi = 0, 0
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.INT8:
            values = numpy_helper.to_array(init)
            if values.size:
                lo, hi = min(lo, int(values.min())), max(hi, int(values.max()))
    return lo, hi


_KEYS = itertools.count()
_PARTS: weakref.WeakValueDictionary[str, OrtPart] = weakref.WeakValueDictionary()


@torch.library.custom_op("sidenet_ort::run", mutates_args=(), device_types="cpu")
def _ort_run(key: str, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Run the ONNX Runtime session registered under ``key`` on ``inputs`` (in its graph input order)."""
    part = _PARTS.get(key)
    if part is None:
        raise RuntimeError(f"ONNX Runtime graph {key!r} no longer exists (its model was garbage-collected)")
    return part.run_numpy(inputs)


def _ort_run_flop(key: str, inputs: list[torch.Tensor], *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    part = _PARTS.get(key)
    return 0 if part is None else part.reference_flops(inputs)


_FLOP_REGISTERED = False


def register_ort_flop_formula() -> None:
    """Register the FlopCounterMode formula of ``torch.ops.sidenet_ort.run`` (idempotent)."""
    global _FLOP_REGISTERED
    if _FLOP_REGISTERED:
        return
    op = torch.ops.sidenet_ort.run
    if op not in flop_counter.flop_registry and op.default not in flop_counter.flop_registry:
        flop_counter.register_flop_formula(op, get_raw=True)(_ort_run_flop)
    _FLOP_REGISTERED = True


register_ort_flop_formula()


# ---------------------------------------------------------------------------------------------------
# export + quantise
# ---------------------------------------------------------------------------------------------------


class _Traced(nn.Module):
    """A torch callable as a module for ``torch.onnx.export``; ``owner`` makes its weights initializers."""

    def __init__(self, owner: nn.Module, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.owner = owner
        self.fn = fn

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.fn(*args)


@contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence what the export is expected to say: tracing BERT's mask helper warns that a ``torch.tensor``
    becomes a trace constant (it is the dtype's minimum, a true constant), and torch 2.14 warns that the
    TorchScript exporter is deprecated (FINDINGS: ``dynamo=False`` is the path that exports BERT with dynamic
    batch and sequence axes here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r"You are using the legacy TorchScript", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning)
        yield


def _export(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_name: str,
    path: Path,
) -> None:
    seq_axes = {0: "batch", 1: "sequence"}
    dynamic_axes: dict[str, dict[int, str]] = {name: seq_axes for name in input_names}
    dynamic_axes[output_name] = {0: "batch"} if output_name == "logits" else seq_axes
    # The exporter traces in eval mode, then calls ``module.train(<its old flag>)``, which sets that flag on
    # every submodule: our fresh wrapper module is in training mode, so the MainNet would be left training
    # (dropout on). Restore every module's own flag instead.
    modes = {m: m.training for m in module.modules()}
    try:
        with _quiet_export(), torch.no_grad():
            torch.onnx.export(
                module,
                example,
                str(path),
                input_names=list(input_names),
                output_names=[output_name],
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
                training=torch.onnx.TrainingMode.EVAL,
            )
    finally:
        for m, mode in modes.items():
            m.training = mode


def _gemm_to_matmul(model: onnx.ModelProto, scopes: Sequence[str]) -> None:
    """Rewrite ``Gemm(A, W, b)`` nodes in ``scopes`` as ``MatMul(A, Wᵀ) + b`` so dynamic int8 can take them."""
    import onnx
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not any(s in node.name for s in scopes) or not plain or node.input[1] not in inits:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T.copy()
        w_name = f"{node.input[1]}_as_matmul"
        model.graph.initializer.append(numpy_helper.from_array(weight, w_name))
        product = f"{node.output[0]}_matmul"
        nodes.append(onnx.helper.make_node("MatMul", [node.input[0], w_name], [product], f"{node.name}_MatMul"))
        if len(node.input) > 2 and node.input[2]:
            nodes.append(onnx.helper.make_node("Add", [product, node.input[2]], [node.output[0]], f"{node.name}_Add"))
        else:
            nodes.append(onnx.helper.make_node("Identity", [product], [node.output[0]], f"{node.name}_Identity"))
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _weight_matmuls(model: onnx.ModelProto, include_head: bool) -> list[str]:
    """Names of the MatMul nodes with a weight initializer (the nn.Linear layers), head scopes optional."""
    inits = {i.name for i in model.graph.initializer}

    def in_head(name: str) -> bool:
        return any(s in name for s in _HEAD_SCOPES)

    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and n.input[1] in inits and (include_head or not in_head(n.name))
    ]


def _quantize(src: Path, bert_config: Any, include_head: bool) -> tuple[bytes, int]:
    """Dynamic int8 of the ONNX file ``src`` with optimum; returns (model bytes, number of int8 MatMuls)."""
    import onnx
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    model = onnx.load(str(src))
    if include_head:
        _gemm_to_matmul(model, _HEAD_SCOPES)
        onnx.save(model, str(src))
    nodes = _weight_matmuls(model, include_head)
    if not nodes:
        raise RuntimeError(f"no weight MatMul to quantise in {src.name}")
    qconfig = AutoQuantizationConfig.avx512_vnni(
        is_static=False, per_channel=PER_CHANNEL, nodes_to_quantize=nodes, operators_to_quantize=["MatMul"]
    )
    qconfig = dataclasses.replace(qconfig, reduce_range=WEIGHT_BITS == 7)  # avx512_vnni() does not take it
    out_dir = src.parent / f"{src.stem}-int8"
    ORTQuantizer(src, config=bert_config).quantize(quantization_config=qconfig, save_dir=out_dir, file_suffix="")
    return (out_dir / src.name).read_bytes(), len(nodes)


# ---------------------------------------------------------------------------------------------------
# the wrapper
# ---------------------------------------------------------------------------------------------------

_TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_REST_INPUTS = ("hidden", "attention_mask")


def _text_inputs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, token_type_ids: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise UserError("the ONNX Runtime BERT takes input_ids as a [batch, sequence] tensor")
    if input_ids.is_cuda:
        raise UserError("int8 backend ort runs on CPU only; keep the inputs on CPU")
    ids = input_ids.long()
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.long()
    types = torch.zeros_like(ids) if token_type_ids is None else token_type_ids.long()
    return ids, mask, types


def _example_text(config: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    seq = min(_EXPORT_SEQ, int(getattr(config, "max_position_embeddings", _EXPORT_SEQ)))
    ids = torch.randint(1, int(config.vocab_size), (_EXPORT_BATCH, seq), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, seq // 2 :] = 0  # a padded row (tracing records ops, not values, but keep it realistic)
    return ids * mask, mask, torch.zeros_like(ids)


class OrtBertClassifier(nn.Module):
    """An int8 ONNX Runtime BERT sequence classifier with the Hugging Face call convention.

    ``model(input_ids=..., attention_mask=..., token_type_ids=...)`` returns a ``SequenceClassifierOutput``
    whose ``logits`` come from the int8 ONNX Runtime graph of the whole model (batch and sequence length
    dynamic). :meth:`sidenet_split` gives the early-exit split, with its own head / rest graphs per tap.
    ``fp32`` is the original torch model, kept for FLOP counting and for exporting splits; ``bert``,
    ``classifier`` and ``config`` point into it so the model keeps its family for error messages.
    """

    sidenet_int8 = True  # compressors.base.is_quantized: int8 is the terminal step of a chain

    def __init__(self, model: nn.Module, include_head: bool = False) -> None:
        super().__init__()
        self.fp32 = model.eval()
        self.pooling = getattr(model, "pooling", "cls")
        self.include_head = include_head
        self.int8_matmuls: dict[str, int] = {}
        self._splits: dict[int, OrtBertSplit] = {}

        def full(ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
            return model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits

        self.full = self._build("full", full, _example_text(model.config), _TEXT_INPUTS, "logits")
        self.eval()  # inference only (a fresh nn.Module starts in training mode)

    # --- the HF-like surface ---------------------------------------------------------------------------
    @property
    def bert(self) -> nn.Module:
        return self.fp32.bert

    @property
    def classifier(self) -> nn.Module:
        return self.fp32.classifier

    @property
    def config(self) -> Any:
        return self.fp32.config

    @property
    def threads(self) -> int:
        """``intra_op_num_threads`` of the full-model session."""
        return self.full.threads

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        unknown = sorted(k for k, v in kwargs.items() if v is not None)
        if unknown:
            raise UserError(f"the ONNX Runtime BERT is inference-only and takes no {', '.join(unknown)}")
        (logits,) = self.full(*_text_inputs(input_ids, attention_mask, token_type_ids))
        return SequenceClassifierOutput(logits=logits)

    # --- splits ----------------------------------------------------------------------------------------
    def sidenet_split(self, tap: int | str) -> OrtBertSplit:
        """The split after encoder layer ``tap`` (1 … L-1), exported and quantised on first use."""
        reference = BertSplit(self.fp32, tap)  # validates the tap with the usual one-line errors
        if reference.k not in self._splits:
            self._splits[reference.k] = OrtBertSplit(self, reference)
        return self._splits[reference.k]

    def _build(
        self,
        name: str,
        fn: Callable[..., torch.Tensor],
        example: tuple[torch.Tensor, ...],
        input_names: Sequence[str],
        output_name: str,
    ) -> OrtPart:
        with tempfile.TemporaryDirectory(prefix="sidenet-ort-") as tmp:
            path = Path(tmp) / f"{name}.onnx"
            _export(_Traced(self.fp32, fn), example, input_names, output_name, path)
            data, n_int8 = _quantize(path, self.fp32.config, self.include_head)
        self.int8_matmuls[name] = n_int8
        return OrtPart(name, data, input_names, [output_name], fn)

    def extra_repr(self) -> str:
        return f"pooling={self.pooling!r}, include_head={self.include_head}, threads={self.threads}"


class OrtBertSplit(Split):
    """Head / rest of an :class:`OrtBertClassifier` as two int8 ONNX Runtime sessions.

    ``head(inputs)`` runs embeddings + the first ``tap`` layers and returns a :class:`TextState`;
    ``rest(state)`` runs the remaining layers + pooling + classifier; ``features`` is the masked mean of
    the tap's hidden states (as :class:`~sidenet_core.staged.BertSplit`). ``reference`` is the fp32 torch split
    the graphs were exported from (used for FLOP counting only).
    """

    def __init__(self, owner: OrtBertClassifier, reference: BertSplit) -> None:
        super().__init__()
        self.tap = reference.tap
        self.k = reference.k
        self.reference = reference

        def head(ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
            return reference.head({"input_ids": ids, "attention_mask": mask, "token_type_ids": types}).hidden

        def rest(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return reference.rest(TextState(hidden, mask))

        example = _example_text(owner.config)
        with torch.no_grad():
            hidden = head(*example)
        self.head_part = owner._build(f"head{self.k}", head, example, _TEXT_INPUTS, "hidden")
        self.rest_part = owner._build(f"rest{self.k}", rest, (hidden, example[1]), _REST_INPUTS, "logits")
        self.eval()

    def head(self, inputs: dict[str, torch.Tensor]) -> TextState:
        ids, mask, types = _text_inputs(inputs["input_ids"], inputs.get("attention_mask"), inputs.get("token_type_ids"))
        (hidden,) = self.head_part(ids, mask, types)
        return TextState(hidden, mask)

    def rest(self, state: TextState) -> torch.Tensor:
        (logits,) = self.rest_part(state.hidden, state.attention_mask)
        return logits

    def features(self, state: TextState) -> torch.Tensor:
        return masked_mean(state.hidden, state.attention_mask)

    def select(self, state: TextState, idx: torch.Tensor) -> TextState:
        return TextState(state.hidden.index_select(0, idx), state.attention_mask.index_select(0, idx))


def compress_ort(model: nn.Module, include_head: bool = False) -> OrtBertClassifier:
    """Export + quantise an fp32 BERT sequence classifier (CPU) to an :class:`OrtBertClassifier`."""
    try:
        import onnxruntime  # noqa: F401
        import optimum.onnxruntime  # noqa: F401
    except ImportError as exc:
        raise UserError(
            f"int8 backend ort needs optimum[onnxruntime] ({exc}); pip install 'optimum[onnxruntime]'"
        ) from None
    return OrtBertClassifier(model, include_head=include_head)
