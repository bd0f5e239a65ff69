"""Artifact cache for trained MainNets and SideNets.

Keyed by a hash of the recipe (a JSON-able dict) plus the library versions that can change the
result, so a changed recipe or an upgraded torch never reuses a stale model. Weights are written
with safetensors (no code runs on load) through a temp file + rename; a file that fails to load is
reported, deleted and rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from sidenet import atomic
from sidenet.errors import UserError

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


def cache_dir() -> Path:
    """``$SIDENET_BENCH_CACHE``, else ``$XDG_CACHE_HOME/sidenet-bench``, else ``~/.cache/sidenet-bench``."""
    env = os.environ.get("SIDENET_BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "sidenet-bench"


def library_versions() -> dict[str, str]:
    import torchvision

    versions = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    try:
        import transformers

        versions["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover - transformers is a hard dependency
        pass
    return versions


def artifact_key(kind: str, recipe: dict[str, Any]) -> str:
    payload = {"kind": kind, "recipe": recipe, "versions": library_versions(), "format": CACHE_FORMAT}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return f"{kind}-{hashlib.sha256(blob).hexdigest()[:16]}"


def _paths(key: str) -> tuple[Path, Path]:
    root = cache_dir()
    return root / f"{key}.safetensors", root / f"{key}.json"


def _load(key: str, read: Callable[[Path], Any]) -> tuple[Any, dict[str, Any]] | None:
    """``(read(weights_file), metadata)`` of a complete entry; an unusable entry is deleted and None returned."""
    weights, meta_path = _paths(key)
    if not weights.exists() or not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("key") != key:
            raise ValueError("metadata key mismatch")
        payload = read(weights)
    except Exception as exc:  # corrupted/partial/foreign file: rebuild rather than trust it
        log.warning("cache entry %s is unusable (%s); it will be rebuilt", key, exc)
        for p in (weights, meta_path):
            p.unlink(missing_ok=True)
        return None
    return payload, meta


def _store(key: str, write: Callable[[Path], None], meta: dict[str, Any]) -> None:
    """``write(temp_file)`` the weights, then the metadata (its presence marks a complete entry)."""
    weights, meta_path = _paths(key)
    try:
        weights.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cache dir {str(weights.parent)!r} is not writable ({exc}); set SIDENET_BENCH_CACHE") from None
    atomic.write_with(weights, write)
    atomic.write_json(meta_path, {**meta, "key": key, "versions": library_versions()})


def load_into(module: nn.Module, key: str) -> dict[str, Any] | None:
    """Load cached weights into ``module`` (strict: a shape mismatch rebuilds); return the metadata, or None."""
    hit = _load(key, lambda path: load_model(module, str(path), strict=True))
    return None if hit is None else hit[1]


def store(module: nn.Module, key: str, meta: dict[str, Any]) -> None:
    """Save a module's weights, then metadata."""
    _store(key, lambda path: save_model(module, str(path)), meta)


def load_tensors(key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Cached tensors + metadata stored by :func:`store_tensors`, or None if absent/unusable."""
    return _load(key, lambda path: load_file(str(path)))


def store_tensors(key: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save named tensors (safetensors), then metadata; same atomicity as :func:`store`."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _store(key, lambda path: save_file(tensors, str(path)), meta)
