"""The pytest-benchmark harness end to end on the tiny tasks (subprocess), plus its pure helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sidenet.errors import UserError
from sidenet.harness import BenchSettings, merge_results
from sidenet.results import REQUIRED_KEYS, load_results

ROOT = Path(__file__).resolve().parents[1]


def _settings(**kw):
    base = dict(
        tasks=("tiny-resnet",), batch_sizes=(1,), exits=("none",), threads=1, target_loss_pt=None,
        timing_samples=8, rounds=1, device="cpu", out=Path("reports"), name=None, command="x",
    )
    base.update(kw)
    return BenchSettings.from_options(**base)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"tasks": ("tiny-resnt",)}, "did you mean 'tiny-resnet'"),
        ({"tasks": ()}, "no task given"),
        ({"exits": ("sidenet", "bolukbasi")}, "unknown exit system 'bolukbasi'"),
        ({"batch_sizes": (0,)}, "batch sizes must be positive"),
        ({"threads": 0}, "threads must be positive"),
        ({"rounds": 0}, "rounds and timing samples must be positive"),
        ({"target_loss_pt": -1.0}, "target loss must be in [0, 100]"),
    ],
)
def test_bad_bench_settings_are_one_line_user_errors(kw, needle):
    with pytest.raises(UserError) as exc:
        _settings(**kw)
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def _row(task, exit_system, bs, median=1.0):
    return {"name": f"{task}-{exit_system}-{bs}", "stats": {"median": median},
            "extra_info": {"task": task, "chain": "none", "exit": exit_system, "device": "cpu", "batch_size": bs}}


def test_merge_results_replaces_same_cells_and_keeps_others(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"benchmarks": [_row("a", "none", 1, 5.0), _row("b", "none", 1, 7.0)]}))
    merged = merge_results(path, {"benchmarks": [_row("a", "none", 1, 2.0)], "machine_info": {}})
    by_task = {b["extra_info"]["task"]: b["stats"]["median"] for b in merged["benchmarks"]}
    assert by_task == {"a": 2.0, "b": 7.0}


def test_merge_results_tolerates_missing_or_corrupt_previous_file(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("{not json")
    merged = merge_results(path, {"benchmarks": [_row("a", "none", 1)]})
    assert len(merged["benchmarks"]) == 1


def test_bench_runs_end_to_end_on_tiny_tasks_and_writes_results_and_report(tmp_path):
    """`pytest bench/ --benchmark-only` on both tiny tasks: every cell measured, JSON + Markdown written."""
    out = tmp_path / "out"
    env = dict(os.environ)
    env.setdefault("SIDENET_BENCH_CACHE", str(tmp_path / "cache"))
    cmd = [
        sys.executable, "-m", "pytest", "bench/", "--benchmark-only", "-p", "no:cacheprovider", "-q",
        "--bench-task", "tiny-resnet", "--bench-task", "tiny-bert", "--bench-batch-size", "1",
        "--bench-batch-size", "8", "--bench-rounds", "2", "--bench-timing-samples", "16", "--bench-threads", "1",
        "--bench-out", str(out), "--bench-name", "ci", f"--benchmark-json={tmp_path / 'pb.json'}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = load_results(out / "results" / "ci.json")
    rows = results["benchmarks"]
    cells = {(b["extra_info"]["task"], b["extra_info"]["exit"], b["extra_info"]["batch_size"]) for b in rows}
    assert cells == {(t, e, bs) for t in ("tiny-resnet", "tiny-bert") for e in ("none", "sidenet", "sidenet-noexit")
                     for bs in (1, 8)}
    for b in rows:
        info = b["extra_info"]
        assert all(k in info for k in REQUIRED_KEYS)
        assert info["threads"] == 1
        assert info["timing_samples"] == 16
        assert b["stats"]["rounds"] == 2
        if info["exit"] == "sidenet-noexit":
            assert info["exit_rate"] == 0.0
        if info["exit"] != "none":
            assert len(info["paired_speedup"]) == 2
            # the SideNet adds FLOPs on top of the MainNet only for rows that do not exit
            assert info["flops_breakdown"]["head_side"] > 0
    main = {b["extra_info"]["task"]: b["extra_info"] for b in rows if b["extra_info"]["exit"] == "none"}
    noexit = {b["extra_info"]["task"]: b["extra_info"] for b in rows if b["extra_info"]["exit"] == "sidenet-noexit"}
    for task in main:
        assert noexit[task]["flops_per_sample"] > main[task]["flops_per_sample"]
        assert noexit[task]["test_accuracy"] == main[task]["test_accuracy"]
    # pytest-benchmark's own JSON carries the same contract (other tools read it)
    assert load_results(tmp_path / "pb.json")["benchmarks"]
    report = (out / "ci.md").read_text()
    assert "## Task `tiny-resnet`" in report and "## Task `tiny-bert`" in report
    assert not list(out.rglob("*.partial"))
