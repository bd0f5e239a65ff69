"""``RowRecord``: the one typed definition of what a benchmark row carries in ``benchmark.extra_info``.

The harness builds every row as a record (:func:`check_row`) and stores ``record.to_dict()``: a key not declared
here, or a value of another type, is a bug that fails the cell instead of reaching a results file. The results
loader (:mod:`sidenet.bench.results`) reads every stored row back into a record (:meth:`RowRecord.from_dict`):
there the field types, and the ranges of their :class:`~sidenet.bench.record_fields.Rule`, are what a file must
hold. The report reads rows through the same names (tests/test_row_record.py checks that every key the report
reads is declared here). Units: accuracies and rates are fractions in [0, 1]; FLOPs are true FLOPs (2 per
multiply-add) per sample; latencies are seconds.

Which keys a row must carry: every stored row the :data:`STORED_REQUIRED` ones (the fields without default; other
tools read them, keep their names stable); the harness writes :data:`REQUIRED` for every row it measures now. A
field whose key a row lacks is :data:`~sidenet.bench.record_fields.ABSENT`, and stays out of ``to_dict()``; rows
written before a key existed are upgraded at load time with :data:`UPGRADES`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sidenet.bench.record_fields import (
    ABSENT,
    FINITE,
    FRACTION,
    NONEMPTY,
    NONNEG,
    POSITIVE,
    TAP_NAME,
    JSONDict,
    Record,
    RowError,
    convert,
    hints_of,
    rule,
)


@dataclass(frozen=True)
class PerPart(Record):
    """Per-sample cost of a one-exit cascade's two parts: the head with its exit head, and the rest."""

    head_side: float = ABSENT
    rest: float = ABSENT


@dataclass(frozen=True)
class Oracle(Record):
    """sidenet.engine.trace.oracle_summary at the row's exit placement (FLOPs per sample, accuracies)."""

    first_correct_accuracy: float | None = rule(NONNEG)
    first_correct_flops_per_sample: float | None = rule(NONNEG)
    agree_accuracy: float | None = rule(NONNEG)
    agree_flops_per_sample: float | None = rule(NONNEG)
    flops_at_accuracy: float | None = rule(NONNEG)
    flops_vs_oracle: float | None = rule(NONNEG)


@dataclass(frozen=True)
class Sweep(Record):
    """The cascade on test at each threshold of a sweep (columns of equal length)."""

    threshold: list[float] | None = dataclasses.field(default=ABSENT, metadata={"rule": FINITE})
    test_accuracy: list[float] | None = ABSENT
    exit_rate: list[float] | None = ABSENT
    flops_per_sample: list[float] | None = ABSENT


@dataclass(frozen=True)
class Curve(Record):
    """A reliability curve (sidenet.engine.calibration): per confidence bin."""

    confidence: list[float] | None = ABSENT
    accuracy: list[float] | None = ABSENT
    count: list[int] | None = ABSENT


@dataclass(frozen=True)
class Reliability(Record):
    main: Curve | None = ABSENT
    side: Curve | None = ABSENT


@dataclass(frozen=True)
class MachineLoad(Record):
    """What other processes did to the machine while the cell was timed (sidenet.bench.cells._LoadProbe)."""

    wall_s: float = ABSENT
    own_cpu_s: float = ABSENT
    other_cpu_s: float | None = ABSENT
    other_cpu_share: float | None = ABSENT  # of all cores' time
    loadavg_1min: float | None = ABSENT
    cores: int = ABSENT


@dataclass(frozen=True)
class RunInfo(Record):
    """The run that measured the row (sidenet.bench.harness.measured_by)."""

    when: str = ABSENT
    commit: str | None = ABSENT
    dirty: bool = ABSENT
    command: str = ABSENT


@dataclass(frozen=True)
class TaskProfile(Record):
    """What the run's profile traded for time on the task (sidenet.bench.harness.task_profile)."""

    profile: str = ABSENT  # full | quick
    trades: str = ABSENT  # what the task's recipe trades for time ("" when nothing)
    accuracy_floor: float | None = ABSENT
    floor_met: bool | None = ABSENT  # the fp32 MainNet reached the floor (None: the task has none)


@dataclass(frozen=True)
class BatchComposition(Record):
    """Survivors whose prediction changes when they run on as a smaller batch (sidenet.bench.evals)."""

    survivors: int = ABSENT
    changed: int = ABSENT
    correct_delta: int = ABSENT  # correct as survivors minus correct in the full batch
    test_rows: int = ABSENT
    eval_batch: int = ABSENT


