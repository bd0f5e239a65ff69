"""``prepare``: one task × chain with its SideNet, measured on the one path every exit system takes, and seen as the
one-exit view library code and older tests read (:class:`Prepared`: the split, the SideNet, per-row outputs).

The bench measures every exit system, the SideNet included, through :mod:`sidenet.bench.systems` (staged model → exit
system → trace on validation and test → thresholds chosen on validation → the real cascade run once on test);
:func:`prepare` runs that path for the ``sidenet`` system and lays its traces out per row. Nothing here measures
on its own. This module also re-exports the names of that path for code that imports them from here.

Device: ``prepare(..., device="cuda")`` compresses onto the device and measures there (each batch moved, results
back on the CPU); off the CPU the cache keys carry the device type, on the CPU they do not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from sidenet.bench.evals import (
    TaskData,
    batch_composition,
    evaluate_chain,
    load_or_train_mainnet,
    load_task_data,
    mainnet_forward,
    run_eval,
)
from sidenet.bench.systems import (
    OperatingPoint,
    PreparedSystem,
    build_system,
    cascade_at,
    model_and_key,
    prepare_system,
    selection_stats,
)
from sidenet.engine.cascade import Cascade
from sidenet.engine.chain import NONE
from sidenet.engine.early_exit import EarlyExit
from sidenet.engine.policies import POLICIES, ExitView, make_policy
from sidenet.engine.sidenet import SideNet
from sidenet.engine.trace import NEVER_EXIT, ExitTrace, collect_trace
from sidenet.exits import EXIT_SYSTEMS
from sidenet.exits.heads import EVAL_BATCH
from sidenet.tasks import TASKS, Encoded, Task
from sidenet.tasks.compressed import Compressed, compress_mainnet
from sidenet_core.layouts import to_device
from sidenet_core.staged import Split

DEFAULT_POLICY = "softmax"  # the exit policy prepare() uses unless told otherwise (the bench does not choose)
CPU = torch.device("cpu")


@dataclass
class RowOutputs:
    """Per-row outputs of head → SideNet and of the MainNet on one split, with per-row FLOPs: a one-exit
    :class:`~sidenet.engine.trace.ExitTrace` laid out per part (:meth:`of_trace`, :meth:`trace`)."""

    side_logits: torch.Tensor
    main_logits: torch.Tensor
    labels: torch.Tensor
    head_flops: np.ndarray  # head + pooling + SideNet, per row
    rest_flops: np.ndarray  # rest of the MainNet, per row

    @classmethod
    def of_trace(cls, trace: ExitTrace) -> RowOutputs:
        """The rows of a one-exit trace (cumulative costs split back into head + SideNet, and the rest)."""
        if trace.n_exits != 1:
            raise ValueError(f"per-row SideNet outputs need a one-exit trace, this one has {trace.n_exits} exits")
        head = trace.cost[:, 0]
        return cls(trace.exit_logits[:, 0], trace.final_logits, trace.labels, head, trace.cost[:, 1] - head)

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


def collect_rows(
    task: Task, split: Split, side: SideNet, data: Encoded, device: torch.device | str | None = None
) -> RowOutputs:
    """Run head+SideNet and rest on every row (equal-length batches), counting each part's FLOPs: the one-exit
    trace (:func:`sidenet.engine.trace.collect_trace`) per row. ``device``: where the split and the SideNet are."""
    batches = task.batches(data, EVAL_BATCH, by_length=True)
    return RowOutputs.of_trace(collect_trace(batches, len(data), data.labels, split, [side], device))


@dataclass
class Prepared:
    """One task × chain with its SideNet, measured (MainNet, cascade, chosen threshold, measurements)."""

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
    batch_composition: dict[str, Any] | None  # survivors whose prediction changes as a smaller batch (dynamic int8)
    selection: dict[str, float]
    sweep: dict[str, list[float]]
    calibration: dict[str, Any]
    params: dict[str, int]
    oracle: dict[str, float | None]  # sidenet.engine.trace.oracle_summary of the SideNet's placement, at its point
    compressed: Compressed  # what the chain made (shared with the other exit systems of this task × chain)
    system: PreparedSystem  # the measurement itself, on the one path
    logs: dict[str, Any] = field(default_factory=dict)
    device: torch.device = CPU  # where mainnet, baseline, split and side are (and where they were measured)

    def cascade(self, threshold: float | None = None) -> EarlyExit:
        return EarlyExit(self.split, self.side, self.threshold if threshold is None else threshold, self.policy)


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
    """Build (or load) everything for one task × compressor chain and its SideNet, and measure them on the one path
    (:func:`sidenet.bench.systems.prepare_system` for ``sidenet:policy=<policy>``).

    ``task_data``: the task's encoded splits (:func:`load_task_data`) when the caller already has them, and
    ``trained_mainnet``: what :func:`load_or_train_mainnet` returned for them — chains of one task then share
    one fp32 MainNet in memory (the chain compresses a copy; the original is the baseline).
    The threshold is selected on validation against the *compressed* MainNet's accuracy (the SideNet's
    own cost on top of the chain); Δ accuracy vs the fp32 MainNet is reported separately.
    ``device``: where the chain's CUDA-only steps run and where everything is measured;
    the returned models (compressed MainNet, fp32 baseline, SideNet) are on it. MainNets are trained on the CPU.
    """
    task = TASKS.get(task_name)
    POLICIES.get(policy)
    target = task.default_target_loss_pt if target_loss_pt is None else float(target_loss_pt)
    loaded = load_task_data(task) if task_data is None else task_data
    data = loaded.data
    device = torch.device(device)
    if trained_mainnet is None:
        trained_mainnet = load_or_train_mainnet(task, data, loaded.num_classes, progress)
    mainnet, main_meta = trained_mainnet
    comp = compressed or compress_mainnet(task, mainnet, main_meta["key"], data, chain, progress, device)
    to_device(mainnet, device)  # the fp32 baseline is evaluated (and timed) on the device too
    system = EXIT_SYSTEMS.get("sidenet")(policy=policy)
    ps = prepare_system(
        task,
        data,
        loaded.num_classes,
        system,
        comp,
        mainnet,
        target_loss_pt=target,
        margin_se=margin_se,
        device=device,
        progress=progress,
        baseline_key=main_meta["key"],
    )
    chain_eval = evaluate_chain(task, data, comp, mainnet, device)
    split, side = ps.built.staged, ps.built.heads[0]
    never = Cascade(split, [side], ps.policy, [NEVER_EXIT])
    keys = ps.built.identity["heads"]
    return Prepared(
        task=task,
        data=data,
        source=loaded.source,
        mainnet=comp.model,
        baseline=mainnet,
        chain=comp.chain,
        dtype=comp.dtype,
        compression=comp.steps,
        baseline_eval=chain_eval.baseline_eval,
        split=split,
        side=side,
        policy=policy,
        threshold=ps.threshold,
        target_loss_pt=target,
        val=RowOutputs.of_trace(ps.val),
        test=RowOutputs.of_trace(ps.test),
        mainnet_eval=chain_eval.mainnet_eval,
        cascade_eval={
            k: ps.test_eval[k]
            for k in ("accuracy", "exit_rate", "flops_per_sample", "predicted_accuracy", "predicted_flops_per_sample")
        },
        noexit_eval=run_eval(task, never.run, data["test"], device),
        batch_composition=ps.test_eval.get("batch_composition"),
        selection=ps.selection,
        sweep=ps.sweep,
        calibration=ps.calibration,
        params={"mainnet": chain_eval.params, "sidenet": ps.built.params},
        oracle=ps.oracle,
        compressed=comp,
        system=ps,
        logs={
            "mainnet": main_meta,
            "sidenet": {"key": keys[0], "seconds": ps.logs["training_seconds"]},
            "compression_seconds": comp.seconds,
            "evals_cached": ps.logs["evals_cached"],
        },
        device=device,
    )


__all__ = [
    "DEFAULT_POLICY",
    "OperatingPoint",
    "Prepared",
    "PreparedSystem",
    "RowOutputs",
    "TaskData",
    "batch_composition",
    "build_system",
    "cascade_at",
    "collect_rows",
    "load_or_train_mainnet",
    "load_task_data",
    "mainnet_forward",
    "model_and_key",
    "prepare",
    "prepare_system",
    "run_eval",
    "selection_stats",
]
