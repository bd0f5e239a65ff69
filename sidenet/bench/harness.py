"""The measuring side of a benchmark cell, shared by ``pytest bench/`` and the ``sidenet-bench run`` CLI.

Latency: one timed round runs a fixed stratified test subset (``timing_samples`` inputs) at the
cell's batch size, so latency per sample = round time / samples (a cascade's per-input times are
bimodal; timing single inputs makes medians jump between modes). Warm-up runs outside the timed
region; threads are pinned; on CUDA the target synchronises before the clock stops.

Interleaving: every cell times one fp32 MainNet round beside each of its timed rounds, in
pytest-benchmark's untimed ``setup`` (even rounds) or ``teardown`` (odd rounds), so ``paired_speedup`` =
per-round ratios, robust to drift and background load, and not biased by order. The fp32 MainNet's own
cell is thereby paired with itself: its ``aa_paired_ratios`` (A/A) show the noise floor of those ratios.

Resume: every row records a ``cell_key`` (:func:`cell_key`); a cell whose key is already stored in the
results JSON is not measured again unless ``force`` is set.

Machine identity (:mod:`sidenet.bench.machine`): every row, cell key and report name carries the fingerprint of the
machine that measured it; a results file holds the rows of one fingerprint only (:func:`merge_results`).

Session state (:class:`BenchContext`): each task's data and fp32 MainNet, each chain's compressed MainNet and its
evaluation, and each exit system measured on the one path (:mod:`sidenet.bench.systems`), all made once. The
settings and their checks live in :mod:`sidenet.bench.settings` and a row's fields in :mod:`sidenet.bench.rows`
(both re-exported or reached from here).
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sidenet.bench.evals import ChainEval, TaskData, evaluate_chain, load_or_train_mainnet, load_task_data
from sidenet.bench.machine import MachineFingerprint, fingerprint
from sidenet.bench.settings import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_TASKS,
    MAX_NAME_BYTES,
    PROFILES,
    QUICK_EXITS,
    QUICK_TASKS,
    QUIET_ENV,
    BenchSettings,
    check_data,
    check_out_dir,
    check_output_files,
    check_selection,
    default_tasks,
    quiet_from_env,
    takes_fixed_threshold,
)
from sidenet.bench.store import stored_cell_keys
from sidenet.bench.systems import (
    OperatingPoint,
    PreparedSystem,
    build_system,
    cascade_at,
    model_and_key,
    prepare_system,
)
from sidenet.bench.timing import TIMING_PROTOCOL
from sidenet.engine.cache import library_versions
from sidenet.engine.cascade import Cascade
from sidenet.exits import DEFAULT_EXITS, EXIT_SYSTEMS, BuiltSystem, parse_exit_system
from sidenet.tasks import TASKS
from sidenet.tasks.compressed import Compressed, chain_configs, compress_mainnet, normalize_chain
from sidenet_core.errors import UserError
from sidenet_core.layouts import to_device

DEFAULT_POLICY = "softmax"  # hashed into every cell key (what the SideNet-only path exited by); systems carry theirs


class BenchContext:
    """Per-session state: task data and MainNets, compressed chains and their evaluations, measured exit systems
    (each made once), the parts timing workers serve, stored cells, and what layers above attached."""

    def __init__(self, settings: BenchSettings) -> None:
        self.settings = settings
        self._chain_evals: dict[tuple[str, str], ChainEval] = {}
        self._task_data: dict[str, TaskData] = {}  # loaded + encoded once per task, shared by its chains
        self._mainnets: dict[str, tuple[nn.Module, dict[str, Any]]] = {}  # fp32, loaded (or trained) once per task
        self._failed: dict[tuple[Any, ...], UserError] = {}
        self._systems: dict[tuple[str, str, str, float | None], PreparedSystem] = {}
        self._built: dict[tuple[str, str, str], BuiltSystem] = {}  # parts a timing worker serves (system_cascade)
        self._compressed: dict[tuple[str, str], Compressed] = {}
        self._stored: set[str] | None = None
        self._extensions: dict[
            str, tuple[Any, Callable[[], None]]
        ] = {}  # e.g. the timing workers (sidenet.bench.cells)
        self.device = torch.device(settings.device)
        self.machine = fingerprint(settings.device, settings.threads)
        self.passed: set[str] = set()  # node ids of cells whose test passed (only those are written)

    def environment(self) -> dict[str, Any]:
        s = self.settings
        env: dict[str, Any] = {
            "threads": torch.get_num_threads(),
            "device": s.device,
            "device_name": self.machine.gpu_name or self.machine.cpu_model_name,
            "cpu": self.machine.cpu_model_name,
            "machine": self.machine.to_dict(),
            "machine_id": self.machine.id,
            "timing_protocol": TIMING_PROTOCOL,
            "command": s.command,
            **library_versions(),
            "sidenet-bench": _version(),
        }
        return env

    def output_paths(self) -> tuple[Path, Path]:
        s = self.settings
        name = s.name or self.machine.slug
        return s.out / "results" / f"{name}.json", s.out / f"{name}.md"

    def cell_key(self, task: str, chain: str, exit_system: str, batch_size: int) -> str:
        return cell_key(self.settings, task, chain, exit_system, batch_size, self.machine)

    def stored_result(self, task: str, chain: str, exit_system: str, batch_size: int) -> Path | None:
        """The results file that already holds this cell's row (same cell key), unless ``force``."""
        if self.settings.force:
            return None
        results_path, _ = self.output_paths()
        if self._stored is None:
            self._stored = stored_cell_keys(results_path, self.machine)
        return results_path if self.cell_key(task, chain, exit_system, batch_size) in self._stored else None

    def chain_eval(self, task: str, chain: str) -> ChainEval:
        """The chain's MainNet alone on test (and the fp32 one beside it), once per session: the ``none`` cell's
        numbers and every row's baseline columns."""
        key = (task, chain)
        if key not in self._chain_evals:
            mainnet, _ = self.mainnet(task)
            compressed = self.compressed(task, chain)
            # the fp32 baseline is evaluated (and timed) on the device too
            self._chain_evals[key] = evaluate_chain(
                TASKS.get(task), self._task_data[task].data, compressed, to_device(mainnet, self.device), self.device
            )
        return self._chain_evals[key]

    def mainnet(self, task: str) -> tuple[nn.Module, dict[str, Any]]:
        """The task's fp32 MainNet (loaded, or trained once), with its encoded data loaded once too."""
        self.task_data(task)
        if task not in self._mainnets:  # one fp32 MainNet per task: every chain's copy source and baseline
            loaded = self._task_data[task]
            self._mainnets[task] = load_or_train_mainnet(
                TASKS.get(task), loaded.data, loaded.num_classes, progress=not self.settings.quiet
            )
        return self._mainnets[task]

    def compressed(self, task: str, chain: str) -> Compressed:
        """The task's MainNet after ``chain``, on the timing device, made once per session: the cells of every
        exit system on that chain share it, and network selection asks for another chain's through it."""
        key = (task, chain)
        if key in self._failed:  # the same one-line error for every cell that cannot be prepared
            raise self._failed[key]
        if key not in self._compressed:
            mainnet, meta = self.mainnet(task)
            data = self._task_data[task].data
            try:
                # an int8 chain off the CPU, or a CUDA-only one on it, is a one-line UserError before any step runs
                self._compressed[key] = compress_mainnet(
                    TASKS.get(task), mainnet, meta["key"], data, chain, not self.settings.quiet, self.device
                )
            except UserError as exc:
                self._failed[key] = exc
                raise
        return self._compressed[key]

    def prepared_system(self, task: str, chain: str, exit_spec: str, selected: bool = False) -> PreparedSystem:
        """An exit system on the chain's MainNet (:meth:`compressed`), measured once per session: traced, its
        thresholds selected on validation (or the session's fixed threshold, for the spec it applies to, unless
        ``selected``: the validation selection even then), its cascade run on test."""
        s = self.settings
        fixed = s.threshold if takes_fixed_threshold(exit_spec) and not selected else None
        key = (task, chain, exit_spec, fixed)
        if key in self._failed:
            raise self._failed[key]
        if key not in self._systems:
            try:
                mainnet, meta = self.mainnet(task)
                compressed = self.compressed(task, chain)
                self._systems[key] = prepare_system(
                    TASKS.get(task),
                    self._task_data[task].data,
                    self._task_data[task].num_classes,
                    parse_exit_system(exit_spec),
                    compressed,
                    to_device(mainnet, self.device),
                    target_loss_pt=s.target_loss_pt,
                    threshold=fixed,
                    device=self.device,
                    progress=not s.quiet,
                    mainnet_for=lambda other: model_and_key(self.compressed(task, normalize_chain(other))),
                    baseline_key=meta["key"],
                )
            except UserError as exc:
                self._failed[key] = exc
                raise
        return self._systems[key]

    def system_cascade(self, task: str, chain: str, exit_spec: str, point: OperatingPoint) -> Cascade:
        """An exit system's cascade at the operating point the bench selected, built without tracing or selecting:
        what a timing worker serves (:mod:`sidenet.bench.cells`, which serves a fresh copy of it). Parts come from the
        cache, once per session (a worker serving the system at another batch size does not rebuild them); the
        fp32 MainNet (the baseline that systems retraining the backbone start from) on the timing device."""
        key = (task, chain, exit_spec)
        if key not in self._built:
            mainnet, meta = self.mainnet(task)
            self._built[key] = build_system(
                TASKS.get(task),
                self._task_data[task].data,
                self._task_data[task].num_classes,
                parse_exit_system(exit_spec),
                self.compressed(task, chain),
                to_device(mainnet, self.device),
                device=self.device,
                progress=not self.settings.quiet,
                mainnet_for=lambda other: model_and_key(self.compressed(task, normalize_chain(other))),
                baseline_key=meta["key"],
            )
        return cascade_at(self._built[key], point)

    def task_data(self, task: str) -> TaskData:
        """The task's encoded splits (loaded once)."""
        if task not in self._task_data:
            self._task_data[task] = load_task_data(TASKS.get(task))
        return self._task_data[task]

    def has_task_data(self, task: str) -> bool:
        return task in self._task_data

    def adopt_task_data(self, task: str, data: TaskData) -> None:
        """Use ``data`` as the task's encoded splits (a timing worker gets them from the bench, not from disk)."""
        self._task_data[task] = data

    def extension(self, name: str) -> Any:
        """What a layer above attached to this session under ``name`` (None if nothing)."""
        entry = self._extensions.get(name)
        return None if entry is None else entry[0]

    def attach(self, name: str, value: Any, close: Callable[[], None]) -> None:
        """Keep ``value`` for this session; ``close`` runs when the session's context closes."""
        self._extensions[name] = (value, close)

    def close(self) -> None:
        """End what the session attached (the timing workers); idempotent."""
        while self._extensions:
            _, (_, close) = self._extensions.popitem()
            close()


