"""The one measuring path of every exit system, the SideNet included: staged model → exit system
(:mod:`sidenet.exits`) → trace on validation and test → thresholds chosen on validation → the real cascade run once on
test under FlopCounterMode.

Everything a row says about a cascade comes from here: what executed on test (accuracy, exit rates, FLOPs), the
selection statistics on validation (written once, :func:`selection_stats`), the threshold sweep and the oracle (from
the test trace), the calibration of the MainNet and of a single exit head, the FLOPs of each part, and the
batch-composition check (survivors that answer otherwise as a smaller batch). Timing is the harness's job: a worker
rebuilds the parts (:func:`build_system`) and serves them at the bench's :class:`OperatingPoint` (:func:`cascade_at`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from sidenet.bench.evals import batch_composition, calibration, digest, run_eval
from sidenet.engine import cache
from sidenet.engine.cascade import Cascade
from sidenet.engine.policies import Policy
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
from sidenet.exits.heads import EVAL_BATCH, device_fields
from sidenet.tasks import Encoded, Task
from sidenet.tasks.compressed import Compressed, compress_mainnet
from sidenet_core.status import announce

VALIDATION, FIXED = "validation", "fixed"  # where a cascade's thresholds came from (the row's threshold_source)
SWEEP_POINTS = 41  # quantiles of the validation thresholds at which the test sweep is reported


@dataclass(frozen=True)
class OperatingPoint:
    """Where a prepared system runs: which of its policies (by :meth:`Policy.identity`) at which thresholds. What
    the bench hands a timing worker, so the worker serves the very cascade the bench selected on validation."""

    policy: dict[str, Any]
    thresholds: tuple[float, ...]


@dataclass
class PreparedSystem:
    """One exit system on one task × chain, measured: its traces, the thresholds chosen on validation (or given) and
    the real cascade's run on test (what executed: accuracy, exit rates, FLOPs)."""

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
    threshold_source: str = VALIDATION  # validation | fixed | what the system says (sidenet-noexit: never-exit)
    calibration: dict[str, Any] = field(default_factory=dict)  # main_ece; side_ece and reliability for one exit
    flops_breakdown: dict[str, float] | None = None  # one exit: head+exit on every row, and the rest on every row

    @property
    def threshold(self) -> float:
        """The shared threshold (every exit's)."""
        return self.thresholds[0]

    def cascade(self) -> Cascade:
        return Cascade(self.built.staged, self.built.heads, self.policy, self.thresholds)

    @property
    def operating_point(self) -> OperatingPoint:
        return OperatingPoint(self.policy.identity(), tuple(float(t) for t in self.thresholds))


def model_and_key(comp: Compressed) -> tuple[nn.Module, str]:
    return comp.model, comp.key


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
    threshold: float | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    mainnet_for: Callable[[str], tuple[nn.Module, str]] | None = None,
    baseline_key: str | None = None,
) -> PreparedSystem:
    """Build ``system`` on the chain's MainNet, trace it on val and test, select one shared threshold on val
    (the SideNet's rule: loss + margin·SE ≤ target) unless the system chooses its own or ``threshold`` fixes one,
    run the real cascade on test under FlopCounterMode.

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
            "val": digest(data["val"].labels),
            "test": digest(data["test"].labels),
            **device_fields(device),
            **({} if threshold is None else {"fixed_threshold": float(threshold)}),
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
    source = VALIDATION
    if threshold is not None:
        policy, thresholds, source = built.policy, [float(threshold)] * val.n_exits, FIXED
    elif built.choose is not None:
        policy, thresholds = built.choose(val, target, margin_se)
        source = system.threshold_source
    else:
        policy, thresholds = built.policy, []
    scores_val = val.scores(policy)
    sw_val = shared_sweep(val, scores_val, reference)
    if not thresholds:  # one shared threshold, the SideNet's rule
        thresholds = [select_shared(sw_val, target, margin_se)[0]] * val.n_exits
    chosen = thresholds[0]
    if test_eval is not None and test_eval.get("threshold") != chosen:
        # The traces depend on the parts only and still hold; the cascade's run on test belongs to one threshold.
        # A cached run at another (the selection rule changed since, e.g. the sweep became exact past 4,000
        # distinct scores) is run again at this one and replaced, never reported for the wrong threshold.
        announce(f"re-running {system.label()} on {task.name} {comp.chain} at its threshold (test)")
        test_eval = None
    if test_eval is None:
        cascade = Cascade(built.staged, built.heads, policy, thresholds)
        per_row: dict[str, torch.Tensor] = {}
        test_eval = run_eval(task, cascade.run, data["test"], device, per_row=per_row)
        rates = [float((per_row["exit_index"] == e).double().mean()) for e in range(val.n_exits)]
        test_eval = {
            **test_eval,
            "exit_rates": rates,
            "threshold": chosen,
            "batch_composition": batch_composition(per_row, test),
        }
        cache.store_tensors(key, {**val.to_tensors("val"), **test.to_tensors("test")}, {"test_eval": test_eval})
    scores_test = test.scores(policy)
    predicted = outcome(test, scores_test, thresholds)
    test_eval = {
        **test_eval,
        "predicted_accuracy": predicted.accuracy,
        "predicted_flops_per_sample": predicted.flops_per_sample,
    }
    selection = selection_stats(val, scores_val, thresholds, reference)
    if source != FIXED:
        selection["margin_se"] = margin_se
    # the grid marks the validation-selected threshold, also beside a fixed one (the sweep is the same either way)
    marked = select_shared(sw_val, target, margin_se)[0] if source == FIXED else chosen
    grid = sorted({*np.quantile(sw_val.thresholds[1:], np.linspace(0, 1, SWEEP_POINTS)).tolist(), marked, 0.0})
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
        threshold_source=source,
        calibration=trace_calibration(test),
        flops_breakdown=flops_breakdown(test),
    )


def trace_calibration(test: ExitTrace) -> dict[str, Any]:
    """The MainNet's calibration on test and, for a one-exit system, its head's (the SideNet's ECE and reliability
    diagram): max-softmax confidences, whatever policy the cascade exits by."""
    main_ece, main_rel = calibration(test.final_logits, test.labels)
    out: dict[str, Any] = {"main_ece": main_ece}
    if test.n_exits == 1:
        side_ece, side_rel = calibration(test.exit_logits[:, 0], test.labels)
        out.update(side_ece=side_ece, reliability={"main": main_rel, "side": side_rel})
    return out


def flops_breakdown(test: ExitTrace) -> dict[str, float] | None:
    """One exit: FLOPs per sample of head + exit head, and of the rest of the MainNet, each on every row."""
    if test.n_exits != 1:
        return None
    return {"head_side": float(test.cost[:, 0].mean()), "rest": float((test.cost[:, 1] - test.cost[:, 0]).mean())}


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


__all__ = [
    "FIXED",
    "VALIDATION",
    "OperatingPoint",
    "PreparedSystem",
    "build_system",
    "cascade_at",
    "model_and_key",
    "prepare_system",
    "selection_stats",
]
