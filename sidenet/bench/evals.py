"""What every measuring step of a cell shares: a task's data and trained MainNet, the MainNet's own forward, real runs
on test under FlopCounterMode, the MainNet alone on test (with its calibration), and the batch-composition check.

Apart from :mod:`sidenet.bench.systems` (the exit systems' one measuring path) and :mod:`sidenet.bench.pipeline` (the
SideNet-only preparation kept for library users) so that both read the same evaluations.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sidenet.engine import cache
from sidenet.engine.calibration import expected_calibration_error, reliability
from sidenet.engine.chain import NONE
from sidenet.exits.heads import EVAL_BATCH, device_fields, freeze
from sidenet.tasks import Encoded, Task
from sidenet.tasks.compressed import Compressed
from sidenet_core.flops import count_flops
from sidenet_core.layouts import to_device
from sidenet_core.status import announce

log = logging.getLogger(__name__)


def mainnet_forward(model: nn.Module, inputs: Any) -> torch.Tensor:
    """The MainNet's own forward (not the split): the honest baseline."""
    if isinstance(inputs, dict):
        return model(**inputs).logits
    return model(inputs)


@dataclass
class TaskData:
    """A task's splits in model-ready form: loaded and encoded once, shared by every chain of the task."""

    source: str
    num_classes: int
    data: dict[str, Encoded]


def load_task_data(task: Task) -> TaskData:
    splits = task.load_data()
    data = {name: task.encode(x, y) for name, (x, y) in splits.parts()}
    return TaskData(splits.source, splits.num_classes, data)


def load_or_train_mainnet(
    task: Task, data: dict[str, Encoded], num_classes: int, progress: bool
) -> tuple[nn.Module, dict[str, Any]]:
    model = task.build_mainnet(num_classes)
    # The data is identified by a digest of the training labels and size (not by its description text).
    digest = hashlib.sha256(data["train"].labels.numpy().tobytes()).hexdigest()[:16]
    key = cache.artifact_key(
        "mainnet",
        {**task.recipe(), "num_classes": num_classes, "train_labels": digest},
        libraries=cache.TRAINING_LIBRARIES,
    )
    meta = cache.load_into(model, key)
    if meta is None:
        log.info("training MainNet for %s (cache key %s)", task.name, key)
        announce(f"training the {task.name} MainNet")
        train_log = task.train_mainnet(model, data["train"], progress=progress)
        meta = {"task": task.name, "recipe": task.recipe(), "train": train_log}
        cache.store(model, key, meta)
    return freeze(model), {"key": key, **meta}


