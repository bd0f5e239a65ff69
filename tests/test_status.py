"""The run says what it is busy with: the library announces training, the bench's progress line listens; and what
the user must know now (notices: a cache entry rebuilt, a wait on another run's lock) reaches the terminal."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sidenet.bench.pipeline import load_or_train_mainnet, load_task_data
from sidenet.tasks import TASKS
from sidenet_core.status import announce, listen, listen_notices, notify

ROOT = Path(__file__).resolve().parents[1]


def test_listeners_hear_announcements_until_they_stop() -> None:
    heard: list[str] = []
    stop = listen(heard.append)
    announce("training something")
    stop()
    announce("nobody listens")
    stop()  # twice is harmless
    assert heard == ["training something"]


def test_notices_and_the_libraries_warnings_reach_notice_listeners_only() -> None:
    """Warnings logged under ``sidenet`` (the cache's rebuild, the store's lock wait) are notices while someone
    listens; they never reach announcement listeners (a timing worker refuses every announcement) and info records
    stay in the log."""
    notices: list[str] = []
    announced: list[str] = []
    stop_announced = listen(announced.append)
    stop = listen_notices(notices.append)
    try:
        logging.getLogger("sidenet.bench.store").warning("another run is writing %s; waiting for it", "r.json")
        logging.getLogger("sidenet.engine.cache").info("loaded from cache")
        logging.getLogger("elsewhere").warning("not ours")
        notify("a direct notice\nover two lines")
    finally:
        stop()
        stop_announced()
    logging.getLogger("sidenet.engine.cache").warning("nobody listens")
    stop()  # twice is harmless
    assert notices == ["another run is writing r.json; waiting for it", "a direct notice\nover two lines"]
    assert announced == []
    assert not any(type(h).__name__ == "_LogBridge" for h in logging.getLogger("sidenet").handlers)


def test_a_failing_notice_listener_never_breaks_the_code_that_logged() -> None:
    def broken(message: str) -> None:
        raise OSError("the terminal is gone")

    stop = listen_notices(broken)
    try:
        logging.raiseExceptions, previous = False, logging.raiseExceptions  # no "--- Logging error ---" noise
        try:
            logging.getLogger("sidenet.engine.cache").warning("cache entry x: unusable; deleted, will rebuild")
        finally:
            logging.raiseExceptions = previous
    finally:
        stop()


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


def _bench(tmp_path: Path, *extra: str) -> list[str]:
    env = {**os.environ, "SIDENET_BENCH_CACHE": str(tmp_path / "cache")}
    cmd = [
        sys.executable, "-m", "pytest", "bench/", "--benchmark-only", "-p", "no:cacheprovider",
        "--bench-task", "tiny-resnet", "--bench-exit", "sidenet", "--bench-chain", "none", "--bench-batch-size", "1",
        "--bench-batch-size", "2", "--bench-rounds", "2", "--bench-timing-samples", "8", "--bench-min-round-ms", "0",
        "--bench-out", str(tmp_path / "out"), *extra,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return [ln[ln.index("sidenet-bench: cell") :] for ln in proc.stdout.splitlines() if "sidenet-bench: cell" in ln]


@pytest.mark.e2e
def test_the_progress_line_counts_cells_says_what_trains_and_estimates_from_recorded_costs(tmp_path: Path) -> None:
    """Out of pytest's capture, in order: the MainNet's training, the SideNet's, then a line per finished cell with
    the right counts. A second run of the same cells estimates what is left from the first run's recorded costs
    (the first run's first cell trained, so it is estimated from this run's pace until it has a warm record)."""
    lines = _bench(tmp_path)
    assert lines[0].startswith("sidenet-bench: cell 1/2: training the tiny-resnet MainNet (")
    assert lines[1].startswith("sidenet-bench: cell 1/2: training a tiny-resnet SideNet at tap layer1 (")
    done = [ln for ln in lines if re.match(r"sidenet-bench: cell \d+/\d+ \(", ln)]  # not what a cell starts
    assert done[0].startswith("sidenet-bench: cell 1/2 (1 measured, 0 skipped)")
    assert "this run's pace" in done[0] or "not estimated yet" in done[0]
    assert done[-1].startswith("sidenet-bench: cell 2/2 (2 measured, 0 skipped)") and "left" not in done[-1]

    again = _bench(tmp_path, "--bench-force")
    assert not [ln for ln in again if ": training" in ln]  # everything cached now
    assert again[0].startswith("sidenet-bench: cell 1/2 (1 measured, 0 skipped)")
    assert "left for 1 cell(s) (recorded costs)" in again[0] and "training not included" not in again[0]

    resumed = _bench(tmp_path)  # both stored: skipped, nothing left to estimate
    assert resumed[-1].startswith("sidenet-bench: cell 2/2 (0 measured, 2 skipped)")


@pytest.mark.e2e
def test_the_progress_line_is_silent_with_quiet(tmp_path: Path) -> None:
    assert _bench(tmp_path, "--bench-quiet") == []
    assert _bench(tmp_path, "-q", "--bench-force") == []
