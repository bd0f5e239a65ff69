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
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sidenet.bench.machine import MachineFingerprint, fingerprint
from sidenet.bench.pipeline import (
    DEFAULT_POLICY,
    OperatingPoint,
    Prepared,
    PreparedSystem,
    TaskData,
    build_system,
    cascade_at,
    load_or_train_mainnet,
    load_task_data,
    model_and_key,
    prepare,
    prepare_system,
    run_eval,
)
from sidenet.bench.store import stored_cell_keys
from sidenet.bench.timing import TIMING_PROTOCOL
from sidenet.engine.cache import library_versions
from sidenet.engine.cascade import Cascade
from sidenet.engine.chain import NONE
from sidenet.engine.thresholds import NEVER_EXIT, outcome_at
from sidenet.exits import DEFAULT_EXITS, EXIT_SYSTEMS, BuiltSystem, canonical_exit, parse_exit_system
from sidenet.tasks import TASKS
from sidenet.tasks.compressed import (
    Compressed,
    chain_configs,
    compress_mainnet,
    cuda_only_message,
    cuda_only_steps,
    normalize_chain,
)
from sidenet_core import atomic
from sidenet_core.errors import UserError
from sidenet_core.layouts import to_device

DEFAULT_TASKS = ("fashion-mnist", "rotten-tomatoes")
# `--bench-profile quick`: the same two tasks trained for less (their own names: sidenet/tasks/builtin.py), the
# MainNet alone and with its SideNet, on the plain MainNet and int8 (the quick tasks' default chains)
QUICK_TASKS = ("fashion-mnist-quick", "rotten-tomatoes-quick")
QUICK_EXITS = ("none", "sidenet")
PROFILES = ("full", "quick")
DEFAULT_BATCH_SIZES = (1, 64)
QUIET_ENV = "SIDENET_BENCH_QUIET"  # "1": no progress bars (set by `sidenet-bench run -q`)
_TRUTHY = {"1", "true", "yes", "on"}
# a results file is <name>.json and its plots folder <name>_plots: keep both under the usual 255-byte limit
MAX_NAME_BYTES = 200
MAX_THREADS_PER_CORE = 4
MAX_ROUNDS = 1000
MAX_TIMING_SAMPLES = 100_000
MAX_WORKER_PAIRS = 16


def default_tasks() -> tuple[str, ...]:
    """Tasks run when none are given: ``$SIDENET_BENCH_TASKS`` (comma-separated), else the offline pair."""
    env = os.environ.get("SIDENET_BENCH_TASKS", "")
    return tuple(t.strip() for t in env.split(",") if t.strip()) or DEFAULT_TASKS


def quiet_from_env() -> bool:
    return os.environ.get(QUIET_ENV, "").strip().lower() in _TRUTHY


def _unique(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(items))


