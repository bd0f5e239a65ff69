"""GLUE SST-2 through Hugging Face ``datasets`` (online only; ``datasets`` is an optional dependency).

GLUE hides the test labels (all -1), so the official validation set (872) becomes our test set and our
validation set is a seeded stratified sample of the official training set.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from sidenet.data._common import one_line
from sidenet.data.splits import stratified_split
from sidenet.data.types import Splits
from sidenet_core.errors import DataNotFoundError, UserError

log = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = ("negative", "positive")  # GLUE's label names for sst2
DATASET = "nyu-mll/glue"  # the Hub's canonical id for "glue"
CONFIG = "sst2"


def load_sst2(val_size: int = 2000, seed: int = 0, load_dataset: Callable[..., Any] | None = None) -> Splits:
    """val = seeded stratified ``val_size`` of GLUE train, train = the rest; test = GLUE validation.

    ``load_dataset`` defaults to ``datasets.load_dataset``; tests inject a fake so they need no network.
    """
    loader = load_dataset or _hf_load_dataset()
    log.info("loading %s/%s with %s", DATASET, CONFIG, getattr(loader, "__qualname__", loader))
    try:
        ds = loader(DATASET, CONFIG)
    except OSError as exc:  # includes ConnectionError and the hub's not-found errors
        raise DataNotFoundError(
            f"SST-2 download failed ({one_line(exc)}); run on a machine with internet, "
            "or use the offline text task (rotten-tomatoes)"
        ) from exc
    train_texts, train_y = _columns(ds, "train")
    test_texts, test_y = _columns(ds, "validation")
    n = len(train_y)
    if not 0 <= val_size < n:
        raise UserError(f"val_size must be in [0, {n}) for SST-2's {n} training sentences, got {val_size}")
    fit_idx, val_idx = stratified_split(train_y, [(n - val_size) / n, val_size / n], seed)
    return Splits(
        train=(_take(train_texts, fit_idx), train_y[fit_idx]),
        val=(_take(train_texts, val_idx), train_y[val_idx]),
        test=(tuple(test_texts), test_y),
        classes=CLASSES,
        source=(
            f"GLUE SST-2 via HF datasets ({DATASET}/{CONFIG}); train = GLUE train minus a seeded "
            f"(seed={seed}) stratified val of {val_size}; test = GLUE validation ({len(test_y)}), "
            "as GLUE hides its test labels"
        ),
    )


def _hf_load_dataset() -> Callable[..., Any]:
    try:
        from datasets import load_dataset
    except ImportError as exc:
        raise UserError(
            "SST-2 needs Hugging Face datasets: `pip install datasets` (or `pip install sidenet-bench[online]`)"
        ) from exc
    return load_dataset


def _columns(ds: Any, split: str) -> tuple[list[str], torch.Tensor]:
    """Sentences (stripped; GLUE's have a trailing space) and labels of one split, checked."""
    try:
        part = ds[split]
        texts = [str(t).strip() for t in part["sentence"]]
        labels = torch.tensor([int(v) for v in part["label"]], dtype=torch.int64)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(
            f"SST-2 {split!r} split lacks sentence/label columns ({one_line(exc)}); update `datasets`"
        ) from exc
    if len(texts) != len(labels) or not texts:
        raise UserError(f"SST-2 {split!r} split has {len(texts)} sentences and {len(labels)} labels; re-download it")
    if int(labels.min()) < 0 or int(labels.max()) >= len(CLASSES):
        raise UserError(f"SST-2 {split!r} split has labels outside 0/1 (hidden test labels?); it cannot be used")
    return texts, labels


def _take(texts: Sequence[str], idx: torch.Tensor) -> tuple[str, ...]:
    return tuple(texts[i] for i in idx.tolist())
