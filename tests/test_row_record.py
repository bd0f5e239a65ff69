"""The typed row record: the harness's rows agree with it, and the report reads only keys it declares."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sidenet.bench.record_fields import ABSENT
from sidenet.bench.results import REQUIRED_KEYS
from sidenet.bench.row_record import FIELDS, REQUIRED, Oracle, check_row, row_problems

ROOT = Path(__file__).resolve().parent.parent


def minimal_row() -> dict:
    return {
        "task": "t",
        "chain": "none",
        "exit": "sidenet",
        "device": "cpu",
        "threads": 1,
        "batch_size": 1,
        "timing_samples": 16,
        "threshold": 0.9,
        "test_accuracy": 0.9,
        "exit_rate": 0.5,
        "flops_per_sample": 1e6,
        "params": 10,
        "mainnet_test_accuracy": 0.9,
        "mainnet_flops_per_sample": 2e6,
        "chain_test_accuracy": 0.9,
        "chain_flops_per_sample": 2e6,
        "dtype": "fp32",
        "compression": [],
        "tap": "layer1",
        "policy": "softmax",
        "target_loss_pt": 0.5,
        "data_source": "synthetic",
        "versions": {"torch": "x"},
        "cell_key": "k",
        "machine_id": "m",
        "machine": {},
        "timing_protocol": 3,
        "train_precision": "fp32",
    }


def test_a_complete_row_agrees_and_becomes_a_record() -> None:
    row = {**minimal_row(), "taps": ["layer1"], "exit_rates": [0.5], "oracle": {"flops_at_accuracy": 1.0}}
    record = check_row(row)
    assert record.taps == ["layer1"] and record.exit_rates == [0.5]
    assert isinstance(record.oracle, Oracle) and record.oracle.flops_at_accuracy == 1.0
    assert record.to_dict() == row and record.val_accuracy is ABSENT  # what the row lacks stays out of the dict


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"exit_rates": "0.5"}, "exit_rates = str"),
        ({"threads": True}, "threads = bool"),
        ({"taps": ["layer1", 2]}, "taps = list"),
        ({"surprise": 1}, "undeclared key 'surprise'"),
        ({"threshold": "high"}, "threshold = str"),
        ({"oracle": {"flops_at_accuracy": 1.0, "surprise": 1}}, "oracle = dict"),  # a sub-record's keys are declared
        ({"machine_load": {"cores": 2.5}}, "machine_load = dict"),  # and typed
    ],
)
def test_a_row_that_disagrees_is_refused(change: dict, problem: str) -> None:
    row = {**minimal_row(), **change}
    assert any(problem in p for p in row_problems(row)), row_problems(row)
    with pytest.raises(RuntimeError, match="RowRecord"):
        check_row(row)


def test_a_missing_required_key_is_named() -> None:
    row = minimal_row()
    del row["flops_per_sample"]
    assert row_problems(row) == ["missing key 'flops_per_sample'"]


def test_readers_require_only_what_every_row_has() -> None:
    assert set(REQUIRED_KEYS) <= set(REQUIRED)


# how the report reads a row: variant.get("key"), info.get("key"), info["key"], extra_info["key"]
READS = re.compile(
    r"""(?:\b(?:v|variant|base|ref|row_info|info|main|mine)\.get|\binfo|extra_info"\])\(?\[?["']([a-z_0-9]+)["']"""
)


def test_the_report_reads_only_declared_keys() -> None:
    read: set[str] = set()
    for path in sorted((ROOT / "sidenet" / "report").glob("*.py")):
        read |= set(READS.findall(path.read_text(encoding="utf-8")))
    assert len(read) >= 10, f"the scan found too few reads to mean anything: {sorted(read)}"
    undeclared = sorted(read - set(FIELDS))
    assert not undeclared, f"the report reads keys RowRecord does not declare: {undeclared}"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("exit_rates", [0.2, 1.5], "exit_rates[1]"),
        ("taps", ["layer1", ""], "taps[1]"),
        ("oracle", {"flops_at_accuracy": "x"}, "oracle flops_at_accuracy"),
        ("training_seconds", -1, "training_seconds"),
        ("retrains_backbone", "yes", "retrains_backbone"),
    ],
)
def test_results_files_with_malformed_exit_system_keys_are_refused(tmp_path, key, value, message) -> None:
    import json

    from sidenet.bench.results import load_results
    from sidenet_core.errors import UserError

    row = {"name": "r", "stats": {"median": 0.01}, "extra_info": {**minimal_row(), key: value}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"benchmarks": [row]}), encoding="utf-8")
    with pytest.raises(UserError, match=re.escape(message)):
        load_results(path)
    row["extra_info"][key] = None
    path.write_text(json.dumps({"benchmarks": [row]}), encoding="utf-8")
    assert load_results(path)["benchmarks"]
