"""Fashion-MNIST: offline from the Debian package ``dataset-fashion-mnist`` (or any folder holding the four
official IDX .gz files), online through torchvision as a fallback."""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from sidenet.data._common import cache_root, download_allowed, download_root, one_line, user_roots
from sidenet.data.splits import carve_val_from_train
from sidenet.data.types import Splits
from sidenet_core.errors import DataNotFoundError, UserError

log = logging.getLogger(__name__)

# Same order as torchvision.datasets.FashionMNIST.classes (label i is CLASSES[i]).
CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_TORCHVISION_SUBDIR = Path("FashionMNIST") / "raw"


def load_fashion_mnist(
    root: str | os.PathLike[str] | None = None, download: bool = False, val_size: int = 5000, seed: int = 0
) -> Splits:
    """Official 60k train minus a seeded stratified ``val_size`` validation split; official 10k test."""
    folder = find_fashion_mnist(root)
    if folder is None:
        if not download_allowed(download):
            raise DataNotFoundError(
                f"Fashion-MNIST not found (looked in {root or 'root'}, $SIDENET_BENCH_DATA, {DEBIAN_DIR}, "
                f"{cache_root()}); "
                "install it offline with `apt-get install dataset-fashion-mnist`, "
                "or allow the download with download=True / env SIDENET_BENCH_DOWNLOAD=1"
            )
        folder = _download(root)
    log.info("loading Fashion-MNIST from %s", folder)
    train_x, train_y = _read_pair(folder, "train")
    test_x, test_y = _read_pair(folder, "test")
    return carve_val_from_train(
        "Fashion-MNIST IDX files", folder, (train_x, train_y), (test_x, test_y), CLASSES, val_size, seed
    )


def find_fashion_mnist(root: str | os.PathLike[str] | None = None) -> Path | None:
    """First folder holding all four IDX .gz files: root, $SIDENET_BENCH_DATA (each flat or in torchvision's
    ``FashionMNIST/raw`` layout), the Debian package folder, then the download cache."""
    cache = cache_root()
    candidates = [p for base in user_roots(root) for p in (base, base / _TORCHVISION_SUBDIR)]
    candidates += [DEBIAN_DIR, cache, cache / _TORCHVISION_SUBDIR]
    for folder in candidates:
        present = [(folder / name).is_file() for name in FILES.values()]
        if all(present):
            return folder
        if any(present):
            log.warning("ignoring %s: it holds only some of the Fashion-MNIST files %s", folder, list(FILES.values()))
    return None


def _download(root: str | os.PathLike[str] | None) -> Path:
    """Fetch the official files with torchvision (it verifies their md5 sums)."""
    import torchvision

    target = download_root(root)
    log.info("downloading Fashion-MNIST to %s", target)
    try:
        torchvision.datasets.FashionMNIST(root=str(target), train=True, download=True)
    except (OSError, RuntimeError) as exc:
        raise DataNotFoundError(
            f"Fashion-MNIST download to {target} failed ({one_line(exc)}); "
            "install it offline with `apt-get install dataset-fashion-mnist`"
        ) from exc
    return target / _TORCHVISION_SUBDIR


def _read_pair(folder: Path, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 [N, 1, 28, 28] in [0, 1] and int64 labels, checked for consistency."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    images = _read_idx(folder / FILES[f"{part}_images"], read_image_file)
    labels = _read_idx(folder / FILES[f"{part}_labels"], read_label_file)
    if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28) or len(images) != len(labels):
        raise UserError(
            f"Fashion-MNIST {part} files in {folder} disagree: images {tuple(images.shape)}, "
            f"{len(labels)} labels; re-install dataset-fashion-mnist or delete the folder and re-download"
        )
    if len(labels) and int(labels.max()) >= len(CLASSES):
        raise UserError(f"Fashion-MNIST {part} labels in {folder} exceed 9; the files are not Fashion-MNIST")
    return images.unsqueeze(1).float().div_(255.0), labels.long()


def _read_idx(path: Path, reader: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """torchvision's IDX readers take an uncompressed file, so gunzip into a private temp folder first."""
    try:
        with tempfile.TemporaryDirectory(prefix="sidenet-idx-") as tmp:
            plain = Path(tmp) / path.stem
            with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
            return reader(str(plain))
    except (OSError, EOFError, AssertionError, TypeError, ValueError, RuntimeError) as exc:
        raise UserError(
            f"cannot read IDX file {path} ({one_line(exc)}); "
            "re-install dataset-fashion-mnist, or delete the file and re-download"
        ) from exc
