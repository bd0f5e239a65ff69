"""One benchmark cell, timed in clean worker processes (timing protocol 6).

The bench process trains, compresses, traces and selects (everything ends in cached artifacts and the numbers of
the row); it never times. Each cell's rounds run in worker processes (:mod:`sidenet.bench.workers`) that rebuild what
they time from the cache and refuse to train:

* a **variant worker** per worker pair, started for the first cell of a task and chain and then asked to serve
  each next cell of that chain (every exit system, every batch size): the cell's MainNet (after its chain) or its
  cascade at the operating point the bench selected (handed over: the worker does not select again). What it
  times is always a fresh deep copy, whose first call is the cell's warm-up; the chain's compressed MainNet is
  built once per worker. ``fresh_workers`` starts a new pair for every cell instead (strictest, minutes
  slower);
* a **reference worker** per task, batch size and worker pair: the task's fp32 MainNet, the paired reference of
  every cell of that task and batch size. It only ever runs that one model, so it is the same reference for every
  cell (the bench checks that: :mod:`sidenet.bench.timing_checks`).

A pair's variant and reference alternate A B A on each slice (:func:`sidenet.bench.timing.timed_in_workers`); the
cell's slices are shared out over ``worker_pairs`` pairs started independently, so the spread of a row includes
process-to-process variance (pyperf's lesson: values from one process understate run-to-run variance).

A worker serves a fresh deep copy of what it built, so its first call is its warm-up at the cell's batch size: an
int8 convolution runs fast only at the first input shape it saw (:func:`fresh_copy`). Before timing, the variant
worker's predictions on the first slice are compared with the bench's own run of the same model or cascade: a worker
that rebuilt something else fails the cell instead of timing it.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import os
import pickle
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sidenet.bench.evals import TaskData, mainnet_forward
from sidenet.bench.harness import BenchContext, BenchSettings
from sidenet.bench.row_record import check_row
from sidenet.bench.rows import run_cell_info
from sidenet.bench.store import pause_for_tests
from sidenet.bench.systems import OperatingPoint
from sidenet.bench.timing import deal, plan_slices, stratified_order, time_once, timed_in_workers
from sidenet.bench.workers import START_METHOD, Served, Worker, WorkerJob, cpu_busy_seconds, own_cpu_seconds
from sidenet.engine.cascade import Cascade
from sidenet.engine.chain import NONE
from sidenet.engine.sidenet import SideNet
from sidenet.exits import parse_exit_system
from sidenet.tasks import TASKS
from sidenet.tasks.base import TASK_MODULES
from sidenet_core.layouts import batch_size_of, to_device

REFERENCE = "reference"
VARIANT = "variant"
MIN_AGREEMENT = 0.99  # share of the first slice's predictions a worker must repeat (else it built something else)


@dataclass(frozen=True)
class TaskDataParcel:
    """A task's encoded splits on their way to a worker. Where every split's rows are one tensor (images), the
    tensors are moved to shared memory once and workers map them without a copy (multiprocessing passes a file
    descriptor per tensor); otherwise (texts: a list of small tensors per split, which would cost one shared
    segment each) the splits travel pickled."""

    shared: TaskData | None = None
    pickled: bytes | None = None

    @classmethod
    def of(cls, data: TaskData) -> TaskDataParcel:
        parts = data.data.values()
        if all(isinstance(e.rows, torch.Tensor) and isinstance(e.labels, torch.Tensor) for e in parts):
            for e in parts:
                e.rows.share_memory_()
                e.labels.share_memory_()
            return cls(shared=data)
        return cls(pickled=pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL))

    def open(self) -> TaskData:
        if self.shared is not None:
            return self.shared
        assert self.pickled is not None
        return pickle.loads(self.pickled)


@dataclass(frozen=True)
class ServeSpec:
    """What a worker rebuilds: the bench's settings, the cell, the operating point the bench chose, and the task's
    encoded data (pickled once per task by the bench; the worker never reads the data sets itself)."""

    settings: BenchSettings
    task: str
    chain: str
    exit: str
    role: str
    task_data: TaskDataParcel
    point: OperatingPoint | None = None  # an exit system's operating point, as the bench selected it (or was given)
    imports: tuple[str, ...] = ()  # modules that register the task (a task registered outside this package)


def build_served(spec: ServeSpec) -> Served:
    """In the worker: rebuild what ``spec`` times through the bench's own code path, from the cache (anything that
    would train raises, :func:`sidenet.bench.workers.refuse_training`), then serve a fresh deep copy of it (below).
    A worker asked to serve another spec of the same session builds in the same context (its MainNet and the
    chain's compressed model are not rebuilt), and again serves a fresh copy. Runs in the worker process only."""
    for module in spec.imports:
        importlib.import_module(module)
    ctx = _worker_context(spec)
    if spec.role == REFERENCE:
        module, call = ctx.mainnet(spec.task)[0], mainnet_forward
    else:
        module, call = runnable_for(ctx, spec.task, spec.chain, spec.exit, spec.point)
    module, fresh = fresh_copy(module)
    served = Served(
        run=lambda b: call(module, b), check=_argmax(lambda b: call(module, b)), facts={"fresh_copy": fresh}
    )
    if spec.role == VARIANT and measures_components(module):  # head+SideNet and rest of the very cascade it times
        served.extra["component_latency"] = lambda slices, sync: component_latency(module, slices[0], sync)
    return served


def measures_components(module: Any) -> bool:
    """Whether a cell's worker times the parts of what it serves (:func:`component_latency`): a cascade of one SideNet
    whose exit can be taken (the SideNet's latency-vs-threshold estimate; nothing to estimate when no row can leave,
    and other heads, such as a second network, are not a SideNet on a tap)."""
    if not isinstance(module, Cascade) or module.n_exits != 1:
        return False
    return isinstance(module.heads[0], SideNet) and module.thresholds[0] <= 1.0


_WORKER_CONTEXTS: dict[BenchSettings, BenchContext] = {}  # in a worker process: its session's context


def _worker_context(spec: ServeSpec) -> BenchContext:
    # the worker computes nothing the row reports: a fixed threshold arrives as the operating point itself
    settings = dataclasses.replace(spec.settings, threshold=None, quiet=True, force=True)
    ctx = _WORKER_CONTEXTS.get(settings)
    if ctx is None:
        ctx = _WORKER_CONTEXTS[settings] = BenchContext(settings)
    if not ctx.has_task_data(spec.task):
        ctx.adopt_task_data(spec.task, spec.task_data.open())
    return ctx


def fresh_copy(module: Any) -> tuple[Any, bool]:
    """A deep copy of ``module`` that nothing has run yet, and whether one could be made.

    Why: PyTorch's oneDNN int8 convolutions (the x86 quantised engine) keep one cached primitive per conv, made at
    the first call for that input shape and thread count; a call with another shape builds a new primitive every
    time. An int8 ResNet first run at batch 2 or 256 then runs batch 1 as slowly as fp32 (5.0 vs 1.0 ms per image
    here): the ~1× int8 of runs that trained first. Building the cell may run the model (the SideNet's feature
    width is probed at batch 2), so the worker serves a copy whose first call is its warm-up at the cell's batch
    size. A deep copy re-packs the int8 weights, with empty caches. Modules that cannot be copied (ONNX Runtime
    sessions, which have no such cache) are served as built."""
    try:
        return copy.deepcopy(module), True
    except Exception:
        return module, False


def _argmax(fn: Callable[[Any], Any]) -> Callable[[Any], list[int]]:
    def check(batch: Any) -> list[int]:
        out = fn(batch)
        logits = out.logits if hasattr(out, "logits") else out
        return [int(i) for i in logits.argmax(-1).cpu()]

    return check


def runnable_for(
    ctx: BenchContext,
    task: str,
    chain: str,
    exit_spec: str,
    point: OperatingPoint | None = None,
) -> tuple[Any, Callable[[Any, Any], Any]]:
    """(module, call) of what a cell times: ``call(module, batch)`` runs the chain's MainNet alone (a system without
    exits) or the exit system's cascade at its operating point (selected on validation, or fixed). The bench and its
    workers build it the same way; a worker is handed the bench's ``point`` and only builds the parts (selecting
    again would cost it seconds per cell and could only repeat the bench's choice)."""
    if not parse_exit_system(exit_spec).has_exits:
        return ctx.compressed(task, chain).model, mainnet_forward
    if point is not None:
        return ctx.system_cascade(task, chain, exit_spec, point), _run_cascade
    return ctx.prepared_system(task, chain, exit_spec).cascade(), _run_cascade


def operating_point(ctx: BenchContext, task: str, chain: str, exit_spec: str) -> OperatingPoint | None:
    """The operating point the bench selected for an exit system (None for the MainNet alone)."""
    if not parse_exit_system(exit_spec).has_exits:
        return None
    return ctx.prepared_system(task, chain, exit_spec).operating_point


def _run_cascade(cascade: Any, batch: Any) -> Any:
    return cascade.run(batch)


def component_latency(p: Any, batches: Sequence[Any], sync: Callable[[], None], rounds: int = 3) -> dict[str, float]:
    """Per-sample time of head+exit head and of rest (on all rows) of ``p`` (a one-exit :class:`Cascade`: its staged
    model's ``head``/``rest`` around its SideNet), for the latency-vs-threshold estimate; measured in the worker right
    after its warm-up."""
    n = sum(batch_size_of(b) for b in batches)
    staged, side = p.staged, p.heads[0]
    with torch.inference_mode():
        states = [staged.head(b) for b in batches]

        def head_side() -> None:
            with torch.inference_mode():
                for b in batches:
                    side(staged.features(staged.head(b)))
            sync()

        def rest() -> None:
            with torch.inference_mode():
                for st in states:
                    staged.rest(st)
            sync()

        hs = statistics.median(time_once(head_side) for _ in range(rounds))
        rs = statistics.median(time_once(rest) for _ in range(rounds))
    return {"head_side": hs / n, "rest": rs / n}


def row_sizes(encoded_rows: Any, rows: torch.Tensor) -> torch.Tensor:
    """What a row costs the MainNet, relatively: a text's token count; 1 for an image (fixed size)."""
    if isinstance(encoded_rows, torch.Tensor):
        return torch.ones(len(rows), dtype=torch.long)
    return torch.tensor([len(encoded_rows[int(i)]) for i in rows], dtype=torch.long)


class TimingWorkers:
    """The bench process's side: the timing slices of each task and batch size, their reference workers (started
    once, closed at the end of the session) and a fresh variant worker pair per cell."""

    def __init__(self, ctx: BenchContext) -> None:
        self.ctx = ctx
        self._data: dict[str, TaskDataParcel] = {}
        self._slices: dict[tuple[str, int], list[list[Any]]] = {}
        self._references: dict[tuple[str, int], list[Worker]] = {}
        self._variants: tuple[tuple[str, str, int], list[Worker]] | None = None  # (task, chain, pairs), workers

    def pairs_for(self, n_slices: int) -> int:
        """Worker pairs a cell uses: as asked, but no more than it has slices (each pair times whole slices)."""
        return max(1, min(self.ctx.settings.worker_pairs, n_slices))

    def task_data(self, task: str) -> TaskDataParcel:
        if task not in self._data:
            self.ctx.mainnet(task)  # loads (or trains) the MainNet and the data, in the bench process
            self._data[task] = TaskDataParcel.of(self.ctx.task_data(task))
        return self._data[task]

    def spec(
        self,
        task: str,
        chain: str,
        exit_spec: str,
        role: str,
        point: OperatingPoint | None = None,
    ) -> ServeSpec:
        module = TASK_MODULES.get(task)
        return ServeSpec(
            settings=self.ctx.settings,
            task=task,
            chain=chain,
            exit=exit_spec,
            role=role,
            task_data=self.task_data(task),
            point=point,
            imports=(module,) if module else (),
        )

    def _start(self, spec: ServeSpec, label: str) -> Worker:
        s = self.ctx.settings
        return Worker(WorkerJob(build_served, spec, s.threads, s.device, spec.role, label))

    def references(self, task: str, batch_size: int) -> list[Worker]:
        """The task's fp32 MainNet reference workers at ``batch_size`` (one per worker pair), with the slices."""
        key = (task, batch_size)
        if key not in self._references:
            spec = self.spec(task, NONE, "none", REFERENCE)
            workers = [self._start(spec, f"{task} bs{batch_size} #{j}") for j in range(self.ctx.settings.worker_pairs)]
            try:
                for w in workers:
                    w.ready()
                slices = self.slices(task, batch_size, workers[0])
                for w in workers:
                    w.call("slices", slices)
                    w.warm(0)
            except BaseException:
                for w in workers:
                    w.kill()
                raise
            self._references[key] = workers
        return self._references[key]

    def slices(self, task: str, batch_size: int, reference: Worker | None = None) -> list[list[Any]]:
        """The timing set of a task at a batch size, cut into slices (:mod:`sidenet.bench.timing`): the same inputs for
        every chain and exit system of the task. Sized once per (task, batch size) from the fp32 MainNet's time per
        row, measured in a reference worker (never in the bench process)."""
        key = (task, batch_size)
        if key not in self._slices:
            s = self.ctx.settings
            t = TASKS.get(task)
            test = self.ctx.task_data(task).data["test"]
            pool = stratified_order(test.labels)  # any prefix is a stratified subset (fixed seed)
            per_row = 0.0
            if s.min_round_ms > 0 and reference is not None:
                probe = [b for b, _ in t.batches(test, batch_size, idx=pool[: 8 * batch_size])]
                per_row = float(reference.call("seconds_per_row", probe))
            plan = plan_slices(s.timing_samples, s.rounds, batch_size, len(pool), per_row, s.min_round_ms / 1000)
            rows = pool[: plan.total]
            parts = deal(rows, test.labels[rows], row_sizes(test.rows, rows), plan.slices)
            self._slices[key] = [[b for b, _ in t.batches(test, batch_size, idx=part)] for part in parts]
        return self._slices[key]

    def variants(self, spec: ServeSpec, label: str, n: int) -> list[Worker]:
        """``n`` variant workers serving ``spec``, each from a fresh copy of what it built. Started for the first
        cell of a task and chain and asked to serve each next cell of it (every exit system and batch size on that
        chain's compressed MainNet, which they then do not rebuild); with ``fresh_workers``, started anew for every
        cell. Never a worker that served another task or chain: those are closed first."""
        key = (spec.task, spec.chain, n)
        if self._variants is not None and (self.ctx.settings.fresh_workers or self._variants[0] != key):
            self.close_variants()
        if self._variants is not None:
            workers = self._variants[1]
            try:
                for w in workers:
                    w.serve(spec, label)
                for w in workers:
                    w.served_ready()
            except BaseException:
                self.close_variants(kill=True)
                raise
            return workers
        workers = [self._start(spec, f"{label} #{j}") for j in range(n)]
        try:
            for w in workers:
                w.ready()
        except BaseException:
            for w in workers:
                w.kill()
            raise
        self._variants = (key, workers)
        return workers

    def close_variants(self, kill: bool = False) -> None:
        """End the variant workers (``kill``: at once, after a failure: no cell is served by a worker whose last
        request failed)."""
        if self._variants is not None:
            for w in self._variants[1]:
                w.kill() if kill else w.close()
            self._variants = None

    def close(self) -> None:
        self.close_variants()
        for workers in self._references.values():
            for w in workers:
                w.close()
        self._references.clear()


def timing_workers(ctx: BenchContext) -> TimingWorkers:
    """The session's :class:`TimingWorkers` (made on first use; closed with the context)."""
    existing = ctx.extension("timing_workers")
    if existing is None:
        existing = TimingWorkers(ctx)
        ctx.attach("timing_workers", existing, existing.close)
    return existing


def run_cell(
    benchmark: Any, task: str, exit_system: str, batch_size: int, ctx: BenchContext, chain: str = NONE
) -> None:
    """Measure one cell: everything the row reports from the bench process
    (:func:`sidenet.bench.rows.run_cell_info`),
    its rounds from worker processes (this module's docstring), and the row stored as its
    :class:`sidenet.bench.row_record.RowRecord` writes it (:func:`store_row`: a row that disagrees fails its cell
    instead of being stored)."""
    tw = timing_workers(ctx)
    info = benchmark.extra_info
    run_cell_info(info, task, exit_system, batch_size, ctx, chain)
    benchmark.group = f"{task} bs{batch_size}"
    references = tw.references(task, batch_size)
    slices = tw.slices(task, batch_size)
    info["timing_samples"] = sum(batch_size_of(b) for b in slices[0])  # every slice holds as many rows
    info["timing_slices"] = len(slices)
    n_pairs = tw.pairs_for(len(slices))
    label = f"{task} {chain} {exit_system} bs{batch_size}"
    point = operating_point(ctx, task, chain, exit_system)
    variants = tw.variants(tw.spec(task, chain, exit_system, VARIANT, point), label, n_pairs)
    try:
        for w in variants:
            w.call("slices", slices)
        agreement = _agreement(ctx, task, chain, exit_system, point, slices[0], variants)
        if measures_components(runnable_for(ctx, task, chain, exit_system, point)[0]):  # after the warm-up check
            info["component_latency_s"] = variants[0].call("extra", "component_latency")
        load = _LoadProbe(variants + references[:n_pairs])
        pairs = [(variants[j], references[j]) for j in range(n_pairs)]
        # every variant worker ran slice 0 at this batch size for the prediction check: that was its warm-up
        per_pair = timed_in_workers(
            benchmark,
            pairs,
            ctx.settings.rounds,
            info,
            before_timing=lambda: pause_for_tests("timing"),
            variants_warm=True,
        )
        info["machine_load"] = load.done()
    except BaseException:
        tw.close_variants(kill=True)
        raise
    info["workers"] = {
        "start_method": START_METHOD,
        "bench_pid": os.getpid(),
        "reuse": "none" if ctx.settings.fresh_workers else "task-chain",
        "pairs": [
            {
                "variant_pid": v.ready()["pid"],
                "reference_pid": r.ready()["pid"],
                "variant_parent_pid": v.ready()["ppid"],
                "variant_build_s": v.serving["build_s"],
                "variant_fresh_copy": v.serving.get("fresh_copy"),
                "variant_threads": v.serving["threads"],
                "variant_served_before": v.served[:-1],  # cells this worker served earlier (fresh copies each)
                "reference_threads": r.ready()["threads"],
                **entry,
            }
            for (v, r), entry in zip(pairs, per_pair, strict=True)
        ],
        "trained_in_worker": any(bool((w.serving or {}).get("trained")) for w in variants + references),
        "prediction_agreement": agreement,
    }
    if chain == NONE and exit_system == "none":  # the fp32 MainNet paired with itself: an A/A test, not a speedup
        info["aa_paired_ratios"] = info.pop("paired_speedup")
    store_row(info)


def store_row(info: dict[str, Any]) -> None:
    """Make the row a :class:`~sidenet.bench.row_record.RowRecord` (a row that disagrees fails its cell) and store
    what the record gives back, so the record is the one description of a stored row. ``update`` keeps the keys'
    order; a sub-record writes its keys in the order its producer does (tests/test_rows_roundtrip.py)."""
    stored = check_row(info).to_dict()
    if set(stored) != set(info):
        raise RuntimeError(f"RowRecord.to_dict() changed the row's keys: {sorted(set(info) ^ set(stored))}")
    info.update(stored)


def _agreement(
    ctx: BenchContext,
    task: str,
    chain: str,
    exit_spec: str,
    point: OperatingPoint | None,
    first: list[Any],
    variants: list[Worker],
) -> float:
    """The share of the first slice's predictions each variant worker repeats from the bench's own run (the least
    of them); a worker below :data:`MIN_AGREEMENT` rebuilt something else and fails the cell."""
    module, call = runnable_for(ctx, task, chain, exit_spec, point)
    mine = _argmax(lambda b: call(module, b))
    device = ctx.device
    with torch.inference_mode():
        expected = [p for b in first for p in mine(to_device(b, device))]
    worst = 1.0
    for w in variants:
        got = w.call("check", 0)
        same = sum(int(a == b) for a, b in zip(got, expected, strict=True)) / max(1, len(expected))
        worst = min(worst, same)
    if worst < MIN_AGREEMENT:
        raise RuntimeError(
            f"a timing worker's {task} {chain} {exit_spec} repeats only {worst:.1%} of the bench's predictions on "
            "the first slice: it rebuilt another model (a cache key that does not cover what changed?)"
        )
    return worst


class _LoadProbe:
    """What other processes did to the machine while a cell was timed: busy CPU seconds of the whole machine
    (``/proc/stat``) minus what the bench process and the cell's workers used, as a share of the cores' time."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self.cpu = [w.cpu_total for w in workers]
        self.busy = cpu_busy_seconds()
        self.own = own_cpu_seconds()
        self.wall = time.perf_counter()

    def done(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.wall
        busy = cpu_busy_seconds()
        ours = own_cpu_seconds() - self.own
        ours += sum(w.cpu_total - before for w, before in zip(self.workers, self.cpu, strict=True))
        cores = os.cpu_count() or 1
        other = None if busy is None or self.busy is None else max(0.0, busy - self.busy - ours)
        return {
            "wall_s": wall,
            "own_cpu_s": ours,
            "other_cpu_s": other,
            "other_cpu_share": None if other is None or wall <= 0 else other / (wall * cores),
            "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "cores": cores,
        }


__all__ = [
    "MIN_AGREEMENT",
    "REFERENCE",
    "VARIANT",
    "ServeSpec",
    "TimingWorkers",
    "build_served",
    "component_latency",
    "operating_point",
    "run_cell",
    "runnable_for",
    "timing_workers",
]
