"""One task from data to a measured cascade: the path every benchmark cell shares.

data → MainNet (trained once, cached) → compressor chain (:mod:`sidenet.tasks.compressed`, trained steps
cached) → split at the tap → SideNet (trained once on the compressed MainNet's frozen features, cached)
→ per-row outputs on val/test → threshold chosen on val → real cascade run on test under
FlopCounterMode (accuracy, exit rate, FLOPs of what executed). Timing is the harness's job; this
module only provides the callables it times.

The measured evaluations (per-row outputs, and the test-set runs of MainNet, cascade and no-exit
cascade) are cached too, keyed by the SideNet's cache key (which includes the compressed MainNet's
weight digest): a warm run re-measures latency only.

Device: ``prepare(..., device="cuda")`` compresses onto the device (:func:`sidenet.tasks.compressed.compress_mainnet`:
CUDA-only steps such as ``int8wo`` see the model there) and runs everything measured there too: tap features,
per-row outputs, the test runs and their FLOP counts, with each batch moved to the device (results come back to
the CPU). The SideNet is trained on the CPU from those features, then moved. Off the CPU, the SideNet's and
the evaluations' cache keys carry the device type (GPU kernels give slightly different numbers); on the CPU they
do not, so CPU keys and numbers are what they were before devices existed here.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from sidenet.engine import cache
from sidenet.engine.calibration import expected_calibration_error, reliability
from sidenet.engine.cascade import Cascade
from sidenet.engine.chain import NONE
from sidenet.engine.early_exit import EarlyExit
from sidenet.engine.policies import POLICIES, ExitView, Policy, make_policy
from sidenet.engine.sidenet import SideNet
from sidenet.engine.split import Split, to_device
from sidenet.engine.thresholds import NEVER_EXIT, outcome_at, select_threshold, sweep
from sidenet.engine.trace import (
    ExitTrace,
    collect_trace,
    oracle_summary,
    outcome,
    outcome_summary,
    paired_loss,
    select_shared,
    shared_sweep,
)
from sidenet.exits import BuiltSystem, ExitSystemConfig, SystemContext
from sidenet.exits.heads import EVAL_BATCH, device_fields, freeze, load_or_train_sidenet
from sidenet.tasks import TASKS, Encoded, Task
from sidenet.tasks.compressed import Compressed, compress_mainnet, tap_for
from sidenet_core.flops import count_flops
from sidenet_core.status import announce

log = logging.getLogger(__name__)

DEFAULT_POLICY = "softmax"  # the exit policy prepare() uses unless told otherwise (the bench does not choose)
CPU = torch.device("cpu")


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

    def to_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.side_logits": self.side_logits,
            f"{prefix}.main_logits": self.main_logits,
            f"{prefix}.labels": self.labels,
            f"{prefix}.head_flops": torch.from_numpy(self.head_flops),
            f"{prefix}.rest_flops": torch.from_numpy(self.rest_flops),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str) -> RowOutputs:
        t = {k.removeprefix(f"{prefix}."): v for k, v in tensors.items() if k.startswith(f"{prefix}.")}
        return cls(t["side_logits"], t["main_logits"], t["labels"], t["head_flops"].numpy(), t["rest_flops"].numpy())

    def confidence(self, policy: str) -> np.ndarray:
        return make_policy(policy).score(ExitView(self.side_logits)).numpy()

    def trace(self, tap: str) -> ExitTrace:
        """The same rows as a one-exit trace (cumulative costs: head + SideNet; + rest)."""
        cost = np.stack([self.head_flops, self.head_flops + self.rest_flops], 1)
        return ExitTrace(self.side_logits[:, None], self.main_logits, self.labels, cost, (tap,))

    @property
    def side_correct(self) -> np.ndarray:
        return (self.side_logits.argmax(-1) == self.labels).numpy()

    @property
    def main_correct(self) -> np.ndarray:
        return (self.main_logits.argmax(-1) == self.labels).numpy()


@torch.inference_mode()
def collect_rows(
    task: Task, split: Split, side: SideNet, data: Encoded, device: torch.device | str | None = None
) -> RowOutputs:
    """Run head+SideNet and rest on every row (equal-length batches), counting each part's FLOPs.

    ``device``: where the split and the SideNet are; each batch is moved there, the outputs come back to the CPU."""
    n, c = len(data), side.num_classes
    side_logits, main_logits = torch.empty(n, c), torch.empty(n, c)
    head_flops, rest_flops = np.zeros(n), np.zeros(n)
    for inputs, idx in task.batches(data, EVAL_BATCH, by_length=True):
        x = to_device(inputs, device)
        f_head, (state, s_logits) = count_flops(lambda x=x: _head_side(split, side, x))
        f_rest, m_logits = count_flops(split.rest, state)
        side_logits[idx], main_logits[idx] = s_logits.float().cpu(), m_logits.float().cpu()
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
    mainnet: nn.Module  # the MainNet the cascade is built on: compressed by ``chain`` (fp32 MainNet for none)
    baseline: nn.Module  # the task's fp32, uncompressed MainNet: every speedup is measured against it
    chain: str
    dtype: str
    compression: list[dict[str, Any]]
    baseline_eval: dict[str, float]  # the fp32 MainNet on test
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
    batch_composition: dict[str, Any]  # survivors whose prediction changes as a smaller batch (dynamic int8)
    selection: dict[str, float]
    sweep: dict[str, list[float]]
    calibration: dict[str, Any]
    params: dict[str, int]
    oracle: dict[
        str, float | None
    ]  # sidenet.engine.trace.oracle_summary of the SideNet's placement, at its operating point
    compressed: Compressed  # what the chain made (shared with the other exit systems of this task × chain)
    logs: dict[str, Any] = field(default_factory=dict)
    device: torch.device = CPU  # where mainnet, baseline, split and side are (and where they were measured)

    def cascade(self, threshold: float | None = None) -> EarlyExit:
        return EarlyExit(self.split, self.side, self.threshold if threshold is None else threshold, self.policy)


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
    ``device`` (where ``fn``'s models are). ``per_row``, when given, receives each row's ``prediction`` and
    whether it ``exited``, in the split's row order."""
    correct, total_flops, exited = 0, 0, 0
    predictions = torch.zeros(len(data), dtype=torch.long)
    exited_rows = torch.zeros(len(data), dtype=torch.bool)
    exit_index = torch.zeros(len(data), dtype=torch.long)
    for inputs, idx in task.batches(data, EVAL_BATCH, by_length=True):
        flops, out = count_flops(fn, to_device(inputs, device))
        total_flops += flops
        logits = getattr(out, "logits", out)
        exited += int(out.exited.sum()) if hasattr(out, "exited") else 0
        predictions[idx] = logits.argmax(-1).cpu()
        if hasattr(out, "exited"):
            exited_rows[idx] = out.exited.cpu()
        if getattr(out, "exit_index", None) is not None:
            exit_index[idx] = out.exit_index.cpu()
        correct += int((predictions[idx] == data.labels[idx]).sum())
    if per_row is not None:
        per_row.update(prediction=predictions, exited=exited_rows, exit_index=exit_index)
    n = len(data)
    return {"accuracy": correct / n, "exit_rate": exited / n, "flops_per_sample": total_flops / n}


