"""What happens to the rows when writing them fails, or the file they go to is not what the store expects.

Real files throughout, and a real full disk where one is needed: ``RLIMIT_FSIZE`` (``ulimit -f``) set in a
subprocess, so ``write`` fails with EFBIG at that size exactly as it fails with ENOSPC on a full disk (Python
ignores SIGXFSZ). Each case failed on the code before it was handled:

* a rescue that cannot be written either left a truncated JSON in the temp folder (and raised from inside the
  handler of the first failure: two chained tracebacks);
* an unreadable results file (truncated, JSON of another shape) was silently replaced by the next run's rows;
* a NaN in a stored row made every later write fail (``allow_nan=False``), losing the new rows each time;
* a results file that is a symlink was replaced by a regular file, its target left stale;
* a lock that is a folder, a stamp that is a folder, a plots folder that is a file were all reported as the
  results JSON failing, with the rows "saved to the temp folder" when they were in the results file;
* ``sidenet-bench report`` took neither the run's lock nor its stamp, so racing a run it could leave an older
  report behind a stamp saying it is current; and one failing on its output name left its figures behind.

The end-to-end versions (a real ``sidenet-bench run`` on the tiny task) are in tests/test_resume_kill.py.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock, Timeout

import sidenet.report
from sidenet.bench.machine import cpu_fingerprint
from sidenet.bench.results import load_results
from sidenet.bench.store import RESCUE_PREFIX, ResultsStore, WriteError, check_output_paths, stored_cell_keys
from sidenet.cli import main
from sidenet.report import render_markdown, write_report
from sidenet_core.errors import UserError

MACHINE = cpu_fingerprint(2, {"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "17"}, "AVX2", None)
SWEEP = {"threshold": [0.5, 0.9], "test_accuracy": [0.8, 0.9], "exit_rate": [0.9, 0.5], "flops_per_sample": [4e8, 8e8]}


def row(exit_: str = "none", bs: int = 1, median: float = 0.01, **extra: Any) -> dict[str, Any]:
    """A row the report renders, measured on MACHINE (``cell_key`` names its cell)."""
    info: dict[str, Any] = {
        "task": "t",
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
        "machine_id": MACHINE.id,
        "cell_key": f"key-{exit_}-{bs}",
        **extra,
    }
    stats = {"median": median, "iqr": median / 20, "q1": median * 0.97, "q3": median * 1.02, "rounds": 8}
    return {"group": "t", "name": f"test_cell[t-none-{exit_}-bs{bs}]", "extra_info": info, "stats": stats}


def sidenet_row(bs: int = 1) -> dict[str, Any]:
    """A SideNet row: the report draws figures for it."""
    return row("sidenet", bs, 0.006, threshold=0.9, exit_rate=0.5, flops_per_sample=8e8, sweep=SWEEP)


def payload(*rows: dict[str, Any]) -> dict[str, Any]:
    return {"machine_info": {}, "benchmarks": list(rows)}


def make_store(root: Path, name: str = "ci") -> ResultsStore:
    """The store a run with ``--out root --name name`` writes through."""
    return ResultsStore(root / "results" / f"{name}.json", root / f"{name}.md", MACHINE, render=write_report)


def exits(path: Path) -> list[str]:
    return [b["extra_info"]["exit"] for b in json.loads(path.read_text(encoding="utf-8"))["benchmarks"]]


def strict_json(path: Path) -> Any:
    """Parse as a strict JSON reader would (jq, JavaScript): bare NaN / Infinity tokens are errors."""

    def refuse(token: str) -> None:
        raise ValueError(f"bare {token} in {path}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def leftovers(*folders: Path) -> list[Path]:
    return sorted(p for folder in folders for p in folder.rglob("*") if p.name.endswith(".partial"))


@pytest.fixture
def tmp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temp folder rescues go to, private to the test (``tempfile.gettempdir()`` reads it)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr("tempfile.tempdir", None)  # forget the cached answer
    return folder


# ---------------------------------------------------------------------------------------------------
# 1. a full disk: the rescue is atomic and guarded
# ---------------------------------------------------------------------------------------------------

FULL_DISK = """
import json, resource, sys
from pathlib import Path
from sidenet.bench.machine import MachineFingerprint
from sidenet.report import write_report
from sidenet.bench.store import ResultsStore
out, spec, room = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text()), int(sys.argv[3])
machine = MachineFingerprint.from_dict(spec["machine"])
store = ResultsStore(out / "results" / "ci.json", out / "ci.md", machine, render=write_report)
resource.setrlimit(resource.RLIMIT_FSIZE, (room, room))  # the disk is full from here on
try:
    if spec["rescue_only"]:
        store.rescue(spec["new"])
    else:
        store.add(spec["new"])
