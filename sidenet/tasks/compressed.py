"""A task's MainNet after a compressor chain (``prune+int8`` …), with the trained steps cached.

Why a module of its own: compressors change a model's *shape* (pruning removes channels, distillation
builds a smaller student), so a compressed model cannot be loaded as a state_dict into the original
MainNet. Each trained step is cached as its own artifact and, on a warm run, **rebuilt from config**. What a step
is comes from its config, never from its name here (``compressors.base.CompressorConfig``'s traits):

* ``config.trains()`` (``prune`` with fine-tuning, ``distil``) — cached; ``config.rebuild(parent, shapes, ctx)``
  makes the architecture (``prune``: as wide as the cached weights' shapes say, :func:`compressors.prune.shaped_like`,
  else pruning again without fine-tuning; ``distil``: the student from its config), then the trained weights are
  loaded with ``strict=True``.
* every other step (``int8`` / ``fp16`` / ``bf16``, the CUDA-only ``int8wo`` / ``int4wo``) is cheap and
  deterministic: applied afresh every run, never cached.

The cache key of a step chains the parent's key, so ``prune → distil`` and ``distil`` alone differ.
The task supplies the data every step may need: example inputs, calibration batches (static int8),
one-epoch fine-tuning (pruning) and training batches (distillation).

**Device.** ``compress_mainnet(..., device=...)`` returns the compressed model on ``device``. Steps run on the
CPU, as the task's trainers (fine-tuning, distillation) do, so trained steps and their cache entries do not
depend on the device, until the first step whose config says ``requires_cuda = True`` (``int8wo``, ``int4wo``):
the model moves to ``device`` right before it, and that step and any after it run there (with the example
and calibration inputs moved too). A chain with such a step cannot run on the CPU, and a chain with a step whose
config says ``cpu_only`` (``int8``: torch.ao / ONNX Runtime) runs on the CPU only: both are one-line errors before
any step runs.

The chain is parsed once per :func:`compress_mainnet` call; the parsed steps and their configs are passed down.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sidenet.engine import cache
from sidenet.engine.chain import NONE, ChainStep, format_chain, parse_chain
from sidenet.tasks import Encoded, Task
from sidenet_core.errors import UserError
from sidenet_core.layouts import to_device
from sidenet_core.status import announce

log = logging.getLogger(__name__)

CALIBRATION_BATCHES = 16
CALIBRATION_BATCH_SIZE = 64


@dataclass
class Compressed:
    """The MainNet a cascade is built on: the fp32 MainNet itself for chain ``none``."""

    model: nn.Module
    chain: str  # canonical chain spec
    key: str  # identity of these weights (chains the parent MainNet's cache key)
    dtype: str  # compute precision: fp32 | int8 | fp16 | bf16 | int8wo | int4wo (GPU weight-only)
    steps: list[dict[str, Any]]  # compressors.compression_log: what every step did (measured facts)
    seconds: float  # wall time spent compressing in this run (0 when everything came from the cache)


_DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16"}


def compute_dtype(model: nn.Module) -> str:
    """The compute precision of the compressed stages: ``int8wo`` / ``int4wo`` for torchao weight-only models
    (CUDA), ``int8`` for other quantised models, ``fp16`` / ``bf16`` for stages cast by those compressors, else
    the dtype of its floating-point weights.

    Casts are read from the :class:`~compressors.quantize.CastIO` wrappers that ``fp16`` / ``bf16`` put around
    the stages they cast, not from the first parameter: a cast BERT keeps its embeddings (its first
    parameters) in fp32.
    """
    from compressors.base import is_quantized
    from compressors.quantize import CastIO
    from compressors.weight_only import weight_only_kind

    weight_only = weight_only_kind(model)
    if weight_only is not None:
        return weight_only
    if is_quantized(model):
        return "int8"
    for m in model.modules():
        if isinstance(m, CastIO):
            return _DTYPE_NAMES.get(getattr(torch, m.dtype_name), "fp32")
    for p in model.parameters():
        if p.is_floating_point():
            return _DTYPE_NAMES.get(p.dtype, "fp32")
    return "fp32"


def chain_configs(chain: str | Sequence[ChainStep]) -> list[Any]:
    """Compressor configs of a chain spec or of its already parsed steps, in order (one-line UserError for a bad
    spec or parameter)."""
    from compressors import config_from_step

    steps = parse_chain(chain) if isinstance(chain, str) else chain
    return [config_from_step(step.name, dict(step.params)) for step in steps]


def format_param(value: Any) -> str:
    """A typed config value as a chain parameter that :func:`compressors.config_from_step` parses back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, tuple | list):
        return "/".join(format_param(v) for v in value)
    if isinstance(value, float):
        return repr(value)  # shortest round-tripping form: 0.5 for "0.5", ".5" and "5e-1"
    return str(value)