@dataclass(frozen=True)
class BenchSettings:
    """Everything a bench session was asked for; validated on construction (one-line UserError)."""

    tasks: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    exits: tuple[str, ...]
    threads: int
    target_loss_pt: float | None
    timing_samples: int
    rounds: int
    device: str
    out: Path
    name: str | None
    command: str
    chains: tuple[str, ...] = ()  # canonical chain specs (sidenet.engine.chain); empty: each task's default_chains
    threshold: float | None = None  # fixed exit threshold instead of selection on validation
    force: bool = False  # re-measure cells already stored in the results JSON
    quiet: bool = False  # no progress bars
    # `--bench-device cuda` on a machine without CUDA: bench/conftest.py skips every cell and runs with device cpu;
    # CUDA-only chains are then not refused (they would have run on the CUDA that was asked for)
    cuda_missing: bool = False
    profile: str = "full"  # which defaults filled what was not given (bench_options.resolve); recorded per row
    min_round_ms: float = 200.0  # slices grow until the fp32 MainNet needs this long for one (sidenet.bench.timing)
    worker_pairs: int = (
        2  # independent (variant, reference) worker pairs that share a cell's slices (sidenet.bench.cells)
    )
    fresh_workers: bool = False  # a new variant worker pair per cell, not one per task and chain (sidenet.bench.cells)

    @classmethod
    def from_options(cls, **kw: Any) -> BenchSettings:
        kw["tasks"] = tuple(t.strip() for t in kw["tasks"] if t.strip())
        return cls(**kw)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise UserError("no task given; pass --bench-task NAME (see `sidenet-bench list`)")
        if self.profile not in PROFILES:
            raise UserError(f"unknown profile {self.profile!r} (valid: {', '.join(PROFILES)})")
        for t in self.tasks:
            TASKS.get(t)
        # one spelling per experiment, from the parsed configs; bad parameters (prune:ratio=2) fail now, not
        # after the first cells ran, and so do a task's defaults (a task registered from outside may bring its own)
        chains = _unique(normalize_chain(c) for c in self.chains)
        for t in self.tasks:
            for c in TASKS.get(t).default_chains:
                normalize_chain(c)
        if not self.exits:
            raise UserError(f"no exit system given (valid: {', '.join(EXIT_SYSTEMS.names())})")
        exits = _unique(canonical_exit(e) for e in self.exits)  # one spelling per system config
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise UserError(f"batch sizes must be positive, got {list(self.batch_sizes)}")
        if self.threads < 1:
            raise UserError(f"threads must be positive, got {self.threads}")
        cores = os.cpu_count() or 1
        if self.threads > MAX_THREADS_PER_CORE * cores:
            raise UserError(
                f"{self.threads} threads on {cores} cores would time the OS scheduler, not the model; "
                f"use at most {MAX_THREADS_PER_CORE * cores}"
            )
        if not 1 <= self.worker_pairs <= MAX_WORKER_PAIRS:
            raise UserError(f"worker pairs must be in [1, {MAX_WORKER_PAIRS}], got {self.worker_pairs}")
        if not 0 <= self.min_round_ms <= 60_000:
            raise UserError(f"minimum round time must be in [0, 60000] ms, got {self.min_round_ms}")
        if self.rounds < 1 or self.timing_samples < 1:
            raise UserError(
                f"rounds and timing samples must be positive, got {self.rounds} rounds, {self.timing_samples} samples"
            )
        if self.rounds > MAX_ROUNDS or self.timing_samples > MAX_TIMING_SAMPLES or max(self.batch_sizes) > 100_000:
            raise UserError(
                f"at most {MAX_ROUNDS} rounds, {MAX_TIMING_SAMPLES} timing samples and batch size 100000 "
                f"(got {self.rounds}, {self.timing_samples}, {max(self.batch_sizes)}): a cell would run for hours"
            )
        if self.target_loss_pt is not None and not 0 <= self.target_loss_pt <= 100:
            raise UserError(f"target loss must be in [0, 100] points, got {self.target_loss_pt}")
        if self.threshold is not None:
            if self.target_loss_pt is not None:
                raise UserError("give either a fixed threshold or a target loss for threshold selection, not both")
            if not 0 <= self.threshold <= 1:
                raise UserError(f"threshold must be in [0, 1] (a confidence), got {self.threshold}")
        if self.device not in ("cpu", "cuda"):
            raise UserError(f"unknown device {self.device!r} (valid: cpu, cuda)")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UserError("device cuda requested but torch.cuda.is_available() is False here; use device cpu")
        if self.device != "cuda" and not self.cuda_missing:  # int8wo / int4wo: one line now, not per cell later
            for t in self.tasks:
                for c in chains or _unique(normalize_chain(d) for d in TASKS.get(t).default_chains):
                    steps = cuda_only_steps(c)
                    if steps:
                        raise UserError(cuda_only_message(c, steps, self.device))
        if self.name is not None and (not self.name.strip() or "/" in self.name or self.name in (".", "..")):
            raise UserError(f"report name {self.name!r} must be a plain file name (no '/')")
        if self.name is not None and any(ch in self.name for ch in "\0\n\r"):
            raise UserError(f"report name {self.name!r} has a NUL or line break; give a plain file name")
        if self.name is not None and len(self.name.encode()) > MAX_NAME_BYTES:
            raise UserError(f"report name is {len(self.name.encode())} bytes; give one of at most {MAX_NAME_BYTES}")
        object.__setattr__(self, "tasks", _unique(self.tasks))
        object.__setattr__(self, "chains", chains)
        object.__setattr__(self, "exits", exits)
        object.__setattr__(self, "batch_sizes", _unique(self.batch_sizes))

    def chains_for(self, task: str) -> tuple[str, ...]:
        """The chains given, else the task's ``default_chains``; ``none`` always first (it is the baseline)."""
        chains = self.chains or _unique(normalize_chain(c) for c in TASKS.get(task).default_chains)
        return tuple(sorted(chains, key=lambda c: c != NONE))

    def cells(self) -> list[tuple[str, str, str, int]]:
        """(task, chain, exit, batch size) of every cell. ``sidenet-noexit`` (the SideNet's pure overhead) is
        measured on the plain MainNet only: on a compressed one it would repeat the same question. Systems that are
        not timed (``oracle``: shown beside every system, from its trace) have no cells. The other exit systems run
        on every chain given, and by default on ``none`` and the task's ``exit_system_chains``: one compressed
        chain per task is enough for their complementarity verdict without multiplying the default bench."""
        return [
            (t, c, e, b)
            for t in self.tasks
            for c in self.chains_for(t)
            for b in self.batch_sizes
            for e in self.exits
            if self._runs_on(t, c, e)
        ]

    def _runs_on(self, task: str, chain: str, exit_spec: str) -> bool:
        system = parse_exit_system(exit_spec)
        if not system.timed or (system.name == "sidenet-noexit" and chain != NONE):
            return False
        if uses_legacy_path(exit_spec) or chain == NONE or self.chains:
            return True
        return chain in {normalize_chain(c) for c in TASKS.get(task).exit_system_chains}

    def n_cells(self) -> int:
        return len(self.cells())