@dataclass(frozen=True)
class RowRecord(Record):
    # ---- the cell, and what was measured (test split; the real cascade run under FlopCounterMode)
    task: str = rule(NONEMPTY, dataclasses.MISSING)
    chain: str = rule(NONEMPTY, dataclasses.MISSING)  # canonical compressor chain (sidenet.engine.chain), "none"
    exit: str = rule(NONEMPTY, dataclasses.MISSING)  # canonical exit-system spec (sidenet.exits), e.g. "sidenet"
    device: str = rule(NONEMPTY, dataclasses.MISSING)
    threads: int = rule(POSITIVE, dataclasses.MISSING)
    batch_size: int = rule(POSITIVE, dataclasses.MISSING)
    threshold: float | None = rule(FINITE, dataclasses.MISSING)  # the (shared) exit threshold; None: MainNet alone
    test_accuracy: float = rule(FRACTION, dataclasses.MISSING)
    exit_rate: float = rule(FRACTION, dataclasses.MISSING)  # fraction of test rows that left at any exit head
    flops_per_sample: float = rule(NONNEG, dataclasses.MISSING)
    params: int = rule(NONNEG, dataclasses.MISSING)
    timing_samples: int = rule(POSITIVE)  # inputs per timed round (latency per sample = round time / this)
    # ---- the MainNets it is compared with
    mainnet_test_accuracy: float = ABSENT  # the task's fp32, uncompressed MainNet: the reference of every Δ, speedup
    mainnet_flops_per_sample: float = ABSENT
    chain_test_accuracy: float = ABSENT  # the MainNet after this row's chain, alone (no exit)
    chain_flops_per_sample: float = ABSENT
    dtype: str = ABSENT  # compute precision of the chain: fp32 | int8 | fp16 | bf16 | int8wo | int4wo
    compression: list[JSONDict] = ABSENT  # one entry per chain step: compressor, config, measured facts
    # ---- identity and provenance
    tap: str = ABSENT  # where the (first) exit is attached; several taps joined by "/"
    policy: str = ABSENT  # the exit policy's registered name
    target_loss_pt: float | None = ABSENT  # accuracy-loss target the threshold was chosen for, on validation
    data_source: str = ABSENT
    versions: JSONDict = ABSENT  # every library on the measured path, and sidenet-bench
    cell_key: str = ABSENT  # resume identity (sidenet.bench.harness.cell_key)
    machine_id: str | None = ABSENT  # fingerprint id of the machine that measured the row (None: UPGRADES)
    machine: JSONDict | None = ABSENT  # that fingerprint (sidenet.bench.machine)
    timing_protocol: int | None = ABSENT  # sidenet.bench.timing.TIMING_PROTOCOL when the row was timed
    train_precision: str | None = ABSENT  # precision the task's MainNet was trained in here (fp32 | bf16)
    run: RunInfo | None = ABSENT  # the run that measured the row (written by sidenet.cli.plugin when stored)
    task_profile: TaskProfile | None = ABSENT
    # ---- timing (paired with the fp32 MainNet: protocol 3 balanced ABBA, protocol 4 A B A per slice)
    paired_speedup: list[float] | None = ABSENT  # per-round fp32-MainNet time / this row's time
    aa_paired_ratios: list[float] | None = ABSENT  # the fp32 MainNet's own row: paired with itself (A/A)
    paired_mainnet_median_s: float | None = ABSENT
    pairing: str | None = ABSENT  # "balanced" (protocol 3) | "aba" (protocol 4, sidenet.bench.timing)
    timing_slices: int | None = ABSENT  # protocol 4: distinct slices of timing_samples inputs, two rounds each
    # protocols 5 and 6 (sidenet.bench.cells):
    # {"start_method", "bench_pid", "reuse" (6: "task-chain" | "none"), "pairs":
    # [{variant/reference pid, the variant's parent pid and build seconds, threads, "variant_served_before" (6: the
    # cells its worker served earlier), "slices", "round_s", "reference_s", "paired_speedup",
    # "reference_median_s"}], "trained_in_worker" (must be False), "prediction_agreement"}
    workers: JSONDict | None = ABSENT
    machine_load: MachineLoad | None = ABSENT  # what other processes did to the machine while the cell was timed
    component_latency_s: PerPart | None = ABSENT  # per sample at this batch size (sidenet)
    # ---- exit systems
    exit_system: JSONDict | None = ABSENT  # {"system": name, every config field}
    retrains_backbone: bool | None = ABSENT  # the system changed the MainNet's weights (EENets)
    # what a system records about itself beyond its config, {"kind": system name, ...}; eenet: placement rule, exit
    # costs, λ, loss, the retrained backbone's own accuracy, threshold mode, paper-rule exit rates, collapse check
    system_details: JSONDict | None = ABSENT
    taps: list[str] | None = dataclasses.field(default=ABSENT, metadata={"rule": TAP_NAME})  # one per exit, in order
    thresholds: list[float] | None = dataclasses.field(default=ABSENT, metadata={"rule": FINITE})  # one per exit
    threshold_source: str | None = ABSENT  # validation | fixed | never-exit
    # fraction of test rows leaving at each exit
    exit_rates: list[float] | None = dataclasses.field(default=ABSENT, metadata={"rule": FRACTION})
    predicted_flops_per_sample: float | None = rule(NONNEG)  # the same operating point predicted from the trace
    oracle: Oracle | None = ABSENT  # sidenet.engine.trace.oracle_summary of the row's exit placement
    training_seconds: float | None = rule(NONNEG)  # training the exit heads (as recorded when they were trained)
    sweep: Sweep | None = ABSENT  # on test
    flops_breakdown: JSONDict | None = ABSENT  # {"head_side", "rest"} per sample, each part on all rows
    batch_composition: BatchComposition | None = ABSENT
    # ---- validation selection
    val_accuracy: float | None = ABSENT
    val_mainnet_accuracy: float | None = ABSENT
    val_exit_rate: float | None = ABSENT
    val_loss_pt: float | None = ABSENT
    val_loss_se_pt: float | None = ABSENT
    margin_se: float | None = ABSENT
    # ---- calibration
    main_ece: float | None = ABSENT
    side_ece: float | None = ABSENT
    reliability: Reliability | None = ABSENT  # {"main"|"side": curve}

    @classmethod
    def load(cls, info: JSONDict) -> RowRecord:
        """A stored row's ``extra_info`` as a record: keys it predates filled in from :data:`UPGRADES`, then every
        field checked against its type and range; a :class:`RowError` naming the first key that is not."""
        return cls.from_dict({**{k: v for k, v in UPGRADES.items() if k not in info}, **info})


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RowRecord))
STORED_REQUIRED: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(RowRecord) if f.default is dataclasses.MISSING
)
# what the harness writes for every row it measures now (a stored row may predate some: UPGRADES, or ABSENT)
REQUIRED: tuple[str, ...] = (
    *STORED_REQUIRED,
    "timing_samples",
    "mainnet_test_accuracy",
    "mainnet_flops_per_sample",
    "chain_test_accuracy",
    "chain_flops_per_sample",
    "dtype",
    "compression",
    "tap",
    "policy",
    "target_loss_pt",
    "data_source",
    "versions",
    "cell_key",
    "machine_id",
    "machine",
    "timing_protocol",
    "train_precision",
)
# Keys rows written before machine fingerprints and timing protocols (sample all-chains-5bcd67f) lack, and what a
# loaded record holds for them: None, "not recorded" (the report shows such rows without a machine or protocol).
UPGRADES: dict[str, Any] = {"machine_id": None, "machine": None, "timing_protocol": None, "train_precision": None}


