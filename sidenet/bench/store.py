"""The results JSON and Markdown report of one output name: nothing lost, ever.

Why a module of its own: a benchmark run can take an hour, and its rows are worth more than anything else the
suite writes. The promises, and how they are kept:

* **Atomic.** Every file is written to a temp file beside it and renamed (:mod:`sidenet_core.atomic`); a temp file
  carries its writer's PID, so a run removes only the temp files of runs that are no longer alive. A results file
  that is a symlink is written through: its target is replaced (atomically, in the target's folder), the link kept.
* **Each finished cell persists as it finishes** (:meth:`ResultsStore.add`), so a run killed after N cells
  resumes with those N skipped.
* **Concurrent runs on one output** serialise their read–merge–write through a lock file beside the results
  (``filelock``): two runs measuring different cells both keep their rows. A run that has to wait says so once.
  ``sidenet-bench report`` onto a run's report takes the same lock (:func:`render_report`).
* **Results and report are one state.** The report is rendered from the results JSON, then a stamp records the
  digest of the JSON it was rendered from. A kill between the two leaves a stamp that does not match, and the
  next run (even one that measures nothing) re-renders (:meth:`ResultsStore.refresh_report`).
* **One machine per results file** (:func:`merge_results`, :func:`set_aside_foreign_results`): rows of another
  machine fingerprint are copied aside, never merged and never dropped. A results file that cannot be read as one
  (truncated, or JSON of another shape) is copied aside the same way (:func:`set_aside_unreadable_results`).
* **A failed write says which file, and where the rows are** (:class:`WriteError`,
  :meth:`ResultsStore.failure_line`): rows that did not reach the results file are saved, atomically, to a file of
  their own in the temp folder, and a failure that cannot save them either says so in one line.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from sidenet.bench.machine import MachineFingerprint, from_machine_info
from sidenet.bench.results import load_results, parse_results, results_text, row_machine_id, row_problem
from sidenet_core import atomic
from sidenet_core.errors import UserError

# Renders a report from results to a Markdown path (``sidenet.report.write_report``). Passed in by the entry
# points, which sit above the report layer: this module only measures and stores.
Render = Callable[[dict[str, Any], Path], Any]

log = logging.getLogger(__name__)

PAUSE_ENV = "SIDENET_BENCH_TEST_PAUSE"  # test hook, see pause_for_tests()
RESCUE_PREFIX = "sidenet-bench-rescued-"
_PAUSES: dict[str, int] = {}  # how often each pause point was reached in this process


def pause_for_tests(point: str) -> None:
    """Test hook, inert unless ``SIDENET_BENCH_TEST_PAUSE=POINT:MARKER`` is set: at ``POINT`` create the file
    ``MARKER`` and sleep (at most 120 s, or until the test deletes ``MARKER``) so a test can signal the process,
    or change the file system under it, at a known moment.

    ``POINT@N`` pauses the N-th time the point is reached (default: the first). Points: ``timing`` (inside a
    cell, right before its timed rounds), ``write`` (the new results JSON is complete in its temp file but not
    yet renamed over the old one; the report is not touched yet) and ``render`` (the new results JSON is in
    place, the report not yet rendered from it; in ``sidenet-bench report``: the results are read under the lock,
    the report not yet rendered).
    """
    want, _, marker = os.environ.get(PAUSE_ENV, "").partition(":")
    want, _, nth = want.partition("@")  # "timing@2": the second time this point is reached
    if want != point or not marker:
        return
    _PAUSES[point] = _PAUSES.get(point, 0) + 1
    if _PAUSES[point] != (int(nth) if nth.isdigit() else 1):
        return
    Path(marker).write_text(f"{os.getpid()}\n", encoding="utf-8")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and Path(marker).exists():  # a test deletes the marker to resume us
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------------
# rows
# ---------------------------------------------------------------------------------------------------


def _row_key(b: dict[str, Any]) -> tuple[Any, ...]:
    e = b.get("extra_info")
    e = e if isinstance(e, dict) else {}
    return (e.get("task"), e.get("chain"), e.get("exit"), e.get("device"), e.get("batch_size"))


def stored_cell_keys(results_path: Path, machine: MachineFingerprint | None = None) -> set[str]:
    """Cell keys of the rows in a results JSON measured on ``machine`` (when given: rows of any other machine,
    or of none recorded, are no resume source); a missing or unreadable file holds none.

    A row the report cannot show (a NaN median, a missing key: :func:`sidenet.bench.results.row_problem`) is no resume
    source either: skipping it would keep a results file the report refuses however often the bench is re-run."""
    try:
        data = json.loads(results_path.read_text(encoding="utf-8"))
        rows = data.get("benchmarks", [])
    except (OSError, ValueError, AttributeError, RecursionError):
        return set()
    keys = set()
    for b in rows if isinstance(rows, list) else []:
        info = b.get("extra_info") if isinstance(b, dict) else None
        if not isinstance(info, dict) or not isinstance(info.get("cell_key"), str):
            continue
        if (machine is None or row_machine_id(b) == machine.id) and row_problem(b) is None:
            keys.add(info["cell_key"])
    return keys


def merge_results(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    """New rows replace stored rows of the same (task, chain, exit, device, batch size); others stay, but only
    rows measured on the same machine fingerprint as the new ones: one results file, one machine.

    Cells skipped because they were already measured (resume) have no new row, so their stored row stays.
    Call :func:`set_aside_foreign_results` and :func:`set_aside_unreadable_results` first so stored rows of
    another machine, or a file that cannot be read, are kept, not dropped."""
    try:
        old = json.loads(path.read_text())
        old_rows = [b for b in old.get("benchmarks", []) if isinstance(b, dict)]
    except (OSError, ValueError, AttributeError, TypeError, RecursionError):
        old_rows = []
    fresh = {_row_key(b) for b in new["benchmarks"]}
    machines = {row_machine_id(b) for b in new["benchmarks"]}
    kept = [b for b in old_rows if _row_key(b) not in fresh and row_machine_id(b) in machines]
    merged = dict(new)
    merged["benchmarks"] = sorted(kept + list(new["benchmarks"]), key=lambda b: tuple(str(x) for x in _row_key(b)))
    return merged


def _copy_aside(path: Path, raw: bytes, tag: str) -> Path:
    """Copy ``raw`` (the bytes of ``path``) to ``<stem>.<tag>.json`` beside it, or ``<stem>.<tag>.<n>.json`` when
    that name holds other bytes; the same bytes are not copied twice."""
    target, n = path.with_name(f"{path.stem}.{tag}.json"), 1
    while target.exists() and target.read_bytes() != raw:
        n += 1
        target = path.with_name(f"{path.stem}.{tag}.{n}.json")
    atomic.write_bytes(target, raw)
    return target


def set_aside_foreign_results(path: Path, machine: MachineFingerprint) -> Path | None:
    """If the results file at ``path`` holds rows of another machine (or rows from before fingerprints, whose
    machine is unknown), copy it to ``<stem>.<their fingerprint>.json`` beside it and return that path: the next
    write keeps only this machine's rows (:func:`merge_results`), and the others are kept there, not lost.
    None when there is nothing to set aside.

    Legacy rows are named by the fingerprint their file's ``machine_info`` recorded (``legacy`` when none)."""
    try:
        raw = path.read_bytes()
        old = json.loads(raw)
        rows = [b for b in old.get("benchmarks", []) if isinstance(b, dict)]
    except (OSError, ValueError, AttributeError, TypeError, RecursionError):
        return None
    foreign = {row_machine_id(b) for b in rows} - {machine.id}
    if not foreign:
        return None
    recorded = from_machine_info(old.get("machine_info") or {})
    names = sorted(i or (f"{recorded.slug}-{recorded.id}" if recorded else "legacy") for i in foreign)
    tag = names[0] if len(names) == 1 else f"mixed-{names[0]}"
    return _copy_aside(path, raw, tag)


