"""Shared fixtures: an isolated artifact cache, a fixed seed, and tiny ResNet / BERT MainNets."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_models import (
    make_tiny_bert,
    make_tiny_resnet,
    tiny_image_data,
    tiny_text_data,
    train_tiny_bert,
    train_tiny_resnet,
)
from torch import nn


def pytest_configure(config: pytest.Config) -> None:
    # Tiny models on a shared 2-core machine: intra-op threads only add contention (a 16x16 ResNet
    # forward goes from ~2 ms to ~0.4 s with 2 threads under load). Override with SIDENET_TEST_THREADS.
    torch.set_num_threads(int(os.environ.get("SIDENET_TEST_THREADS", "1")))


@pytest.fixture(scope="session", autouse=True)
def session_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point the artifact cache at a per-session temp dir, never the user's cache.

    Session-scoped so module-scoped fixtures that train models see it too; tests that need a fresh
    cache set ``SIDENET_BENCH_CACHE`` to their own ``tmp_path`` with ``monkeypatch``.
    """
    path = tmp_path_factory.mktemp("sidenet-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIDENET_BENCH_CACHE", str(path))
        yield path


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_resnet() -> nn.Module:
    """A width-8 ResNet-10 on 1-channel inputs with 4 classes (torchvision layout), eval mode."""
    return make_tiny_resnet()


@pytest.fixture
def tiny_bert() -> nn.Module:
    """A random 4-layer BERT classifier (hidden 32, vocab 50, 2 labels), eval mode."""
    return make_tiny_bert()


def padded_text_batch(lengths: list[int], vocab_size: int = 50, max_len: int | None = None) -> dict[str, torch.Tensor]:
    """``input_ids`` + ``attention_mask`` for rows of the given lengths, zero-padded to the longest."""
    gen = torch.Generator().manual_seed(1)
    width = max_len or max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(5, vocab_size, (n,), generator=gen)
        ids[i, 0] = 2  # [CLS]-like start token
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture
def make_text_batch():
    """Factory fixture: ``make_text_batch(lengths)`` → a padded BERT batch."""
    return padded_text_batch


@pytest.fixture
def text_batch() -> dict[str, torch.Tensor]:
    """Six rows of different lengths (real padding: attention_mask has zeros)."""
    batch = padded_text_batch([12, 5, 9, 3, 12, 7])
    assert (batch["attention_mask"] == 0).any()
    return batch


# Tiny data and briefly trained tiny MainNets for the compressor tests. Module-scoped: each test module
# trains its own (the compressors must never see a model another module has changed).
@pytest.fixture(scope="module")
def image_data() -> dict[str, Any]:
    return tiny_image_data()


@pytest.fixture(scope="module")
def text_data() -> dict[str, Any]:
    return tiny_text_data()


@pytest.fixture(scope="module")
def trained_resnet(image_data: dict[str, Any]) -> nn.Module:
    return train_tiny_resnet(image_data["train"])


@pytest.fixture(scope="module")
def trained_bert(text_data: dict[str, Any]) -> nn.Module:
    return train_tiny_bert(text_data["train"])
