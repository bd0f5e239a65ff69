"""The bench's options, declared once: ``pytest bench/ --bench-NAME`` and ``sidenet-bench run --NAME`` are generated
from this table, and both turn what they were given into the same :class:`~sidenet.bench.harness.BenchSettings`.

Why: the two entry points used to declare the same dozen options twice, with defaults and help texts drifting
apart. One row per option: the settings field it fills, its flag stem, type, default and help. Light to import
(the CLI builds its parser from it before it knows whether torch will be needed): the harness is imported only
when settings are resolved.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidenet_core.errors import UserError

PYTEST_PREFIX = "--bench-"


@dataclass(frozen=True)
class BenchOption:
    field: str  # the BenchSettings field it fills
    stem: str  # --STEM on the CLI, --bench-STEM for pytest
    help: str
    type: Callable[[str], Any] | None = None
    default: Any = None  # what an absent option means (None: resolved by ``resolve``)
    repeatable: bool = False
    switch: bool = False  # a flag without a value (store_true)
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    exclusive_with: str | None = None  # the stem of an option it cannot be given with (CLI group)
    short: str | None = None  # a one-letter CLI alias (-q)

    @property
    def dest(self) -> str:
        return self.stem.replace("-", "_")


BENCH_OPTIONS: tuple[BenchOption, ...] = (
    BenchOption(
        "profile",
        "profile",
        "quick: a first answer in minutes — both tasks with shorter MainNet training (stated in the report, with "
        "accuracy floors), the fp32 MainNet, the SideNet and int8; full (default): the whole default matrix",
        default="full",
        choices=("full", "quick"),
    ),
    BenchOption(
        "tasks",
        "task",
        "task to run (repeatable; default fashion-mnist and rotten-tomatoes; env SIDENET_BENCH_TASKS=a,b)",
        repeatable=True,
        metavar="NAME",
    ),
    BenchOption(
        "chains",
        "chain",
        "compressor chain, names joined by '+', each with optional ':key=value[,key=value]', e.g. "
        "'prune:ratio=0.5+int8'; 'none' = the plain MainNet (repeatable; default: each task's default chains)",
        repeatable=True,
        metavar="SPEC",
    ),
    BenchOption(
        "exits",
        "exit",
        "exit system NAME[:KEY=VALUE,...] (repeatable; default: the defaults the systems declare, "
        "marked in `sidenet-bench list`)",
        repeatable=True,
        metavar="SPEC",
    ),
    BenchOption(
        "batch_sizes",
        "batch-size",
        "batch size (repeatable; default 1 and 64)",
        type=int,
        repeatable=True,
        metavar="N",
    ),
    BenchOption("threads", "threads", "torch threads, pinned and recorded (default: all cores)", type=int, metavar="N"),
    BenchOption(
        "target_loss_pt",
        "target-loss",
        "accuracy-loss target in points for threshold selection on validation (default: the task's)",
        type=float,
        metavar="PT",
    ),
    BenchOption(
        "threshold",
        "threshold",
        "fixed exit threshold in [0, 1] for the sidenet cells instead of selection on validation",
        type=float,
        metavar="T",
        exclusive_with="target-loss",
    ),
    BenchOption(
        "timing_samples",
        "timing-samples",
        "distinct test inputs timed per cell (a fixed stratified subset, cut into one slice per two rounds; "
        "default 192)",
        type=int,
        default=192,
        metavar="N",
    ),
    BenchOption(
        "rounds",
        "rounds",
        "timed rounds per cell, two per slice around one fp32 MainNet round (default 8; odd numbers are rounded up)",
        type=int,
        default=8,
        metavar="N",
    ),
    BenchOption(
        "min_round_ms",
        "min-round-ms",
        "grow each slice (in whole batches) until the fp32 MainNet needs at least this long for it: shorter rounds "
        "measure scheduler noise (default 200; 0: off)",
        type=float,
        default=200.0,
        metavar="MS",
    ),
    BenchOption(
        "worker_pairs",
        "worker-pairs",
        "independent (variant, fp32 MainNet) worker-process pairs that share each cell's slices: the spread then "
        "includes process-to-process variance (default 2)",
        type=int,
        default=2,
        metavar="N",
    ),
    BenchOption(
        "fresh_workers",
        "fresh-workers",
        "start a new worker pair for every cell (default: a pair serves every cell of one task and chain, each "
        "from a fresh copy of what it built): the strictest isolation, minutes slower",
        switch=True,
        default=False,
    ),
    BenchOption("device", "device", "device to time on (default cpu)", default="cpu", choices=("cpu", "cuda")),
    BenchOption("out", "out", "directory for results/<name>.json and <name>.md (default reports)", default="reports"),
    BenchOption(
        "name",
        "name",
        "report name (default: the machine fingerprint, e.g. cpu-amd-epyc-zen4-avx512-2t)",
        metavar="NAME",
    ),
    BenchOption(
        "force",
        "force",
        "re-measure cells already stored in the results JSON (default: skip them, i.e. resume)",
        switch=True,
        default=False,
    ),
    BenchOption(
        "quiet",
        "quiet",
        "no progress bars or progress lines (training, cells done, time left) (also env SIDENET_BENCH_QUIET=1)",
        switch=True,
        default=False,
        short="-q",
    ),
)


def _kwargs(opt: BenchOption, cli: bool) -> dict[str, Any]:
    kw: dict[str, Any] = {"help": opt.help, "default": None if opt.repeatable else opt.default}
    if opt.switch:
        kw["action"] = "store_true"
        return kw
    if opt.repeatable:
        kw["action"] = "append"
    if opt.type is not None:
        kw["type"] = opt.type
    if opt.choices is not None:
        kw["choices"] = opt.choices
    if cli and opt.metavar:
        kw["metavar"] = opt.metavar
    return kw


def add_pytest_options(group: Any) -> None:
    """``--bench-STEM`` for every option, in pytest's option group (dest ``bench_STEM``)."""
    for opt in BENCH_OPTIONS:
        group.addoption(PYTEST_PREFIX + opt.stem, dest="bench_" + opt.dest, **_kwargs(opt, cli=False))


