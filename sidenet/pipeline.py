"""One task from data to a measured cascade: the path every benchmark cell shares.

data → MainNet (trained once, cached) → split at the tap → SideNet (trained once on frozen features,
cached) → per-row outputs on val/test → threshold chosen on val → real cascade run on test under
FlopCounterMode (accuracy, exit rate, FLOPs of what executed). Timing is the harness's job; this
module only provides the callables it times.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sidenet import cache
from sidenet.calibration import expected_calibration_error, reliability
from sidenet.data import stratified_split
from sidenet.early_exit import EarlyExit
from sidenet.fit import fit_sidenet
from sidenet.flops import count_flops
from sidenet.policies import POLICIES
from sidenet.sidenet import SideNet
from sidenet.split import Split, split_model
from sidenet.tasks import TASKS, Encoded, Task
from sidenet.thresholds import NEVER_EXIT, outcome_at, select_threshold, sweep

log = logging.getLogger(__name__)

EVAL_BATCH = 256


def mainnet_forward(model: nn.Module, inputs: Any) -> torch.Tensor:
    """The MainNet's own forward (not the split): the honest baseline."""
    if isinstance(inputs, dict):
        return model(**inputs).logits
    return model(inputs)


@dataclass
class RowOutputs:
    """Per-row outputs of head → SideNet and of the MainNet on one split, with per-row FLOPs."""

    side_logits: torch.Tensor
    main_logits: torch.Tensor
    labels: torch.Tensor
    head_flops: np.ndarray  # head + pooling + SideNet, per row
    rest_flops: np.ndarray  # rest of the MainNet, per row

    def confidence(self, policy: str) -> np.ndarray:
        return POLICIES.get(policy).confidence(self.side_logits).numpy()

    @property
    def side_correct(self) -> np.ndarray:
        return (self.side_logits.argmax(-1) == self.labels).numpy()

    @property
    def main_correct(self) -> np.ndarray:
        return (self.main_logits.argmax(-1) == self.labels).numpy()