except OSError as exc:
    print(store.failure_line(exc, spec["new"]) if not spec["rescue_only"] else f"refused: {exc.strerror}")
"""


def run_on_full_disk(
    out: Path, tmp_folder: Path, room: int, rescue_only: bool = False
) -> subprocess.CompletedProcess[str]:
    """Add 8 new rows (~5 KB) to the store at ``out`` in a process whose files may not grow past ``room`` bytes."""
    spec = tmp_folder.parent / "spec.json"
    new = payload(*[row("none", bs) for bs in range(1, 9)])
    spec.write_text(json.dumps({"machine": MACHINE.to_dict(), "new": new, "rescue_only": rescue_only}))
    return subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(out), str(spec), str(room)],
        env={**os.environ, "TMPDIR": str(tmp_folder)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_rescue_on_a_full_disk_leaves_nothing_half_written_and_says_the_rows_are_lost(
    tmp_path: Path, tmp_folder: Path
) -> None:
    out = tmp_path / "reports"
    make_store(out).add(payload(row("sidenet", 64)))
    before = (out / "results" / "ci.json").read_bytes()
    proc = run_on_full_disk(out, tmp_folder, room=4096)
    assert list(tmp_folder.iterdir()) == []  # no truncated rescue file (not even a hidden temp file)
    assert (out / "results" / "ci.json").read_bytes() == before and leftovers(out) == []
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    [line] = proc.stdout.splitlines()
    assert line.startswith(f"cannot write {out / 'results' / 'ci.json'} (File too large), and this run's 8 row(s)")
    assert f"could not be saved either ({tmp_folder}: File too large)" in line


def test_the_rescue_itself_is_written_atomically(tmp_path: Path, tmp_folder: Path) -> None:
    """On a full disk ``rescue`` raises and leaves the temp folder empty: it used to leave a truncated
    ``sidenet-bench-rescued-*.json``, a file that looks like saved rows and is not even JSON."""
    proc = run_on_full_disk(tmp_path / "reports", tmp_folder, room=2048, rescue_only=True)
    assert proc.stdout.strip() == "refused: File too large", proc.stderr[-3000:]
    assert list(tmp_folder.iterdir()) == []


def test_rows_that_do_not_fit_go_whole_to_the_temp_folder(tmp_path: Path, tmp_folder: Path) -> None:
    """The results file holds many rows (it would not fit any more); this run's few rows do: they are rescued, as a
    results JSON of their own, and the line says where."""
    out = tmp_path / "reports"
    make_store(out).add(payload(*[row("sidenet", bs, sweep={"threshold": [0.5] * 2000}) for bs in range(2, 6)]))
    proc = run_on_full_disk(out, tmp_folder, room=40_000)
    [line] = proc.stdout.splitlines()
    assert "(File too large); fix that path and re-run" in line and "were saved to " in line, proc.stderr[-3000:]
    rescued = Path(line.split("were saved to ")[1])
    assert rescued.parent == tmp_folder and rescued.name.startswith(f"{RESCUE_PREFIX}ci-")
    assert [b["extra_info"]["batch_size"] for b in load_results(rescued)["benchmarks"]] == list(range(1, 9))
    assert [p.name for p in tmp_folder.iterdir()] == [rescued.name]


def test_rows_an_earlier_write_stored_are_not_called_lost(tmp_path: Path, tmp_folder: Path) -> None:
    """Each cell persists as it finishes; when the session's final write fails, those rows are in the results file
    already, and the line says so instead of rescuing them (or calling them lost)."""
    out = tmp_path / "reports"
    store = make_store(out)
    store.add(payload(row("none")))  # the cell persisted as it finished
    (out / "results" / ".ci.lock").unlink()
    (out / "results" / ".ci.lock").mkdir()  # the session-end write then fails at the lock
    new = payload(row("none"))
    with pytest.raises(WriteError) as caught:
        store.add(new, render=True)
    line = store.failure_line(caught.value, new)
    assert line.startswith(f"cannot write {out / 'results' / '.ci.lock'} (Is a directory)")
    assert f"this run's rows are in {out / 'results' / 'ci.json'}" in line
    assert list(tmp_folder.iterdir()) == []


# ---------------------------------------------------------------------------------------------------
# 2. an unreadable results file is set aside, not silently replaced
# ---------------------------------------------------------------------------------------------------

UNREADABLE = [
    ("truncated", lambda good: good[: len(good) // 2], "not valid JSON"),
    ("a-list", lambda good: b"[]\n", "a list, not an object"),
    ("no-benchmarks-list", lambda good: b'{"benchmarks": {"none": 1}}', "no 'benchmarks' list"),
    ("junk-entries", lambda good: good.replace(b'"benchmarks": [', b'"benchmarks": [3, "x", ', 1), "2 benchmark"),
    ("not-utf8", lambda good: b"\xff\xfe" + good, "not UTF-8"),
]


@pytest.mark.parametrize(("make", "reason"), [c[1:] for c in UNREADABLE], ids=[c[0] for c in UNREADABLE])
def test_an_unreadable_results_file_is_set_aside_and_said_so(tmp_path: Path, make: Any, reason: str) -> None:
    out = tmp_path / "reports"
    results = out / "results" / "ci.json"
    make_store(out).add(payload(row("none"), row("none", 64)))
    bad = make(results.read_bytes())
    results.write_bytes(bad)
    store = make_store(out)
    store.add(payload(row("sidenet")))
    copy = out / "results" / "ci.unreadable.json"
    assert copy.read_bytes() == bad  # byte for byte: nothing silently lost
    assert "sidenet" in exits(results)
    [notice] = store.notices()
    assert notice.startswith(f"{results} could not be read (") and reason in notice
    assert notice.endswith(f"it was kept as {copy}, not merged")
    store.add(payload(row("sidenet", 64)))  # the next write of the same run does not copy again
    assert sorted(p.name for p in results.parent.glob("ci.*")) == ["ci.json", "ci.unreadable.json"]


def test_an_unreadable_file_never_overwrites_an_earlier_copy(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    results = out / "results" / "ci.json"
    for text in (b"{trunc", b"{other trunc"):
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_bytes(text)
        make_store(out).add(payload(row("none")))
    copies = {p.name: p.read_bytes() for p in results.parent.glob("ci.unreadable*.json")}
    assert copies == {"ci.unreadable.json": b"{trunc", "ci.unreadable.2.json": b"{other trunc"}


def test_an_empty_or_readable_file_is_not_set_aside(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    results = out / "results" / "ci.json"
    results.parent.mkdir(parents=True)
    results.write_bytes(b"")
    store = make_store(out)
    store.add(payload(row("none")))
    store.add(payload(row("sidenet")))
    assert store.notices() == [] and sorted(p.name for p in results.parent.glob("ci*")) == ["ci.json"]


# ---------------------------------------------------------------------------------------------------
# 3. NaN in a stored row: every row kept, strict JSON on disk, the same floats read back
# ---------------------------------------------------------------------------------------------------


def test_a_nan_in_a_stored_row_does_not_cost_the_next_row(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    results = out / "results" / "ci.json"
    make_store(out).add(payload(row("none")))
    # a NaN reaches the file as Python's json (and pytest-benchmark's --benchmark-json) writes it: a bare token
    data = json.loads(results.read_text())
    data["benchmarks"][0]["extra_info"]["main_ece"] = math.nan
    data["benchmarks"].append(row("none", 64, paired_speedup=[1.0, math.inf, -math.inf]))
    results.write_text(json.dumps(data))
    make_store(out).add(payload(row("sidenet", val_loss_se_pt=math.nan)))  # raised ValueError; the row was lost
    stored = strict_json(results)  # strict JSON on disk: no bare NaN
    assert [b["extra_info"]["exit"] for b in stored["benchmarks"]] == ["none", "none", "sidenet"]
    rows = {
        (b["extra_info"]["exit"], b["extra_info"]["batch_size"]): b["extra_info"]
        for b in load_results(results)["benchmarks"]
    }
    assert math.isnan(rows["none", 1]["main_ece"]) and math.isnan(rows["sidenet", 1]["val_loss_se_pt"])
    assert rows["none", 64]["paired_speedup"] == [1.0, math.inf, -math.inf]  # read back as measured
    render_markdown(load_results(results), None)  # and the report still renders


def test_a_row_the_report_refuses_is_measured_again(tmp_path: Path) -> None:
    """A NaN median makes the report refuse the file; skipping that cell on resume kept it refused for good."""
    out = tmp_path / "reports"
    results = out / "results" / "ci.json"
    make_store(out).add(payload(row("none"), row("sidenet")))
    data = json.loads(results.read_text())
    data["benchmarks"][0]["stats"]["median"] = math.nan
    results.write_text(json.dumps(data))
    with pytest.raises(UserError, match="non-finite median"):
        load_results(results)
    assert stored_cell_keys(results, MACHINE) == {"key-sidenet-1"}  # the NaN row is no resume source
    make_store(out).add(payload(row("none")))  # so the next run re-measures it, and the file renders again
    assert len(load_results(results)["benchmarks"]) == 2


# ---------------------------------------------------------------------------------------------------
# 4. a results file that is a symlink is written through
# ---------------------------------------------------------------------------------------------------


def test_a_results_symlink_is_written_through_to_its_target(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "reports", tmp_path / "kept" / "here"
    target = elsewhere / "real.json"
    make_store(elsewhere).add(payload(row("none")))
    (elsewhere / "results" / "ci.json").rename(target)
    link = out / "results" / "ci.json"
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(target, link.parent))
    make_store(out).add(payload(row("sidenet")))
    assert link.is_symlink() and link.resolve() == target.resolve()  # the link stays a link...
    assert exits(target) == ["none", "sidenet"]  # ...and its target has the merged rows
    assert leftovers(out, elsewhere) == []


def test_a_chain_of_links_is_followed_to_the_file(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    target = tmp_path / "real.json"
    target.write_text(json.dumps(payload(row("none"))))
    (tmp_path / "hop.json").symlink_to(target)
    (out / "results").mkdir(parents=True)
    (out / "results" / "ci.json").symlink_to(tmp_path / "hop.json")
    make_store(out).add(payload(row("sidenet")))
    assert (tmp_path / "hop.json").is_symlink() and exits(target) == ["none", "sidenet"]


# ---------------------------------------------------------------------------------------------------
# 5. `sidenet-bench report` takes a run's lock and writes its stamp
# ---------------------------------------------------------------------------------------------------


def shows(report: Path, results: Path) -> bool:
    return report.read_text(encoding="utf-8") == render_markdown(load_results(results), f"{report.stem}_plots")


def test_report_racing_a_run_never_leaves_an_older_report_stamped_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`report` reads the results; a run adds a row and renders the report and its stamp; then `report` writes
    what it read. Unlocked, the older report ends up behind a stamp that says it shows the newer results, and no
    later run re-renders it. Under the run's lock, the run waits and renders last."""
    out = tmp_path / "reports"
    results, report = out / "results" / "ci.json", out / "ci.md"
    make_store(out).add(payload(row("none")), render=True)
    real = sidenet.report.write_report
    racers: list[threading.Thread] = []

    def a_run_finishing() -> None:
        ResultsStore(results, report, MACHINE, render=real).add(payload(sidenet_row()), render=True)

    def report_writing(data: dict[str, Any], path: Path) -> Path:  # `report` has read the results by now
        probe = FileLock(str(out / "results" / ".ci.lock"))
        try:
            probe.acquire(timeout=0)
        except Timeout:  # `report` holds the run's lock: the run has to wait for it
            racers.append(threading.Thread(target=a_run_finishing))
            racers[-1].start()
        else:  # nothing stops the run: it finishes now, before `report` writes
            probe.release()
            a_run_finishing()
        return real(data, path)

    monkeypatch.setattr(sidenet.report, "write_report", report_writing)
    assert main(["report", str(results), "-o", str(report)]) == 0
    for racer in racers:
        racer.join(timeout=60)
    capsys.readouterr()
    assert exits(results) == ["none", "sidenet"]
    assert make_store(out).report_is_current()
    assert shows(report, results)  # what the stamp vouches for is what the report shows


