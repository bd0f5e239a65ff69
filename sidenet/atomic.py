"""Atomic file writes: write to a temp file in the same directory, fsync, then ``os.replace``.

A run killed at any point leaves either the previous file or the new one, never half of either.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sidenet_core.errors import UserError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target`` atomically."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # the writer's PID in the name: a concurrent run can tell a live writer's temp file from a killed one's
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; published files get the usual mode
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def writer_pid(partial: Path) -> int | None:
    """The PID of the process that was writing the temp file ``partial`` (``.<name>.<pid>.<random>.partial``);
    None for a name without one (written before PIDs were recorded)."""
    parts = partial.name.removesuffix(".partial").split(".")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike[str], text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike[str], obj: Any, default: Callable[[Any], Any] | None = None) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=default) + "\n")


def write_with(target: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Let ``writer`` produce the file at a temp path (e.g. ``savefig``, ``save_file``), then publish it."""
    with atomic_path(target) as tmp:
        writer(tmp)


def ensure_writable_dir(path: Path, what: str, fix: str, create: bool = True, subdirs: tuple[str, ...] = ()) -> Path:
    """``path`` (and each of ``subdirs`` inside it) as a writable directory, created if missing; otherwise a
    one-line UserError such as ``<what> '<path>' exists and is not a directory; <fix>``.

    ``create=False`` only inspects (nothing is written). With ``create`` a probe file is written and removed,
    since root ignores permission bits and only trying tells; on failure the folders just made are removed."""
    path = Path(path)
    for p in (path, *(path / d for d in subdirs)):
        if p.exists() and not p.is_dir():
            raise UserError(f"{what} {str(p)!r} exists and is not a directory; {fix}")
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{what} {str(path)!r} cannot be created: {str(ancestor)!r} is not a directory; {fix}")
    if not create:
        return path
    inner = [path / d for d in subdirs]
    created = [p for p in (*reversed(inner), path, *path.parents) if not p.exists()]
    try:
        for p in (path, *inner):
            p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=inner[-1] if inner else path, prefix=".sidenet-bench-probe-"):
            pass
    except OSError as exc:
        for p in created:  # deepest first: leave the file system as found
            with contextlib.suppress(OSError):
                p.rmdir()
        raise UserError(f"{what} {str(path)!r} is not writable ({exc.strerror or exc}); {fix}") from None
    return path
