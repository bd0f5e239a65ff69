"""The compressor contract: frozen configs, a name-keyed registry, ``compress_`` and ``compose_``.

A compressor is a frozen dataclass config (validated in ``__post_init__``, one-line
:class:`~sidenet_core.errors.UserError` naming the fix, round-trips through a dict / JSON) plus an apply
function registered under the config's ``name``::

    model = compress_(model, PruneConfig(ratio=0.5), example_inputs=x, finetune=train_one_epoch)
    model = compose_(model, [PruneConfig(ratio=0.5), Int8Config()], example_inputs=x, calibration=batches)

Always use the returned model: some compressors work in place (int8, prune), others build a new one
(distil). Configs cannot hold tensors or training loops, so data comes in through keyword arguments
that every step of a chain receives (a step ignores the ones it does not need):

* ``example_inputs`` — one batch of MainNet inputs (a tensor, or a dict such as ``input_ids`` +
  ``attention_mask``), used for graph tracing and FLOP counting. Defaults to the first calibration batch,
  else the first training batch.
* ``calibration`` — an iterable of input batches (static int8 PTQ). A one-shot iterator is turned into a
  list first, so one chain can use it more than once.
* ``finetune`` — ``Callable[[nn.Module], None]`` that trains the model for one epoch in place (pruning
  calls it ``finetune_epochs`` times).
* ``train_batches`` — ``Callable[[], Iterable[(inputs, labels)]]``, called once per epoch (distillation).
* ``train_precision`` — ``fp32`` (default), ``bf16`` or ``auto``: autocast for training done inside a
  compressor (distillation). The caller knows whether bf16 is safe for its model (see sidenet_core.precision).

A config also carries what its callers need to know about the step, so none of them switches on a compressor's
name (issue #22; ``tests/test_compressor_contract.py`` checks every registered compressor against them):
``trains()`` (cached as trained weights, rebuilt on a warm run by ``rebuild(parent, shapes, ctx)``; see
:func:`rebuild_`), ``post_training()``, ``uses_task_finetune()`` (the task's fine-tuning recipe is in the cache key),
``requires_cuda`` / ``cpu_only`` (devices), ``dtype`` (the compute precision it produces), ``whole_stages`` and
``with_exits_inside_stages(params)`` (exits inside ResNet stages).

Compressors keep the MainNet splittable by :func:`sidenet_core.staged.split_model` (same attribute layout)
and leave the classifier head alone unless their config says otherwise. What each step did is appended
to :func:`compression_log` of the returned model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

import torch
from torch import nn

from sidenet_core.errors import UserError
from sidenet_core.registry import Registry

Inputs = Any  # a tensor, or a dict of tensors (BERT: input_ids + attention_mask)
Finetune = Callable[[nn.Module], None]
TrainBatches = Callable[[], Iterable[tuple[Inputs, torch.Tensor]]]

_LOG_ATTR = "_sidenet_compression_log"


# ---------------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompressorConfig:
    """Base class of every compressor config. Subclasses are ``@dataclass(frozen=True)`` and set ``name``."""

    name: ClassVar[str] = ""
    # Fields a chain label always shows, even at their default (``prune:ratio=0.5`` says how much was pruned);
    # every other field shows only when it differs from its default (sidenet.tasks.compressed.normalize_chain).
    label_fields: ClassVar[tuple[str, ...]] = ()

    # Traits: what a compressor's callers (sidenet.tasks.compressed, the exit systems) need to know about a step.
    # They live here, with the method, so no caller switches on a compressor's name and a new compressor brings
    # its own answers (tests/test_compressor_contract.py checks them against what the step does).
    requires_cuda: ClassVar[bool] = False  # runs on CUDA only (torchao weight-only): the model moves there first
    # non-empty: runs on the CPU only, and which library makes it so (int8: "torch.ao / ONNX Runtime")
    cpu_only: ClassVar[str] = ""
    # the compute precision of the model it returns (``int8``, ``fp16``, ``int8wo`` …); None: the input's (fp32)
    dtype: ClassVar[str | None] = None
    # wraps whole ResNet stages in one module (the fp16/bf16 casts): an exit inside a stage cannot be cut out of it
    whole_stages: ClassVar[bool] = False

    def trains(self) -> bool:
        """Whether this step trains: its weights are then cached (keyed by the parent) and rebuilt on a warm run
        with :meth:`rebuild`, instead of the step being applied afresh each run (cheap, deterministic steps)."""
        return False

    def post_training(self) -> bool:
        """Whether this step is applied to a trained network as it is (int8, casts): an EENet trains first and
        applies these after, so such a step may not come before one that trains."""
        return not self.trains()

    def uses_task_finetune(self) -> bool:
        """Whether this step trains with the caller's ``finetune`` callable: the task's fine-tuning recipe then
        shapes the weights, so it belongs in the step's cache key."""
        return False

    def rebuild(self, parent: nn.Module, shapes: dict[str, tuple[int, ...]], ctx: CompressContext) -> nn.Module:
        """The architecture this (trained) step makes from ``parent``, weights not trained: cached weights whose
        tensor shapes are ``shapes`` are loaded into it strictly afterwards. Only trained steps are cached."""
        raise TypeError(f"compressor {self.name!r} does not train, so it has no cached weights to rebuild")

    @classmethod
    def with_exits_inside_stages(cls, params: dict[str, str]) -> dict[str, str]:
        """This step's chain parameters when applied to a ResNet whose exits sit inside stages (EENet block taps):
        a step that would otherwise swallow those exits in a per-stage graph says how to avoid that."""
        return params

    def __post_init__(self) -> None:
        """Check every field against its annotated type; subclasses call this first, then check ranges."""
        for key, tp in _field_types(type(self)).items():
            value = getattr(self, key)
            if not _has_type(value, tp):
                raise UserError(f"{self.name or type(self).__name__} {key} must be {_type_name(tp)}, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):  # lr=inf, ratio=nan: never a setting
                raise UserError(f"{self.name or type(self).__name__} {key} must be a finite number, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., <field>: <value>, ...}`` with JSON-compatible values."""
        return {"name": self.name, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressorConfig:
        """Rebuild a config. On the base class the ``name`` key picks the registered config class."""
        if not isinstance(data, dict):
            raise UserError(f"a compressor config must be a dict, got {type(data).__name__}")
        data = dict(data)
        name = data.pop("name", None)
        target: type[CompressorConfig] = cls
        if cls is CompressorConfig or not cls.name:
            if name is None:
                raise UserError('compressor config dict has no \'name\' key; add e.g. "name": "prune"')
            target = COMPRESSORS.get(str(name)).config_cls
        elif name is not None and name != cls.name:
            raise UserError(f"config dict is for compressor {name!r}, not {cls.name!r}")
        valid = _field_types(target)
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise UserError(f"unknown {target.name} parameter(s) {unknown} (valid: {', '.join(valid) or 'none'})")
        values = {k: _from_json_value(v, valid[k]) for k, v in data.items()}
        return target(**values)

    @classmethod
    def from_json(cls, text: str) -> CompressorConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"compressor config is not valid JSON ({exc.msg} at char {exc.pos})") from None
        return cls.from_dict(data)


def _field_types(cls: type[CompressorConfig]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _has_type(value: Any, tp: Any) -> bool:
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return any(_has_type(value, a) for a in args)
    if origin is Literal:
        return value in args
    if origin is tuple:
        item = args[0] if args else object
        return isinstance(value, tuple) and all(_has_type(v, item) for v in value)
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is Any:
        return True
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    if get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))


def _from_json_value(value: Any, tp: Any) -> Any:
    """JSON turns tuples into lists; give them back so a round trip compares equal."""
    if isinstance(value, list) and get_origin(tp) is tuple:
        return tuple(value)
    return value


# ---------------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompressContext:
    """The data a compressor may need, handed in by the caller (configs hold no tensors)."""

    example_inputs: Inputs | None = None
    calibration: Sequence[Inputs] | None = None
    finetune: Finetune | None = None
    train_batches: TrainBatches | None = None
    train_precision: str = "fp32"  # autocast for training inside a compressor (distil): fp32 or bf16

    def example(self, what: str) -> Inputs:
        """One batch of inputs: ``example_inputs``, else the first calibration / training batch."""
        if self.example_inputs is not None:
            return self.example_inputs
        if self.calibration:
            return self.calibration[0]
        if self.train_batches is not None:
            for inputs, _ in self.train_batches():
                return inputs
        raise UserError(f"{what} needs one batch of example inputs: pass compress_(..., example_inputs=batch)")


ApplyFn = Callable[[nn.Module, Any, CompressContext], nn.Module]


@dataclass(frozen=True)
class CompressorEntry:
    name: str
    config_cls: type[CompressorConfig]
    apply: ApplyFn
    description: str


COMPRESSORS: Registry[CompressorEntry] = Registry("compressor")


def register_compressor(
    name: str, config_cls: type[CompressorConfig], description: str
) -> Callable[[ApplyFn], ApplyFn]:
    """Decorator: register ``apply(model, config, ctx) -> model`` under ``name`` for ``config_cls``."""
    if not (isinstance(config_cls, type) and issubclass(config_cls, CompressorConfig)):
        raise TypeError(f"{config_cls!r} is not a CompressorConfig subclass")
    if not dataclasses.is_dataclass(config_cls) or not config_cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"{config_cls.__name__} must be a @dataclass(frozen=True)")
    if config_cls.__dict__.get("name", "") not in ("", name):
        raise ValueError(f"{config_cls.__name__}.name is {config_cls.name!r}, registered as {name!r}")
    if "\n" in description:
        raise ValueError("compressor descriptions must be one line")

    def deco(fn: ApplyFn) -> ApplyFn:
        COMPRESSORS.add(name, CompressorEntry(name, config_cls, fn, description))
        config_cls.name = name
        return fn

    return deco