def check_selection(settings: BenchSettings) -> None:
    """One-line UserError, before any data is loaded or model trained, when the selection has no cell to time or
    an exit system's task-specific values (taps, the cascade's small network) do not fit a task
    (:meth:`sidenet.exits.ExitSystemConfig.check_task`: builds the untrained architecture, so not in
    ``BenchSettings`` itself, which every timing worker constructs again).

    Why: untimed systems (``oracle``) are computed from the timed systems' traces, and ``sidenet-noexit`` runs on
    chain none only; a selection of only those used to exit 0, saying results were "left as they were" for files
    that may not even exist; a bad tap failed each cell after the MainNet had loaded or trained."""
    if not settings.n_cells():
        timed = ", ".join(n for n in EXIT_SYSTEMS.names() if EXIT_SYSTEMS.get(n).timed)
        untimed = [e for e in settings.exits if not parse_exit_system(e).timed]
        if len(untimed) == len(settings.exits):
            raise UserError(
                f"nothing to time: {', '.join(untimed)} {'is' if len(untimed) == 1 else 'are'} not timed (computed "
                f"from the timed systems' traces); add a timed one with --bench-exit NAME ({timed})"
            )
        chains = ", ".join(dict.fromkeys(c for t in settings.tasks for c in settings.chains_for(t)))
        raise UserError(
            f"nothing to time: exit systems {', '.join(settings.exits)} run on none of the chains {chains} "
            f"(sidenet-noexit runs on chain none only); add --bench-chain none or another --bench-exit NAME ({timed})"
        )
    for task in settings.tasks:
        for spec in settings.exits:
            parse_exit_system(spec).check_task(TASKS.get(task))


LEGACY_EXITS = ("none", "sidenet", "sidenet-noexit")