def add_cli_options(parser: argparse.ArgumentParser) -> None:
    """``--STEM`` for every option; options that exclude each other share a mutually exclusive group."""
    groups: dict[str, Any] = {}
    for opt in BENCH_OPTIONS:
        pair = opt.exclusive_with
        if pair is not None:
            groups[pair] = groups[opt.stem] = parser.add_mutually_exclusive_group()
    for opt in BENCH_OPTIONS:
        target = groups.get(opt.stem, parser)
        flags = [opt.short, "--" + opt.stem] if opt.short else ["--" + opt.stem]
        target.add_argument(*flags, dest=opt.dest, **_kwargs(opt, cli=True))


def resolve(values: dict[str, Any], command: str, cuda_missing: bool = False) -> Any:
    """``values``: option dest (``task``, ``batch_size`` …) → what was given (None / [] when absent). Fills the
    defaults that depend on the machine or the environment, then validates (one-line UserError) into a
    :class:`sidenet.bench.harness.BenchSettings`."""
    from sidenet.bench.harness import (
        DEFAULT_BATCH_SIZES,
        QUICK_EXITS,
        QUICK_TASKS,
        BenchSettings,
        default_tasks,
        quiet_from_env,
    )
    from sidenet.exits import default_exits

    check_name(values.get("name"))
    threads = values.get("threads")
    quick = values.get("profile") == "quick"
    fields: dict[str, Any] = {opt.field: values.get(opt.dest) for opt in BENCH_OPTIONS}
    fields.update(
        tasks=tuple(values.get("task") or (QUICK_TASKS if quick else default_tasks())),
        chains=tuple(values.get("chain") or ()),
        exits=tuple(values.get("exit") or (QUICK_EXITS if quick else default_exits())),
        batch_sizes=tuple(values.get("batch_size") or DEFAULT_BATCH_SIZES),
        threads=(os.cpu_count() or 1) if threads is None else threads,  # 0 is an error, not "all cores"
        out=Path(values.get("out") or "reports"),
        force=bool(values.get("force")),
        fresh_workers=bool(values.get("fresh_workers")),
        quiet=bool(values.get("quiet")) or quiet_from_env(),
        device="cpu" if cuda_missing else (values.get("device") or "cpu"),
        command=command,
        cuda_missing=cuda_missing,
    )
    for opt in BENCH_OPTIONS:  # options with plain defaults (rounds, timing samples)
        if fields[opt.field] is None and opt.default is not None:
            fields[opt.field] = opt.default
    return BenchSettings.from_options(**fields)


def check_name(name: str | None) -> None:
    """One-line UserError for a report name that starts with '-'.

    Why here: under ``pytest bench/ --bench-name NAME`` a leading '-' makes the name read as an option (the run then
    dies in pytest's argument parser), so ``sidenet-bench run`` refuses it as well, and a file ``-x.json`` is a trap
    for every shell tool too. The other rules of a name (a plain file name) are the settings' own."""
    if name is not None and name.startswith("-"):
        raise UserError(f"report name {name!r} starts with '-' and would read as an option; give one that does not")