def normalize_chain(chain: str) -> str:
    """One spelling per experiment: the chain written from its *parsed* configs, each step with only the
    parameters that differ from their defaults (plus the config's ``label_fields``, e.g. ``prune:ratio=0.5``).

    ``prune:ratio=0.5``, ``prune:ratio=.5`` and ``prune:ratio=5e-1`` are one chain, and so are ``int8`` and
    ``int8:backend=x86``: measuring them as separate cells would repeat one experiment under two labels.
    One-line UserError for a bad spec or parameter (as :func:`chain_configs`)."""
    from compressors import config_from_step

    steps = []
    for config in chain_configs(chain):
        defaults = type(config)()
        params = tuple(
            (f.name, format_param(getattr(config, f.name)))
            for f in dataclasses.fields(config)
            if f.init and (getattr(config, f.name) != getattr(defaults, f.name) or f.name in config.label_fields)
        )
        step = ChainStep(config.name, tuple(sorted(params)))
        assert config_from_step(step.name, dict(step.params)) == config, f"{step} does not parse back to {config}"
        steps.append(step)
    return format_chain(tuple(steps))


def requires_cuda(config: Any) -> bool:
    """Whether a compressor config (or config class) runs on CUDA only (``requires_cuda = True``)."""
    return getattr(config, "requires_cuda", False) is True


def cuda_only_steps(chain: str) -> tuple[str, ...]:
    """Names of the steps of ``chain`` whose compressor runs on CUDA only, from the registered config classes
    (parameters are not parsed: cheap enough for start-up checks of every chain)."""
    from compressors import COMPRESSORS

    return tuple(step.name for step in parse_chain(chain) if requires_cuda(COMPRESSORS.get(step.name).config_cls))


def cuda_only_message(chain: str, steps: tuple[str, ...] | list[str], device: str) -> str:
    """The one-line error for a chain with CUDA-only steps on another device (start-up checks and prepare)."""
    what = ", ".join(dict.fromkeys(steps))
    return (
        f"chain {chain!r} needs CUDA ({what} runs on CUDA only) but the device is {device}: use --bench-device cuda "
        "(sidenet-bench run --device cuda) on a GPU machine, or int8 on CPU"
    )


def _check_device(chain: str, configs: list[Any], device: torch.device) -> None:
    """Before any step runs: CUDA-only steps cannot run on the CPU, CPU-only steps (``cpu_only``: int8, torch.ao /
    ONNX Runtime) only there. Other devices (``meta`` in the tests) are left to the compressors' own checks."""
    if device.type == "cpu":
        cuda_only = [c.name for c in configs if requires_cuda(c)]
        if cuda_only:
            raise UserError(cuda_only_message(chain, cuda_only, str(device)))
        return
    cpu_only = next((c for c in configs if getattr(c, "cpu_only", "")), None)
    if cpu_only is not None:
        raise UserError(f"chain {chain!r} is {cpu_only.name} ({cpu_only.cpu_only}: CPU only); use --device cpu")