def unreadable_reason(raw: bytes) -> str | None:
    """Why these bytes of a results file cannot be merged into (None: they can). A file of whitespace only holds
    nothing to lose and is no reason."""
    if not raw.strip():
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc.msg} at line {exc.lineno}"
    except (ValueError, RecursionError) as exc:
        return f"not readable as JSON: {type(exc).__name__}"
    if not isinstance(data, dict):
        return f"JSON of another shape: a {type(data).__name__}, not an object"
    rows = data.get("benchmarks")
    if not isinstance(rows, list):
        return "JSON of another shape: no 'benchmarks' list"
    junk = sum(not isinstance(b, dict) for b in rows)
    return f"JSON of another shape: {junk} benchmark entries are not objects" if junk else None


def set_aside_unreadable_results(path: Path) -> tuple[Path, str] | None:
    """If the results file at ``path`` cannot be read as one (truncated, not JSON, JSON of another shape), copy
    it to ``<stem>.unreadable.json`` beside it and return that path and why: the next write replaces it with the
    rows that could be kept (none, for a truncated file), and the old bytes are kept there, not silently lost.
    None when the file is readable, missing or empty."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    reason = unreadable_reason(raw)
    return None if reason is None else (_copy_aside(path, raw, "unreadable"), reason)


# ---------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------


class WriteError(OSError):
    """An output could not be written: ``path`` names the file or folder at fault (not a hidden temp file), and
    ``rows_stored`` says whether this run's rows had reached the results file before it failed (the report, its
    plots or its stamp failed) or not (the lock, a set-aside copy, the results file itself)."""

    def __init__(self, path: Path, cause: OSError, rows_stored: bool) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.path, self.rows_stored = Path(path), rows_stored
        self.reason = _reason(cause, self.path)

    def __str__(self) -> str:
        return f"cannot write {self.path} ({self.reason})"


def _reason(exc: OSError, path: Path) -> str:
    if exc.errno in (errno.EEXIST, errno.ENOTDIR) and path.exists() and not path.is_dir():
        return "it is a file where a folder is needed"
    return exc.strerror or str(exc)


@contextmanager
def _stage(default: Path, rows_stored: bool) -> Iterator[None]:
    """Turn an OSError in the block into a :class:`WriteError` naming the path the error names, else ``default``."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError(Path(str(exc.filename)) if exc.filename else default, exc, rows_stored) from exc


