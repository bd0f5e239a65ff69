"""Every committed results row loads into a RowRecord and gives back the stored row; malformed rows are refused in
one line; the harness stores exactly what its record gives back."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from sidenet.bench.cells import store_row
from sidenet.bench.record_fields import ABSENT
from sidenet.bench.results import encode_nonfinite, load_results, load_rows
from sidenet.bench.row_record import UPGRADES, MachineLoad, Oracle, RowRecord, RunInfo, TaskProfile
from sidenet_core.errors import UserError

SAMPLES = sorted((Path(__file__).resolve().parent.parent / "reports" / "samples" / "results").glob("*.json"))
LEGACY = "cpu-amd-epyc-zen4-avx512-2t-all-chains-5bcd67f.json"  # written before machine fingerprints
LEGACY_ADDED = {"machine", "machine_id", "timing_protocol", "train_precision"}  # what loading it fills in


def stored_rows(path: Path) -> list[dict[str, Any]]:
    return [b["extra_info"] for b in json.loads(path.read_text(encoding="utf-8"))["benchmarks"]]


def as_json(value: Any) -> str:
    return json.dumps(encode_nonfinite(value), sort_keys=True, allow_nan=False)


def test_the_samples_are_there() -> None:
    assert len(SAMPLES) >= 6 and LEGACY in {p.name for p in SAMPLES}


@pytest.mark.parametrize("path", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_every_committed_row_round_trips(path: Path) -> None:
    records, stored = load_rows(path), stored_rows(path)
    assert len(records) == len(stored) > 0
    for record, row in zip(records, stored, strict=True):
        assert isinstance(record, RowRecord)
        back = record.to_dict()
        added = set(back) - set(row)
        assert added == (LEGACY_ADDED if path.name == LEGACY else set()), (path.name, added)
        assert all(back[k] == v for k, v in UPGRADES.items() if k in added)
        assert as_json({k: back[k] for k in row}) == as_json(row)  # every stored key, value for value


def test_the_loader_hands_the_report_the_stored_dicts() -> None:
    """The upgrade lives in the records only: the report reads the rows as the file holds them."""
    legacy = next(p for p in SAMPLES if p.name == LEGACY)
    loaded = [b["extra_info"] for b in load_results(legacy)["benchmarks"]]
    assert as_json(loaded) == as_json(stored_rows(legacy))


def test_sub_records_are_typed_and_absent_is_not_null() -> None:
    path = next(p for p in SAMPLES if p.name == "cpu-amd-epyc-zen4-avx512-2t.json")
    records = load_rows(path)
    assert all(isinstance(r.machine_load, MachineLoad) for r in records)
    with_oracle = [r for r in records if isinstance(r.oracle, Oracle)]
    assert with_oracle and all(r.oracle.flops_at_accuracy is not ABSENT for r in with_oracle)
    plain = [r for r in records if r.exit == "none"]
    assert plain and all(r.taps is ABSENT and "taps" not in r.to_dict() for r in plain)
    nulls = [r for r in records if r.batch_composition is None]  # stored as null: kept as null
    assert nulls and all(r.to_dict()["batch_composition"] is None for r in nulls)


def _write_bad(tmp_path: Path, change: dict[str, Any], drop: str | None = None) -> Path:
    path = next(p for p in SAMPLES if p.name == "cpu-amd-epyc-zen4-avx512-2t.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    info = data["benchmarks"][3]["extra_info"]
    info.update(change)
    if drop:
        del info[drop]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    return bad


@pytest.mark.parametrize(
    ("change", "drop", "needle"),
    [
        ({"threads": "2"}, None, "has threads = the string '2', expected a positive integer"),
        ({"surprise": 1}, None, "has undeclared key 'surprise'"),
        ({"machine_load": {"cores": 4, "fans": 2}}, None, "has undeclared key 'machine_load fans'"),
        ({"machine_load": {"cores": "4"}}, None, "has machine_load cores = the string '4', expected an integer"),
        ({"versions": ["torch"]}, None, "has versions = a list, expected an object"),
        ({"timing_protocol": 6.5}, None, "timing_protocol = the number 6.5"),
        ({}, "chain", "lacks keys ['chain']"),
    ],
    ids=["wrong-type", "unknown-key", "unknown-sub-key", "sub-wrong-type", "dict-as-list", "float-protocol", "missing"],
)
def test_a_malformed_row_is_refused_in_one_line_naming_row_and_key(
    tmp_path: Path, change: dict[str, Any], drop: str | None, needle: str
) -> None:
    bad = _write_bad(tmp_path, change, drop)
    with pytest.raises(UserError) as caught:
        load_rows(bad)
    message = str(caught.value)
    assert "\n" not in message and needle in message and "benchmark 'test_cell[" in message, message


def test_the_harness_stores_what_its_record_gives_back() -> None:
    path = next(p for p in SAMPLES if p.name == "cpu-amd-epyc-zen4-avx512-2t.json")
    for row in stored_rows(path)[:12]:
        info = copy.deepcopy(row)
        store_row(info)
        assert list(info) == list(row) and json.dumps(info, sort_keys=True) == json.dumps(row, sort_keys=True)
    with pytest.raises(RuntimeError, match="RowRecord"):
        store_row({**copy.deepcopy(row), "oracle": {"surprise": 1.0}})


def test_sub_records_write_their_keys_in_the_order_the_harness_does() -> None:
    """A sub-record's dict replaces the harness's (:func:`store_row`): in the same key order, so even a JSON written
    without sorted keys is unchanged."""
    from sidenet.bench.cells import _LoadProbe
    from sidenet.bench.harness import measured_by, task_profile
    from sidenet.tasks import TASKS

    load = _LoadProbe([]).done()
    assert list(MachineLoad.from_dict(load).to_dict()) == list(load)
    run = measured_by({"id": "abc", "dirty": False}, "cmd")
    assert list(RunInfo.from_dict(run).to_dict()) == list(run)
    profile = task_profile(TASKS.get("fashion-mnist-quick"), "quick", 0.9)
    record = TaskProfile.from_dict(profile)
    assert list(record.to_dict()) == list(profile) and isinstance(record.floor_met, bool)