def batch_composition(cascade_rows: dict[str, torch.Tensor], full_batch: RowOutputs) -> dict[str, Any]:
    """How many surviving rows change prediction because the rest ran on the survivors only.

    In the cascade the rows that do not exit go on as a smaller batch. A network whose rows are independent
    (fp32, static int8) gives them the same outputs either way; dynamic int8 (ONNX Runtime, torch.ao dynamic,
    torchao) scales each activation tensor by its min/max over the whole batch, so a survivor is quantised
    with other scales than in the full batch and its prediction can change. ``full_batch``: the rest run on
    every row of the same evaluation batches (:func:`collect_rows`); ``cascade_rows``: :func:`run_eval`'s
    ``per_row`` for the cascade over those batches."""
    survived = ~cascade_rows["exited"]
    as_survivors = cascade_rows["prediction"][survived]
    in_full_batch = full_batch.main_logits.argmax(-1)[survived]
    labels = full_batch.labels[survived]
    return {
        "survivors": int(survived.sum()),
        "changed": int((as_survivors != in_full_batch).sum()),
        "correct_delta": int((as_survivors == labels).sum()) - int((in_full_batch == labels).sum()),
        "test_rows": len(survived),
        "eval_batch": EVAL_BATCH,
    }


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]


def measure(
    task: Task,
    data: dict[str, Encoded],
    comp: Compressed,
    baseline: nn.Module,
    split: Split,
    side: SideNet,
    policy: str,
    target: float,
    margin_se: float,
    side_key: str,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Per-row outputs on val/test, the selected threshold and the test runs; cached under the SideNet's key.

    ``device``: where the models are (``comp.model``, ``baseline``, ``split``, ``side``); everything runs there.
    Off the CPU the key carries the device type: GPU outputs differ from CPU ones by rounding (and the SideNet
    key has it already; it is repeated so the evaluations never depend on how that key was made)."""
    key = cache.artifact_key(
        "evals",
        {
            "sidenet": side_key,
            "policy": policy,
            "target_loss_pt": target,
            "margin_se": margin_se,
            "val": _digest(data["val"].labels),
            "test": _digest(data["test"].labels),
            **device_fields(device),
        },
    )
    hit = cache.load_tensors(key)
    if hit is not None:
        tensors, meta = hit
        val, test = RowOutputs.from_tensors(tensors, "val"), RowOutputs.from_tensors(tensors, "test")
        return {"val": val, "test": test, **meta["evals"], "cached": True}
    val = collect_rows(task, split, side, data["val"], device)
    test = collect_rows(task, split, side, data["test"], device)
    threshold, _, _ = _select(val, policy, target, margin_se)
    cascade_rows: dict[str, torch.Tensor] = {}
    evals = {
        "threshold": threshold,
        "mainnet_eval": run_eval(task, lambda x: mainnet_forward(comp.model, x), data["test"], device),
        "cascade_eval": run_eval(
            task, EarlyExit(split, side, threshold, policy).run, data["test"], device, per_row=cascade_rows
        ),
        "noexit_eval": run_eval(task, EarlyExit(split, side, NEVER_EXIT, policy).run, data["test"], device),
    }
    evals["batch_composition"] = batch_composition(cascade_rows, test)
    if comp.chain == NONE:
        evals["baseline_eval"] = evals["mainnet_eval"]
    else:
        evals["baseline_eval"] = run_eval(task, lambda x: mainnet_forward(baseline, x), data["test"], device)
    cache.store_tensors(key, {**val.to_tensors("val"), **test.to_tensors("test")}, {"evals": evals})
    return {"val": val, "test": test, **evals, "cached": False}


def _select(val: RowOutputs, policy: str, target: float, margin_se: float) -> tuple[float, int, Any]:
    sw_val = sweep(val.confidence(policy), val.side_correct, val.main_correct)
    threshold, i_sel = select_threshold(sw_val, target, margin_se)
    return threshold, i_sel, sw_val


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


def prepare(
    task_name: str,
    *,
    chain: str = NONE,
    task_data: TaskData | None = None,
    target_loss_pt: float | None = None,
    policy: str = DEFAULT_POLICY,
    margin_se: float | None = None,
    progress: bool = True,
    device: torch.device | str = "cpu",
    trained_mainnet: tuple[nn.Module, dict[str, Any]] | None = None,
    compressed: Compressed | None = None,
) -> Prepared:
    """Build (or load) everything for one task × compressor chain and measure accuracy/FLOPs.

    ``task_data``: the task's encoded splits (:func:`load_task_data`) when the caller already has them, and
    ``trained_mainnet``: what :func:`load_or_train_mainnet` returned for them — chains of one task then share
    one fp32 MainNet in memory (the chain compresses a copy; the original is the baseline).
    The threshold is selected on validation against the *compressed* MainNet's accuracy (the SideNet's
    own cost on top of the chain); Δ accuracy vs the fp32 MainNet is reported separately.
    ``device``: where the chain's CUDA-only steps run and where everything is measured (module docstring);
    the returned models (compressed MainNet, fp32 baseline, SideNet) are on it. MainNets are trained on the CPU.
    """
    task = TASKS.get(task_name)
    POLICIES.get(policy)
    target = task.default_target_loss_pt if target_loss_pt is None else float(target_loss_pt)
    margin_se = task.selection_margin_se if margin_se is None else float(margin_se)
    loaded = load_task_data(task) if task_data is None else task_data
    data = loaded.data
    device = torch.device(device)
    if trained_mainnet is None:
        trained_mainnet = load_or_train_mainnet(task, data, loaded.num_classes, progress)
    mainnet, main_meta = trained_mainnet
    if compressed is None:
        compressed = compress_mainnet(task, mainnet, main_meta["key"], data, chain, progress, device)
    comp = compressed
    to_device(mainnet, device)  # the fp32 baseline is evaluated (and timed) on the device too
    split = task.staged_model(comp.model, (tap_for(task, mainnet, comp.model),))
    side, side_meta = load_or_train_sidenet(task, split, data, loaded.num_classes, comp.key, progress, device)
    m = measure(task, data, comp, mainnet, split, side, policy, target, margin_se, side_meta["key"], device)
    val, test, threshold = m["val"], m["test"], m["threshold"]

    threshold_check, i_sel, sw_val = _select(val, policy, target, margin_se)
    assert threshold_check == threshold, "cached evaluations belong to another threshold"
    selection = {
        "val_accuracy": float(sw_val.accuracy[i_sel]),
        "val_mainnet_accuracy": float(val.main_correct.mean()),
        "val_exit_rate": float(sw_val.exits[i_sel] / len(val.labels)),
        "val_loss_pt": float(100 * sw_val.loss[i_sel]),
        "val_loss_se_pt": float(100 * sw_val.loss_se[i_sel]),
        "margin_se": margin_se,
    }
    cascade_eval = dict(m["cascade_eval"])
    predicted = outcome_at(
        threshold, test.confidence(policy), test.side_correct, test.main_correct, test.head_flops, test.rest_flops
    )
    cascade_eval["predicted_accuracy"] = predicted["accuracy"]
    cascade_eval["predicted_flops_per_sample"] = predicted["flops_per_sample"]
    oracle = oracle_summary(test.trace(split.tap), predicted["accuracy"], predicted["flops_per_sample"])

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
        "mainnet": _packed_params(comp.model)
        if comp.dtype == "int8"
        else sum(p.numel() for p in comp.model.parameters()),
        "sidenet": sum(p.numel() for p in side.parameters()),
    }
    return Prepared(
        task=task,
        data=data,
        source=loaded.source,
        mainnet=comp.model,
        baseline=mainnet,
        chain=comp.chain,
        dtype=comp.dtype,
        compression=comp.steps,
        baseline_eval=m["baseline_eval"],
        split=split,
        side=side,
        policy=policy,
        threshold=threshold,
        target_loss_pt=target,
        val=val,
        test=test,
        mainnet_eval=m["mainnet_eval"],
        cascade_eval=cascade_eval,
        noexit_eval=m["noexit_eval"],
        batch_composition=m["batch_composition"],
        selection=selection,
        sweep=sweep_table,
        calibration=calibration,
        params=params,
        oracle=oracle,
        compressed=comp,
        logs={
            "mainnet": main_meta,
            "sidenet": side_meta,
            "compression_seconds": comp.seconds,
            "evals_cached": m["cached"],
        },
        device=device,
    )


def _packed_params(model: nn.Module) -> int:
    """Weights held outside ``parameters()`` (quantised modules keep them packed): count state_dict elements."""
    total = 0
    for value in model.state_dict().values():
        for t in value if isinstance(value, tuple | list) else (value,):
            if isinstance(t, torch.Tensor) and t.dtype != torch.int64 and t.dim() > 0:
                total += t.numel()
    return total


@dataclass
class PreparedSystem:
    """One exit system on one task × chain, measured: its traces, the thresholds chosen on validation and the
    real cascade's run on test (what executed: accuracy, exit rates, FLOPs)."""

    task: Task
    chain: str
    system: ExitSystemConfig
    built: BuiltSystem
    policy: Policy  # the one chosen on validation (a learned system fits several)
    thresholds: list[float]
    val: ExitTrace
    test: ExitTrace
    test_eval: dict[str, Any]  # the real run: accuracy, exit_rate, exit_rates, flops_per_sample; predicted_*
    selection: dict[str, float]
    sweep: dict[str, list[float]]
    oracle: dict[str, float | None]
    device: torch.device
    logs: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] | None = None  # the system's own facts (BuiltSystem.describe), recorded with its rows

    @property
    def threshold(self) -> float:
        """The shared threshold (every exit's)."""
        return self.thresholds[0]

    def cascade(self) -> Cascade:
        return Cascade(self.built.staged, self.built.heads, self.policy, self.thresholds)

    @property
    def operating_point(self) -> OperatingPoint:
        return OperatingPoint(self.policy.identity(), tuple(float(t) for t in self.thresholds))


