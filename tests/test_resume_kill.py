"""Nothing lost: ``sidenet-bench run`` resumes instead of re-measuring, and a run killed at any point leaves
the previous results JSON and report intact.

Each run is a real ``python -m sidenet.cli run`` subprocess on the tiny ResNet task (one cell, one round,
8 timing samples, 1 thread; the trained models come from the per-session cache of tests/conftest.py), run
from a folder outside the checkout so the CLI has to run the test module shipped in the package. The kill tests use
the harness's ``SIDENET_BENCH_TEST_PAUSE=POINT:MARKER`` hook to signal the process at a known moment.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sidenet.bench.machine import fingerprint
from sidenet.bench.results import load_results
from sidenet.bench.store import PAUSE_ENV, ResultsStore, write_outputs
from sidenet.report import write_report
from sidenet.report.render import render_markdown

pytestmark = pytest.mark.e2e  # every test here runs the real bench or CLI in a subprocess

ARGS = ["--task", "tiny-resnet", "--batch-size", "2", "--rounds", "1", "--timing-samples", "8", "--threads", "1"]
NAME = "ci"


def _command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sidenet.cli", "run", *ARGS, "--name", NAME, "--out", str(out), *extra]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (PAUSE_ENV, "SIDENET_BENCH_QUIET", "SIDENET_BENCH_TASKS")}
    return {**env, **extra}


def run_cli(out: Path, *extra: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(_command(out, *extra), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def outputs(out: Path) -> tuple[Path, Path]:
    return out / "results" / f"{NAME}.json", out / f"{NAME}.md"


def rows(out: Path) -> dict[str, dict[str, Any]]:
    data = json.loads(outputs(out)[0].read_text(encoding="utf-8"))
    return {b["extra_info"]["exit"]: b for b in data["benchmarks"]}


def partials(out: Path) -> list[Path]:
    return sorted(out.rglob("*.partial"))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One measured cell (tiny-resnet, MainNet alone, bs 2): a good results JSON + report to protect."""
    root = tmp_path_factory.mktemp("baseline")
    out = root / "reports"
    run_cli(out, "--exit", "none", "-q", cwd=root)
    assert set(rows(out)) == {"none"}
    return out


@pytest.fixture
def previous(baseline: Path, tmp_path: Path) -> Path:
    """A private copy of the baseline output folder."""
    out = tmp_path / "reports"
    shutil.copytree(baseline, out)
    return out