# ---------------------------------------------------------------------------------------------------
# applying
# ---------------------------------------------------------------------------------------------------


def compress_(
    model: nn.Module,
    config: CompressorConfig,
    *,
    example_inputs: Inputs | None = None,
    calibration: Iterable[Inputs] | None = None,
    finetune: Finetune | None = None,
    train_batches: TrainBatches | None = None,
    train_precision: str = "fp32",
) -> nn.Module:
    """Apply one compressor; returns the compressed model (may be a new object: always use the return)."""
    ctx = _context(example_inputs, calibration, finetune, train_batches, train_precision)
    return _apply(model, config, ctx)


def compose_(
    model: nn.Module,
    configs: Sequence[CompressorConfig],
    *,
    example_inputs: Inputs | None = None,
    calibration: Iterable[Inputs] | None = None,
    finetune: Finetune | None = None,
    train_batches: TrainBatches | None = None,
    train_precision: str = "fp32",
) -> nn.Module:
    """Apply ``configs`` in order (e.g. prune → distil → int8); every step gets the same data kwargs."""
    if isinstance(configs, CompressorConfig):
        configs = [configs]
    ctx = _context(example_inputs, calibration, finetune, train_batches, train_precision)
    for config in configs:
        model = _apply(model, config, ctx)
    return model