def _remove_stale_partials(results_path: Path, report_path: Path) -> None:
    """Temp files that killed runs left behind (``.<name>.<pid>.*.partial``, see sidenet_core.atomic): never read,
    removed once their writer is gone. A live writer's temp files (a concurrent run) are left alone."""
    plots = _plots_path(report_path)
    target = atomic.resolve_link(results_path)
    report_target = atomic.resolve_link(report_path)  # a symlinked report is written through (sidenet.report.publish)
    patterns = [
        (results_path.parent, f".{results_path.name}.*.partial"),
        (target.parent, f".{target.name}.*.partial"),
        (report_path.parent, f".{report_path.name}.*.partial"),
        (report_target.parent, f".{report_target.name}.*.partial"),
        (report_path.parent, ".sidenet-staging.*.partial"),  # a report's figures, staged (sidenet_core.atomic)
        (plots, ".*.partial"),
    ]
    for folder, pattern in patterns:
        atomic.remove_dead_partials(folder, pattern)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_outputs(results: dict[str, Any], results_path: Path, report_path: Path, render: Render) -> None:
    """Results JSON, then the report (+ plots, by ``render``), then the stamp saying which results the report
    shows; each written to a temp file and renamed. Callers hold the output's lock (:class:`ResultsStore`).

    A run killed at any point leaves the previous files readable; at worst the new JSON beside the old report,
    which the stamp gives away (:meth:`ResultsStore.refresh_report` re-renders it). A failure raises
    :class:`WriteError` naming the path at fault."""
    raw = _write_results(results, results_path, report_path)
    with _stage(report_path, rows_stored=True):
        _render(render, results, results_path, report_path, raw)


def _write_results(results: dict[str, Any], results_path: Path, report_path: Path) -> bytes:
    """The results JSON alone, atomically (dead writers' temp files removed first; through a symlink to its
    target); returns the bytes written. A failure is a :class:`WriteError` (rows not stored)."""
    raw = results_text(results).encode("utf-8")
    with _stage(results_path, rows_stored=False):
        _remove_stale_partials(results_path, report_path)

        def writer(tmp: Path) -> None:
            tmp.write_bytes(raw)
            pause_for_tests("write")

        atomic.write_with(results_path, writer, follow_symlinks=True)
    return raw


def _stamp_path(results_path: Path) -> Path:
    return results_path.with_name(f".{results_path.stem}.rendered")


def _lock_path(results_path: Path) -> Path:
    return results_path.with_name(f".{results_path.stem}.lock")


def _plots_path(report_path: Path) -> Path:
    return report_path.with_name(f"{report_path.stem}_plots")