def test_report_stamps_what_it_rendered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Onto a run's report, `report` writes the stamp from the bytes it rendered: from the run's own results the
    report is current (the next run leaves it); from other results (a rescued file) it is not (re-rendered)."""
    out = tmp_path / "reports"
    results, report = out / "results" / "ci.json", out / "ci.md"
    make_store(out).add(payload(row("none")), render=True)
    report.unlink()
    (out / "results" / ".ci.rendered").unlink()
    assert not make_store(out).report_is_current()
    assert main(["report", str(results), "-o", str(report)]) == 0
    assert make_store(out).report_is_current()
    rescued = tmp_path / "rescued.json"
    rescued.write_text(json.dumps(payload(row("none"), sidenet_row())), encoding="utf-8")
    assert main(["report", str(rescued), "-o", str(report)]) == 0
    assert shows(report, rescued) and not make_store(out).report_is_current()
    assert make_store(out).refresh_report() and shows(report, results)  # the next run puts its own back
    capsys.readouterr()


def test_report_elsewhere_takes_no_lock_and_writes_no_stamp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("R.json").write_text(json.dumps(payload(row("none"))), encoding="utf-8")
    Path("docs/results").mkdir(parents=True)  # a folder of that name, but no run's results file in it
    assert main(["report", "R.json", "-o", "docs/x.md"]) == 0
    capsys.readouterr()
    assert Path("docs/x.md").is_file()
    assert [p for p in Path(".").rglob("*") if p.suffix in (".lock", ".rendered")] == []


# ---------------------------------------------------------------------------------------------------
# 6. a report that fails on its output name leaves no figure behind
# ---------------------------------------------------------------------------------------------------


def test_a_report_name_the_file_system_refuses_leaves_no_plots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """243 bytes is a legal name, but its hidden temp file (name + PID + random part) is not: the Markdown cannot
    be written. Figures used to be published first, so its ``_plots/`` folder stayed behind, full of PNGs."""
    monkeypatch.chdir(tmp_path)
    Path("R.json").write_text(json.dumps(payload(row("none"), sidenet_row())), encoding="utf-8")
    name = "r" * 240 + ".md"
    assert main(["report", "R.json", "-o", name]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R.json"]  # no plots folder, no staging folder
    err = capsys.readouterr().err
    assert err.startswith(f"sidenet-bench: error: cannot write report '{name}' (File name too long)")
    assert err.count("\n") == 1


def test_a_failed_report_keeps_the_previous_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing the Markdown fails (a full disk): the previous report's figures are untouched (they used to be
    replaced by the failed report's first) and no figure of the failed report is left behind."""
    out = tmp_path / "r.md"
    write_report(payload(row("none"), sidenet_row()), out)
    before = {p.name: p.read_bytes() for p in (tmp_path / "r_plots").iterdir()}
    changed = payload(row("none"), sidenet_row(), sidenet_row(64))
    for method in ("write_text", "write_bytes"):
        real = getattr(Path, method)

        def full_disk(self: Path, data: Any, *args: Any, real: Any = real, **kwargs: Any) -> int:
            if self.name.startswith(".r.md."):  # the report's temp file: the disk is full
                raise OSError(28, "No space left on device")
            return real(self, data, *args, **kwargs)

        monkeypatch.setattr(Path, method, full_disk)
    with pytest.raises(OSError, match="No space left") as caught:
        write_report(changed, out)
    assert caught.value.filename == str(out)  # named as the report, not as its hidden temp file
    assert {p.name: p.read_bytes() for p in (tmp_path / "r_plots").iterdir()} == before
    assert leftovers(tmp_path) == [] and not list(tmp_path.glob(".sidenet-staging*"))


