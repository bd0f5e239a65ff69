"""Failure paths of ``sidenet-bench`` around its output and its records (issue #26): a run whose output fails
never claims success, notices reach the terminal while a cell runs, a bad cost record is ignored, and a terminal
that cannot show ``→ λ ×`` or a full disk is one line, never a traceback.

Subprocess cases run the real ``python -m sidenet.cli`` on the tiny ResNet task with a temporary cache and output
folder; each stops before any model is trained or within seconds.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import selectors
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

import sidenet.cli
from sidenet.bench import cell_costs
from sidenet.cli import main

ROOT = Path(__file__).resolve().parents[1]
RUN = ["run", "--task", "tiny-resnet", "--exit", "none", "--batch-size", "2", "--rounds", "1"]
RUN += ["--timing-samples", "8", "--threads", "1", "--min-round-ms", "0", "--worker-pairs", "1"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDENET_BENCH_")}
    env.update(SIDENET_BENCH_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "sidenet.cli", *args]


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("sidenet-bench:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


# ---------------------------------------------------------------------------------------------------
# 1. `run | head -1` is not a success
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lines_read", [0, 1], ids=["closed-at-once", "closed-after-the-first-line"])
@pytest.mark.e2e
def test_a_run_whose_stdout_is_closed_exits_non_zero_and_says_so(tmp_path: Path, lines_read: int) -> None:
    """The reader leaves (``| head -1``): the run cannot show anything more, so it stops, says so on stderr (which
    the user still sees) and exits 1 — it used to exit 0 having measured nothing, silently."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _cli(*RUN, "--out", str(out)), cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    for _ in range(lines_read):
        assert proc.stdout.readline().startswith(b"sidenet-bench: 1 cell(s)")
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err.decode()[-3000:]
    line = _one_error_line(err.decode())
    assert line.startswith("sidenet-bench: error: standard output was closed")
    assert "a new run resumes" in line and "> run.log" in line


def test_a_run_into_a_full_disk_is_one_line_not_a_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An output error raised out of pytest (its terminal writes to a full disk) stops the run with one line."""
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path / "cache"))

    def full_disk(args: list[str], plugins: Any = None) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pytest, "main", full_disk)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert main([*RUN, "-q", "--out", str(tmp_path / "out")]) == 1
    assert err.getvalue().startswith("sidenet-bench: error: writing its output failed (No space left on device)")
    assert err.getvalue().count("\n") == 1


def test_an_unrelated_os_error_in_a_run_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only output failures are turned into a line: any other OSError escaping pytest is a bug to be seen."""
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path / "cache"))

    def bug(args: list[str], plugins: Any = None) -> int:
        raise PermissionError(13, "Permission denied", "/somewhere")

    monkeypatch.setattr(pytest, "main", bug)
    with pytest.raises(PermissionError):
        main([*RUN, "-q", "--out", str(tmp_path / "out")])


# ---------------------------------------------------------------------------------------------------
# 3. notices reach the terminal while a cell runs
# ---------------------------------------------------------------------------------------------------

INNER_TESTS = """
from pathlib import Path

from torch import nn

from sidenet.engine import cache
from sidenet.bench.store import ResultsStore


def test_a_corrupt_cache_entry_is_rebuilt():
    module = nn.Linear(2, 2)
    cache.store(module, "linear-0123456789abcdef", {{}})
    weights = cache.cache_dir() / "linear-0123456789abcdef.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"XXXX")
    assert cache.load_into(nn.Linear(2, 2), "linear-0123456789abcdef") is None


def test_waiting_for_another_runs_lock():
    results = Path({results!r})
    store = ResultsStore(results, results.with_suffix(".md"), None, render=None)
    assert store.refresh_report() is False  # no results yet: nothing to render, once the lock is ours
"""


def _read_until(proc: subprocess.Popen[bytes], needle: bytes, seconds: float) -> bytes:
    """Everything ``proc`` wrote to stdout until ``needle`` appeared (or ``seconds`` passed, or it ended)."""
    assert proc.stdout is not None
    seen = b""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + seconds
    while needle not in seen and time.monotonic() < deadline:
        if selector.select(timeout=0.2):
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            seen += chunk
    selector.close()
    return seen


@pytest.mark.e2e
def test_the_runs_notices_leave_pytests_capture_while_the_cell_runs(tmp_path: Path) -> None:
    """The plugin ``sidenet-bench run`` hands pytest shows the cache's rebuild notice and the store's lock-wait
    notice on the terminal *while* the test waits (another process holds the lock until it has seen the notice):
    before, both sat in pytest's log capture, shown only for a failed cell, and a waiting run looked hung."""
    from filelock import FileLock

    results = tmp_path / "out" / "results" / "r.json"
    results.parent.mkdir(parents=True)
    inner = tmp_path / "test_inner.py"
    inner.write_text(textwrap.dedent(INNER_TESTS.format(results=str(results))), encoding="utf-8")
    code = (
        "import sys, pytest, sidenet.cli as cli\n"
        f"sys.exit(pytest.main([{str(inner)!r}, '-q', '-p', 'no:cacheprovider', '--rootdir', {str(tmp_path)!r}], "
        "plugins=[cli.NoticePrinter()]))"
    )
    lock = FileLock(str(results.with_name(".r.lock")))
    lock.acquire()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        seen = _read_until(proc, b"waiting for it", 60)
    finally:
        lock.release()
    rest, err = proc.communicate(timeout=120)
    text = (seen + rest).decode()
    assert proc.returncode == 0, text[-3000:] + err.decode()[-3000:]
    assert b"waiting for it" in seen, text[-3000:]  # shown while the lock was still held
    notices = [ln for ln in text.splitlines() if ln.startswith("sidenet-bench: notice: ")]
    assert any("checksum mismatch" in ln and "deleted, will rebuild" in ln for ln in notices), text[-3000:]
    assert any(f"another run is writing {results}; waiting for it" in ln for ln in notices), text[-3000:]