def task_profile(task: Any, profile: str, mainnet_accuracy: float) -> dict[str, Any]:
    """What the run's profile traded for time on this task, and whether its fp32 MainNet reached the task's floor."""
    floor = float(getattr(task, "accuracy_floor", 0.0) or 0.0)
    return {
        "profile": profile,
        "trades": getattr(task, "trades", "") or "",
        "accuracy_floor": floor or None,
        "floor_met": (mainnet_accuracy >= floor) if floor else None,
    }


def cell_key(
    settings: BenchSettings,
    task: str,
    chain: str,
    exit_system: str,
    batch_size: int,
    machine: MachineFingerprint | None = None,
) -> str:
    """Identity of a measurement, for resume: equal keys mean re-measuring would repeat the same experiment,
    and one experiment has one key.

    Hashes the cell; every field of every compressor config in the chain, defaults included (so changing a
    default re-measures, and ``prune:ratio=.5`` is ``prune:ratio=0.5``); the settings that change its numbers
    (device, threads, timing samples, rounds; the target or fixed threshold for the ``sidenet`` cell only);
    the task's MainNet recipe (with the training precision it resolves to here), tap and SideNet config (what
    the trained artifacts' cache keys are built from, minus the training labels' digest, which needs the data
    loaded); the machine fingerprint (``machine``, default this machine's); the versions of every library on
    the measured path; and the timing protocol. Cheap: no data, no model.
    """
    t = TASKS.get(task)
    machine = machine or fingerprint(settings.device, settings.threads)
    payload: dict[str, Any] = {
        "task": task,
        "recipe": t.recipe(),
        "tap": t.tap,
        "sidenet": t.sidenet.to_dict(),
        "chain": normalize_chain(chain),
        "compressors": [c.to_dict() for c in chain_configs(chain)],
        "exit": exit_system,
        "exit_system": parse_exit_system(exit_system).to_dict(),  # every field, defaults included
        "policy": DEFAULT_POLICY,
        "device": settings.device,
        "machine": machine.id,
        "batch_size": batch_size,
        "threads": settings.threads,
        "timing_samples": settings.timing_samples,
        "rounds": settings.rounds + settings.rounds % 2,  # odd counts run rounded up: 7 and 8 are one experiment
        "min_round_ms": float(settings.min_round_ms),
        "worker_pairs": settings.worker_pairs,
        "fresh_workers": settings.fresh_workers,
        "protocol": TIMING_PROTOCOL,
        "versions": {**library_versions(), "sidenet-bench": _version()},
    }
    system = parse_exit_system(exit_system)
    # how its operating point is chosen, for the systems that choose one (not the MainNet alone, nor the SideNet
    # that never exits: their numbers do not depend on a target)
    if system.has_exits and system.threshold_source == "validation":
        if settings.threshold is not None and takes_fixed_threshold(exit_system):
            payload["threshold"] = settings.threshold
        else:
            target = t.default_target_loss_pt if settings.target_loss_pt is None else settings.target_loss_pt
            payload["target_loss_pt"] = float(target)
            payload["margin_se"] = t.selection_margin_se
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _version() -> str:
    from sidenet import __version__

    return __version__


