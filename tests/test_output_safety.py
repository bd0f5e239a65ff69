"""`sidenet-bench report` never destroys what it should not touch, and never tracebacks on a malformed file.

Three tables, each case run through the CLI entry point (``sidenet.cli.main``):

* **output**: ``-o`` naming the results file (by path, hard link or symlink), a device, FIFO or socket (also
  behind a symlink), or a name without ``.md`` → exit 2, one ``sidenet-bench: error:`` line, and the whole
  work folder unchanged: bytes, inodes, link targets, file types.
* **plots**: PNGs the user put in ``<stem>_plots/`` survive a re-render (bytes and inode); only figures a
  previous report listed in its manifest are pruned.
* **results**: NaN/inf medians, null stats, wrong-typed required keys, shapes the report indexes into, deep
  nesting → exit 2 and one line naming the file, the benchmark and the problem; nothing written.

Every case fails on the code before these checks (it exited 0 having replaced the protected thing, deleted
the PNG, rendered nonsense, or raised a traceback). No case targets the machine's real /dev/null: a symlink
to it (in tmp) stands in for it, so a regression replaces only the link.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sidenet.cli import main

# ---------------------------------------------------------------------------------------------------
# A minimal valid results file (the pytest-benchmark JSON shape, as in tests/test_report.py)
# ---------------------------------------------------------------------------------------------------

SWEEP = {
    "threshold": [0.5, 0.7, 0.9],
    "test_accuracy": [0.8, 0.86, 0.9],
    "exit_rate": [0.9, 0.7, 0.5],
    "flops_per_sample": [4e8, 6e8, 8e8],
}
RELIABILITY = {
    "main": {"confidence": [0.55, 0.95], "accuracy": [0.5, 0.97], "count": [10, 90]},
    "side": {"confidence": [0.55, 0.95], "accuracy": [0.4, 0.9], "count": [30, 70]},
}


def stats(median: float, iqr: float) -> dict[str, Any]:
    return {"median": median, "iqr": iqr, "q1": median - iqr / 2, "q3": median + iqr / 2, "rounds": 8}


def row(task: str, exit_: str, bs: int, median: float, **extra: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "task": task,
        "chain": "none",
        "exit": exit_,
        "threshold": None,
        "device": "cpu",
        "threads": 2,
        "batch_size": bs,
        "test_accuracy": 0.9,
        "exit_rate": 0.0,
        "flops_per_sample": 1.0e9,
        "params": 1_000_000,
        **extra,
    }
    name = f"test_cell[{task}-none-{exit_}-bs{bs}]"
    return {"group": task, "name": name, "extra_info": info, "stats": stats(median, median / 20)}


def task_rows(task: str) -> list[dict[str, Any]]:
    side = {"threshold": 0.9, "exit_rate": 0.5, "flops_per_sample": 8e8, "sweep": SWEEP, "reliability": RELIABILITY}
    return [row(task, "none", 1, 0.010), row(task, "sidenet", 1, 0.006, **side)]


def results(*tasks: str) -> dict[str, Any]:
    return {"machine_info": {}, "benchmarks": [r for t in tasks or ("t",) for r in task_rows(t)]}


SIDE = "test_cell[t-none-sidenet-bs1]"  # the row most cases break
MAIN = "test_cell[t-none-none-bs1]"

# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root`` without following links or opening non-regular files: type, inode, and the
    bytes (regular files) or target (symlinks)."""
    entries: dict[str, tuple[Any, ...]] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                content: Any = path.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            else:
                content = st.st_rdev
            entries[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_ino, content)
    return entries


def identity(path: Path) -> tuple[int, int, int, int]:
    """What a replace would change about the thing at ``path`` (links followed): type, inode, device, rdev."""
    st = path.stat()
    return stat.S_IFMT(st.st_mode), st.st_ino, st.st_dev, st.st_rdev


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("sidenet-bench: error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    return captured.err.rstrip("\n")


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cwd = a fresh folder holding a valid ``R.json`` (relative names keep socket paths short)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "R.json").write_text(json.dumps(results()), encoding="utf-8")
    return tmp_path


# ---------------------------------------------------------------------------------------------------
# 1. -o never replaces the results file, a non-regular file, or writes a name without .md
# ---------------------------------------------------------------------------------------------------


@contextmanager
def nothing(work: Path) -> Iterator[None]:
    yield


@contextmanager
def hard_link(work: Path) -> Iterator[None]:
    os.link(work / "R.json", work / "R.md")
    yield


@contextmanager
def symlink_to_results(work: Path) -> Iterator[None]:
    (work / "R.md").symlink_to("R.json")
    yield