# ---------------------------------------------------------------------------------------------------
# 7. the path at fault is the one named, and checked up front where cheap
# ---------------------------------------------------------------------------------------------------


def test_a_stamp_that_is_a_folder_is_named_and_the_rows_are_in_the_results(tmp_path: Path, tmp_folder: Path) -> None:
    out = tmp_path / "reports"
    store = make_store(out)
    (out / "results" / ".ci.rendered").mkdir(parents=True)
    new = payload(row("none"))
    with pytest.raises(WriteError) as caught:
        store.add(new, render=True)
    assert caught.value.rows_stored and caught.value.path == out / "results" / ".ci.rendered"
    line = store.failure_line(caught.value, new)
    assert line.startswith(f"cannot write {out / 'results' / '.ci.rendered'} (Is a directory); this run's rows are in")
    assert exits(out / "results" / "ci.json") == ["none"] and list(tmp_folder.iterdir()) == []


def test_a_plots_folder_that_is_a_file_is_named(tmp_path: Path, tmp_folder: Path) -> None:
    out = tmp_path / "reports"
    store = make_store(out)
    out.mkdir()
    (out / "ci_plots").write_text("not a folder")
    new = payload(row("none"), sidenet_row())
    with pytest.raises(WriteError) as caught:
        store.add(new, render=True)
    line = store.failure_line(caught.value, new)
    assert line.startswith(f"cannot write {out / 'ci_plots'} (it is a file where a folder is needed); this run's rows")
    assert not (out / "ci.md").exists() and exits(out / "results" / "ci.json") == ["none", "sidenet"]


