"""The results JSON and Markdown report of one output name: nothing lost, ever.

Why a module of its own: a benchmark run can take an hour, and its rows are worth more than anything else the
suite writes. The promises, and how they are kept:

* **Atomic.** Every file is written to a temp file beside it and renamed (:mod:`sidenet.atomic`); a temp file
  carries its writer's PID, so a run removes only the temp files of runs that are no longer alive.
* **Each finished cell persists as it finishes** (:meth:`ResultsStore.add`), so a run killed after N cells
  resumes with those N skipped.
* **Concurrent runs on one output** serialise their read–merge–write through a lock file beside the results
  (``filelock``): two runs measuring different cells both keep their rows. A run that has to wait says so once.
* **Results and report are one state.** The report is rendered from the results JSON, then a stamp records the
  digest of the JSON it was rendered from. A kill between the two leaves a stamp that does not match, and the
  next run (even one that measures nothing) re-renders (:meth:`ResultsStore.refresh_report`).
* **One machine per results file** (:func:`merge_results`, :func:`set_aside_foreign_results`): rows of another
  machine fingerprint are copied aside, never merged and never dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from sidenet import atomic
from sidenet.machine import MachineFingerprint, from_machine_info
from sidenet.results import load_results, row_machine_id

# Renders a report from results to a Markdown path (``sidenet.report.write_report``). Passed in by the entry
# points, which sit above the report layer: this module only measures and stores.
Render = Callable[[dict[str, Any], Path], Any]

log = logging.getLogger(__name__)

PAUSE_ENV = "SIDENET_BENCH_TEST_PAUSE"  # test hook, see pause_for_tests()
_PAUSES: dict[str, int] = {}  # how often each pause point was reached in this process


def pause_for_tests(point: str) -> None:
    """Test hook, inert unless ``SIDENET_BENCH_TEST_PAUSE=POINT:MARKER`` is set: at ``POINT`` create the file
    ``MARKER`` and sleep (at most 120 s, or until the test deletes ``MARKER``) so a test can signal the process,
    or change the file system under it, at a known moment.

    ``POINT@N`` pauses the N-th time the point is reached (default: the first). Points: ``timing`` (inside a
    cell, right before its timed rounds), ``write`` (the new results JSON is complete in its temp file but not
    yet renamed over the old one; the report is not touched yet) and ``render`` (the new results JSON is in
    place, the report not yet rendered from it).
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
    or of none recorded, are no resume source); a missing or unreadable file holds none."""
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
        if machine is None or row_machine_id(b) == machine.id:
            keys.add(info["cell_key"])
    return keys


def merge_results(path: Path, new: dict[str, Any]) -> dict[str, Any]:
    """New rows replace stored rows of the same (task, chain, exit, device, batch size); others stay, but only
    rows measured on the same machine fingerprint as the new ones: one results file, one machine.

    Cells skipped because they were already measured (resume) have no new row, so their stored row stays.
    Call :func:`set_aside_foreign_results` first so stored rows of another machine are kept, not dropped.
    """
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
    target, n = path.with_name(f"{path.stem}.{tag}.json"), 1
    while target.exists() and target.read_bytes() != raw:
        n += 1
        target = path.with_name(f"{path.stem}.{tag}.{n}.json")
    atomic.write_bytes(target, raw)
    return target


# ---------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove_stale_partials(results_path: Path, report_path: Path) -> None:
    """Temp files that killed runs left behind (``.<name>.<pid>.*.partial``, see sidenet.atomic): never read,
    removed once their writer is gone. A live writer's temp files (a concurrent run) are left alone."""
    plots = report_path.with_name(f"{report_path.stem}_plots")
    patterns = [
        (results_path.parent, f".{results_path.name}.*.partial"),
        (report_path.parent, f".{report_path.name}.*.partial"),
        (plots, ".*.partial"),
    ]
    for folder, pattern in patterns:
        if folder.is_dir():
            for stale in folder.glob(pattern):
                pid = atomic.writer_pid(stale)
                if pid is None or not _alive(pid):
                    stale.unlink(missing_ok=True)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_outputs(results: dict[str, Any], results_path: Path, report_path: Path, render: Render) -> None:
    """Results JSON, then the report (+ plots, by ``render``), then the stamp saying which results the report
    shows; each written to a temp file and renamed. Callers hold the output's lock (:class:`ResultsStore`).

    A run killed at any point leaves the previous files readable; at worst the new JSON beside the old report,
    which the stamp gives away (:meth:`ResultsStore.refresh_report` re-renders it)."""
    raw = _write_results(results, results_path, report_path)
    _render(render, results, results_path, report_path, raw)