@contextmanager
def results_named_md(work: Path) -> Iterator[None]:
    """A results file whose name ends in .md, in reports/: the default output is the file itself."""
    (work / "reports").mkdir()
    os.replace(work / "R.json", work / "reports" / "R.md")
    yield


@contextmanager
def fifo(work: Path) -> Iterator[None]:
    os.mkfifo(work / "out.md")
    yield


@contextmanager
def unix_socket(work: Path) -> Iterator[None]:
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("no Unix sockets here")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind("out.md")  # relative to cwd = work
        yield


@contextmanager
def device_node(work: Path) -> Iterator[None]:
    null = os.stat("/dev/null")
    try:
        os.mknod(work / "out.md", stat.S_IFCHR | 0o666, null.st_rdev)
    except OSError as exc:
        pytest.skip(f"cannot create a device node here ({exc})")
    yield


@contextmanager
def symlink_to_dev_null(work: Path) -> Iterator[None]:
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null")
    (work / "out.md").symlink_to("/dev/null")
    before = identity(Path("/dev/null"))
    yield
    assert identity(Path("/dev/null")) == before


@contextmanager
def symlink_to_fifo(work: Path) -> Iterator[None]:
    os.mkfifo(work / "pipe")
    (work / "out.md").symlink_to("pipe")
    yield


@contextmanager
def existing_txt(work: Path) -> Iterator[None]:
    (work / "notes.txt").write_text("the user's notes\n", encoding="utf-8")
    yield


Setup = Callable[[Path], Any]

OUTPUT_CASES: list[tuple[str, list[str], Setup, str]] = [
    ("results-file-itself", ["R.json", "-o", "R.json"], nothing, "is the results file itself"),
    ("results-file-by-another-path", ["R.json", "-o", "./sub/../R.json"], nothing, "is the results file itself"),
    ("results-file-absolute-vs-relative", ["R.json", "-o", "{work}/R.json"], nothing, "is the results file itself"),
    ("results-hard-link", ["R.json", "-o", "R.md"], hard_link, "is the results file itself"),
    ("results-symlink", ["R.json", "-o", "R.md"], symlink_to_results, "is the results file itself"),
    ("results-is-the-default-output", ["reports/R.md"], results_named_md, "is the results file itself"),
    ("fifo", ["R.json", "-o", "out.md"], fifo, "is a FIFO, not a regular file"),
    ("socket", ["R.json", "-o", "out.md"], unix_socket, "is a socket, not a regular file"),
    ("device-node", ["R.json", "-o", "out.md"], device_node, "is a device, not a regular file"),
    ("symlink-to-dev-null", ["R.json", "-o", "out.md"], symlink_to_dev_null, "is a symlink to a device"),
    ("symlink-to-fifo", ["R.json", "-o", "out.md"], symlink_to_fifo, "is a symlink to a FIFO"),
    ("existing-non-md-file", ["R.json", "-o", "notes.txt"], existing_txt, "does not end in .md"),
    ("new-name-without-suffix", ["R.json", "-o", "report"], nothing, "does not end in .md"),
]