def _render(render: Render, results: dict[str, Any], results_path: Path, report_path: Path, raw: bytes) -> None:
    pause_for_tests("render")
    render(results, report_path)
    stamp = {"results_sha256": _digest(raw), "report": report_path.name}
    atomic.write_json(_stamp_path(results_path), stamp)


def check_output_paths(results_path: Path, report_path: Path) -> None:
    """One-line UserError when a path the store writes beside the results and report is in the way: the lock or
    the stamp that is not a regular file, a plots folder that is not a folder. Cheap, so checked before a run
    measures anything (the results and report themselves: ``sidenet.bench.harness.check_output_files``)."""
    for path in (_lock_path(results_path), _stamp_path(results_path)):
        if (path.exists() or path.is_symlink()) and not path.is_file():
            raise UserError(f"{str(path)!r} exists and is not a regular file; move it away or pass another --name")
    plots = _plots_path(report_path)
    if (plots.exists() or plots.is_symlink()) and not plots.is_dir():
        raise UserError(
            f"{str(plots)!r} (the report's plots folder) is not a folder; move it away or pass another --name"
        )


def _acquire(lock: FileLock, results_path: Path) -> None:
    """Take the output's lock, saying once when another run holds it; an unusable lock file is a WriteError."""
    with _stage(Path(lock.lock_file), rows_stored=False):
        try:
            lock.acquire(timeout=1)
        except Timeout:
            log.warning("another run is writing %s; waiting for it", results_path)
            lock.acquire()


class ResultsStore:
    """The results JSON and report of one output name, written under one lock.

    ``add`` merges new rows (and, by default, leaves the report for later); ``refresh_report`` renders the
    report when it does not show the current results (a previous run was killed between the two). Old results
    that another machine measured, or that cannot be read, are copied aside first (``set_aside``, ``unreadable``);
    :meth:`notices` says so."""

    def __init__(self, results_path: Path, report_path: Path, machine: MachineFingerprint, render: Render) -> None:
        self.results_path, self.report_path, self.machine = Path(results_path), Path(report_path), machine
        self.render = render
        self._lock = FileLock(str(_lock_path(self.results_path)))
        self.set_aside: Path | None = None
        self.unreadable: tuple[Path, str] | None = None
        self._stored: set[tuple[Any, ...]] = set()  # cells whose row this store has written to the results file

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with _stage(self.results_path.parent, rows_stored=False):
            self.results_path.parent.mkdir(parents=True, exist_ok=True)
        _acquire(self._lock, self.results_path)
        try:
            yield
        finally:
            self._lock.release()

    def add(self, new: dict[str, Any], render: bool = False) -> None:
        """Merge ``new`` (a pytest-benchmark JSON dict) into the stored results; render the report if asked.
        Raises :class:`WriteError` (an OSError) naming the path that could not be written."""
        with self._locked():
            self._set_old_results_aside()
            merged = merge_results(self.results_path, new)
            raw = _write_results(merged, self.results_path, self.report_path)
            self._stored |= {_row_key(b) for b in new["benchmarks"]}
            if render:
                with _stage(self.report_path, rows_stored=True):
                    _render(self.render, merged, self.results_path, self.report_path, raw)

    def _set_old_results_aside(self) -> None:
        """Copy stored results this run must not merge (another machine's rows, an unreadable file) aside."""
        unreadable_copy = self.results_path.with_name(f"{self.results_path.stem}.unreadable.json")
        with _stage(unreadable_copy, rows_stored=False):
            self.unreadable = set_aside_unreadable_results(self.results_path) or self.unreadable
        with _stage(self.results_path.parent, rows_stored=False):
            self.set_aside = set_aside_foreign_results(self.results_path, self.machine) or self.set_aside

    def notices(self) -> list[str]:
        """One line per set-aside copy of the old results this store made, for the end of the run."""
        lines = []
        if self.unreadable is not None:
            copy, reason = self.unreadable
            lines.append(f"{self.results_path} could not be read ({reason}); it was kept as {copy}, not merged")
        if self.set_aside is not None:
            lines.append(f"rows of another machine in the old results were kept in {self.set_aside}, not merged")
        return lines

    def rescue(self, new: dict[str, Any]) -> Path:
        """Write ``new`` (this run's rows) to a fresh file in the system's temp folder, for when the results file
        cannot be written (a full disk, a folder gone): measured rows are never simply dropped. It is a results
        JSON like any other (``sidenet-bench report`` renders it), written atomically: a rescue that fails too
        leaves no half-written file, and raises the OSError."""
        data = results_text(new).encode("utf-8")
        return atomic.write_new(Path(tempfile.gettempdir()), f"{RESCUE_PREFIX}{self.results_path.stem}-", ".json", data)

    def failure_line(self, exc: OSError, new: dict[str, Any] | None) -> str:
        """The one line a run prints when writing its outputs failed with ``exc``: the path at fault and why, and
        where this run's rows are: in the results file (the report failed), saved to the temp folder, or — when
        that fails too — that they could not be saved, and why."""
        if not isinstance(exc, WriteError):
            exc = WriteError(Path(str(exc.filename)) if exc.filename else self.results_path, exc, rows_stored=False)
        head = str(exc)
        if new is None:  # nothing new measured: only the report was being refreshed
            return f"{head}; the results in {self.results_path} are unchanged: fix that path and re-run"
        # rows an earlier write of this run stored (each cell persists as it finishes) are safe where they are
        pending = [b for b in new.get("benchmarks") or [] if _row_key(b) not in self._stored]
        if exc.rows_stored or not pending:
            return (
                f"{head}; this run's rows are in {self.results_path}: fix that path, then re-run (nothing is "
                f"measured again) or `sidenet-bench report {self.results_path} -o {self.report_path}`"
            )
        n = len(pending)
        try:
            rescued = self.rescue({**new, "benchmarks": pending})
        except OSError as again:
            why = f"{tempfile.gettempdir()}: {again.strerror or again}"
            return f"{head}, and this run's {n} row(s) could not be saved either ({why}); fix both and re-run"
        return f"{head}; fix that path and re-run, or render them: this run's {n} row(s) were saved to {rescued}"

    def report_is_current(self) -> bool:
        """Whether the report shows exactly the stored results (True when there are no results at all)."""
        return _stamp_matches(self.results_path, self.report_path)

    def refresh_report(self) -> bool:
        """Render the report from the stored results unless it already shows them; True when it rendered."""
        with self._locked():
            if self.report_is_current():
                return False
            raw = self.results_path.read_bytes()
            with _stage(self.report_path, rows_stored=True):
                _render(self.render, parse_results(raw, self.results_path), self.results_path, self.report_path, raw)
            return True


