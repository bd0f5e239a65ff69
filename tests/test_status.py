"""The run says what it is busy with: the library announces training, the bench's progress line listens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sidenet.pipeline import load_or_train_mainnet, load_task_data
from sidenet.status import announce, listen
from sidenet.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]


def test_listeners_hear_announcements_until_they_stop() -> None:
    heard: list[str] = []
    stop = listen(heard.append)
    announce("training something")
    stop()
    announce("nobody listens")
    stop()  # twice is harmless
    assert heard == ["training something"]


def test_training_a_mainnet_is_announced_and_loading_it_is_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path / "cache"))
    task = TASKS.get("tiny-resnet")
    data = load_task_data(task)
    heard: list[str] = []
    stop = listen(heard.append)
    try:
        load_or_train_mainnet(task, data.data, data.num_classes, progress=False)
        assert heard == ["training the tiny-resnet MainNet"]
        load_or_train_mainnet(task, data.data, data.num_classes, progress=False)  # cached now
        assert heard == ["training the tiny-resnet MainNet"]
    finally:
        stop()


def test_the_bench_says_what_a_cell_is_training_while_it_runs(tmp_path: Path) -> None:
    """Out of pytest's capture, in order: the MainNet's training, the SideNet's, then the cell's progress line."""
    env = {**os.environ, "SIDENET_BENCH_CACHE": str(tmp_path / "cache")}
    cmd = [
        sys.executable, "-m", "pytest", "bench/", "--benchmark-only", "-p", "no:cacheprovider",
        "--bench-task", "tiny-resnet", "--bench-exit", "sidenet", "--bench-chain", "none", "--bench-batch-size", "1",
        "--bench-rounds", "2", "--bench-timing-samples", "8", "--bench-quiet", "--bench-out", str(tmp_path / "out"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [ln[ln.index("sidenet-bench: cell") :] for ln in proc.stdout.splitlines() if "sidenet-bench: cell" in ln]
    assert lines[0].startswith("sidenet-bench: cell 1/1: training the tiny-resnet MainNet (")
    assert lines[1].startswith("sidenet-bench: cell 1/1: training a tiny-resnet SideNet at tap layer1 (")
    assert lines[2].startswith("sidenet-bench: cell 1/1 (1 measured, 0 skipped)")