def uses_legacy_path(exit_spec: str) -> bool:
    """``none``, ``sidenet`` and ``sidenet-noexit`` at their defaults are measured by
    :func:`sidenet.bench.pipeline.prepare`
    (with calibration, component latencies and the batch-composition check); every other system config by the
    generic :func:`sidenet.bench.pipeline.prepare_system` (which gives the same numbers for ``sidenet``: a test)."""
    return exit_spec in LEGACY_EXITS


def check_out_dir(out: Path, create: bool) -> None:
    """One-line UserError unless ``out`` (and ``out/results``) is, or can become, a writable directory.
    ``create=False`` only inspects paths (nothing is written)."""
    atomic.ensure_writable_dir(out, "output directory", "pass another --out", create=create, subdirs=("results",))


def check_output_files(*paths: Path) -> None:
    """One-line UserError when a file a run will replace (its results JSON, its report) exists as something
    other than a regular file: a directory, a device, a FIFO. Checked up front, not after an hour of measuring."""
    for path in paths:
        if (path.exists() or path.is_symlink()) and not path.is_file():
            raise UserError(f"{str(path)!r} exists and is not a regular file; move it away or pass another --name")


def check_data(tasks: Iterable[str]) -> None:
    """Load each task's data once (offline sources only unless downloads are allowed): a missing or
    unreadable data set is a one-line UserError naming the ways to get it, before any work starts."""
    for name in tasks:
        TASKS.get(name).load_data()


class BenchContext:
    """Per-session state: prepared tasks (built once), timing batches per (task, batch size), stored cells."""

    def __init__(self, settings: BenchSettings) -> None:
        self.settings = settings
        self._prepared: dict[tuple[str, str], Prepared] = {}
        self._task_data: dict[str, TaskData] = {}  # loaded + encoded once per task, shared by its chains
        self._mainnets: dict[str, tuple[nn.Module, dict[str, Any]]] = {}  # fp32, loaded (or trained) once per task
        self._failed: dict[tuple[str, ...], UserError] = {}
        self._systems: dict[tuple[str, str, str], PreparedSystem] = {}
        self._built: dict[tuple[str, str, str], BuiltSystem] = {}  # parts a timing worker serves (system_cascade)
        self._compressed: dict[tuple[str, str], Compressed] = {}
        self._fixed: dict[tuple[str, str], tuple[dict[str, float], dict[str, float]]] = {}
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

    def prepared(self, task: str, chain: str = NONE) -> Prepared:
        key = (task, chain)
        if key in self._failed:  # the same one-line error for every cell that cannot be prepared
            raise self._failed[key]
        if key not in self._prepared:
            s = self.settings
            try:
                self.mainnet(task)
                # compressed and measured on the timing device: mainnet, baseline and side come back on it.
                # An int8 chain off the CPU, or a CUDA-only one on it, is a one-line UserError before any step runs.
                compressed = self.compressed(task, chain)
                p = prepare(
                    task,
                    chain=chain,
                    task_data=self._task_data[task],
                    target_loss_pt=s.target_loss_pt,
                    progress=not s.quiet,
                    device=self.device,
                    trained_mainnet=self._mainnets[task],
                    compressed=compressed,
                )
            except UserError as exc:
                self._failed[key] = exc
                raise
            if s.threshold is not None:
                self._fixed[key] = fixed_threshold_eval(p, s.threshold)
            self._prepared[key] = p
        return self._prepared[key]

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
        if key not in self._compressed:
            mainnet, meta = self.mainnet(task)
            data = self._task_data[task].data
            self._compressed[key] = compress_mainnet(
                TASKS.get(task), mainnet, meta["key"], data, chain, not self.settings.quiet, self.device
            )
        return self._compressed[key]

    def prepared_system(self, task: str, chain: str, exit_spec: str) -> PreparedSystem:
        """An exit system on the chain's MainNet (the one :meth:`prepared` compressed), measured once per session."""
        key = (task, chain, exit_spec)
        if key in self._failed:
            raise self._failed[key]
        if key not in self._systems:
            p = self.prepared(task, chain)
            s = self.settings
            try:
                self._systems[key] = prepare_system(
                    p.task,
                    p.data,
                    self._task_data[task].num_classes,
                    parse_exit_system(exit_spec),
                    p.compressed,
                    p.baseline,
                    target_loss_pt=s.target_loss_pt,
                    device=self.device,
                    progress=not s.quiet,
                    mainnet_for=lambda other: model_and_key(self.compressed(task, normalize_chain(other))),
                    baseline_key=self.mainnet(task)[1]["key"],
                )
            except UserError as exc:
                self._failed[key] = exc
                raise
        return self._systems[key]

    def fixed_threshold(self, task: str, chain: str = NONE) -> tuple[dict[str, float], dict[str, float]]:
        """(test eval, validation selection stats) of the cascade at the fixed threshold."""
        self.prepared(task, chain)
        return self._fixed[(task, chain)]

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
    if exit_system == "sidenet" or not uses_legacy_path(exit_system):
        if settings.threshold is not None and exit_system == "sidenet":
            payload["threshold"] = settings.threshold
        else:
            target = t.default_target_loss_pt if settings.target_loss_pt is None else settings.target_loss_pt
            payload["target_loss_pt"] = float(target)
            payload["margin_se"] = t.selection_margin_se
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def fixed_threshold_eval(p: Prepared, threshold: float) -> tuple[dict[str, float], dict[str, float]]:
    """The cascade at a user-given threshold: real run on test (accuracy, exit rate, FLOPs) + validation stats."""
    ev = run_eval(p.task, p.cascade(threshold).run, p.data["test"], p.device)
    t, v = p.test, p.val
    predicted = outcome_at(
        threshold, t.confidence(p.policy), t.side_correct, t.main_correct, t.head_flops, t.rest_flops
    )
    ev["predicted_accuracy"] = predicted["accuracy"]
    ev["predicted_flops_per_sample"] = predicted["flops_per_sample"]
    on_val = outcome_at(threshold, v.confidence(p.policy), v.side_correct, v.main_correct, v.head_flops, v.rest_flops)
    main_val = float(v.main_correct.mean())
    selection = {
        "val_accuracy": on_val["accuracy"],
        "val_mainnet_accuracy": main_val,
        "val_exit_rate": on_val["exit_rate"],
        "val_loss_pt": 100 * (main_val - on_val["accuracy"]),
    }
    return ev, selection


