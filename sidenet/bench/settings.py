"""What a bench session was asked for (:class:`BenchSettings`, validated on construction) and the checks made before
any work starts (selection, output paths, data). Apart from :mod:`sidenet.bench.harness` (the session's state, cell
keys) because timing workers and the option parser need the settings without the measuring code.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sidenet.engine.chain import NONE
from sidenet.exits import EXIT_SYSTEMS, canonical_exit, parse_exit_system
from sidenet.tasks import TASKS
from sidenet.tasks.compressed import cuda_only_message, cuda_only_steps, normalize_chain
from sidenet_core import atomic
from sidenet_core.errors import UserError

DEFAULT_TASKS = ("fashion-mnist", "rotten-tomatoes")
# `--bench-profile quick`: the same two tasks trained for less (their own names: sidenet/tasks/builtin.py), the
# MainNet alone and with its SideNet, on the plain MainNet and int8 (the quick tasks' default chains)
QUICK_TASKS = ("fashion-mnist-quick", "rotten-tomatoes-quick")
QUICK_EXITS = ("none", "sidenet")
PROFILES = ("full", "quick")
DEFAULT_BATCH_SIZES = (1, 64)
QUIET_ENV = "SIDENET_BENCH_QUIET"  # "1": no progress bars (what `-q` / `--bench-quiet` also ask for)
_TRUTHY = {"1", "true", "yes", "on"}
# a results file is <name>.json and its plots folder <name>_plots: keep both under the usual 255-byte limit
MAX_NAME_BYTES = 200
MAX_THREADS_PER_CORE = 4
MAX_ROUNDS = 1000
MAX_TIMING_SAMPLES = 100_000
MAX_WORKER_PAIRS = 16


def takes_fixed_threshold(exit_spec: str) -> bool:
    """Whether ``--bench-threshold`` fixes this spec's threshold: the default spec of a system that declares it
    (``sidenet``: "for the sidenet cells"); every other spec keeps its selection on validation, and the fixed value
    is in that spec's cell keys only."""
    system = parse_exit_system(exit_spec)
    return system.takes_fixed_threshold and exit_spec == system.name


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
    # `--bench-device cuda` on a machine without CUDA: the bench plugin (sidenet/cli/plugin.py) skips every cell
    # and runs with device cpu; CUDA-only chains are then not refused (they would have run on the CUDA that was
    # asked for)
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
        system = parse_exit_system(exit_spec)  # what the system declares (sidenet.exits.ExitSystemConfig.runs_on)
        if not system.timed:
            return False
        if system.runs_on == "plain":
            return chain == NONE
        if chain == NONE or self.chains or (system.runs_on == "every" and exit_spec == system.name):
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


__all__ = [
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_TASKS",
    "MAX_NAME_BYTES",
    "PROFILES",
    "QUICK_EXITS",
    "QUICK_TASKS",
    "QUIET_ENV",
    "BenchSettings",
    "check_data",
    "check_out_dir",
    "check_output_files",
    "check_selection",
    "default_tasks",
    "quiet_from_env",
]