def invocation(argv: list[str]) -> str:
    """The command line as the user typed it: under ``python -m pytest bench/ …`` ``argv[0]`` is
    ``…/pytest/__main__.py``, which would be recorded as ``__main__.py bench/ …``."""
    program = Path(argv[0]) if argv else Path("pytest")
    head = [f"python -m {program.parent.name}"] if program.name == "__main__.py" else [program.name]
    return " ".join([*head, *(shlex.quote(a) for a in argv[1:])])


def measured_by(commit_info: dict[str, Any] | None, command: str) -> dict[str, Any]:
    """What a row records of the run that measured it (``extra_info["run"]``): when that run wrote its first row
    (UTC; rows are persisted as each cell finishes), the commit and whether the tree was dirty, the command.
    A merged results file keeps one header per file, so without this a report made by several runs would credit
    every row to the last one."""
    info = commit_info or {}
    return {
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": str(info.get("id") or "")[:12] or None,
        "dirty": bool(info.get("dirty")),
        "command": command,
    }


__all__ = [
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_EXITS",
    "DEFAULT_TASKS",
    "EXIT_SYSTEMS",
    "MAX_NAME_BYTES",
    "PROFILES",
    "QUICK_EXITS",
    "QUICK_TASKS",
    "QUIET_ENV",
    "TIMING_PROTOCOL",
    "BenchContext",
    "BenchSettings",
    "TaskData",
    "cell_key",
    "check_data",
    "check_out_dir",
    "check_output_files",
    "check_selection",
    "default_tasks",
    "invocation",
    "load_task_data",
    "measured_by",
    "quiet_from_env",
    "task_profile",
]