def _version() -> str:
    from sidenet import __version__

    return __version__


def run_cell_info(
    info: dict[str, Any], task: str, exit_system: str, batch_size: int, ctx: BenchContext, chain: str = NONE
) -> float | None:
    """Fill ``info`` (a row's ``extra_info``) with everything a cell reports except its timing: accuracy, exits,
    FLOPs, selection, calibration, provenance. Prepares (trains, compresses, traces, selects) in this process as
    needed. Returns the threshold the legacy SideNet cascade runs at (None for other cells): the operating point a
    timing worker rebuilds (:mod:`sidenet.bench.cells`).

    With ``ctx.settings.threshold`` set, the ``sidenet`` cell runs at that fixed threshold instead of the
    one selected on validation (``threshold_source`` records which).
    """
    s = ctx.settings
    p = ctx.prepared(task, chain)
    info.update(
        {
            "task": task,
            "chain": chain,
            "exit": exit_system,
            "device": s.device,
            "threads": torch.get_num_threads(),
            "batch_size": batch_size,
            "tap": p.split.tap,
            "policy": p.policy,
            "mainnet_test_accuracy": p.baseline_eval["accuracy"],  # the fp32, uncompressed MainNet
            "mainnet_flops_per_sample": p.baseline_eval["flops_per_sample"],
            "chain_test_accuracy": p.mainnet_eval["accuracy"],  # the (compressed) MainNet alone
            "chain_flops_per_sample": p.mainnet_eval["flops_per_sample"],
            "dtype": p.dtype,
            "compression": p.compression,
            "target_loss_pt": None if s.threshold is not None else p.target_loss_pt,
            "data_source": p.source,
            "versions": {**library_versions(), "sidenet-bench": _version()},
            "cell_key": ctx.cell_key(task, chain, exit_system, batch_size),
            "machine_id": ctx.machine.id,
            "machine": ctx.machine.to_dict(),
            "timing_protocol": TIMING_PROTOCOL,
            # bf16 autocast where the CPU has native bf16, else fp32 (sidenet_core.precision): other weights
            "train_precision": p.task.recipe().get("train_precision"),
            "task_profile": task_profile(p.task, s.profile, p.baseline_eval["accuracy"]),
        }
    )
    if exit_system == "none":
        info.update(
            {
                "threshold": None,
                "test_accuracy": p.mainnet_eval["accuracy"],
                "exit_rate": 0.0,
                "flops_per_sample": p.mainnet_eval["flops_per_sample"],
                "params": p.params["mainnet"],
                "main_ece": p.calibration["main_ece"],
            }
        )
        return None

    if not uses_legacy_path(exit_system):
        _system_info(info, ctx, p, task, chain, exit_system)
        return None

    selection: dict[str, float] = dict(p.selection)
    if exit_system == "sidenet" and s.threshold is not None:
        threshold, source = s.threshold, "fixed"
        ev, selection = ctx.fixed_threshold(task, chain)
    elif exit_system == "sidenet":
        threshold, source, ev = p.threshold, "validation", p.cascade_eval
    else:  # nothing exits: the SideNet's pure overhead
        threshold, source, ev = NEVER_EXIT, "never-exit", p.noexit_eval
    info.update(
        {
            "threshold": threshold,
            "threshold_source": source,
            "test_accuracy": ev["accuracy"],
            "exit_rate": ev["exit_rate"],
            "flops_per_sample": ev["flops_per_sample"],
            "params": p.params["mainnet"] + p.params["sidenet"],
            "main_ece": p.calibration["main_ece"],
            "side_ece": p.calibration["side_ece"],
            "reliability": p.calibration["reliability"],
            "sweep": p.sweep,
            **selection,
            "predicted_flops_per_sample": ev.get("predicted_flops_per_sample"),
            "flops_breakdown": {"head_side": float(p.test.head_flops.mean()), "rest": float(p.test.rest_flops.mean())},
            "batch_composition": p.batch_composition if source == "validation" else None,
            "exit_system": parse_exit_system(exit_system).to_dict(),
            "taps": [p.split.tap],
            "exit_rates": [ev["exit_rate"]],
            # the oracle at the validation-selected operating point (sidenet.engine.trace.oracle_summary)
            "oracle": p.oracle if source == "validation" else None,
            "training_seconds": p.logs["sidenet"].get("seconds"),
        }
    )
    return threshold