@torch.inference_mode()
def collect_features(
    task: Task, split: Split, data: Encoded, progress: bool, desc: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled tap features and MainNet logits for every row (SideNet training data)."""
    feats, logits = [], []
    order = []
    for inputs, idx in tqdm(
        task.batches(data, EVAL_BATCH, by_length=True), desc=desc, disable=not progress, leave=False
    ):
        state = split.head(inputs)
        feats.append(split.features(state))
        logits.append(split.rest(state))
        order.append(idx)
    inv = torch.argsort(torch.cat(order))
    return torch.cat(feats)[inv], torch.cat(logits)[inv]


@torch.inference_mode()
def collect_rows(task: Task, split: Split, side: SideNet, data: Encoded) -> RowOutputs:
    """Run head+SideNet and rest on every row (equal-length batches), counting each part's FLOPs."""
    n, c = len(data), side.num_classes
    side_logits, main_logits = torch.empty(n, c), torch.empty(n, c)
    head_flops, rest_flops = np.zeros(n), np.zeros(n)
    for inputs, idx in task.batches(data, EVAL_BATCH, by_length=True):
        f_head, (state, s_logits) = count_flops(lambda x=inputs: _head_side(split, side, x))
        f_rest, m_logits = count_flops(split.rest, state)
        side_logits[idx], main_logits[idx] = s_logits.float(), m_logits.float()
        head_flops[idx.numpy()] = f_head / len(idx)
        rest_flops[idx.numpy()] = f_rest / len(idx)
    return RowOutputs(side_logits, main_logits, data.labels, head_flops, rest_flops)


def _head_side(split: Split, side: SideNet, inputs: Any) -> tuple[Any, torch.Tensor]:
    state = split.head(inputs)
    return state, side(split.features(state))


@dataclass
class Prepared:
    """Everything the harness needs for one task (MainNet, cascade, chosen threshold, measurements)."""

    task: Task
    data: dict[str, Encoded]
    source: str
    mainnet: nn.Module
    split: Split
    side: SideNet
    policy: str
    threshold: float
    target_loss_pt: float
    val: RowOutputs
    test: RowOutputs
    mainnet_eval: dict[str, float]
    cascade_eval: dict[str, float]
    noexit_eval: dict[str, float]
    selection: dict[str, float]
    sweep: dict[str, list[float]]
    calibration: dict[str, Any]
    params: dict[str, int]
    logs: dict[str, Any] = field(default_factory=dict)

    def cascade(self, threshold: float | None = None) -> EarlyExit:
        return EarlyExit(self.split, self.side, self.threshold if threshold is None else threshold, self.policy)


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_or_train_mainnet(
    task: Task, data: dict[str, Encoded], num_classes: int, progress: bool
) -> tuple[nn.Module, dict[str, Any]]:
    model = task.build_mainnet(num_classes)
    # The data is identified by a digest of the training labels and size (not by its description text).
    digest = hashlib.sha256(data["train"].labels.numpy().tobytes()).hexdigest()[:16]
    key = cache.artifact_key("mainnet", {**task.recipe(), "num_classes": num_classes, "train_labels": digest})
    meta = cache.load_into(model, key)
    if meta is None:
        log.info("training MainNet for %s (cache key %s)", task.name, key)
        train_log = task.train_mainnet(model, data["train"], progress=progress)
        meta = {"task": task.name, "recipe": task.recipe(), "train": train_log}
        cache.store(model, key, meta)
    return _freeze(model), {"key": key, **meta}


def weights_digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def load_or_train_sidenet(
    task: Task, split: Split, data: dict[str, Encoded], num_classes: int, mainnet_key: str, progress: bool
) -> tuple[SideNet, dict[str, Any]]:
    example = task.batches(data["val"], 2)[0][0]
    side = SideNet(split.feature_dim(example), num_classes, task.sidenet.hidden, task.sidenet.dropout)
    # Keyed by the MainNet's actual weights, not only its recipe: a rebuilt MainNet that differs by a bit
    # (e.g. non-deterministic kernels) must not inherit a SideNet trained on the old one's features.
    recipe = {
        "mainnet": mainnet_key,
        "weights": weights_digest(split),
        "tap": split.tap,
        "sidenet": task.sidenet.to_dict(),
    }
    key = cache.artifact_key("sidenet", recipe)
    meta = cache.load_into(side, key)
    if meta is None:
        start = time.perf_counter()
        feats, main_logits = collect_features(task, split, data["train"], progress, f"{task.name}: tap features")
        side = fit_sidenet(
            feats, data["train"].labels, main_logits, num_classes, task.sidenet, progress, f"train {task.name} SideNet"
        )
        meta = {"task": task.name, "tap": split.tap, "seconds": time.perf_counter() - start}
        cache.store(side, key, meta)
    return _freeze(side), {"key": key, **meta}


@torch.inference_mode()
def run_eval(task: Task, fn: Any, data: Encoded) -> dict[str, float]:
    """Run ``fn(inputs) -> logits`` (or ExitOutput) over the split under FlopCounterMode."""
    correct, total_flops, exited = 0, 0, 0
    for inputs, idx in task.batches(data, EVAL_BATCH, by_length=True):
        flops, out = count_flops(fn, inputs)
        total_flops += flops
        logits = getattr(out, "logits", out)
        exited += int(out.exited.sum()) if hasattr(out, "exited") else 0
        correct += int((logits.argmax(-1) == data.labels[idx]).sum())
    n = len(data)
    return {"accuracy": correct / n, "exit_rate": exited / n, "flops_per_sample": total_flops / n}


def prepare(
    task_name: str,
    *,
    target_loss_pt: float | None = None,
    policy: str = "softmax",
    margin_se: float | None = None,
    progress: bool = True,
) -> Prepared:
    """Build (or load) everything for one task and measure accuracy/FLOPs of MainNet and cascade."""
    task = TASKS.get(task_name)
    POLICIES.get(policy)
    target = task.default_target_loss_pt if target_loss_pt is None else float(target_loss_pt)
    margin_se = task.selection_margin_se if margin_se is None else float(margin_se)
    splits = task.load_data()
    data = {name: task.encode(x, y) for name, (x, y) in splits.parts()}
    mainnet, main_meta = load_or_train_mainnet(task, data, splits.num_classes, progress)
    split = split_model(mainnet, task.tap)
    side, side_meta = load_or_train_sidenet(task, split, data, splits.num_classes, main_meta["key"], progress)

    val = collect_rows(task, split, side, data["val"])
    test = collect_rows(task, split, side, data["test"])

    sw_val = sweep(val.confidence(policy), val.side_correct, val.main_correct)
    threshold, i_sel = select_threshold(sw_val, target, margin_se)
    selection = {
        "val_accuracy": float(sw_val.accuracy[i_sel]),
        "val_mainnet_accuracy": float(val.main_correct.mean()),
        "val_exit_rate": float(sw_val.exits[i_sel] / len(val.labels)),
        "val_loss_pt": float(100 * sw_val.loss[i_sel]),
        "val_loss_se_pt": float(100 * sw_val.loss_se[i_sel]),
        "margin_se": margin_se,
    }

    mainnet_eval = run_eval(task, lambda x: mainnet_forward(mainnet, x), data["test"])
    cascade = EarlyExit(split, side, threshold, policy)
    cascade_eval = run_eval(task, cascade.run, data["test"])
    noexit_eval = run_eval(task, EarlyExit(split, side, NEVER_EXIT, policy).run, data["test"])
    predicted = outcome_at(
        threshold, test.confidence(policy), test.side_correct, test.main_correct, test.head_flops, test.rest_flops
    )
    cascade_eval["predicted_accuracy"] = predicted["accuracy"]
    cascade_eval["predicted_flops_per_sample"] = predicted["flops_per_sample"]

    conf_test = test.confidence(policy)
    grid = sorted({*np.quantile(sw_val.thresholds[1:], np.linspace(0, 1, 41)).tolist(), threshold, 0.0})
    points = [
        outcome_at(t, conf_test, test.side_correct, test.main_correct, test.head_flops, test.rest_flops) for t in grid
    ]
    sweep_table = {k: [p[k] for p in points] for k in ("threshold", "accuracy", "exit_rate", "flops_per_sample")}
    sweep_table["test_accuracy"] = sweep_table.pop("accuracy")

    main_conf = test.main_logits.softmax(-1).amax(-1).numpy()
    side_conf = test.side_logits.softmax(-1).amax(-1).numpy()
    calibration = {
        "main_ece": expected_calibration_error(main_conf, test.main_correct),
        "side_ece": expected_calibration_error(side_conf, test.side_correct),
        "reliability": {
            "main": reliability(main_conf, test.main_correct),
            "side": reliability(side_conf, test.side_correct),
        },
    }
    params = {
        "mainnet": sum(p.numel() for p in mainnet.parameters()),
        "sidenet": sum(p.numel() for p in side.parameters()),
    }
    return Prepared(
        task=task,
        data=data,
        source=splits.source,
        mainnet=mainnet,
        split=split,
        side=side,
        policy=policy,
        threshold=threshold,
        target_loss_pt=target,
        val=val,
        test=test,
        mainnet_eval=mainnet_eval,
        cascade_eval=cascade_eval,
        noexit_eval=noexit_eval,
        selection=selection,
        sweep=sweep_table,
        calibration=calibration,
        params=params,
        logs={"mainnet": main_meta, "sidenet": side_meta},
    )


def timing_rows(prepared: Prepared, n_samples: int, seed: int = 0) -> torch.Tensor:
    """A fixed, stratified subset of the test split for timing (same rows for every variant)."""
    labels = prepared.data["test"].labels
    n = len(labels)
    if n_samples >= n:
        return torch.arange(n)
    frac = n_samples / n
    return stratified_split(labels, [frac, 1 - frac], seed)[0].sort().values