def test_second_run_measures_nothing_and_force_re_measures(previous: Path, tmp_path: Path) -> None:
    results, report = outputs(previous)
    before = results.read_bytes(), report.read_bytes()

    again = run_cli(previous, "--exit", "none", cwd=tmp_path)
    assert "1 skipped" in again.stdout and "passed" not in again.stdout.splitlines()[-1]
    assert f"already measured in {results}" in again.stdout
    assert "nothing new measured" in again.stdout
    assert (results.read_bytes(), report.read_bytes()) == before  # not even rewritten
    assert not (tmp_path / ".benchmarks").exists()  # pytest-benchmark's storage is not left where we ran

    # a wider matrix measures only what is missing: the stored MainNet row is kept exactly as it was
    wider = run_cli(previous, "--exit", "none", "--exit", "sidenet", "-q", cwd=tmp_path)
    assert "1 passed, 1 skipped" in wider.stdout
    stored = json.loads(before[0])["benchmarks"][0]
    now = rows(previous)
    assert set(now) == {"none", "sidenet"}
    assert now["none"] == stored
    assert now["sidenet"]["extra_info"]["threshold_source"] == "validation"

    forced = run_cli(previous, "--exit", "none", "--force", "-q", cwd=tmp_path)
    assert "1 passed" in forced.stdout
    remeasured = rows(previous)["none"]
    assert remeasured["extra_info"]["cell_key"] == stored["extra_info"]["cell_key"]
    assert remeasured["stats"]["data"] != stored["stats"]["data"]  # timed again (perf_counter never repeats)
    assert json.loads(results.read_text())["datetime"] != json.loads(before[0])["datetime"]
    assert set(rows(previous)) == {"none", "sidenet"}
    assert partials(previous) == []


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(marker: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"run ended (rc {proc.returncode}) before reaching the pause: {log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"run never reached the pause: {log.read_text()[-3000:]}")
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("sig", "point", "code"),
    [
        (signal.SIGKILL, "write", -signal.SIGKILL),  # new JSON complete in its temp file, not yet renamed
        (signal.SIGINT, "timing", 130),  # inside the cell, right before its timed rounds
        (signal.SIGINT, "write", 130),  # Ctrl-C while writing: the temp file is removed, nothing renamed
    ],
    ids=["sigkill-while-writing", "sigint-while-timing", "sigint-while-writing"],
)
def test_a_killed_run_leaves_the_previous_report_intact(
    previous: Path, tmp_path: Path, sig: signal.Signals, point: str, code: int
) -> None:
    results, report = outputs(previous)
    before = {p: p.read_bytes() for p in previous.rglob("*") if p.is_file()}
    marker, log = tmp_path / "paused", tmp_path / "run.log"
    env = _env(**{PAUSE_ENV: f"{point}:{marker}"})
    with log.open("wb") as sink:
        # A background job of a non-interactive shell (`cmd &`, how CI may start us) ignores SIGINT, and an
        # ignored signal stays ignored across exec: give the run the default disposition, as a terminal would.
        proc = subprocess.Popen(_command(previous, "--exit", "none", "--force", "-q"), cwd=tmp_path, env=env,
                                stdout=sink, stderr=subprocess.STDOUT, preexec_fn=_default_sigint)  # fmt: skip
        try:
            _wait_for(marker, proc, log)
            if point == "write":  # really mid-write: the new JSON sits in a temp file beside the old one
                assert next(p.name for p in partials(previous)).startswith(f".{NAME}.json.")
            proc.send_signal(sig)
            assert proc.wait(timeout=120) == code, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    after = {p: p.read_bytes() for p in previous.rglob("*") if p.is_file() and not p.name.endswith(".partial")}
    assert after == before  # results JSON, report and its plots byte-identical
    assert load_results(results)["benchmarks"]
    if sig == signal.SIGKILL:
        # nothing could clean up after SIGKILL: the in-flight temp file stays, hidden, never read; the next
        # write removes it
        assert [p.name.startswith(f".{NAME}.json.") for p in partials(previous)] == [True]
        write_outputs(load_results(results), results, report, write_report)
    assert partials(previous) == []