def build_system(
    task: Task,
    data: dict[str, Encoded],
    num_classes: int,
    system: ExitSystemConfig,
    comp: Compressed,
    baseline: nn.Module,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
    mainnet_for: Callable[[str], tuple[nn.Module, str]] | None = None,
    baseline_key: str | None = None,
) -> BuiltSystem:
    """``system``'s cascade parts on the chain's MainNet (trained heads from the cache, or trained now), before any
    operating point is chosen: what :func:`prepare_system` traces and selects on, and what a timing worker serves
    at the operating point the bench chose (:func:`cascade_at`), without tracing or selecting again."""
    device = torch.device(device)
    ctx = SystemContext(
        task=task,
        data=data,
        num_classes=num_classes,
        model=comp.model,
        model_key=comp.key,
        baseline=baseline,
        device=device,
        progress=progress,
        stage=lambda taps: task.staged_model(comp.model, taps),
        mainnet_for=mainnet_for,
        chain=comp.chain,
        baseline_key=comp.key if baseline_key is None else baseline_key,
        compress=lambda model, key, chain: model_and_key(
            compress_mainnet(task, model, key, data, chain, progress, device)
        ),
    )
    return system.build(ctx)


@dataclass(frozen=True)
class OperatingPoint:
    """Where a prepared system runs: which of its policies (by :meth:`Policy.identity`) at which thresholds. What
    the bench hands a timing worker, so the worker serves the very cascade the bench selected on validation."""

    policy: dict[str, Any]
    thresholds: tuple[float, ...]