def row_problems(info: dict[str, Any]) -> list[str]:
    """What in a row's ``extra_info``, as the harness built it, disagrees with :class:`RowRecord`'s keys and types
    (empty: it agrees). Ranges are the loader's business: a NaN accuracy is stored and replaced by the next run."""
    hints = hints_of(RowRecord)
    rules = {f.name: f.metadata.get("rule") for f in dataclasses.fields(RowRecord)}
    problems = [f"undeclared key {k!r}" for k in info if k not in hints]
    problems += [f"missing key {k!r}" for k in REQUIRED if k not in info]
    for k, v in info.items():
        if k in hints:
            try:
                convert(hints[k], v, rules[k], k, ranges=False)
            except RowError:
                problems.append(f"{k} = {type(v).__name__} {v!r:.60}, declared {hints[k]}")
    return problems


def check_row(info: dict[str, Any]) -> RowRecord:
    """The row as a :class:`RowRecord`; a RuntimeError (a bug, not bad input) when it does not agree."""
    problems = row_problems(info)
    if problems:
        raise RuntimeError("benchmark row disagrees with sidenet.bench.row_record.RowRecord: " + "; ".join(problems))
    return RowRecord.from_dict(info, ranges=False)


__all__ = [
    "FIELDS",
    "REQUIRED",
    "STORED_REQUIRED",
    "UPGRADES",
    "BatchComposition",
    "Curve",
    "MachineLoad",
    "Oracle",
    "PerPart",
    "Reliability",
    "RowRecord",
    "RunInfo",
    "Sweep",
    "TaskProfile",
    "check_row",
    "row_problems",
]
