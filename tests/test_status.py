"""The run says what it is busy with: the library announces training, the bench's progress line listens."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidenet.pipeline import load_or_train_mainnet, load_task_data
from sidenet.status import announce, listen
from sidenet.tasks import TASKS


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
