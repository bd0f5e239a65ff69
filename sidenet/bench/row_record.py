"""``RowRecord``: the one typed definition of what a benchmark row carries in ``benchmark.extra_info``.

The harness builds every row's ``extra_info`` and checks it against this record before the row is stored
(:func:`check_row`): a key not declared here, or a value of another type, is a bug that fails the cell instead of
reaching a results file. The report reads rows through the same names (tests/test_row_record.py checks that every
key the report reads is declared here). Units: accuracies and rates are fractions in [0, 1]; FLOPs are true FLOPs
(2 per multiply-add) per sample; latencies are seconds.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

JSONDict = dict[str, Any]


@dataclass(frozen=True)
class RowRecord:
    # ---- the cell
    task: str
    chain: str  # canonical compressor chain (sidenet.engine.chain), "none" for the plain MainNet
    exit: str  # canonical exit-system spec (sidenet.exits), e.g. "none", "sidenet", "sidenet-multi"
    device: str
    threads: int
    batch_size: int
    timing_samples: int  # inputs per timed round (latency per sample = round time / this)
    # ---- what was measured (test split; the real cascade run under FlopCounterMode)
    threshold: float | None  # the (shared) exit threshold; None for the MainNet alone
    test_accuracy: float
    exit_rate: float  # fraction of test rows that left at any exit head
    flops_per_sample: float
    params: int
    # ---- the MainNets it is compared with
    mainnet_test_accuracy: float  # the task's fp32, uncompressed MainNet: the reference of every Δ and speedup
    mainnet_flops_per_sample: float
    chain_test_accuracy: float  # the MainNet after this row's chain, alone (no exit)
    chain_flops_per_sample: float
    dtype: str  # compute precision of the chain: fp32 | int8 | fp16 | bf16 | int8wo | int4wo
    compression: list[JSONDict]  # one entry per chain step: compressor, config, measured facts
    # ---- identity and provenance
    tap: str  # where the (first) exit is attached; several taps joined by "/"
    policy: str  # the exit policy's registered name
    target_loss_pt: float | None  # accuracy-loss target the threshold was chosen for, on validation
    data_source: str
    versions: JSONDict  # every library on the measured path, and sidenet-bench
    cell_key: str  # resume identity (sidenet.bench.harness.cell_key)
    machine_id: str  # fingerprint id of the machine that measured the row
    machine: JSONDict  # that fingerprint (sidenet.bench.machine)
    timing_protocol: int  # sidenet.bench.timing.TIMING_PROTOCOL when the row was timed
    train_precision: str | None  # precision the task's MainNet was trained in here (fp32 | bf16)
    run: JSONDict | None = None  # {"when", "commit", "dirty", "command"}: the run that measured the row
    # {"profile": full | quick, "trades": what the task's recipe trades for time, "accuracy_floor", "floor_met"}
    task_profile: JSONDict | None = None
    # ---- timing (paired with the fp32 MainNet: protocol 3 balanced ABBA, protocol 4 A B A per slice)
    paired_speedup: list[float] | None = None  # per-round fp32-MainNet time / this row's time
    aa_paired_ratios: list[float] | None = None  # the fp32 MainNet's own row: paired with itself (A/A)
    paired_mainnet_median_s: float | None = None
    pairing: str | None = None  # "balanced" (protocol 3) | "aba" (protocol 4, sidenet.bench.timing)
    timing_slices: int | None = None  # protocol 4: distinct slices of timing_samples inputs, two rounds each
    # protocols 5 and 6 (sidenet.bench.cells):
    # {"start_method", "bench_pid", "reuse" (6: "task-chain" | "none"), "pairs":
    # [{variant/reference pid, the variant's parent pid and build seconds, threads, "variant_served_before" (6: the
    # cells its worker served earlier), "slices", "round_s", "reference_s", "paired_speedup",
    # "reference_median_s"}], "trained_in_worker" (must be False), "prediction_agreement"}
    workers: JSONDict | None = None
    # what other processes did to the machine while the cell was timed: {"wall_s", "own_cpu_s", "other_cpu_s",
    # "other_cpu_share" (of all cores' time), "loadavg_1min", "cores"} (sidenet.bench.cells)
    machine_load: JSONDict | None = None
    component_latency_s: JSONDict | None = None  # {"head_side", "rest"} per sample at this batch size (sidenet)
    # ---- exit systems
    exit_system: JSONDict | None = None  # {"system": name, every config field}
    retrains_backbone: bool | None = None  # the system changed the MainNet's weights (EENets)
    # what a system records about itself beyond its config, {"kind": system name, ...}; eenet: placement rule, exit
    # costs, λ, loss, the retrained backbone's own accuracy, threshold mode, paper-rule exit rates, collapse check
    system_details: JSONDict | None = None
    taps: list[str] | None = None  # one per exit, in order
    thresholds: list[float] | None = None  # one per exit
    threshold_source: str | None = None  # validation | fixed | never-exit
    exit_rates: list[float] | None = None  # fraction of test rows leaving at each exit
    predicted_flops_per_sample: float | None = None  # the same operating point predicted from the trace
    oracle: JSONDict | None = None  # sidenet.engine.trace.oracle_summary of the row's exit placement
    training_seconds: float | None = None  # training the exit heads (as recorded when they were trained)
    sweep: JSONDict | None = None  # {"threshold", "test_accuracy", "exit_rate", "flops_per_sample"} on test
    flops_breakdown: JSONDict | None = None  # {"head_side", "rest"} per sample, each part on all rows
    batch_composition: JSONDict | None = None  # survivors whose prediction changes as a smaller batch
    # ---- validation selection
    val_accuracy: float | None = None
    val_mainnet_accuracy: float | None = None
    val_exit_rate: float | None = None
    val_loss_pt: float | None = None
    val_loss_se_pt: float | None = None
    margin_se: float | None = None
    # ---- calibration
    main_ece: float | None = None
    side_ece: float | None = None
    reliability: JSONDict | None = None  # {"main"|"side": {"confidence", "accuracy", "count"}}


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RowRecord))
REQUIRED: tuple[str, ...] = tuple(
    f.name
    for f in dataclasses.fields(RowRecord)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
)


def _accepts(hint: Any, value: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(h, value) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_accepts(item, v) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


_HINTS = typing.get_type_hints(RowRecord, globalns={"JSONDict": JSONDict, "Any": Any})


def row_problems(info: dict[str, Any]) -> list[str]:
    """What in a row's ``extra_info`` disagrees with :class:`RowRecord` (empty: it agrees)."""
    problems = [f"undeclared key {k!r}" for k in info if k not in _HINTS]
    problems += [f"missing key {k!r}" for k in REQUIRED if k not in info]
    problems += [
        f"{k} = {type(v).__name__} {v!r:.60}, declared {_HINTS[k]}"
        for k, v in info.items()
        if k in _HINTS and not _accepts(_HINTS[k], v)
    ]
    return problems


def check_row(info: dict[str, Any]) -> RowRecord:
    """The row as a :class:`RowRecord`; a RuntimeError (a bug, not bad input) when it does not agree."""
    problems = row_problems(info)
    if problems:
        raise RuntimeError("benchmark row disagrees with sidenet.bench.row_record.RowRecord: " + "; ".join(problems))
    return RowRecord(**info)