def test_run_hands_pytest_the_notice_printer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path / "cache"))
    seen: list[Any] = []
    monkeypatch.setattr(pytest, "main", lambda args, plugins=None: seen.append(plugins) or 0)
    assert main([*RUN, "-q", "--out", str(tmp_path / "out")]) == 0
    assert [type(p).__name__ for p in seen[0]] == ["NoticePrinter", "BenchPlugin"]


# ---------------------------------------------------------------------------------------------------
# 4. a bad cell-costs.json never fails a run
# ---------------------------------------------------------------------------------------------------

GOOD = {"seconds": 2.5, "trained": False}


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ('{"format": 1, "cells": {"a": {"seconds": NaN, "trained": false}, "g": GOOD}}', 1),
        ('{"format": 1, "cells": {"a": {"seconds": Infinity, "trained": false}, "g": GOOD}}', 1),
        ('{"format": 1, "cells": {"a": {"seconds": -3, "trained": false}, "g": GOOD}}', 1),
        ('{"format": 1, "cells": {"a": {"seconds": 1' + "0" * 400 + ', "trained": false}, "g": GOOD}}', 1),
        ('{"format": 1, "cells": {"a": {"seconds": 1.0, "trained": "no"}, "g": GOOD}}', 1),
        ('{"format": 1, "cells": {"a": ' + _deep(500) + ', "g": GOOD}}', 1),
        ('{"format": 1, "cells": {"a": ' + _deep(100_000) + ', "g": GOOD}}', 0),
        (_deep(100_000), 0),
        ("{not json", 0),
        ('{"format": 1, "cells": []}', 0),
    ],
    ids=["nan", "infinity", "negative", "huge-int", "trained-not-bool", "nested", "nested-past-the-parser", "deep-top",
         "not-json", "cells-not-a-dict"],
)  # fmt: skip
def test_bad_cost_records_are_ignored_with_one_warning(
    text: str, kept: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path))
    (tmp_path / cell_costs.FILE_NAME).write_text(text.replace("GOOD", json.dumps(GOOD)), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="sidenet"):
        costs = cell_costs.load()
    assert list(costs) == ["g"] * kept
    assert all(math.isfinite(c.seconds) for c in costs.values())
    seconds, _, _ = cell_costs.Estimator(costs).left([("a", "x"), ("g", "x")])
    assert math.isfinite(seconds)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and cell_costs.FILE_NAME in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()
    cell_costs.save(costs)  # the run's save replaces the bad record with what was usable
    caplog.clear()
    assert cell_costs.load() == costs and not caplog.records


def test_a_missing_or_good_cost_record_is_silent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="sidenet"):
        assert cell_costs.load() == {}
        cell_costs.save({"k": cell_costs.CellCost(1.5, True)})
        assert cell_costs.load() == {"k": cell_costs.CellCost(1.5, True)}
    assert not caplog.records


# ---------------------------------------------------------------------------------------------------
# 9. output that degrades: other encodings, a full disk, Ctrl-C
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
@pytest.mark.e2e
def test_list_under_a_terminal_without_unicode_prints_ascii_stand_ins(tmp_path: Path, encoding: str) -> None:
    proc = subprocess.run(
        _cli("list"), cwd=ROOT, env=_env(tmp_path, PYTHONIOENCODING=encoding), capture_output=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr.decode(encoding, "replace")[-3000:]
    assert b"Traceback" not in proc.stderr
    text = proc.stdout.decode(encoding)
    assert "exit systems:" in text and "(lambda prices compute" in text


def test_the_run_header_degrades_on_an_ascii_stdout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The line ``run`` prints before measuring has a '→'; on an ASCII terminal it used to be a UnicodeEncodeError."""
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path / "cache"))
    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="ascii", write_through=True)
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(pytest, "main", lambda args, plugins=None: 0)
    assert main([*RUN, "--out", str(tmp_path / "out")]) == 0
    assert (
        raw.getvalue()
        .decode("ascii")
        .startswith("sidenet-bench: 1 cell(s) over 1 task(s), chains tiny-resnet: none ->")
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_list_into_a_full_disk_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with open("/dev/full", "wb") as full:
        proc = subprocess.run(
            _cli("list"), cwd=ROOT, env=_env(tmp_path), stdout=full, stderr=subprocess.PIPE, timeout=300
        )
    assert proc.returncode == 1
    line = _one_error_line(proc.stderr.decode())
    assert line == "sidenet-bench: error: cannot write to standard output (No space left on device); send it to a "\
        "working file or pipe"  # fmt: skip


def test_ctrl_c_while_list_imports_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C while ``list`` imports the registries (torch-heavy): one line fit for ``list``, exit 130."""

    def interrupted(module: str, attr: str) -> list[str]:
        raise KeyboardInterrupt

    monkeypatch.setattr(sidenet.cli, "_listing", interrupted)
    assert main(["list"]) == 130
    captured = capsys.readouterr()
    assert captured.err == "sidenet-bench: interrupted\n"  # not the run's "a new run resumes"