def _write_results(results: dict[str, Any], results_path: Path, report_path: Path) -> bytes:
    """The results JSON alone, atomically (dead writers' temp files removed first); returns the bytes written."""
    _remove_stale_partials(results_path, report_path)
    raw = _results_text(results).encode("utf-8")

    def writer(tmp: Path) -> None:
        tmp.write_bytes(raw)
        pause_for_tests("write")

    atomic.write_with(results_path, writer)
    return raw


def _results_text(results: dict[str, Any]) -> str:
    # pytest params (Cell) → their id via default=str; same format as atomic.write_json
    return json.dumps(results, indent=2, sort_keys=True, allow_nan=False, default=str) + "\n"


def _stamp_path(results_path: Path) -> Path:
    return results_path.with_name(f".{results_path.stem}.rendered")


def _render(render: Render, results: dict[str, Any], results_path: Path, report_path: Path, raw: bytes) -> None:
    pause_for_tests("render")
    render(results, report_path)
    stamp = {"results_sha256": _digest(raw), "report": report_path.name}
    atomic.write_json(_stamp_path(results_path), stamp)


class ResultsStore:
    """The results JSON and report of one output name, written under one lock.

    ``add`` merges new rows (and, by default, leaves the report for later); ``refresh_report`` renders the
    report when it does not show the current results (a previous run was killed between the two)."""

    def __init__(self, results_path: Path, report_path: Path, machine: MachineFingerprint, render: Render) -> None:
        self.results_path, self.report_path, self.machine = Path(results_path), Path(report_path), machine
        self.render = render
        self._lock = FileLock(str(self.results_path.with_name(f".{self.results_path.stem}.lock")))
        self.set_aside: Path | None = None

    def _locked(self) -> FileLock:
        self.results_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=1)
        except Timeout:
            log.warning("another run is writing %s; waiting for it", self.results_path)
            self._lock.acquire()
        return self._lock

    def add(self, new: dict[str, Any], render: bool = False) -> None:
        """Merge ``new`` (a pytest-benchmark JSON dict) into the stored results; render the report if asked."""
        with self._locked():
            aside = set_aside_foreign_results(self.results_path, self.machine)
            self.set_aside = aside or self.set_aside
            merged = merge_results(self.results_path, new)
            if render:
                write_outputs(merged, self.results_path, self.report_path, self.render)
            else:
                _write_results(merged, self.results_path, self.report_path)

    def rescue(self, new: dict[str, Any]) -> Path:
        """Write ``new`` (this run's rows) to a fresh file in the system's temp folder, for when the results file
        cannot be written (a full disk, a folder gone): measured rows are never simply dropped. It is a results
        JSON like any other (``sidenet-bench report`` renders it)."""
        fd, name = tempfile.mkstemp(prefix=f"sidenet-bench-rescued-{self.results_path.stem}-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(_results_text(new))
        return Path(name)

    def report_is_current(self) -> bool:
        """Whether the report shows exactly the stored results (True when there are no results at all)."""
        try:
            raw = self.results_path.read_bytes()
        except FileNotFoundError:
            return True
        try:
            stamp = json.loads(_stamp_path(self.results_path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return (
            isinstance(stamp, dict)
            and stamp.get("results_sha256") == _digest(raw)
            and stamp.get("report") == self.report_path.name
            and self.report_path.is_file()
        )

    def refresh_report(self) -> bool:
        """Render the report from the stored results unless it already shows them; True when it rendered."""
        with self._locked():
            if self.report_is_current():
                return False
            raw = self.results_path.read_bytes()
            _render(self.render, load_results(self.results_path), self.results_path, self.report_path, raw)
            return True


__all__ = [
    "PAUSE_ENV",
    "ResultsStore",
    "merge_results",
    "pause_for_tests",
    "set_aside_foreign_results",
    "stored_cell_keys",
    "write_outputs",
]