@torch.inference_mode()
def run_eval(
    task: Task,
    fn: Any,
    data: Encoded,
    device: torch.device | str | None = None,
    per_row: dict[str, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Run ``fn(inputs) -> logits`` (or ExitOutput) over the split under FlopCounterMode, each batch moved to
    ``device`` (where ``fn``'s models are). ``per_row``, when given, receives each row's ``prediction``, whether it
    ``exited`` and its ``exit_index``, in the split's row order, and (``logits`` key present) its logits."""
    correct, total_flops, exited = 0, 0, 0
    predictions = torch.zeros(len(data), dtype=torch.long)
    exited_rows = torch.zeros(len(data), dtype=torch.bool)
    exit_index = torch.zeros(len(data), dtype=torch.long)
    all_logits: torch.Tensor | None = None
    for inputs, idx in task.batches(data, EVAL_BATCH, by_length=True):
        flops, out = count_flops(fn, to_device(inputs, device))
        total_flops += flops
        logits = getattr(out, "logits", out)
        if per_row is not None and "logits" in per_row:
            if all_logits is None:
                all_logits = torch.empty(len(data), logits.shape[-1])
            all_logits[idx] = logits.float().cpu()
        exited += int(out.exited.sum()) if hasattr(out, "exited") else 0
        predictions[idx] = logits.argmax(-1).cpu()
        if hasattr(out, "exited"):
            exited_rows[idx] = out.exited.cpu()
        if getattr(out, "exit_index", None) is not None:
            exit_index[idx] = out.exit_index.cpu()
        correct += int((predictions[idx] == data.labels[idx]).sum())
    if per_row is not None:
        per_row.update(prediction=predictions, exited=exited_rows, exit_index=exit_index)
        if all_logits is not None:
            per_row["logits"] = all_logits
    n = len(data)
    return {"accuracy": correct / n, "exit_rate": exited / n, "flops_per_sample": total_flops / n}


def batch_composition(cascade_rows: dict[str, torch.Tensor], full_batch: Any) -> dict[str, Any]:
    """How many surviving rows change prediction because the rest ran on the survivors only.

    In the cascade the rows that do not exit go on as a smaller batch. A network whose rows are independent
    (fp32, static int8) gives them the same outputs either way; dynamic int8 (ONNX Runtime, torch.ao dynamic,
    torchao) scales each activation tensor by its min/max over the whole batch, so a survivor is quantised
    with other scales than in the full batch and its prediction can change. ``full_batch``: anything with the
    MainNet's ``main_logits`` (or a trace's ``final_logits``) and ``labels`` on every row of the same evaluation
    batches; ``cascade_rows``: :func:`run_eval`'s ``per_row`` for the cascade over those batches."""
    survived = ~cascade_rows["exited"]
    as_survivors = cascade_rows["prediction"][survived]
    full_logits = getattr(full_batch, "main_logits", None)
    full_logits = full_batch.final_logits if full_logits is None else full_logits
    in_full_batch = full_logits.argmax(-1)[survived]
    labels = full_batch.labels[survived]
    return {
        "survivors": int(survived.sum()),
        "changed": int((as_survivors != in_full_batch).sum()),
        "correct_delta": int((as_survivors == labels).sum()) - int((in_full_batch == labels).sum()),
        "test_rows": len(survived),
        "eval_batch": EVAL_BATCH,
    }


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]


def packed_params(model: nn.Module) -> int:
    """Weights held outside ``parameters()`` (quantised modules keep them packed): count state_dict elements."""
    total = 0
    for value in model.state_dict().values():
        for t in value if isinstance(value, tuple | list) else (value,):
            if isinstance(t, torch.Tensor) and t.dtype != torch.int64 and t.dim() > 0:
                total += t.numel()
    return total


def mainnet_params(comp: Compressed) -> int:
    """The chain's MainNet's weights: packed ones counted for int8 (``parameters()`` does not see them)."""
    if comp.dtype == "int8":
        return packed_params(comp.model)
    return sum(p.numel() for p in comp.model.parameters())


def calibration(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, dict[str, list[float]]]:
    """(ECE, reliability-diagram data) of max-softmax confidences."""
    conf = logits.softmax(-1).amax(-1).numpy()
    correct = (logits.argmax(-1) == labels).numpy()
    return expected_calibration_error(conf, correct), reliability(conf, correct)


@dataclass
class ChainEval:
    """The chain's MainNet alone on test (what the ``none`` cell reports) and the fp32 MainNet beside it."""

    mainnet_eval: dict[str, float]  # the chain's MainNet: accuracy, flops_per_sample
    baseline_eval: dict[str, float]  # the task's fp32, uncompressed MainNet
    main_ece: float
    main_reliability: dict[str, list[float]]
    params: int  # the chain's MainNet's weights
    cached: bool


def evaluate_chain(
    task: Task, data: dict[str, Encoded], comp: Compressed, baseline: nn.Module, device: torch.device | str = "cpu"
) -> ChainEval:
    """Run the chain's MainNet (and, on a compressed chain, the fp32 one) over test under FlopCounterMode; cached under
    the model's weights key (and the device type off the CPU). Needs no exit head: the ``none`` cell trains
    nothing."""
    key = cache.artifact_key(
        "chain-evals",
        {"model": comp.key, "chain": comp.chain, "test": digest(data["test"].labels), **device_fields(device)},
    )
    hit = cache.load_tensors(key)
    if hit is not None:
        tensors, meta = hit
        logits, evals, cached = tensors["test.main_logits"], meta["evals"], True
    else:
        per_row: dict[str, torch.Tensor] = {"logits": torch.empty(0)}
        main = run_eval(task, lambda x: mainnet_forward(comp.model, x), data["test"], device, per_row=per_row)
        if comp.chain == NONE:
            base = main
        else:
            base = run_eval(task, lambda x: mainnet_forward(baseline, x), data["test"], device)
        logits, evals, cached = per_row["logits"], {"mainnet_eval": main, "baseline_eval": base}, False
        cache.store_tensors(key, {"test.main_logits": logits}, {"evals": evals})
    ece, rel = calibration(logits, data["test"].labels)
    return ChainEval(evals["mainnet_eval"], evals["baseline_eval"], ece, rel, mainnet_params(comp), cached)


__all__ = [
    "ChainEval",
    "TaskData",
    "batch_composition",
    "calibration",
    "digest",
    "evaluate_chain",
    "load_or_train_mainnet",
    "load_task_data",
    "mainnet_forward",
    "mainnet_params",
    "packed_params",
    "run_eval",
]