@pytest.mark.parametrize(("args", "setup", "needle"), [c[1:] for c in OUTPUT_CASES], ids=[c[0] for c in OUTPUT_CASES])
def test_report_output_is_refused_and_nothing_changes(
    work: Path, args: list[str], setup: Setup, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with setup(work):
        (work / "sub").mkdir(exist_ok=True)
        before = snapshot(work)
        code = main(["report", *(a.format(work=work) for a in args)])
        err = one_line_error(capsys)
        assert code == 2
        assert needle in err
        assert snapshot(work) == before  # the protected thing: same bytes, inode, type, link target; nothing new


# ---------------------------------------------------------------------------------------------------
# 2. The plots folder: files the user put there are never pruned
# ---------------------------------------------------------------------------------------------------

USER_PNG = b"\x89PNG\r\n\x1a\n the user's own figure"
Planted = list[tuple[Path, int]]


def report(work: Path, data: dict[str, Any], out: str = "docs/x.md") -> None:
    (work / "in.json").write_text(json.dumps(data), encoding="utf-8")
    assert main(["report", "in.json", "-o", out]) == 0


def plant(path: Path) -> tuple[Path, int]:
    """The user's own PNG at ``path``; returns it with its inode (a replace would change it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(USER_PNG)
    return path, path.stat().st_ino


def user_png_beside_our_figures(work: Path) -> tuple[Planted, list[Path]]:
    report(work, results())  # the manifest now lists our figures
    planted = [plant(work / "docs" / "x_plots" / "mine.png")]
    report(work, results())
    return planted, []


def older_folder_without_manifest(work: Path) -> tuple[Planted, list[Path]]:
    """A plots folder an older version wrote (no manifest): a figure-like name not written now stays."""
    planted = [plant(work / "docs" / "x_plots" / name) for name in ("gone_accuracy_vs_latency.png", "mine.png")]
    report(work, results())
    return planted, []


def report_shrinks(work: Path) -> tuple[Planted, list[Path]]:
    """Task u's figures were ours (listed in the manifest) and go; the user's PNG stays."""
    report(work, results("t", "u"))
    planted = [plant(work / "docs" / "x_plots" / "mine.png")]
    report(work, results("t"))
    plots = work / "docs" / "x_plots"
    return planted, [plots / f"u_{kind}.png" for kind in ("accuracy_vs_flops", "accuracy_vs_latency", "reliability")]


def default_output_folder(work: Path) -> tuple[Planted, list[Path]]:
    planted = [plant(work / "reports" / "in_plots" / "diagram.png")]
    (work / "in.json").write_text(json.dumps(results()), encoding="utf-8")
    assert main(["report", "in.json"]) == 0
    assert main(["report", "in.json"]) == 0
    return planted, []


Scenario = Callable[[Path], tuple[Planted, list[Path]]]
PRUNE_CASES: list[tuple[str, Scenario]] = [
    ("user-png-beside-our-figures", user_png_beside_our_figures),
    ("older-folder-without-manifest", older_folder_without_manifest),
    ("report-shrinks", report_shrinks),
    ("default-output-folder", default_output_folder),
]


@pytest.mark.parametrize("scenario", [c[1] for c in PRUNE_CASES], ids=[c[0] for c in PRUNE_CASES])
def test_user_files_in_the_plots_folder_survive(work: Path, scenario: Scenario) -> None:
    planted, pruned = scenario(work)
    for path, inode in planted:
        assert path.read_bytes() == USER_PNG, path
        assert path.stat().st_ino == inode, path
    for path in pruned:
        assert not path.exists(), path  # our own stale figures still go


def test_manifest_entries_never_reach_outside_the_plots_folder(work: Path) -> None:
    """A tampered manifest naming paths, hidden files or non-PNGs prunes nothing."""
    report(work, results())
    (work / "docs" / "keep.png").write_bytes(USER_PNG)
    (work / "docs" / "x_plots" / ".hidden.png").write_bytes(USER_PNG)
    (work / "docs" / "x_plots" / "notes.txt").write_bytes(USER_PNG)
    manifest = work / "docs" / ".x.md.plots.json"
    record = json.loads(manifest.read_text(encoding="utf-8"))
    record["files"] += ["../keep.png", ".hidden.png", "notes.txt", "../../R.json", None, 3]
    manifest.write_text(json.dumps(record), encoding="utf-8")
    report(work, results())
    assert (work / "docs" / "keep.png").read_bytes() == USER_PNG
    assert (work / "docs" / "x_plots" / ".hidden.png").read_bytes() == USER_PNG
    assert (work / "docs" / "x_plots" / "notes.txt").read_bytes() == USER_PNG
    assert (work / "R.json").is_file()


# ---------------------------------------------------------------------------------------------------
# 3. Malformed results: one line naming file, benchmark and problem; nothing written
# ---------------------------------------------------------------------------------------------------

# a case edits valid results in place, or returns the whole file text itself
Mutate = Callable[[dict[str, Any]], str | None]


def info(name: str, key: str, value: Any) -> Mutate:
    def mutate(data: dict[str, Any]) -> None:
        next(b for b in data["benchmarks"] if b["name"] == name)["extra_info"][key] = value

    return mutate


def stat_value(name: str, key: str, value: Any) -> Mutate:
    def mutate(data: dict[str, Any]) -> None:
        next(b for b in data["benchmarks"] if b["name"] == name)["stats"][key] = value

    return mutate


def stats_block(name: str, value: Any) -> Mutate:
    def mutate(data: dict[str, Any]) -> None:
        next(b for b in data["benchmarks"] if b["name"] == name)["stats"] = value

    return mutate


def sweep(key: str, value: Any) -> Mutate:
    return info(SIDE, "sweep", {**SWEEP, key: value})


def top(key: str, value: Any) -> Mutate:
    def mutate(data: dict[str, Any]) -> None:
        data[key] = value

    return mutate


def nested(depth: int) -> Mutate:
    """The file's text with a ``depth``-deep list inside the first row's extra_info."""

    def text(data: dict[str, Any]) -> str:
        marker = '"params": 1000000'
        return json.dumps(data).replace(marker, marker + ', "deep": ' + "[" * depth + "]" * depth, 1)

    return text


def huge_integer_literal(data: dict[str, Any]) -> str:
    return json.dumps(data).replace('"threads": 2', '"threads": ' + "9" * 5000, 1)


NaN, INF = float("nan"), float("inf")

# (id, mutation of valid results or raw text, substrings the one-line message must hold)
RESULTS_CASES: list[tuple[str, Mutate, list[str]]] = [
    ("nan-median", stat_value(MAIN, "median", NaN), [MAIN, "non-finite median (NaN)", "re-run the bench"]),
    ("inf-median", stat_value(SIDE, "median", INF), [SIDE, "non-finite median (Infinity)"]),
    ("zero-median", stat_value(SIDE, "median", 0), [SIDE, "median round time of 0 s"]),
    ("string-median", stat_value(SIDE, "median", "1.0"), [SIDE, "median round time of the string '1.0'"]),
    ("null-stats", stats_block(SIDE, None), [SIDE, "has no timing stats"]),
    ("string-stats", stats_block(SIDE, "median"), [SIDE, "stats = the string 'median'"]),
    ("string-iqr", stat_value(SIDE, "iqr", "wide"), [SIDE, "stats iqr = the string 'wide'"]),
    ("string-batch-size", info(SIDE, "batch_size", "1"), [SIDE, "batch_size = the string '1'"]),
    ("zero-batch-size", info(MAIN, "batch_size", 0), [MAIN, "batch_size = the number 0, expected a positive"]),
    ("string-threads", info(MAIN, "threads", "two"), [MAIN, "threads = the string 'two', expected a positive"]),
    ("list-test-accuracy", info(SIDE, "test_accuracy", [1]), [SIDE, "test_accuracy = a list, expected a fraction"]),
    ("exit-rate-above-1", info(SIDE, "exit_rate", 2.5), [SIDE, "exit_rate = the number 2.5"]),
    ("nan-flops", info(SIDE, "flops_per_sample", NaN), [SIDE, "flops_per_sample = the number NaN"]),
    ("string-threshold", info(SIDE, "threshold", "high"), [SIDE, "threshold = the string 'high'"]),
    ("number-task", info(SIDE, "task", 5), [SIDE, "task = the number 5, expected a non-empty string"]),
    ("huge-timing-samples", info(SIDE, "timing_samples", 10**400), [SIDE, "timing_samples", "out of range"]),
    ("null-in-sweep-thresholds", sweep("threshold", [0.5, None, 0.9]), [SIDE, "sweep threshold[1] = null"]),
    ("number-as-sweep-column", sweep("test_accuracy", 0.9), [SIDE, "sweep test_accuracy = the number 0.9"]),
    ("number-as-paired-speedup", info(SIDE, "paired_speedup", 1.5), [SIDE, "paired_speedup = the number 1.5"]),
    (
        "number-as-reliability-curve",
        info(SIDE, "reliability", {"side": {"confidence": 3, "accuracy": [0.5]}}),
        [SIDE, "reliability side confidence = the number 3"],
    ),
    ("list-machine-id", info(SIDE, "machine_id", ["a"]), [SIDE, "machine_id = a list, expected a string"]),
    ("string-commit-info", top("commit_info", "abc"), ["commit_info is the string 'abc', expected an object"]),
    ("malformed-cpu-flags", top("machine_info", {"cpu": {"flags": [1]}, "sidenet": {}}), ["machine_info does not"]),
    ("nested-200-levels-in-a-row", nested(200), [MAIN, "nested more than 64 levels deep"]),
    ("nested-100000-levels", nested(100_000), ["nested too deeply to read"]),
    ("integer-of-5000-digits", huge_integer_literal, ["cannot be read as JSON"]),
]


@pytest.mark.parametrize(("make", "needles"), [c[1:] for c in RESULTS_CASES], ids=[c[0] for c in RESULTS_CASES])
def test_malformed_results_are_one_line_errors(
    work: Path, make: Mutate, needles: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    data = results()
    text = make(data)
    bad = work / "bad.json"
    bad.write_text(json.dumps(data) if text is None else text, encoding="utf-8")  # json writes NaN/Infinity
    before = snapshot(work)
    code = main(["report", "bad.json", "-o", "out.md"])
    err = one_line_error(capsys)
    assert code == 2
    assert "'bad.json'" in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert snapshot(work) == before  # no report, no plots folder


def test_a_valid_file_still_renders(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The positive control for the tables above: the unmutated file passes every check."""
    assert main(["report", "R.json", "-o", "out.md"]) == 0
    assert capsys.readouterr().out.strip() == "out.md"
    assert (work / "out.md").read_text(encoding="utf-8").startswith("# sidenet-bench report")
    assert sorted(p.name for p in (work / "out_plots").iterdir()) == [
        "t_accuracy_vs_flops.png",
        "t_accuracy_vs_latency.png",
        "t_reliability.png",
    ]