def _kwargs_on(kwargs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The compressor data kwargs for a model on ``device``: example and calibration inputs and training batches
    moved there (``finetune`` is the task's CPU trainer and stays as it is)."""
    train_batches = kwargs["train_batches"]
    return {
        **kwargs,
        "example_inputs": to_device(kwargs["example_inputs"], device),
        "calibration": to_device(kwargs["calibration"], device),
        "train_batches": lambda: to_device(train_batches(), device),
    }


class _TaskData:
    """The keyword data compressors take (``compressors.compose_``), built from a task's splits."""

    def __init__(self, task: Task, data: dict[str, Encoded], progress: bool) -> None:
        self.task, self.data, self.progress = task, data, progress
        self._epoch = 0

    def kwargs(self) -> dict[str, Any]:
        task, train = self.task, self.data["train"]
        gen = torch.Generator().manual_seed(1234)
        rows = torch.randperm(len(train), generator=gen)[: CALIBRATION_BATCHES * CALIBRATION_BATCH_SIZE]
        calibration = [b for b, _ in task.batches(train, CALIBRATION_BATCH_SIZE, idx=rows)]
        return {
            "example_inputs": task.batches(self.data["val"], 8)[0][0],
            "calibration": calibration,
            "finetune": self.finetune,
            "train_batches": self.train_batches,
            "train_precision": task.training_precision(),
        }

    def finetune(self, model: nn.Module) -> None:
        """One epoch of the task's own recipe (at its fine-tuning learning rate), in place."""
        self.task.train_mainnet(model, self.data["train"], self.progress, **self.task.finetune_overrides())

    def train_batches(self) -> list[tuple[Any, torch.Tensor]]:
        """One shuffled epoch of (inputs, labels) at the task's batch size; a new order every call."""
        self._epoch += 1
        task, train = self.task, self.data["train"]
        batch_size = getattr(getattr(task, "config", None), "batch_size", 64)
        gen = torch.Generator().manual_seed(10_000 + self._epoch)
        out = []
        for idx in task.epoch_batches(train, batch_size, gen):
            inputs, _ = task.batches(train, len(idx), idx=idx)[0]
            out.append((inputs, train.labels[idx]))
        return out


def _unfreeze(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _load_trained(parent: nn.Module, config: Any, kwargs: dict[str, Any], key: str) -> tuple[nn.Module, dict] | None:
    """A trained step's model from the cache, or None: the step's config rebuilds the architecture from the entry's
    tensor shapes (``CompressorConfig.rebuild``), the cached weights are loaded into it strictly."""
    from compressors.base import rebuild_

    return cache.load_module(key, lambda shapes: rebuild_(parent, config, shapes, **kwargs))


def compress_mainnet(
    task: Task,
    mainnet: nn.Module,
    mainnet_key: str,
    data: dict[str, Encoded],
    chain: str,
    progress: bool,
    device: torch.device | str = "cpu",
) -> Compressed:
    """Apply ``chain`` to a copy of the (frozen, cached) MainNet; trained steps come from the cache if present.

    The result is on ``device``; the copy moves there before the first CUDA-only step (module docstring).
    For chain ``none`` the MainNet itself is returned, moved to ``device``.
    """
    device = torch.device(device)
    parsed = parse_chain(chain)  # once: the steps and their configs are passed down from here
    if parsed == ():
        return Compressed(to_device(mainnet, device), NONE, mainnet_key, compute_dtype(mainnet), [], 0.0)
    import compressors  # registers the compressors and the int8 FLOP formulas
    from compressors.base import set_compression_log

    canonical = format_chain(parsed)
    configs = chain_configs(parsed)
    _check_device(canonical, configs, device)
    task_data = _TaskData(task, data, progress)
    kwargs = task_data.kwargs()
    model = _unfreeze(copy.deepcopy(mainnet))
    key, start, moved = mainnet_key, time.perf_counter(), device.type == "cpu"
    for config in configs:
        if requires_cuda(config) and not moved:  # this step and the ones after it run on the device
            model, kwargs, moved = model.to(device), _kwargs_on(kwargs, device), True
        # every field, defaults included: a changed default must never reuse an artifact made under the old one
        recipe: dict[str, Any] = {"parent": key, "step": config.to_dict()}
        if config.uses_task_finetune():
            recipe["finetune"] = task.finetune_overrides()  # the task's fine-tuning recipe shapes the weights
        key = cache.artifact_key("compressed", recipe)
        if not config.trains():
            model = compressors.compress_(model, config, **kwargs)
            continue
        steps_before = compressors.compression_log(model)
        hit = _load_trained(model, config, kwargs, key)
        if hit is not None:
            log.info("%s: %s step %s loaded from cache (%s)", task.name, chain, config.name, key)
            model, meta = hit
            set_compression_log(model, [*steps_before, meta["step_log"]])
        else:
            log.info("%s: %s step %s: training (cache key %s)", task.name, chain, config.name, key)
            announce(f"training {task.name} {chain}: step {config.name}")
            step_start = time.perf_counter()
            model = compressors.compress_(model, config, **kwargs)
            step_log = {**compressors.compression_log(model)[-1], "seconds": time.perf_counter() - step_start}
            set_compression_log(model, [*steps_before, step_log])
            cache.store(model, key, {"task": task.name, "chain": chain, "step_log": step_log})
        _unfreeze(model)  # the next trained step (if any) trains this model or copies it
    model = to_device(_freeze(model), device)
    steps = compressors.compression_log(model)
    if not steps:
        raise UserError(f"chain {chain!r} applied no compressor")
    return Compressed(model, canonical, key, compute_dtype(model), steps, time.perf_counter() - start)


def tap_for(task: Task, mainnet: nn.Module, model: nn.Module) -> str:
    """The task's tap, moved proportionally when distillation changed the number of BERT layers.

    A 6-layer MainNet tapped after layer 3 exits halfway; its 3-layer student is tapped after layer 2
    (round(3 · 3/6)), clamped to 1 … L−1 so a rest always remains.
    """
    teacher_layers = bert_layer_count(mainnet)
    student_layers = bert_layer_count(model)
    if teacher_layers is None or student_layers is None or teacher_layers == student_layers:
        return task.tap
    k = round(int(task.tap) * student_layers / teacher_layers)
    return str(min(max(k, 1), student_layers - 1))


def bert_layer_count(model: nn.Module) -> int | None:
    """Encoder layers of a BERT-family model (or of a wrapper that says so); None for anything else."""
    layers = getattr(getattr(getattr(model, "bert", None), "encoder", None), "layer", None)
    if layers is None:
        layers = getattr(model, "num_encoder_layers", None)  # non-torch wrappers may say so directly
        return int(layers) if layers is not None else None
    return len(layers)
