"""The measuring side of a benchmark cell, shared by ``pytest bench/`` and the CLI.

Latency: one timed round runs a fixed stratified test subset (``timing_samples`` inputs) at the
cell's batch size, so latency per sample = round time / samples (a cascade's per-input times are
bimodal; timing single inputs makes medians jump between modes). Warm-up runs outside the timed
region; threads are pinned; on CUDA the target synchronises before the clock stops.

Interleaving: for an exit-system cell, pytest-benchmark's untimed ``setup`` hook runs and times one
MainNet round right before each timed cascade round, so every cascade round has a MainNet round
beside it: ``paired_speedup`` = per-round ratios, robust to drift and background load.
"""

from __future__ import annotations

import json
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sidenet import atomic
from sidenet.cache import library_versions
from sidenet.errors import UserError
from sidenet.pipeline import Prepared, mainnet_forward, prepare, timing_rows
from sidenet.tasks import TASKS
from sidenet.thresholds import NEVER_EXIT

EXIT_SYSTEMS = ("none", "sidenet", "sidenet-noexit")


@dataclass(frozen=True)
class BenchSettings:
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

    @classmethod
    def from_options(cls, **kw: Any) -> BenchSettings:
        kw["tasks"] = tuple(t.strip() for t in kw["tasks"] if t.strip())
        return cls(**kw)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise UserError("no task given; pass --bench-task NAME (see `sidenet-bench list`)")
        for t in self.tasks:
            TASKS.get(t)
        for e in self.exits:
            if e not in EXIT_SYSTEMS:
                raise UserError(f"unknown exit system {e!r} (valid: {', '.join(EXIT_SYSTEMS)})")
        if any(b < 1 for b in self.batch_sizes):
            raise UserError(f"batch sizes must be positive, got {list(self.batch_sizes)}")
        if self.threads < 1:
            raise UserError(f"threads must be positive, got {self.threads}")
        if self.rounds < 1 or self.timing_samples < 1:
            raise UserError("rounds and timing samples must be positive")
        if self.target_loss_pt is not None and not 0 <= self.target_loss_pt <= 100:
            raise UserError(f"target loss must be in [0, 100] points, got {self.target_loss_pt}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UserError("--bench-device cuda but torch.cuda.is_available() is False; use --bench-device cpu")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class BenchContext:
    """Per-session state: prepared tasks (built once) and timing batches per (task, batch size)."""

    def __init__(self, settings: BenchSettings) -> None:
        self.settings = settings
        self._prepared: dict[str, Prepared] = {}
        self._timing: dict[tuple[str, int], list[Any]] = {}
        self.device = torch.device(settings.device)

    def environment(self) -> dict[str, Any]:
        s = self.settings
        env: dict[str, Any] = {
            "threads": torch.get_num_threads(),
            "device": s.device,
            "device_name": torch.cuda.get_device_name() if s.device == "cuda" else cpu_name(),
            "cpu": cpu_name(),
            "command": s.command,
            **library_versions(),
            "sidenet-bench": _version(),
        }
        return env

    def output_paths(self) -> tuple[Path, Path]:
        s = self.settings
        name = s.name or _slug(f"{s.device}-{self.environment()['device_name']}-{torch.get_num_threads()}t")
        return s.out / "results" / f"{name}.json", s.out / f"{name}.md"

    def prepared(self, task: str) -> Prepared:
        if task not in self._prepared:
            p = prepare(task, target_loss_pt=self.settings.target_loss_pt)
            p.mainnet.to(self.device)
            p.side.to(self.device)
            self._prepared[task] = p
        return self._prepared[task]

    def timing_batches(self, task: str, batch_size: int) -> list[Any]:
        key = (task, batch_size)
        if key not in self._timing:
            p = self.prepared(task)
            n = max(self.settings.timing_samples, batch_size)
            rows = timing_rows(p, n)
            # shuffle once (fixed seed) so bs>1 batches mix classes and lengths as in serving
            rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))]
            batches = [b for b, _ in p.task.batches(p.data["test"], batch_size, idx=rows)]
            self._timing[key] = [_to(b, self.device) for b in batches]
        return self._timing[key]

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def _version() -> str:
    from sidenet import __version__

    return __version__


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def _runner(fn: Callable[[Any], Any], batches: list[Any], sync: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            for b in batches:
                fn(b)
        sync()

    return run


def _time_once(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_cell(benchmark: Any, task: str, exit_system: str, batch_size: int, ctx: BenchContext) -> None:
    """Time one cell with ``benchmark.pedantic`` and fill ``benchmark.extra_info`` (sidenet.results)."""
    s = ctx.settings
    p = ctx.prepared(task)
    batches = ctx.timing_batches(task, batch_size)
    n_samples = sum(_rows(b) for b in batches)
    run_main = _runner(lambda b: mainnet_forward(p.mainnet, b), batches, ctx.sync)
    benchmark.group = f"{task} bs{batch_size}"
    info = benchmark.extra_info
    info.update(
        {
            "task": task,
            "chain": "none",
            "exit": exit_system,
            "device": s.device,
            "threads": torch.get_num_threads(),
            "batch_size": batch_size,
            "timing_samples": n_samples,
            "tap": p.split.tap,
            "policy": p.policy,
            "mainnet_test_accuracy": p.mainnet_eval["accuracy"],
            "target_loss_pt": p.target_loss_pt,
            "data_source": p.source,
            "versions": {**library_versions(), "sidenet-bench": _version()},
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
        run_main()  # warm-up outside the timed region (plus pedantic's warm-up round)
        benchmark.pedantic(run_main, rounds=s.rounds, warmup_rounds=1, iterations=1)
        return

    threshold = p.threshold if exit_system == "sidenet" else NEVER_EXIT
    if exit_system == "sidenet":
        ev = p.cascade_eval
    else:  # nothing exits: the SideNet's pure overhead
        ev = p.noexit_eval
    info.update(
        {
            "threshold": threshold,
            "test_accuracy": ev["accuracy"],
            "exit_rate": ev["exit_rate"],
            "flops_per_sample": ev["flops_per_sample"],
            "params": p.params["mainnet"] + p.params["sidenet"],
            "main_ece": p.calibration["main_ece"],
            "side_ece": p.calibration["side_ece"],
            "reliability": p.calibration["reliability"],
            "sweep": p.sweep,
            **{k: v for k, v in p.selection.items()},
            "predicted_flops_per_sample": ev.get("predicted_flops_per_sample"),
            "flops_breakdown": {"head_side": float(p.test.head_flops.mean()), "rest": float(p.test.rest_flops.mean())},
        }
    )
    cascade = p.cascade(threshold)
    run_cascade = _runner(cascade.run, batches, ctx.sync)
    info["component_latency_s"] = _component_latency(p, batches, ctx, n_samples)
    run_cascade()
    run_main()
    main_times: list[float] = []
    benchmark.pedantic(
        run_cascade,
        setup=lambda: main_times.append(_time_once(run_main)),
        rounds=s.rounds,
        warmup_rounds=1,
        iterations=1,
    )
    data = getattr(getattr(benchmark, "stats", None), "stats", None)
    cascade_times = list(getattr(data, "data", []) or [])
    paired = main_times[-len(cascade_times) :] if cascade_times else []
    info["paired_speedup"] = [m / c for m, c in zip(paired, cascade_times, strict=True) if c > 0]
    info["paired_mainnet_median_s"] = statistics.median(paired) if paired else None


def _rows(batch: Any) -> int:
    from sidenet.split import batch_size_of

    return batch_size_of(batch)


def _component_latency(
    p: Prepared, batches: list[Any], ctx: BenchContext, n_samples: int, rounds: int = 3
) -> dict[str, float]:
    """Per-sample time of head+SideNet and of rest (on all rows), for the latency-vs-threshold estimate."""
    with torch.inference_mode():
        states = [p.split.head(b) for b in batches]

        def head_side() -> None:
            with torch.inference_mode():
                for b in batches:
                    p.side(p.split.features(p.split.head(b)))
            ctx.sync()

        def rest() -> None:
            with torch.inference_mode():
                for st in states:
                    p.split.rest(st)
            ctx.sync()

        head_side(), rest()
        hs = statistics.median(_time_once(head_side) for _ in range(rounds))
        rs = statistics.median(_time_once(rest) for _ in range(rounds))
    return {"head_side": hs / n_samples, "rest": rs / n_samples}


def _row_key(b: dict[str, Any]) -> tuple[Any, ...]:
    e = b.get("extra_info", {})
    return (e.get("task"), e.get("chain"), e.get("exit"), e.get("device"), e.get("batch_size"))


def merge_results(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    """New rows replace stored rows of the same (task, chain, exit, device, batch size); others stay."""
    try:
        old = json.loads(path.read_text())
        old_rows = [b for b in old.get("benchmarks", []) if isinstance(b, dict)]
    except (OSError, ValueError, AttributeError):
        old_rows = []
    fresh = {_row_key(b) for b in new["benchmarks"]}
    kept = [
        b for b in old_rows if _row_key(b) not in fresh and b.get("extra_info", {}).get("device") == _device_of(new)
    ]
    merged = dict(new)
    merged["benchmarks"] = sorted(kept + list(new["benchmarks"]), key=lambda b: tuple(str(x) for x in _row_key(b)))
    return merged


def _device_of(results: dict[str, Any]) -> str | None:
    rows = results.get("benchmarks") or [{}]
    return rows[0].get("extra_info", {}).get("device")


def write_outputs(results: dict[str, Any], results_path: Path, report_path: Path) -> None:
    from sidenet.report import write_report

    atomic.write_json(results_path, results, default=str)  # pytest params (Cell) → their id
    write_report(results, report_path)


__all__ = ["EXIT_SYSTEMS", "BenchContext", "BenchSettings", "merge_results", "run_cell", "write_outputs"]
