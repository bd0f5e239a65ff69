"""Artifact cache for trained MainNets and SideNets.

Keyed by a hash of the recipe (a JSON-able dict) plus the library versions that can change the
result, so a changed recipe or an upgraded torch never reuses a stale model. An entry is two files:
``<key>.safetensors`` (the weights; safetensors, so no code runs on load) and ``<key>.json`` (the
metadata). Both are written through a temp file + rename, the metadata last: its presence marks a
complete entry.

safetensors has no checksum, so a flipped bit in a tensor's data would load as silently wrong weights.
The metadata therefore records the sha256 and size of the weights file, computed from the bytes actually
written (the temp file, before it is published), plus the entry's key, kind, content (module or tensors)
and cache format. ``_load`` checks all of that BEFORE deserialising anything, then deserialises exactly
the bytes it verified, and loads into a module only after its names and shapes have been checked, so
nothing of a bad entry ever reaches the caller or the module. Any failure (unreadable, truncated or foreign
metadata, another entry's weights, bit-rot, an entry written before checksums, a shape mismatch) logs one
warning naming the entry and the reason, deletes both files and returns None: the caller rebuilds.

:func:`check_cache_dir` validates the cache directory up front, so an unusable one is a one-line
:class:`~sidenet_core.errors.UserError` before any training rather than a failure after it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load, save_file, save_model
from torch import nn

from sidenet_core import atomic
from sidenet_core.errors import UserError

log = logging.getLogger(__name__)

# 2: keys hash every measured library's version (was torch, torchvision, transformers)
# 3: metadata records the weights' sha256 and size, the entry's kind, content and format; checked before loading
CACHE_FORMAT = 3
_FIX = "set SIDENET_BENCH_CACHE to a writable directory"  # how every cache directory error ends


def cache_dir() -> Path:
    """``$SIDENET_BENCH_CACHE``, else ``$XDG_CACHE_HOME/sidenet-bench``, else ``~/.cache/sidenet-bench``.

    A ``~user`` that cannot be expanded (or no home directory) is a one-line UserError."""
    env = os.environ.get("SIDENET_BENCH_CACHE")
    xdg = os.environ.get("XDG_CACHE_HOME")
    try:
        if env:
            return Path(env).expanduser()
        return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "sidenet-bench"
    except RuntimeError as exc:  # Path.expanduser / Path.home: unknown user, no home directory
        where = env or xdg or "~"
        raise UserError(f"cache directory {where!r} cannot be resolved ({exc}); {_FIX}") from None


def check_cache_dir(create: bool = True) -> Path:
    """:func:`cache_dir`, created if missing and checked writable; else a one-line UserError naming the fix.

    Meant to run before any work, so a bad cache directory fails up front rather than after training.
    Writability is tested by creating and removing a probe file (root ignores permission bits). ``create=False``
    only inspects (nothing is written): an entry point checks every directory that way first, so a refused run
    leaves no folders behind."""
    return atomic.ensure_writable_dir(cache_dir(), "cache directory", _FIX, create=create)


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


Content = Literal["module", "tensors"]  # what an entry's weights file holds: a module's state_dict, or named tensors
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _kind(key: str) -> str:
    """``mainnet`` of ``mainnet-<hash>`` (see :func:`artifact_key`)."""
    return key.split("-", 1)[0]


class _Unusable(Exception):
    """Why a cache entry cannot be used, as one line for the log."""


def _short(value: Any, limit: int = 60) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _discard(path: Path) -> None:
    """Remove ``path`` (a file, or a directory that took a file's place); never raises."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not delete %s (%s)", path, exc.strerror or exc)


def _read_metadata(key: str, content: Content, meta_path: Path) -> dict[str, Any]:
    """The entry's metadata if its schema holds: a JSON object for this key, kind, content, format and checksum."""
    try:
        raw = meta_path.read_bytes()
    except OSError as exc:
        raise _Unusable(f"metadata unreadable ({exc.strerror or exc})") from None
    try:
        meta = json.loads(raw)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        raise _Unusable("metadata is not valid JSON (truncated or overwritten)") from None
    if not isinstance(meta, dict):
        raise _Unusable(f"metadata is not a JSON object (a {type(meta).__name__})")
    if "key" not in meta:
        raise _Unusable("metadata has no key")
    if meta["key"] != key:
        raise _Unusable(f"metadata belongs to another entry ({_short(meta['key'])})")
    if meta.get("format") != CACHE_FORMAT:
        if "sha256" not in meta:
            raise _Unusable(f"no checksum (written before cache format {CACHE_FORMAT})")
        raise _Unusable(f"written by cache format {_short(meta.get('format'))}, not {CACHE_FORMAT}")
    if not isinstance(meta.get("sha256"), str) or not _SHA256.fullmatch(meta["sha256"]):
        raise _Unusable("metadata has no valid checksum")
    if type(meta.get("size")) is not int or meta["size"] < 0:
        raise _Unusable("metadata has no valid weights size")
    if meta.get("kind") != _kind(key):
        raise _Unusable(f"metadata is for kind {_short(meta.get('kind'))}, not {_kind(key)!r}")
    if meta.get("content") != content:
        raise _Unusable(f"entry holds {_short(meta.get('content'))}, not {content!r}")
    return meta


def _read_weights(weights: Path, meta: dict[str, Any]) -> bytes:
    """The weights file's bytes, if they are exactly the bytes the metadata's size and sha256 describe."""
    try:
        if not weights.exists():
            raise _Unusable("weights file missing")
        if not weights.is_file():
            raise _Unusable("weights path is not a regular file")
        size = weights.stat().st_size
        if size != meta["size"]:
            raise _Unusable(f"size mismatch (weights file has {size} bytes, metadata says {meta['size']})")
        data = weights.read_bytes()
    except OSError as exc:
        raise _Unusable(f"weights unreadable ({exc.strerror or exc})") from None
    if len(data) != meta["size"] or hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise _Unusable("checksum mismatch (weights changed on disk)")
    return data


def _load(key: str, content: Content, read: Callable[[bytes], Any]) -> tuple[Any, dict[str, Any]] | None:
    """``(read(verified weights bytes), metadata)`` of a complete entry, or None.

    None when absent (no metadata: never written, or its weights still being written). An unusable entry
    (module docstring) is logged as one warning, both its files are deleted, and None is returned.
    """
    weights, meta_path = _paths(key)
    try:
        if not meta_path.exists():
            return None
    except OSError:  # not even stat-able: storing will report the directory
        return None
    try:
        meta = _read_metadata(key, content, meta_path)
        payload = read(_read_weights(weights, meta))
    except _Unusable as exc:
        reason = str(exc)
    except Exception as exc:  # verified bytes that do not deserialise or do not fit the module: still a rebuild
        text = " ".join(str(exc).split()) or type(exc).__name__
        reason = f"unusable ({text[:200]})"
    else:
        return payload, meta
    log.warning("cache entry %s: %s; deleted, will rebuild", key, reason)
    _discard(weights)
    _discard(meta_path)
    return None


def _store(key: str, content: Content, write: Callable[[Path], None], meta: dict[str, Any]) -> None:
    """``write(temp_file)`` the weights, hash those bytes, publish them, then the metadata (marks a complete entry)."""
    weights, meta_path = _paths(key)
    root = weights.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cache directory {str(root)!r} is not writable ({exc.strerror or exc}); {_FIX}") from None
    written: dict[str, Any] = {}

    def write_and_hash(tmp: Path) -> None:
        write(tmp)
        digest, size = hashlib.sha256(), 0
        with open(tmp, "rb") as fh:  # the bytes actually written, before the rename publishes them
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        written.update(sha256=digest.hexdigest(), size=size)

    try:
        _discard(meta_path)  # while the weights change, no metadata vouches for them
        _discard(weights)  # also whatever took the file's place (a directory would block the rename)
        atomic.write_with(weights, write_and_hash)
        record = {**meta, "key": key, "kind": _kind(key), "content": content, "format": CACHE_FORMAT, **written}
        atomic.write_json(meta_path, {**record, "versions": library_versions()})
    except OSError as exc:
        raise UserError(f"cannot write cache entry {key} in {str(root)!r} ({exc.strerror or exc}); {_FIX}") from None


def _load_state(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Strict ``load_state_dict`` that checks names and shapes first, so a mismatch changes no parameter.

    A name absent from the file is fine when it shares storage with a loaded one: safetensors' ``save_model``
    keeps one name per tied tensor (as its ``load_model`` allows).
    """
    own = module.state_dict()
    unexpected = sorted(set(tensors) - set(own))
    if unexpected:
        raise _Unusable(f"weights do not fit the module (unexpected {_short(unexpected)})")
    wrong = sorted(n for n, t in tensors.items() if tuple(t.shape) != tuple(own[n].shape))
    if wrong:
        raise _Unusable(f"weights do not fit the module (shape mismatch: {_short(wrong)})")
    loaded = {_storage(own[n]) for n in tensors} - {None}
    missing = sorted(n for n in own if n not in tensors and _storage(own[n]) not in loaded)
    if missing:
        raise _Unusable(f"weights do not fit the module (missing {_short(missing)})")
    module.load_state_dict(tensors, strict=False)


def _storage(value: Any) -> int | None:
    try:
        return value.untyped_storage().data_ptr() if isinstance(value, torch.Tensor) and value.numel() else None
    except (RuntimeError, NotImplementedError):  # a tensor subclass without plain storage
        return None


def load_into(module: nn.Module, key: str) -> dict[str, Any] | None:
    """Load cached weights into ``module`` (strict: a name or shape mismatch rebuilds); return the metadata, or None.

    ``module`` is untouched unless the whole entry verified and fits it."""
    hit = _load(key, "module", lambda data: _load_state(module, load(data)))
    return None if hit is None else hit[1]


def load_module(
    key: str, make: Callable[[dict[str, tuple[int, ...]]], nn.Module]
) -> tuple[nn.Module, dict[str, Any]] | None:
    """``(module, metadata)``: ``make(shapes)`` (the entry's tensor shapes by name) builds the module its verified
    weights are then loaded into, strictly; None if absent or unusable (as :func:`load_into`). For models whose
    architecture the weights themselves describe (a pruned network's layer widths). ``make`` must not fail on
    shapes it cannot build: a failure counts as an unusable entry."""

    def read(data: bytes) -> nn.Module:
        tensors = load(data)
        module = make({name: tuple(t.shape) for name, t in tensors.items()})
        _load_state(module, tensors)
        return module

    return _load(key, "module", read)


def store(module: nn.Module, key: str, meta: dict[str, Any]) -> None:
    """Save a module's weights, then metadata."""
    _store(key, "module", lambda path: save_model(module, str(path)), meta)


def load_tensors(key: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Cached tensors + metadata stored by :func:`store_tensors`, or None if absent/unusable."""
    return _load(key, "tensors", load)


def store_tensors(key: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Save named tensors (safetensors), then metadata; same atomicity and checksum as :func:`store`."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    _store(key, "tensors", lambda path: save_file(tensors, str(path)), meta)