def _context(
    example_inputs: Inputs | None,
    calibration: Iterable[Inputs] | None,
    finetune: Finetune | None,
    train_batches: TrainBatches | None,
    train_precision: str = "fp32",
) -> CompressContext:
    if calibration is not None:
        if isinstance(calibration, torch.Tensor | dict):
            raise UserError("calibration must be an iterable of input batches, e.g. [batch1, batch2], not one batch")
        calibration = list(calibration) if isinstance(calibration, Iterator) else calibration
        if not isinstance(calibration, Sequence):
            calibration = list(calibration)
    if finetune is not None and not callable(finetune):
        raise UserError("finetune must be a callable that trains the model for one epoch: finetune(model)")
    if train_batches is not None and not callable(train_batches):
        raise UserError("train_batches must be a callable returning an iterable of (inputs, labels) batches")
    from sidenet_core.precision import resolve

    return CompressContext(example_inputs, calibration, finetune, train_batches, resolve(train_precision))


def rebuild_(
    parent: nn.Module,
    config: CompressorConfig,
    shapes: dict[str, tuple[int, ...]],
    *,
    example_inputs: Inputs | None = None,
    calibration: Iterable[Inputs] | None = None,
    finetune: Finetune | None = None,
    train_batches: TrainBatches | None = None,
    train_precision: str = "fp32",
) -> nn.Module:
    """A trained step's architecture for cached weights of ``shapes`` (:meth:`CompressorConfig.rebuild`), with the
    same data keywords as :func:`compress_`; the caller loads the weights and sets the compression log."""
    if not config.trains():
        raise UserError(f"compressor {config.name!r} does not train; apply it with compress_ instead of rebuilding")
    ctx = _context(example_inputs, calibration, finetune, train_batches, train_precision)
    return config.rebuild(parent, shapes, ctx)


def apply_in(model: nn.Module, config: CompressorConfig, ctx: CompressContext) -> nn.Module:
    """:func:`compress_` with a context already built: for a compressor's own :meth:`~CompressorConfig.rebuild`
    that falls back to applying a step again (the compression log stays consistent)."""
    return _apply(model, config, ctx)


def _apply(model: nn.Module, config: CompressorConfig, ctx: CompressContext) -> nn.Module:
    if not isinstance(config, CompressorConfig):
        raise UserError(f"expected a compressor config (e.g. PruneConfig(...)), got {type(config).__name__}")
    entry = COMPRESSORS.get(config.name)
    if not isinstance(config, entry.config_cls):
        raise UserError(f"config {type(config).__name__} is not a {entry.config_cls.__name__} for {entry.name!r}")
    log = list(compression_log(model))
    out = entry.apply(model, config, ctx)
    info = getattr(out, _LOG_ATTR + "_pending", {})
    if hasattr(out, _LOG_ATTR + "_pending"):
        delattr(out, _LOG_ATTR + "_pending")
    setattr(out, _LOG_ATTR, [*log, {"compressor": config.name, "config": config.to_dict(), **info}])
    return out