def _system_info(info: dict[str, Any], ctx: BenchContext, p: Prepared, task: str, chain: str, exit_spec: str) -> None:
    """An exit system measured by the generic path
    (:func:`sidenet.bench.pipeline.prepare_system`): what its real cascade
    did on test, its selection on validation and its trace's oracle."""
    ps = ctx.prepared_system(task, chain, exit_spec)
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
            "threshold_source": "validation",
            "test_accuracy": ev["accuracy"],
            "exit_rate": ev["exit_rate"],
            "exit_rates": ev["exit_rates"],
            "flops_per_sample": ev["flops_per_sample"],
            "predicted_flops_per_sample": ev["predicted_flops_per_sample"],
            "params": p.params["mainnet"] + ps.built.params,
            "main_ece": p.calibration["main_ece"],
            "sweep": ps.sweep,
            **ps.selection,
            "oracle": ps.oracle,
            "training_seconds": ps.logs["training_seconds"],
            "system_details": ps.details,
        }
    )


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
    "QUICK_EXITS",
    "QUICK_TASKS",
    "BenchContext",
    "BenchSettings",
    "cell_key",
    "check_data",
    "check_out_dir",
    "check_output_files",
    "default_tasks",
    "invocation",
    "measured_by",
    "run_cell_info",
]
