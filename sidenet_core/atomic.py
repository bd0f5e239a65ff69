"""Atomic file writes: write to a temp file in the same directory, fsync, then ``os.replace``.

A run killed at any point leaves either the previous file or the new one, never half of either. A write that
fails (a full disk, a folder that is a file) removes its temp file and raises an OSError that names the file it
was meant to produce, never the hidden temp file: the error a user sees points at the path they can fix.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sidenet_core.errors import UserError

PARTIAL = ".partial"  # every temp file and staging folder ends so: never read, removed once its writer is gone


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], follow_symlinks: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success it replaces ``target`` atomically.

    ``follow_symlinks``: when ``target`` is a symlink, write its final target instead (in that file's folder, so
    the rename stays atomic) and leave the link as it is; by default the link itself is replaced."""
    target = resolve_link(Path(target)) if follow_symlinks else Path(target)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # the writer's PID in the name: a concurrent run can tell a live writer's temp file from a killed one's
        prefix = f".{target.name}.{os.getpid()}."
        fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=PARTIAL, dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; published files get the usual mode
        os.replace(tmp, target)
    except OSError as exc:
        named = _naming_target(exc, target)
        if named is exc:
            raise
        raise named.with_traceback(exc.__traceback__) from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def _naming_target(exc: OSError, target: Path) -> OSError:
    """``exc``, made to name ``target`` where it names nothing (a failed ``write``) or our hidden temp file (a
    failed ``mkstemp``, ``fsync`` or ``replace``): the user can act on the one but has never heard of the other. An
    error about another path (a parent that is a file, say) keeps naming it."""
    hidden = f".{target.name}.{os.getpid()}."
    name = Path(str(exc.filename)).name if exc.filename is not None else None
    if name is not None and not (name.startswith(hidden) and name.endswith(PARTIAL)):
        return exc
    if exc.filename2 is None:
        exc.filename = str(target)
        return exc
    return type(exc)(exc.errno, exc.strerror, str(target))  # "tmp -> target" of a failed rename: just the target


def resolve_link(path: Path) -> Path:
    """``path``, or the file a symlink at ``path`` finally points to (through a chain of links); not a link: as is.
    Only the last component is followed, so writing the result replaces the file the user's link names."""
    seen: set[Path] = set()
    while path.is_symlink() and path not in seen:
        seen.add(path)
        path = path.parent / os.readlink(path)
    return path


@contextlib.contextmanager
def staging_dir(folder: Path, publishes: Path) -> Iterator[Path]:
    """A private hidden folder in ``folder`` (``.sidenet-staging.<pid>.<random>.partial``) for files that are
    published together later (a report's figures), removed with whatever is left in it when the block ends.

    Why: figures rendered straight into their final folder are visible before the report that links them is
    written, and stay behind when writing it fails. Staged in the same file system, each is published later by an
    atomic rename. Errors name ``publishes`` (what the staged files are for), not the hidden folder."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".sidenet-staging.{os.getpid()}.", suffix=PARTIAL, dir=folder))
    except OSError as exc:
        if exc.filename is None or Path(str(exc.filename)).name.startswith(".sidenet-staging."):
            exc.filename, exc.filename2 = str(publishes), None
        raise
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_new(folder: Path, prefix: str, suffix: str, data: bytes) -> Path:
    """Write ``data`` atomically to a new file ``<prefix><UTC time>-<pid>-<random><suffix>`` in ``folder`` and
    return its path: a reader never sees it half-written, and a failed write leaves nothing behind."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = Path(folder) / f"{prefix}{stamp}-{os.getpid()}-{secrets.token_hex(4)}{suffix}"
    write_bytes(target, data)
    return target


def writer_pid(partial: Path) -> int | None:
    """The PID of the process that was writing the temp file ``partial`` (``.<name>.<pid>.<random>.partial``);
    None for a name without one (written before PIDs were recorded)."""
    parts = partial.name.removesuffix(PARTIAL).split(".")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (someone else's live process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_partials(folder: Path, pattern: str) -> None:
    """Remove the temp files and staging folders matching ``pattern`` in ``folder`` whose writer is gone (a killed
    run's); a live writer's (a concurrent run) are left alone."""
    if not folder.is_dir():
        return
    for stale in folder.glob(pattern):
        pid = writer_pid(stale)
        if pid is not None and alive(pid):
            continue
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(target: str | os.PathLike[str], data: bytes, follow_symlinks: bool = False) -> None:
    with atomic_path(target, follow_symlinks) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike[str], text: str) -> None:
    write_bytes(target, text.encode("utf-8"))


def write_json(target: str | os.PathLike[str], obj: Any, default: Callable[[Any], Any] | None = None) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=default) + "\n")


def write_with(target: str | os.PathLike[str], writer: Callable[[Path], None], follow_symlinks: bool = False) -> None:
    """Let ``writer`` produce the file at a temp path (e.g. ``savefig``, ``save_file``), then publish it."""
    with atomic_path(target, follow_symlinks) as tmp:
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