def cascade_at(built: BuiltSystem, point: OperatingPoint) -> Cascade:
    """The cascade of ``built`` at ``point``; a ValueError if none of its policies has that identity (the parts
    were built from other artifacts than the ones the point was chosen on)."""
    for policy in built.candidates or (built.policy,):
        if policy.identity() == point.policy:
            return Cascade(built.staged, built.heads, policy, list(point.thresholds))
    raise ValueError(f"no policy of this exit system is {point.policy}: its parts differ from the selected ones")


def prepare_system(
    task: Task,
    data: dict[str, Encoded],
    num_classes: int,
    system: ExitSystemConfig,
    comp: Compressed,
    baseline: nn.Module,
    *,
    target_loss_pt: float | None = None,
    margin_se: float | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    mainnet_for: Callable[[str], tuple[nn.Module, str]] | None = None,
    baseline_key: str | None = None,
) -> PreparedSystem:
    """Build ``system`` on the chain's MainNet, trace it on val and test, select one shared threshold on val
    (the SideNet's rule: loss + margin·SE ≤ target), run the real cascade on test under FlopCounterMode.

    Traces and the test run are cached under the built parts' identity (which holds the trained heads' keys,
    themselves keyed by the MainNet's weights); the sweep, selection statistics and oracle are recomputed from the
    traces (cheap, and always consistent with them)."""
    device = torch.device(device)
    target = task.default_target_loss_pt if target_loss_pt is None else float(target_loss_pt)
    margin_se = task.selection_margin_se if margin_se is None else float(margin_se)
    built = build_system(
        task,
        data,
        num_classes,
        system,
        comp,
        baseline,
        device=device,
        progress=progress,
        mainnet_for=mainnet_for,
        baseline_key=baseline_key,
    )
    key = cache.artifact_key(
        "system-evals",
        {
            "built": built.identity,
            "model": comp.key,
            "target_loss_pt": target,
            "margin_se": margin_se,
            "val": _digest(data["val"].labels),
            "test": _digest(data["test"].labels),
            **device_fields(device),
        },
    )
    taps = tuple(built.staged.taps)
    hit = cache.load_tensors(key)
    if hit is not None:
        tensors, meta = hit
        val, test = ExitTrace.from_tensors(tensors, "val", taps), ExitTrace.from_tensors(tensors, "test", taps)
        test_eval, cached = meta["test_eval"], True
    else:
        announce(f"tracing {system.label()} on {task.name} {comp.chain} (validation and test)")
        val, test = (
            collect_trace(
                task.batches(data[part], EVAL_BATCH, by_length=True),
                len(data[part]),
                data[part].labels,
                built.staged,
                built.heads,
                device,
            )
            for part in ("val", "test")
        )
        test_eval, cached = None, False
    reference = built.reference_val
    policy, thresholds = built.choose(val, target, margin_se) if built.choose is not None else (built.policy, [])
    scores_val = val.scores(policy)
    sw_val = shared_sweep(val, scores_val, reference)
    if built.choose is None:  # one shared threshold, the SideNet's rule
        thresholds = [select_shared(sw_val, target, margin_se)[0]] * val.n_exits
    threshold = thresholds[0]
    if test_eval is None:
        cascade = Cascade(built.staged, built.heads, policy, thresholds)
        per_row: dict[str, torch.Tensor] = {}
        test_eval = run_eval(task, cascade.run, data["test"], device, per_row=per_row)
        rates = [float((per_row["exit_index"] == e).float().mean()) for e in range(val.n_exits)]
        test_eval = {**test_eval, "exit_rates": rates, "threshold": threshold}
        cache.store_tensors(key, {**val.to_tensors("val"), **test.to_tensors("test")}, {"test_eval": test_eval})
    if test_eval.get("threshold") != threshold:
        raise RuntimeError("cached system evaluations belong to another threshold")
    scores_test = test.scores(policy)
    predicted = outcome(test, scores_test, thresholds)
    test_eval = {
        **test_eval,
        "predicted_accuracy": predicted.accuracy,
        "predicted_flops_per_sample": predicted.flops_per_sample,
    }
    selection = {**selection_stats(val, scores_val, thresholds, reference), "margin_se": margin_se}
    grid = sorted({*np.quantile(sw_val.thresholds[1:], np.linspace(0, 1, 41)).tolist(), threshold, 0.0})
    points = [outcome_summary(test, outcome(test, scores_test, [t] * test.n_exits)) for t in grid]
    sweep_table: dict[str, list[float]] = {
        "threshold": grid,
        "test_accuracy": [float(p["accuracy"]) for p in points],
        "exit_rate": [float(p["exit_rate"]) for p in points],
        "flops_per_sample": [float(p["flops_per_sample"]) for p in points],
    }
    oracle = oracle_summary(test, predicted.accuracy, predicted.flops_per_sample)
    return PreparedSystem(
        task=task,
        chain=comp.chain,
        system=system,
        built=built,
        policy=policy,
        thresholds=thresholds,
        val=val,
        test=test,
        test_eval=test_eval,
        selection=selection,
        sweep=sweep_table,
        oracle=oracle,
        device=device,
        logs={"training_seconds": built.training_seconds, "evals_cached": cached, "evals_key": key},
        details=built.describe(val, test) if built.describe is not None else None,
    )


def model_and_key(comp: Compressed) -> tuple[nn.Module, str]:
    return comp.model, comp.key


def selection_stats(
    val: ExitTrace, scores: np.ndarray, thresholds: Sequence[float], reference: np.ndarray | None = None
) -> dict[str, float]:
    """The validation numbers of the chosen operating point: accuracy, exit rate, and the loss against the
    reference (default: the trace's MainNet) with the standard error of the paired per-row difference."""
    out = outcome(val, scores, thresholds)
    main = val.correct()[:, -1] if reference is None else np.asarray(reference, dtype=bool)
    loss, se = paired_loss(main, out.row_correct)
    return {
        "val_accuracy": out.accuracy,
        "val_mainnet_accuracy": float(main.mean()),
        "val_exit_rate": float((out.exit_index < val.n_exits).mean()),
        "val_loss_pt": 100 * loss,
        "val_loss_se_pt": 100 * se,
    }