def record(model: nn.Module, **info: Any) -> None:
    """Called by an apply function: measured facts (e.g. FLOP ratio) for this step's log entry."""
    setattr(model, _LOG_ATTR + "_pending", info)


def set_compression_log(model: nn.Module, steps: list[dict[str, Any]]) -> None:
    """Replace a model's log, e.g. on a model rebuilt from a cache entry with the log of the run that trained it."""
    setattr(model, _LOG_ATTR, list(steps))


def compression_log(model: nn.Module) -> list[dict[str, Any]]:
    """The steps applied to ``model`` so far: ``[{"compressor", "config", <measured facts>}, ...]``."""
    return list(getattr(model, _LOG_ATTR, []))


# ---------------------------------------------------------------------------------------------------
# building a config from a chain step's string parameters
# ---------------------------------------------------------------------------------------------------


def config_from_step(name: str, params: dict[str, str] | None = None) -> CompressorConfig:
    """``("prune", {"ratio": "0.5"})`` → ``PruneConfig(ratio=0.5)``, converting by the field types."""
    entry = COMPRESSORS.get(name)
    fields = _field_types(entry.config_cls)
    params = dict(params or {})
    unknown = sorted(set(params) - set(fields))
    if unknown:
        valid = ", ".join(fields) or "none"
        raise UserError(f"unknown parameter(s) {', '.join(unknown)} for compressor {name!r} (valid: {valid})")
    values = {key: _convert(name, key, raw, fields[key]) for key, raw in params.items()}
    return entry.config_cls(**values)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(compressor: str, key: str, raw: Any, tp: Any) -> Any:
    """Convert one string parameter to ``tp`` (int, float, bool, str, Literal, X | None, tuple[X, ...])."""
    origin, args = get_origin(tp), get_args(tp)
    if not isinstance(raw, str):  # already typed (e.g. built from JSON)
        return raw
    text = raw.strip()
    where = f"{compressor}:{key}={raw!r}"
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if type(None) in args and text.lower() in ("none", "null", ""):
            return None
        if len(inner) == 1:
            return _convert(compressor, key, raw, inner[0])
        raise UserError(f"{where}: cannot parse a value of type {tp}")
    if origin is Literal:
        if text in [str(a) for a in args]:
            return next(a for a in args if str(a) == text)
        raise UserError(f"{where}: must be one of {', '.join(str(a) for a in args)}")
    if origin is tuple:
        item = args[0] if args else str
        return tuple(_convert(compressor, key, part, item) for part in text.split("/") if part.strip())
    if tp is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise UserError(f"{where}: must be true or false")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise UserError(f"{where}: must be an integer") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise UserError(f"{where}: must be a number") from None
    if tp is str:
        return text
    raise UserError(f"{where}: parameters of type {tp} cannot be set from a chain step")


# ---------------------------------------------------------------------------------------------------
# helpers shared by the compressors
# ---------------------------------------------------------------------------------------------------

RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")


def model_family(model: nn.Module, what: str) -> Literal["resnet", "bert"]:
    """``bert`` (BertForSequenceClassification layout) or ``resnet`` (torchvision layout), else a UserError."""
    if hasattr(model, "bert") and hasattr(model, "classifier") and hasattr(model.bert, "encoder"):
        return "bert"
    if all(hasattr(model, n) for n in ("conv1", "bn1", "relu", "maxpool", *RESNET_STAGES, "avgpool", "fc")):
        return "resnet"
    raise UserError(
        f"{what} supports torchvision-layout ResNets and BERT sequence classifiers, not {type(model).__name__}"
    )


def logits_of(model: nn.Module, inputs: Inputs) -> torch.Tensor:
    """Run ``model`` on a tensor or a dict of tensors; return the logits tensor."""
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return out.logits if hasattr(out, "logits") else out


def is_quantized(model: nn.Module) -> bool:
    """True when ``model`` holds torch.ao quantised modules (static or dynamic int8), or is a module that
    says it runs int8 elsewhere (``sidenet_int8 = True``, e.g. the ONNX Runtime wrapper of compressors.ort)."""
    return any(
        getattr(m, "sidenet_int8", False) is True
        or type(m).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"))
        for m in model.modules()
    )


def count_model_flops(model: nn.Module, inputs: Inputs) -> int:
    """FLOPs of one forward of ``model`` on ``inputs`` (FlopCounterMode, quantised formulas registered)."""
    from compressors.flops import register_quantized_formulas
    from sidenet_core.flops import count_flops

    register_quantized_formulas()
    flops, _ = count_flops(logits_of, model, inputs)
    return flops