def test_a_lock_that_is_a_folder_is_named_and_the_rows_rescued(tmp_path: Path, tmp_folder: Path) -> None:
    out = tmp_path / "reports"
    store = make_store(out)
    (out / "results" / ".ci.lock").mkdir(parents=True)
    new = payload(row("none"))
    with pytest.raises(WriteError) as caught:
        store.add(new)
    line = store.failure_line(caught.value, new)
    assert line.startswith(f"cannot write {out / 'results' / '.ci.lock'} (Is a directory); fix that path")
    rescued = Path(line.split("were saved to ")[1])
    assert rescued.parent == tmp_folder and exits(rescued) == ["none"]


@pytest.mark.parametrize("blocker", ["results/.ci.lock", "results/.ci.rendered", "ci_plots"])
def test_paths_in_the_way_are_refused_before_a_run_measures(tmp_path: Path, blocker: str) -> None:
    (tmp_path / "results").mkdir()
    path = tmp_path / blocker
    if blocker == "ci_plots":
        path.write_text("a file")
    else:
        path.mkdir()
    with pytest.raises(UserError, match=f"^{re.escape(repr(str(path)))}.* move it away or pass another --name$"):
        check_output_paths(tmp_path / "results" / "ci.json", tmp_path / "ci.md")
    check_output_paths(tmp_path / "results" / "other.json", tmp_path / "other.md")  # other names: fine


def test_report_names_a_plots_folder_in_the_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("R.json").write_text(json.dumps(payload(row("none"), sidenet_row())), encoding="utf-8")
    Path("x_plots").write_text("mine")
    assert main(["report", "R.json", "-o", "x.md"]) == 2
    err = capsys.readouterr().err
    expected = "'x_plots' (the report's plots folder) is not a folder; move it away or pass another -o"
    assert err == f"sidenet-bench: error: {expected}\n"
    assert not Path("x.md").exists() and Path("x_plots").read_text() == "mine"
