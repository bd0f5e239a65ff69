"""CIFAR-10: online only (no offline package exists). torchvision downloads it; we read the
``cifar-10-batches-py`` pickles ourselves, because torchvision's reader insists on the official md5 sums,
which would make the loader untestable without the real 170 MB archive."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sidenet.data._common import download_allowed, download_root, load_array_pickle, one_line, search_roots
from sidenet.data.splits import carve_val_from_train
from sidenet.data.types import Splits
from sidenet_core.errors import DataNotFoundError, UserError

log = logging.getLogger(__name__)

BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
REQUIRED = (*TRAIN_BATCHES, TEST_BATCH, META)


def load_cifar10(
    root: str | os.PathLike[str] | None = None, download: bool = False, val_size: int = 5000, seed: int = 0
) -> Splits:
    """Official 50k train minus a seeded stratified ``val_size`` validation split; official 10k test."""
    folder = find_cifar10(root)
    if folder is None:
        if not download_allowed(download):
            raise DataNotFoundError(
                "CIFAR-10 not found and it has no offline package; pass download=True (or set "
                "SIDENET_BENCH_DOWNLOAD=1) on a machine with internet, "
                f"or point root at a folder holding `{BATCH_DIR}`"
            )
        folder = _download(root)
    log.info("loading CIFAR-10 from %s", folder)
    classes = _read_classes(folder / META)
    train_x, train_y = _read_batches(folder, TRAIN_BATCHES, len(classes))
    test_x, test_y = _read_batches(folder, (TEST_BATCH,), len(classes))
    return carve_val_from_train(
        "CIFAR-10 python batches", folder, (train_x, train_y), (test_x, test_y), classes, val_size, seed
    )


def find_cifar10(root: str | os.PathLike[str] | None = None) -> Path | None:
    """First complete ``cifar-10-batches-py`` folder in (or equal to) root, $SIDENET_BENCH_DATA, the cache."""
    for base in search_roots(root):
        for folder in (base / BATCH_DIR, base):
            if all((folder / name).is_file() for name in REQUIRED):
                return folder
    return None


def _download(root: str | os.PathLike[str] | None) -> Path:
    """Download and unpack the official archive with torchvision (it checks the md5 sums)."""
    import torchvision

    target = download_root(root)
    log.info("downloading CIFAR-10 to %s", target)
    try:
        torchvision.datasets.CIFAR10(root=str(target), train=True, download=True)
    except (OSError, RuntimeError) as exc:
        raise DataNotFoundError(
            f"CIFAR-10 download to {target} failed ({one_line(exc)}); retry on a machine with internet "
            f"or point root at an existing `{BATCH_DIR}` folder"
        ) from exc
    return target / BATCH_DIR


def _unpickle(path: Path) -> dict[str, Any]:
    # The batches are Python 2 pickles (hence encoding="latin1", as torchvision does), read with an
    # unpickler that builds arrays and plain containers only (load_array_pickle): a file cannot run code.
    try:
        with open(path, "rb") as fh:
            data = load_array_pickle(fh)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, ValueError) as exc:
        raise UserError(
            f"cannot read CIFAR-10 file {path} ({one_line(exc)}); delete {path.parent} and re-download"
        ) from exc
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a CIFAR-10 python batch (no dict inside); delete it and re-download")
    return data


def _read_classes(path: Path) -> tuple[str, ...]:
    names = _unpickle(path).get("label_names")
    if not names or not all(isinstance(n, str) for n in names):
        raise UserError(f"{path} has no `label_names` list; delete {path.parent} and re-download")
    return tuple(names)


def _read_batches(folder: Path, names: tuple[str, ...], num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate batches: rows of 3072 uint8 (R plane, G plane, B plane) → float32 [N, 3, 32, 32] / 255."""
    xs, ys = [], []
    for name in names:
        batch = _unpickle(folder / name)
        x = np.asarray(batch.get("data"))
        y = np.asarray(batch.get("labels", batch.get("fine_labels")))
        if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or x.dtype != np.uint8 or y.shape != (len(x),):
            raise UserError(f"{folder / name} is not a CIFAR-10 batch (data {x.shape} {x.dtype}, labels {y.shape})")
        xs.append(x)
        ys.append(y.astype(np.int64))
    labels = torch.from_numpy(np.concatenate(ys))
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise UserError(f"CIFAR-10 labels in {folder} fall outside the {num_classes} classes of {META}")
    images = torch.from_numpy(np.concatenate(xs)).reshape(-1, 3, 32, 32).float().div_(255.0)
    return images, labels
