"""The pytest-benchmark harness end to end on the tiny tasks (subprocess), plus its pure helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import bench_settings

from sidenet.bench.harness import (
    TIMING_PROTOCOL,
    BenchContext,
    cell_key,
    check_out_dir,
)
from sidenet.bench.machine import MachineFingerprint
from sidenet.bench.results import REQUIRED_KEYS, load_results
from sidenet.bench.store import merge_results, stored_cell_keys, write_outputs
from sidenet.report import write_report
from sidenet.tasks import TASKS
from sidenet_core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


_settings = bench_settings


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
        ({"exits": ("sidenet-noexi",)}, "did you mean 'sidenet-noexit'?"),
        ({"exits": ()}, "no exit system given"),
        ({"batch_sizes": ()}, "batch sizes must be positive"),
        ({"chains": ("a++b",)}, "malformed chain 'a++b'"),
        ({"chains": ("prune:ratio=2",)}, "prune ratio is the FLOP fraction to keep"),
        ({"chains": ("int8:nosuch=1",)}, "unknown parameter(s) nosuch for compressor 'int8'"),
        ({"threshold": 1.5}, "threshold must be in [0, 1]"),
        ({"threshold": float("nan")}, "threshold must be in [0, 1]"),
        ({"threshold": 0.5, "target_loss_pt": 1.0}, "not both"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"name": "../x"}, "must be a plain file name"),
        ({"chains": ("none", "int8wo")}, "chain 'int8wo' needs CUDA (int8wo runs on CUDA only) but the device is cpu"),
        ({"chains": ("prune:ratio=0.5+int4wo:group_size=32",)}, "needs CUDA (int4wo runs on CUDA only)"),
        # bounded before any work: none of these may fail after an hour of measuring
        ({"threads": 10_000}, "would time the OS scheduler"),
        ({"rounds": 10**6}, "a cell would run for hours"),
        ({"timing_samples": 10**7}, "a cell would run for hours"),
        ({"batch_sizes": (10**6,)}, "a cell would run for hours"),
        ({"name": "x" * 300}, "give one of at most 200"),
        ({"name": "a\nb"}, "has a NUL or line break"),
        ({"chains": ("distil:lr=inf",)}, "distil lr must be a finite number"),
        ({"chains": ("prune:ratio=nan",)}, "prune ratio must be a finite number"),
    ],
)
def test_bad_bench_settings_are_one_line_user_errors(kw, needle):
    with pytest.raises(UserError) as exc:
        _settings(**kw)
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_cuda_only_chains_name_the_fix_and_are_checked_in_default_chains_too(monkeypatch):
    with pytest.raises(UserError) as exc:
        _settings(chains=("int8wo",))
    assert str(exc.value).endswith(
        "use --bench-device cuda (sidenet-bench run --device cuda) on a GPU machine, or int8 on CPU"
    )
    monkeypatch.setattr(TASKS.get("tiny-bert"), "default_chains", ("none", "int4wo:group_size=32"))
    with pytest.raises(UserError, match="chain 'int4wo:group_size=32' needs CUDA"):
        _settings(tasks=("tiny-bert",))
    # `--bench-device cuda` without CUDA: the bench plugin runs with device cpu and skips every cell
    assert _settings(chains=("int8wo",), cuda_missing=True).chains == ("int8wo",)


def _row(task, exit_system, bs, median=1.0, machine_id="m1"):
    info = {"task": task, "chain": "none", "exit": exit_system, "device": "cpu", "batch_size": bs}
    info["machine_id"] = machine_id
    return {"name": f"{task}-{exit_system}-{bs}", "stats": {"median": median}, "extra_info": info}


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


def test_settings_drop_duplicates_and_canonicalise_chains():
    s = _settings(tasks=("tiny-resnet", "tiny-resnet"), batch_sizes=(1, 1, 4), exits=("none", "none"))
    assert (s.tasks, s.batch_sizes, s.exits, s.chains) == (("tiny-resnet",), (1, 4), ("none",), ())
    assert s.chains_for("tiny-resnet") == ("none",)  # no chains given: the task's default_chains
    assert s.n_cells() == 2


def test_cells_put_the_baseline_chain_first_and_measure_noexit_on_it_only():
    s = _settings(chains=("int8", "prune:ratio=0.50", "none"), exits=("none", "sidenet", "sidenet-noexit"))
    assert s.chains_for("tiny-resnet") == ("none", "int8", "prune:ratio=0.5")
    cells = s.cells()
    assert [c for c in cells if c[2] == "sidenet-noexit"] == [("tiny-resnet", "none", "sidenet-noexit", 1)]
    assert len(cells) == 3 + 2 + 2


def test_cell_key_changes_with_what_changes_the_numbers():
    base = _settings()
    key = cell_key(base, "tiny-resnet", "none", "none", 1)
    assert key == cell_key(_settings(), "tiny-resnet", "none", "none", 1)  # stable across sessions
    assert key != cell_key(base, "tiny-resnet", "none", "none", 2)
    assert key != cell_key(base, "tiny-bert", "none", "none", 1)
    assert key != cell_key(base, "tiny-resnet", "none", "sidenet", 1)
    for changed in (_settings(threads=2), _settings(rounds=4), _settings(timing_samples=9), _settings(worker_pairs=1)):
        assert key != cell_key(changed, "tiny-resnet", "none", "none", 1)
    # the threshold choice only changes the `sidenet` cell, never the MainNet or the no-exit overhead
    for choice in (_settings(target_loss_pt=2.0), _settings(threshold=0.8)):
        assert key == cell_key(choice, "tiny-resnet", "none", "none", 1)
        for e in ("sidenet-noexit", "sidenet"):
            same = cell_key(choice, "tiny-resnet", "none", e, 1) == cell_key(base, "tiny-resnet", "none", e, 1)
            assert same == (e == "sidenet-noexit")
    # the task's default target and the same target given explicitly are the same experiment
    from sidenet.tasks import TASKS

    explicit = _settings(target_loss_pt=TASKS.get("tiny-resnet").default_target_loss_pt)
    cell = ("tiny-resnet", "none", "sidenet", 1)
    assert cell_key(base, *cell) == cell_key(explicit, *cell)


def test_stored_cells_are_found_by_key_unless_forced(tmp_path):
    settings = _settings(out=tmp_path, name="ci")
    ctx = BenchContext(settings)
    results_path, _ = ctx.output_paths()
    assert ctx.stored_result("tiny-resnet", "none", "none", 1) is None  # no file yet
    results_path.parent.mkdir(parents=True)
    row = _row("tiny-resnet", "none", 1, machine_id=ctx.machine.id)
    row["extra_info"]["cell_key"] = ctx.cell_key("tiny-resnet", "none", "none", 1)
    results_path.write_text(json.dumps({"benchmarks": [row, {"extra_info": "junk"}, 3]}))
    ctx = BenchContext(settings)
    assert ctx.stored_result("tiny-resnet", "none", "none", 1) == results_path
    assert ctx.stored_result("tiny-resnet", "none", "none", 8) is None
    forced = BenchContext(_settings(out=tmp_path, name="ci", force=True))
    assert forced.stored_result("tiny-resnet", "none", "none", 1) is None
    results_path.write_text("{truncated")
    assert stored_cell_keys(results_path) == set()


def test_merge_keeps_rows_of_skipped_cells(tmp_path):
    path = tmp_path / "r.json"
    stored = [_row("a", "none", 1, 5.0), _row("a", "sidenet", 1, 3.0)]
    path.write_text(json.dumps({"benchmarks": stored}))
    merged = merge_results(path, {"benchmarks": [_row("a", "sidenet", 1, 2.0)]})
    medians = {b["extra_info"]["exit"]: b["stats"]["median"] for b in merged["benchmarks"]}
    assert medians == {"none": 5.0, "sidenet": 2.0}


def test_check_out_dir(tmp_path):
    target = tmp_path / "a" / "b"
    check_out_dir(target, create=False)
    assert not (tmp_path / "a").exists()  # inspecting writes nothing
    check_out_dir(target, create=True)
    assert target.is_dir() and list((target / "results").iterdir()) == []
    (tmp_path / "f").write_text("x")
    for bad in (tmp_path / "f", tmp_path / "f" / "sub"):
        with pytest.raises(UserError, match="not a directory"):
            check_out_dir(bad, create=True)


def test_write_outputs_removes_what_a_killed_run_left(tmp_path):
    results_path, report_path = tmp_path / "results" / "ci.json", tmp_path / "ci.md"
    results_path.parent.mkdir()
    # temp files of runs that are gone: one from before PIDs were recorded, one of a PID that is not running
    stale = [results_path.parent / ".ci.json.x1.partial", tmp_path / f".ci.md.{_dead_pid()}.x2.partial"]
    live = results_path.parent / f".ci.json.{os.getpid()}.x4.partial"  # a concurrent run's, still writing
    other = tmp_path / ".other.md.x3.partial"  # another report's temp file: not ours to remove
    for f in [*stale, other, live]:
        f.write_text("half")
    row = _row("tiny-resnet", "none", 1)
    row["extra_info"].update({k: 1 for k in REQUIRED_KEYS if k not in row["extra_info"]})
    write_outputs({"benchmarks": [row]}, results_path, report_path, write_report)
    assert load_results(results_path)["benchmarks"] and report_path.is_file()
    assert [f.exists() for f in stale] == [False, False] and other.exists() and live.exists()


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_a_fixed_threshold_runs_the_same_cascade_as_selection_at_that_threshold():
    """At the threshold selection chose, the fixed-threshold run reproduces the selected one's numbers; above 1
    nothing exits (the MainNet's accuracy), at 0 everything does."""
    from sidenet.bench.systems import FIXED, prepare_system
    from sidenet.engine.trace import NEVER_EXIT
    from sidenet.exits import parse_exit_system

    ctx = BenchContext(_settings(quiet=True))
    task, sidenet = TASKS.get("tiny-resnet"), parse_exit_system("sidenet")
    data, comp, base = (
        ctx.task_data("tiny-resnet"),
        ctx.compressed("tiny-resnet", "none"),
        ctx.mainnet("tiny-resnet")[0],
    )

    def at(threshold):
        return prepare_system(task, data.data, data.num_classes, sidenet, comp, base, threshold=threshold)

    selected = ctx.prepared_system("tiny-resnet", "none", "sidenet")
    fixed = at(selected.threshold)
    assert fixed.threshold_source == FIXED and selected.threshold_source == "validation"
    for k in ("accuracy", "exit_rate", "flops_per_sample", "predicted_flops_per_sample"):
        assert fixed.test_eval[k] == pytest.approx(selected.test_eval[k])
    for k in ("val_accuracy", "val_mainnet_accuracy", "val_exit_rate", "val_loss_pt"):
        assert fixed.selection[k] == pytest.approx(selected.selection[k])
    assert "margin_se" not in fixed.selection and fixed.sweep == selected.sweep
    never = at(NEVER_EXIT).test_eval
    assert never["exit_rate"] == 0.0
    assert never["accuracy"] == pytest.approx(ctx.chain_eval("tiny-resnet", "none").mainnet_eval["accuracy"])
    always = at(0.0).test_eval
    assert always["exit_rate"] == 1.0 and always["flops_per_sample"] < never["flops_per_sample"]


def test_chains_of_a_task_share_one_fp32_mainnet_loaded_once(monkeypatch, tmp_path):
    """The MainNet is loaded once per task; every chain compresses a copy and keeps the same one as baseline."""
    import sidenet.bench.harness as harness

    calls: list[str] = []
    real = harness.load_or_train_mainnet

    def counting(task, *args, **kwargs):
        calls.append(task.name)
        return real(task, *args, **kwargs)

    monkeypatch.setattr(harness, "load_or_train_mainnet", counting)
    ctx = BenchContext(_settings(out=tmp_path, chains=("none", "int8"), quiet=True))
    plain, int8 = ctx.compressed("tiny-resnet", "none"), ctx.compressed("tiny-resnet", "int8")
    for chain in ("none", "int8"):
        ctx.chain_eval("tiny-resnet", chain)
        ctx.prepared_system("tiny-resnet", chain, "sidenet")
    assert calls == ["tiny-resnet"]
    assert plain.model is ctx.mainnet("tiny-resnet")[0] and int8.model is not plain.model


def _bench(tmp_path, *args, env=None):
    cmd = [sys.executable, "-m", "pytest", "bench/", "--benchmark-only", "-p", "no:cacheprovider", "-q"]
    cmd += ["--bench-rounds", "1", "--bench-timing-samples", "8", "--bench-threads", "1"]
    cmd += ["--bench-out", str(tmp_path / "out"), "--bench-name", "ci", *args]
    env = {**os.environ, **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("what", ["results", "report"])
@pytest.mark.e2e
def test_an_output_file_that_is_a_directory_fails_up_front(tmp_path, what):
    out = tmp_path / "out"
    target = out / "results" / "ci.json" if what == "results" else out / "ci.md"
    target.mkdir(parents=True)
    proc = _bench(tmp_path, "--bench-task", "tiny-resnet")
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "exists and is not a regular file" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert target.is_dir() and list(target.iterdir()) == []


@pytest.mark.e2e
def test_bench_option_errors_are_one_line_usage_errors(tmp_path):
    proc = _bench(tmp_path, "--bench-task", "tiny-resnt", "--bench-threshold", "0.5")
    assert proc.returncode == 4
    assert proc.stderr.startswith("ERROR: unknown task 'tiny-resnt'; did you mean 'tiny-resnet'? (valid: ")
    assert len(proc.stderr.strip().splitlines()) == 1  # pytest adds a blank line after it
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("chain", ["int8wo", "int4wo:group_size=32"])
@pytest.mark.e2e
def test_bench_cuda_only_chain_on_cpu_is_a_one_line_usage_error(tmp_path, chain):
    proc = _bench(tmp_path, "--bench-task", "tiny-bert", "--bench-chain", chain)
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.startswith(f"ERROR: chain {chain!r} needs CUDA (")
    assert "--bench-device cuda" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_a_cell_that_cannot_be_built_says_why_once_and_how_to_fix_it(tmp_path):
    """ONNX Runtime's BERT cuts at one tap only: a multi-exit system on it fails its cell with the reason and the way
    out, printed once (it used to come twice, chained to itself by pytest)."""
    cells = ["--bench-task", "tiny-bert", "--bench-chain", "int8:backend=ort", "--bench-exit", "sidenet-multi"]
    proc = _bench(tmp_path, *cells, "--bench-batch-size", "1")
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert proc.stdout.count("can be cut at one tap only, not at 3") == 1, proc.stdout[-3000:]
    assert "instead of `int8:backend=ort`" in proc.stdout
    assert "During handling of the above exception" not in proc.stdout and "Traceback" not in proc.stdout


@pytest.mark.e2e
def test_bench_cell_with_missing_data_fails_in_one_line(tmp_path):
    """A UserError while preparing (here: CIFAR-10 is online-only) fails each of its cells, no traceback."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "SIDENET_BENCH_DOWNLOAD": ""}
    cells = ["--bench-task", "cifar10", "--bench-exit", "none", "--bench-exit", "sidenet", "--bench-batch-size", "1"]
    proc = _bench(tmp_path, *cells, env=env)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "2 failed" in proc.stdout
    assert proc.stdout.count("CIFAR-10 not found and it has no offline package") >= 2
    assert "Traceback" not in proc.stdout and "def test_cell" not in proc.stdout
    assert list((tmp_path / "out").rglob("*.json")) == []  # failed cells are never written


@pytest.mark.e2e
def test_bench_runs_end_to_end_on_tiny_tasks_and_writes_results_and_report(tmp_path):
    """`pytest bench/ --benchmark-only` on both tiny tasks: every cell measured, JSON + Markdown written."""
    out = tmp_path / "out"
    env = dict(os.environ)
    env.setdefault("SIDENET_BENCH_CACHE", str(tmp_path / "cache"))
    cmd = [
        sys.executable, "-m", "pytest", "bench/", "--benchmark-only", "-p", "no:cacheprovider",
        "--bench-task", "tiny-resnet", "--bench-task", "tiny-bert", "--bench-batch-size", "1",
        "--bench-batch-size", "8", "--bench-rounds", "4", "--bench-timing-samples", "16", "--bench-threads", "1",
        "--bench-min-round-ms", "0",
        "--bench-out", str(out), "--bench-name", "ci", f"--benchmark-json={tmp_path / 'pb.json'}",
        "--bench-chain", "none", "--bench-chain", "int8",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # how far the run is, a line per cell: 60 cells here, the last says all were measured
    assert "sidenet-bench: cell 1/60 (1 measured, 0 skipped)" in proc.stdout
    assert "sidenet-bench: cell 60/60 (60 measured, 0 skipped)" in proc.stdout
    results = load_results(out / "results" / "ci.json")
    rows = results["benchmarks"]
    key = ("task", "chain", "exit", "batch_size")
    cells = {tuple(b["extra_info"][k] for k in key) for b in rows}
    eenets = ("eenet", "eenet:threshold=val")
    assert cells == {(t, "none", e, bs) for t in ("tiny-resnet", "tiny-bert")
                     for e in ("none", "sidenet", "sidenet-noexit", "sidenet-multi", "learned", "cascade", *eenets)
                     for bs in (1, 8)} | {
        (t, "int8", e, bs) for t in ("tiny-resnet", "tiny-bert")
        for e in ("none", "sidenet", "sidenet-multi", "learned", "cascade", *eenets) for bs in (1, 8)
    }  # fmt: skip
    for b in rows:
        info = b["extra_info"]
        assert info["dtype"] == ("int8" if info["chain"] == "int8" else "fp32")
        if info["chain"] == "int8":  # int8 FLOPs are counted like fp32 ones; the chain is paired with fp32 too
            assert [s["compressor"] for s in info["compression"]] == ["int8"]
            assert len(info["paired_speedup"]) == 4
            if info["exit"] == "none":
                assert info["flops_per_sample"] == pytest.approx(info["mainnet_flops_per_sample"], rel=1e-6)
    # one variant worker pair per task and chain, serving its cells in run order (each from a fresh copy); never
    # one that served another task or chain
    by_chain: dict[tuple[str, str], list[dict]] = {}
    for b in rows:
        by_chain.setdefault((b["extra_info"]["task"], b["extra_info"]["chain"]), []).append(b["extra_info"])
    pids_of = {k: {p["variant_pid"] for i in infos for p in i["workers"]["pairs"]} for k, infos in by_chain.items()}
    assert all(len(pids) == 2 for pids in pids_of.values())
    assert len(set().union(*pids_of.values())) == 2 * len(by_chain)
    for (task, chain), infos in by_chain.items():
        before = [p["variant_served_before"] for i in infos for p in i["workers"]["pairs"]]
        assert sorted(len(b) for b in before) == sorted(list(range(len(infos))) * 2)
        assert all(label.startswith(f"{task} {chain} ") for b in before for label in b)
        assert all(i["workers"]["reuse"] == "task-chain" for i in infos)
        assert all(p["variant_fresh_copy"] is True for i in infos for p in i["workers"]["pairs"])
    rows = [b for b in rows if b["extra_info"]["chain"] == "none"]
    for b in rows:
        info = b["extra_info"]
        assert all(k in info for k in REQUIRED_KEYS)
        assert info["threads"] == 1
        assert "--bench-name ci" in info["run"]["command"] and info["run"]["when"].endswith("UTC")
        assert info["run"]["command"].startswith("python -m pytest bench/")  # not "__main__.py bench/"
        # every row says what made it: the machine, the timing protocol, the MainNet's training precision
        assert info["machine_id"] == MachineFingerprint.from_dict(info["machine"]).id
        assert info["timing_protocol"] == TIMING_PROTOCOL and info["train_precision"] in ("fp32", "bf16")
        assert {"onnxruntime", "torchao", "torch-pruning"} <= set(info["versions"])
        assert info["timing_samples"] == 8 and info["timing_slices"] == 2  # 4 rounds: two slices, each timed twice
        assert b["stats"]["rounds"] == 4
        # timed in two worker pairs (one slice each), never in this bench process, by workers that trained nothing
        workers = info["workers"]
        pids = {p["variant_pid"] for p in workers["pairs"]} | {p["reference_pid"] for p in workers["pairs"]}
        assert len(workers["pairs"]) == 2 and len(pids) == 4 and workers["bench_pid"] not in pids
        assert all(p["variant_parent_pid"] != workers["bench_pid"] for p in workers["pairs"])  # forkserver children
        assert [p["slices"] for p in workers["pairs"]] == [[0], [1]]
        assert all(len(p["round_s"]) == 2 and len(p["reference_s"]) == 1 for p in workers["pairs"])
        assert workers["trained_in_worker"] is False and workers["prediction_agreement"] >= 0.99
        assert 0 <= info["machine_load"]["other_cpu_share"] <= 1
        if info["exit"] == "sidenet-noexit":
            assert info["exit_rate"] == 0.0
        if info["exit"] == "none":  # the fp32 MainNet paired with itself: an A/A noise floor, not a speedup
            assert len(info["aa_paired_ratios"]) == 4 and "paired_speedup" not in info
        if info["exit"] != "none":
            assert len(info["paired_speedup"]) == 4 and info["pairing"] == "aba"
        if info["exit"] in ("sidenet", "sidenet-noexit"):
            # the SideNet adds FLOPs on top of the MainNet only for rows that do not exit
            assert info["flops_breakdown"]["head_side"] > 0
        if info["exit"] in ("sidenet", "sidenet-multi", "learned", "cascade"):  # every exit system: its oracle bound
            oracle = info["oracle"]
            assert oracle["flops_at_accuracy"] <= info["predicted_flops_per_sample"] * (1 + 1e-9)
            assert len(info["exit_rates"]) == len(info["taps"]) and sum(info["exit_rates"]) == pytest.approx(
                info["exit_rate"]
            )
        if info["exit"] in ("sidenet-multi", "learned"):
            assert info["taps"] == (
                ["layer1", "layer2", "layer3"] if info["task"] == "tiny-resnet" else ["1", "2", "3"]
            )
        if info["exit"].startswith("eenet"):  # retrains the MainNet, says where it put its exits and if they collapsed
            details = info["system_details"]
            assert info["retrains_backbone"] is True and details["kind"] == "eenet"
            assert details["taps"] == info["taps"] and len(details["exit_costs"]) == 2
            assert isinstance(details["collapse"]["collapsed"], bool)
        if info["exit"] == "cascade":  # network selection: one exit, the small network's answer
            assert info["taps"] == ["small"] and info["exit_system"]["small"] == "task"
        if info["exit"] == "sidenet":  # fp32 rows do not depend on their batch-mates
            bc = info["batch_composition"]
            assert bc["changed"] == 0 and bc["survivors"] == round((1 - info["exit_rate"]) * bc["test_rows"])
        if info["exit"] == "sidenet":  # measured on the one path, with what the SideNet-only path recorded
            assert set(info["component_latency_s"]) == {"head_side", "rest"} and 0 <= info["side_ece"] <= 1
            assert info["threshold_source"] == "validation" and set(info["reliability"]) == {"main", "side"}
        if info["exit"] == "sidenet-noexit":  # the same SideNet, nothing exits: no selection of its own, no parts timed
            assert info["threshold_source"] == "never-exit" and info.get("component_latency_s") is None
            assert info["oracle"] is None and info["batch_composition"] is None
    main = {b["extra_info"]["task"]: b["extra_info"] for b in rows if b["extra_info"]["exit"] == "none"}
    noexit = {b["extra_info"]["task"]: b["extra_info"] for b in rows if b["extra_info"]["exit"] == "sidenet-noexit"}
    for task in main:
        assert noexit[task]["flops_per_sample"] > main[task]["flops_per_sample"]
        assert noexit[task]["test_accuracy"] == main[task]["test_accuracy"]
    # pytest-benchmark's own JSON carries the same contract (other tools read it)
    assert load_results(tmp_path / "pb.json")["benchmarks"]
    report = (out / "ci.md").read_text()
    assert "## Task `tiny-resnet`" in report and "## Task `tiny-bert`" in report
    assert report.count("`int8` + SideNet") >= 2  # the complementarity table of each task
    assert not list(out.rglob("*.partial"))


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-CUDA path")
@pytest.mark.e2e
def test_bench_on_cuda_without_cuda_skips_every_cell_cleanly(tmp_path):
    """`tox -e gpu` on a machine without CUDA: every cell skipped, exit 0, nothing written."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "bench/",
        "--benchmark-only",
        "-p",
        "no:cacheprovider",
        "-q",
        "--bench-device",
        "cuda",
        "--bench-task",
        "tiny-resnet",
        "--bench-task",
        "tiny-bert",
        "--bench-chain",
        "none",
        "--bench-chain",
        "int8wo",  # CUDA-only: valid for the CUDA asked for, so skipped too rather than refused
        "--bench-out",
        str(tmp_path / "out"),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "CUDA not available" in proc.stdout and " skipped" in proc.stdout
    assert not list((tmp_path / "out").rglob("*.json")) and not list((tmp_path / "out").rglob("*.md"))
