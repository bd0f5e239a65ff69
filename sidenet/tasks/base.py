"""What a task is: labelled data splits + a MainNet recipe + where to tap it.

A task turns raw splits (images or texts) into model inputs, builds and trains its MainNet, and
says how to batch rows for evaluation and timing. Everything a task's ``recipe()`` returns keys
the trained-MainNet cache, so it must include every setting that changes the trained weights.
"""

from __future__ import annotations

import abc
import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sidenet.data import Splits
from sidenet.engine.sidenet import SideNetConfig
from sidenet_core.registry import Registry
from sidenet_core.staged import StagedModel, stage_model

Batch = tuple[Any, torch.Tensor]  # (model inputs, row indices into the split)

DATASETS: Registry[Callable[[], Splits]] = Registry("dataset")


@dataclass
class Encoded:
    """One split in model-ready form: ``rows`` indexable per row, plus labels."""

    rows: Any  # images: float tensor [N, C, H, W]; texts: list of 1-D token-id tensors
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


class Task(abc.ABC):
    """Base class; see :class:`sidenet.tasks.image.ImageTask` and :class:`sidenet.tasks.text.TextTask`."""

    name: str
    description: str
    modality: str
    tap: str
    sidenet: SideNetConfig
    default_target_loss_pt: float = 0.5
    # Threshold selection requires val loss + margin·SE ≤ target (sidenet.engine.trace.select_shared).
    selection_margin_se: float = 1.0
    # Compressor chains a bench runs for this task when none are given (sidenet.engine.chain grammar).
    default_chains: tuple[str, ...] = ("none",)
    # The chains (of default_chains) that exit systems other than the SideNet also run on by default, besides
    # "none": enough for a complementarity verdict per system without multiplying the default bench.
    exit_system_chains: tuple[str, ...] = ("int8",)
    # The small network of network selection (the `cascade` exit system): a chain of this task's MainNet.
    small_network_chain: str = "distil"
    # What a profile trades for time (e.g. the quick profile's fewer epochs; "" for the full recipe), stated in
    # the report under the task's heading, and the test accuracy its MainNet must reach (0: none stated).
    trades: str = ""
    accuracy_floor: float = 0.0

    @abc.abstractmethod
    def recipe(self) -> dict[str, Any]:
        """JSON-able settings that determine the trained MainNet (the cache key)."""

    @abc.abstractmethod
    def load_data(self) -> Splits: ...

    @abc.abstractmethod
    def encode(self, inputs: Any, labels: torch.Tensor) -> Encoded: ...

    @abc.abstractmethod
    def batches(
        self, data: Encoded, batch_size: int, idx: torch.Tensor | None = None, by_length: bool = False
    ) -> list[Batch]:
        """Model-ready batches over rows ``idx`` (all rows if None), in order.

        ``by_length`` groups rows of equal length (texts) so no padding is computed: used for FLOP
        counting, where FLOPs per sample must not depend on which rows shared a batch.
        """

    @abc.abstractmethod
    def build_mainnet(self, num_classes: int) -> nn.Module:
        """A fresh (untrained or pretrained-backbone) MainNet, deterministic for the recipe's seed."""

    @abc.abstractmethod
    def train_mainnet(
        self, model: nn.Module, train: Encoded, progress: bool = True, **overrides: Any
    ) -> dict[str, Any]:
        """Train in place; return a small log (epochs, final loss, seconds).

        ``overrides`` replace recipe fields for this call (e.g. ``epochs=1, lr=...`` to fine-tune a pruned
        model, see :meth:`finetune_overrides`).
        """

    def staged_model(self, model: nn.Module, taps: Sequence[str]) -> StagedModel:
        """``model`` (this task's MainNet, possibly compressed) cut at ``taps``. The default knows torchvision
        ResNets, BERT classifiers and models that stage themselves (``sidenet_staged`` / ``sidenet_split``); a task
        with another architecture overrides this, e.g. ``return CallableStaged([model.stem, model.body, ...])``."""
        return stage_model(model, tuple(taps))

    def finetune_overrides(self) -> dict[str, Any]:
        """Recipe overrides for one epoch of recovery fine-tuning after a compressor changed the MainNet."""
        return {"epochs": 1}

    def training_precision(self) -> str:
        """Resolved precision (fp32/bf16) for training this task's models, incl. inside compressors."""
        return "fp32"

    def epoch_batches(self, train: Encoded, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
        """Row indices of one shuffled training epoch, in batches (text tasks group similar lengths)."""
        return list(torch.randperm(len(train), generator=gen).split(batch_size))


def check_finite(model: nn.Module, task: str) -> None:
    """Refuse to cache a MainNet with NaN/inf weights (a diverged or miscomputed training run)."""
    bad = [n for n, p in model.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
    if bad:
        raise RuntimeError(f"training {task!r} produced non-finite weights in {bad[:3]}; try train_precision='fp32'")


def finish_training(
    model: nn.Module, task: str, precision: str, epochs: int, steps: int, loss: float, start: float
) -> dict[str, Any]:
    """Common end of a MainNet training loop: eval mode, finite-weight check, the training log."""
    model.eval()
    check_finite(model, task)
    return {
        "precision": precision,
        "epochs": epochs,
        "steps": steps,
        "final_loss": loss,
        "seconds": time.perf_counter() - start,
    }


# Task config fields that say how a task is benchmarked, not how its MainNet is trained: left out of ``recipe()``
# (the MainNet's cache key), so changing them never retrains it.
NOT_IN_RECIPE: tuple[str, ...] = (
    "description",
    "trades",
    "accuracy_floor",
    "tap",
    "sidenet",
    "target_loss_pt",
    "selection_margin_se",
    "default_chains",
    "small_network_chain",
)

TASKS: Registry[Task] = Registry("task")
# the module that registered each task: a timing worker imports it to know the task (sidenet.bench.cells)
TASK_MODULES: dict[str, str] = {}


def register_task(task: Task) -> Task:
    """Register a task instance under ``task.name`` (duplicates are an error)."""
    caller = sys._getframe(1).f_globals.get("__name__", "")
    if caller and caller != "__main__":
        TASK_MODULES[task.name] = caller
    return TASKS.add(task.name, task)


def recipe_fields(config: Any) -> dict[str, Any]:
    """A task config's fields that shape its MainNet: every field but :data:`NOT_IN_RECIPE`, and ``train_subset``
    only when set (so adding it left the full recipes' cache keys, and their trained MainNets, as they were)."""
    cfg = dataclasses.asdict(config)
    for k in NOT_IN_RECIPE:
        cfg.pop(k)
    if not cfg.get("train_subset"):
        cfg.pop("train_subset", None)
    return cfg


def subset_train(splits: Splits, n: int, seed: int) -> Splits:
    """``splits`` with ``n`` training rows drawn at random (seeded), validation and test untouched (0: all)."""
    inputs, labels = splits.train
    if not n or n >= len(labels):
        return splits
    idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    rows = inputs.index_select(0, idx) if isinstance(inputs, torch.Tensor) else tuple(inputs[i] for i in idx.tolist())
    source = f"{splits.source}; training subset: {n:,} of {len(labels):,} rows (seed {seed})"
    return dataclasses.replace(splits, train=(rows, labels.index_select(0, idx)), source=source)