def _killed_at(out: Path, tmp_path: Path, point: str, *extra: str) -> None:
    """Run the CLI on ``out`` until it pauses at ``point``, then SIGKILL it (nothing can clean up)."""
    marker, log = tmp_path / f"paused-{point}", tmp_path / f"run-{point}.log"
    env = _env(**{PAUSE_ENV: f"{point}:{marker}"})
    with log.open("wb") as sink:
        proc = subprocess.Popen(_command(out, *extra), cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            _wait_for(marker, proc, log)
            proc.kill()
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()


def test_a_run_killed_between_results_and_report_is_re_rendered_by_the_next_run(previous: Path, tmp_path: Path) -> None:
    """Killed after the new results JSON is in place but before the report: the report is stale. The next run
    measures nothing (the cell is stored) yet sees the report does not show the results, and re-renders it."""
    results, report = outputs(previous)
    old_report = report.read_bytes()
    _killed_at(previous, tmp_path, "render", "--exit", "none", "--force", "-q")
    new_results = results.read_bytes()
    assert new_results != json.dumps({}) and report.read_bytes() == old_report  # results new, report stale
    again = run_cli(previous, "--exit", "none", cwd=tmp_path)
    assert "1 skipped" in again.stdout and "re-rendered" in again.stdout
    assert results.read_bytes() == new_results and report.read_bytes() != old_report
    assert report.read_text() == render_markdown(load_results(results), f"{NAME}_plots")  # shows these results
    quiet = run_cli(previous, "--exit", "none", cwd=tmp_path)  # now current: left alone
    assert "left as they were" in quiet.stdout


def test_a_run_killed_after_a_cell_resumes_after_it(previous: Path, tmp_path: Path) -> None:
    """Each finished cell is persisted when it finishes: killed while timing the second cell, the first one's row
    is already stored, and the next run skips it and measures only the second."""
    results, _ = outputs(previous)
    stored_before = rows(previous)["none"]
    cells = ("--exit", "none", "--exit", "sidenet", "--force", "-q")
    _killed_at(previous, tmp_path, "timing@2", *cells)
    after_kill = rows(previous)
    assert set(after_kill) == {"none"} and after_kill["none"] != stored_before  # cell 1 re-measured and kept
    resumed = run_cli(previous, "--exit", "none", "--exit", "sidenet", "-q", cwd=tmp_path)
    assert "1 passed, 1 skipped" in resumed.stdout
    assert set(rows(previous)) == {"none", "sidenet"} and rows(previous)["none"] == after_kill["none"]
    assert load_results(results)["benchmarks"] and partials(previous) == []


def test_two_runs_on_one_output_keep_both_rows(baseline: Path, tmp_path: Path) -> None:
    """Two runs finishing together on one --out, measuring different cells: the lock serialises their
    read-merge-write, neither removes the other's temp file, and both rows are there afterwards."""
    out = tmp_path / "reports"
    shutil.copytree(baseline, out)
    procs = [
        subprocess.Popen(
            _command(out, "--exit", exit_system, "--force", "-q"),
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for exit_system in ("none", "sidenet")
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-2000:] for log in logs)
    assert set(rows(out)) == {"none", "sidenet"}
    assert load_results(outputs(out)[0]) and partials(out) == []


def test_rows_are_rescued_when_the_output_becomes_unwritable(previous: Path, tmp_path: Path) -> None:
    """The results folder disappears under a running bench (replaced by a file while its first write is in
    flight): the run cannot write its results, so it says so in one line, exits non-zero, and saves this run's
    rows in a file of their own instead of dropping them."""
    marker, log = tmp_path / "paused", tmp_path / "run.log"
    env = _env(**{PAUSE_ENV: f"write:{marker}"})
    results_dir = previous / "results"
    with log.open("wb") as sink:
        proc = subprocess.Popen(_command(previous, "--exit", "none", "--force"), cwd=tmp_path, env=env,
                                stdout=sink, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            _wait_for(marker, proc, log)
            results_dir.rename(tmp_path / "results-moved")
            results_dir.write_text("not a folder any more")
            marker.unlink()  # resume the run
            assert proc.wait(timeout=300) != 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    line = next(line for line in text.splitlines() if line.startswith("sidenet-bench: error: cannot write"))
    rescued = Path(line.split("were saved to ")[1])
    try:
        rows_saved = load_results(rescued)["benchmarks"]
        assert [b["extra_info"]["exit"] for b in rows_saved] == ["none"]
    finally:
        rescued.unlink(missing_ok=True)
    assert "Traceback" not in text


# ---------------------------------------------------------------------------------------------------
# failures at the end of a run: the path at fault is named, and the rows are where the line says
# ---------------------------------------------------------------------------------------------------


def _paused_run(out: Path, tmp_path: Path, point: str, change: Callable[[int], None]) -> tuple[int, str, Path]:
    """Run the CLI (re-measuring the MainNet cell) until it pauses at ``point``, call ``change(pid)`` on the bench
    process while it waits, resume it; return its exit code, its output and the private temp folder it used."""
    marker, log, tmp = tmp_path / f"paused-{point}", tmp_path / f"run-{point}.log", tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    env = _env(**{PAUSE_ENV: f"{point}:{marker}", "TMPDIR": str(tmp)})
    with log.open("wb") as sink:
        proc = subprocess.Popen(_command(out, "--exit", "none", "--force", "-q"), cwd=tmp_path, env=env,
                                stdout=sink, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            _wait_for(marker, proc, log)
            change(int(marker.read_text()))
            marker.unlink()  # resume the run
            code = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    return code, log.read_text(), tmp


def _error_line(text: str) -> str:
    [line] = [line for line in text.splitlines() if line.startswith("sidenet-bench: error:")]
    assert "Traceback" not in text, text[-3000:]
    return line


def _rescued(tmp: Path) -> list[Path]:
    return sorted(tmp.rglob("sidenet-bench-rescued-*"))


def test_a_full_disk_that_stops_the_rescue_too_is_one_line_and_leaves_no_truncated_file(
    previous: Path, tmp_path: Path
) -> None:
    """The results folder is gone (replaced by a file) and the disk is full (``RLIMIT_FSIZE`` of 6 KB set on the
    running bench): the rescue cannot be written either. It used to raise inside the first failure's handler (two
    chained tracebacks) and leave a truncated rescue JSON in the temp folder; now one line says the rows could not
    be saved, and why, and nothing half-written is left."""
    results_dir = previous / "results"

    def folder_gone_and_disk_full(pid: int) -> None:
        results_dir.rename(tmp_path / "results-moved")
        results_dir.write_text("not a folder any more")
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (6000, 6000))

    code, text, tmp = _paused_run(previous, tmp_path, "write", folder_gone_and_disk_full)
    assert code != 0, text[-3000:]
    assert _rescued(tmp) == [] and list(tmp.rglob("*.partial")) == []  # nothing half-written
    line = _error_line(text)
    assert line.startswith(f"sidenet-bench: error: cannot write {results_dir} (it is a file where a folder is needed)")
    assert line.endswith(f"this run's 1 row(s) could not be saved either ({tmp}: File too large); fix both and re-run")


def test_a_lock_that_becomes_a_folder_is_named_and_the_rows_rescued(previous: Path, tmp_path: Path) -> None:
    """The lock file turns into a folder while the cell is timed: the error names the lock (it used to name the
    results JSON, which was fine) and this run's row is saved to the temp folder."""
    lock = previous / "results" / f".{NAME}.lock"

    def lock_becomes_a_folder(pid: int) -> None:
        lock.unlink()
        lock.mkdir()

    code, text, tmp = _paused_run(previous, tmp_path, "timing", lock_becomes_a_folder)
    assert code != 0, text[-3000:]
    line = _error_line(text)
    assert line.startswith(f"sidenet-bench: error: cannot write {lock} (Is a directory); fix that path and re-run")
    [rescued] = _rescued(tmp)
    assert line.endswith(f"this run's 1 row(s) were saved to {rescued}")
    assert [b["extra_info"]["exit"] for b in load_results(rescued)["benchmarks"]] == ["none"]


def test_a_report_that_cannot_be_written_is_named_and_the_rows_are_in_the_results(
    previous: Path, tmp_path: Path
) -> None:
    """The results are written, then the report cannot be (its name became a folder): the line names the report
    and says the rows are in the results file (it used to blame the results JSON and claim the rows had gone to
    the temp folder). The stamp still names the old results, so the next run renders the report."""
    results, report = outputs(previous)
    before = rows(previous)["none"]

    def report_becomes_a_folder(pid: int) -> None:
        report.unlink()
        report.mkdir()

    code, text, tmp = _paused_run(previous, tmp_path, "render", report_becomes_a_folder)
    assert code != 0, text[-3000:]
    line = _error_line(text)
    assert line.startswith(f"sidenet-bench: error: cannot write {report} (Is a directory); this run's rows are in")
    assert _rescued(tmp) == []
    assert rows(previous)["none"]["stats"]["data"] != before["stats"]["data"]  # the re-measured row is stored
    report.rmdir()
    store = ResultsStore(results, report, fingerprint("cpu", 1), render=write_report)  # machine: unused here
    assert not store.report_is_current() and store.refresh_report()  # what the next run does


def test_an_unreadable_results_file_is_set_aside_and_the_run_says_so(previous: Path, tmp_path: Path) -> None:
    """A truncated results file used to be replaced without a word; now it is kept beside the new one and the run
    says so in one line."""
    results, _ = outputs(previous)
    truncated = results.read_bytes()[:1000]
    results.write_bytes(truncated)
    done = run_cli(previous, "--exit", "none", "-q", cwd=tmp_path)
    copy = results.with_name(f"{NAME}.unreadable.json")
    assert copy.read_bytes() == truncated and set(rows(previous)) == {"none"}
    [notice] = [line for line in done.stdout.splitlines() if "could not be read" in line]
    assert notice.startswith(f"sidenet-bench: {results} could not be read (not valid JSON: ")
    assert notice.endswith(f"; it was kept as {copy}, not merged")


def test_a_path_in_the_way_is_refused_before_anything_is_measured(previous: Path, tmp_path: Path) -> None:
    """A lock that is a folder used to fail the run at its end, after measuring; the other paths beside the
    results (stamp, plots folder) are checked the same way (tests/test_failure_paths_results.py)."""
    before = outputs(previous)[0].read_bytes()
    path = previous / "results" / f".{NAME}.lock"
    path.unlink(missing_ok=True)
    path.mkdir()
    proc = subprocess.run(_command(previous, "--exit", "none", "--force", "-q"), cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    [line] = proc.stderr.strip().splitlines()
    assert repr(str(path)) in line and "move it away or pass another --name" in line
    assert "passed" not in proc.stdout and outputs(previous)[0].read_bytes() == before
