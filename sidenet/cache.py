"""Artifact cache for trained MainNets and SideNets.

Keyed by a hash of the recipe (a JSON-able dict) plus the library versions that can change the
result, so a changed recipe or an upgraded torch never reuses a stale model. Weights are written
with safetensors (no code runs on load) through a temp file + rename; a file that fails to load is
reported, deleted and rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
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

CACHE_FORMAT = 2  # 2: keys hash every measured library's version (was torch, torchvision, transformers)


def cache_dir() -> Path:
    """``$SIDENET_BENCH_CACHE``, else ``$XDG_CACHE_HOME/sidenet-bench``, else ``~/.cache/sidenet-bench``."""
    env = os.environ.get("SIDENET_BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "sidenet-bench"


# Every library on the measured path: a different version of any of them can change a trained model, a
# compressed one or a timing, so cell keys and artifact keys hash them all (FINDINGS: optimum's quantiser and
# torch-pruning change what they produce between releases).
MEASURED_LIBRARIES: tuple[str, ...] = (
    "torch",
    "torchvision",
    "transformers",
    "onnxruntime",
    "onnx",
    "optimum",
    "optimum-onnx",
    "torchao",
    "torch-pruning",
    "numpy",
)
# What a trained fp32 MainNet depends on: an upgraded ONNX Runtime or torch-pruning does not retrain it.
TRAINING_LIBRARIES: tuple[str, ...] = ("torch", "torchvision", "transformers", "numpy")


def library_versions(libraries: tuple[str, ...] = MEASURED_LIBRARIES) -> dict[str, str]:
    """Installed versions (``"absent"`` when not installed). torch and torchvision report their build too
    (``2.14.1+cu130`` vs ``+cpu``): the module's ``__version__``, not the distribution's."""
    versions: dict[str, str] = {}
    for name in libraries:
        if name in ("torch", "torchvision"):
            versions[name] = _module_version(name)
            continue
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _module_version(name: str) -> str:
    try:
        return str(importlib.import_module(name).__version__)
    except ImportError:  # pragma: no cover - both are hard dependencies
        return "absent"


def artifact_key(kind: str, recipe: dict[str, Any], libraries: tuple[str, ...] = MEASURED_LIBRARIES) -> str:
    """``<kind>-<hash>`` of the recipe, the versions of ``libraries`` and the cache format."""
    payload = {"kind": kind, "recipe": recipe, "versions": library_versions(libraries), "format": CACHE_FORMAT}
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
