"""A cell's row, everything but its timing: what the chain's MainNet and the cell's exit system did on test, their
selection on validation, calibration, FLOPs per part, the batch-composition check and provenance.

One function for every exit system: the MainNet alone (``none``) reads the chain's evaluation
(:meth:`BenchContext.chain_eval`, no exit head trained), every system with exits its prepared system
(:meth:`BenchContext.prepared_system`: the one measuring path, :mod:`sidenet.bench.systems`). A system that reports
another's operating point (``sidenet-noexit``: the SideNet's overhead, shown with that SideNet's selection on
validation and sweep, also when the ``sidenet`` cell runs at a fixed threshold) names it in its config class
(``overhead_of``).
"""

from __future__ import annotations

from typing import Any

import torch

from sidenet.bench.harness import DEFAULT_POLICY, BenchContext, _version, task_profile
from sidenet.bench.systems import VALIDATION
from sidenet.bench.timing import TIMING_PROTOCOL
from sidenet.engine.cache import library_versions
from sidenet.engine.chain import NONE
from sidenet.exits import parse_exit_system
from sidenet.tasks import TASKS
from sidenet.tasks.compressed import tap_for


def run_cell_info(
    info: dict[str, Any], task: str, exit_system: str, batch_size: int, ctx: BenchContext, chain: str = NONE
) -> float | None:
    """Fill ``info`` (a row's ``extra_info``) with everything a cell reports except its timing. Prepares (trains,
    compresses, traces, selects) in this process as needed. Returns the cascade's (first) threshold, None for the
    MainNet alone; a timing worker is handed the whole operating point (:func:`sidenet.bench.cells.operating_point`).

    With ``ctx.settings.threshold`` set, the ``sidenet`` cell runs at that fixed threshold instead of the one
    selected on validation (``threshold_source`` records which)."""
    s = ctx.settings
    t = TASKS.get(task)
    mainnet, _ = ctx.mainnet(task)
    comp = ctx.compressed(task, chain)
    ce = ctx.chain_eval(task, chain)
    target = t.default_target_loss_pt if s.target_loss_pt is None else float(s.target_loss_pt)
    info.update(
        {
            "task": task,
            "chain": chain,
            "exit": exit_system,
            "device": s.device,
            "threads": torch.get_num_threads(),
            "batch_size": batch_size,
            "tap": tap_for(t, mainnet, comp.model),
            "policy": DEFAULT_POLICY,
            "mainnet_test_accuracy": ce.baseline_eval["accuracy"],  # the fp32, uncompressed MainNet
            "mainnet_flops_per_sample": ce.baseline_eval["flops_per_sample"],
            "chain_test_accuracy": ce.mainnet_eval["accuracy"],  # the (compressed) MainNet alone
            "chain_flops_per_sample": ce.mainnet_eval["flops_per_sample"],
            "dtype": comp.dtype,
            "compression": comp.steps,
            "target_loss_pt": None if s.threshold is not None else target,
            "data_source": ctx.task_data(task).source,
            "versions": {**library_versions(), "sidenet-bench": _version()},
            "cell_key": ctx.cell_key(task, chain, exit_system, batch_size),
            "machine_id": ctx.machine.id,
            "machine": ctx.machine.to_dict(),
            "timing_protocol": TIMING_PROTOCOL,
            # bf16 autocast where the CPU has native bf16, else fp32 (sidenet_core.precision): other weights
            "train_precision": t.recipe().get("train_precision"),
            "task_profile": task_profile(t, s.profile, ce.baseline_eval["accuracy"]),
            "main_ece": ce.main_ece,
        }
    )
    system = parse_exit_system(exit_system)
    if not system.has_exits:
        info.update(
            {
                "threshold": None,
                "test_accuracy": ce.mainnet_eval["accuracy"],
                "exit_rate": 0.0,
                "flops_per_sample": ce.mainnet_eval["flops_per_sample"],
                "params": ce.params,
            }
        )
        return None
    ps = ctx.prepared_system(task, chain, exit_system)
    overhead_of = system.overhead_of
    shown = ps if overhead_of is None else ctx.prepared_system(task, chain, overhead_of, selected=True)
    selected = ps.threshold_source == VALIDATION  # what only a selected operating point has: oracle, composition
    ev = ps.test_eval
    taps = list(ps.built.staged.taps)
    info.update(
        {
            "exit_system": ps.system.to_dict(),
            "retrains_backbone": ps.system.retrains_backbone,
            "tap": "/".join(taps),
            "taps": taps,
            "policy": ps.built.policy.name,
            "threshold": ps.threshold,
            "thresholds": ps.thresholds,
            "threshold_source": ps.threshold_source,
            "test_accuracy": ev["accuracy"],
            "exit_rate": ev["exit_rate"],
            "exit_rates": ev["exit_rates"],
            "flops_per_sample": ev["flops_per_sample"],
            "predicted_flops_per_sample": ev["predicted_flops_per_sample"] if shown is ps else None,
            "params": ce.params + ps.built.params,
            **{k: v for k, v in shown.calibration.items() if k != "main_ece"},
            "sweep": shown.sweep,
            **shown.selection,
            "flops_breakdown": shown.flops_breakdown,
            "batch_composition": ev.get("batch_composition") if selected else None,
            # the oracle at the validation-selected operating point (sidenet.engine.trace.oracle_summary)
            "oracle": ps.oracle if selected else None,
            "training_seconds": ps.logs["training_seconds"],
            "system_details": ps.details,
        }
    )
    return ps.threshold


__all__ = ["run_cell_info"]