def _stamp_matches(results_path: Path, report_path: Path) -> bool:
    try:
        raw = results_path.read_bytes()
    except FileNotFoundError:
        return True
    try:
        stamp = json.loads(_stamp_path(results_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(stamp, dict)
        and stamp.get("results_sha256") == _digest(raw)
        and stamp.get("report") == report_path.name
        and report_path.is_file()
    )


def results_behind(report_path: Path) -> Path:
    """The results file a run writes ``report_path`` from: ``<out>/<name>.md`` ← ``<out>/results/<name>.json``."""
    return report_path.parent / "results" / f"{report_path.stem}.json"


def render_report(results_path: Path, report_path: Path, render: Render) -> Path:
    """``sidenet-bench report``: render ``results_path`` to ``report_path`` the way a run renders its report.

    When ``report_path`` is a run's report (the results file a run writes it from exists), this takes that
    run's lock, so it never interleaves with a run writing the same report, reads the results under it, and
    writes the stamp with the digest of the bytes it rendered: the stamp says what the report shows, so a run
    re-renders a report made from other results (a rescued file, say) and leaves one made from its own alone.
    Any other output is rendered without lock or stamp. OSErrors are :class:`WriteError` naming the path."""
    owner = results_behind(report_path)
    if not owner.exists():
        with _stage(report_path, rows_stored=True):
            render(load_results(results_path), report_path)
        return report_path
    lock = FileLock(str(_lock_path(owner)))
    _acquire(lock, owner)
    try:
        raw = results_path.read_bytes()
        with _stage(report_path, rows_stored=True):
            _remove_stale_partials(owner, report_path)
            _render(render, parse_results(raw, results_path), owner, report_path, raw)
    finally:
        lock.release()
    return report_path


__all__ = [
    "PAUSE_ENV",
    "RESCUE_PREFIX",
    "ResultsStore",
    "WriteError",
    "check_output_paths",
    "merge_results",
    "pause_for_tests",
    "render_report",
    "results_behind",
    "set_aside_foreign_results",
    "set_aside_unreadable_results",
    "stored_cell_keys",
    "unreadable_reason",
    "write_outputs",
]
