"""The bench's pytest plugin: options, parametrisation, thread pinning, fixtures, progress, results + report.

Two ways in, one plugin. ``sidenet-bench run`` resolves and validates its settings, then hands pytest a
:class:`BenchPlugin` built *with* them (``pytest.main([...], plugins=[BenchPlugin(settings)])``) and runs the test
module shipped in the package (:mod:`sidenet.cli.bench_suite`), so an installed package runs the bench from any
folder and the settings are never turned back into argv and parsed again. ``pytest bench/ --benchmark-only``
loads the same plugin from ``bench/conftest.py``, built without settings: it reads its own ``--bench-*`` options
(``pytest bench/ --help``, group "sidenet-bench"). Not a ``pytest11`` entry point: that would load it into every
pytest run of every project in the environment, this project's own tests included.

Each benchmark is one cell task × chain × exit system × batch size; its ``extra_info`` is what
:class:`sidenet.bench.row_record.RowRecord` writes. At session end the rows of the cells that passed are merged into
``<out>/results/<name>.json`` and the Markdown report ``<out>/<name>.md`` is rendered, both written atomically. A
cell already stored there with the same ``cell_key`` is skipped (resume) unless ``--bench-force``.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from sidenet.bench import cell_costs
from sidenet.bench.harness import (
    BenchContext,
    BenchSettings,
    check_out_dir,
    check_output_files,
    check_selection,
    invocation,
    measured_by,
)
from sidenet.bench.options import BENCH_OPTIONS, add_pytest_options, resolve
from sidenet.bench.store import ResultsStore, check_output_paths
from sidenet.bench.timing_checks import summary_line
from sidenet.cli import NoticePrinter
from sidenet.engine.cache import check_cache_dir
from sidenet.report import write_report
from sidenet_core.errors import UserError
from sidenet_core.status import listen


@dataclass(frozen=True)
class Cell:
    task: str
    chain: str
    exit: str
    batch_size: int

    def __str__(self) -> str:
        return f"{self.task}-{self.chain}-{self.exit}-bs{self.batch_size}"


_CTX = pytest.StashKey["BenchContext"]()
_STORE = pytest.StashKey[ResultsStore]()
_RUN = pytest.StashKey[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]()
_SUMMARY = pytest.StashKey[str]()
_PERSISTED = pytest.StashKey[set[str]]()  # node ids of cells whose rows reached the results file
_DEFAULT_STORAGE = "file://./.benchmarks"
_THIS_MODULE = sys.modules[__name__]


@pytest.fixture(scope="session")
def bench_ctx(request: pytest.FixtureRequest) -> BenchContext:
    return request.config.stash[_CTX]


@pytest.fixture
def persist_cell(request: pytest.FixtureRequest) -> Callable[[Any], None]:
    """``persist_cell(benchmark)``: write this cell's row into the results now, as the last step of a cell that
    passed its checks, so a run killed later keeps it (and resumes after it). Called from the test body, not
    from a reporting hook: a Ctrl-C while writing then interrupts the session cleanly (a KeyboardInterrupt in a
    hook is an INTERNALERROR) and the previous results stay as they were."""

    def persist(benchmark: Any) -> None:
        stats = getattr(benchmark, "stats", None)
        if not stats:
            return
        try:
            _store(request.config).add(_results_json(request.config, [stats]))
            request.config.stash.setdefault(_PERSISTED, set()).add(request.node.nodeid)
        except OSError as exc:  # e.g. a full disk: the session's end tries again with every finished cell
            logging.getLogger("sidenet").warning("could not persist %s yet (%s)", request.node.nodeid, exc)

    return persist


class BenchPlugin:
    """The bench session's hooks; it registers this module's fixtures when the session is configured.

    ``settings``: what ``sidenet-bench run`` resolved and validated; None under ``pytest bench/``, where they come
    from the ``--bench-*`` options. Everything a session accumulates lives in ``config.stash``, not here, so one
    instance (``bench/conftest.py`` keeps one per process) serves any number of sessions."""

    def __init__(self, settings: BenchSettings | None = None) -> None:
        self.settings = settings

    def pytest_addoption(self, parser: pytest.Parser) -> None:
        # declared once (sidenet.bench.options); also under `run`, where they are ignored: `--help` still lists them
        add_pytest_options(parser.getgroup("sidenet-bench"))

    def _cuda_missing(self, config: pytest.Config) -> bool:
        """``--bench-device cuda`` on a machine without CUDA: every cell is skipped (so `tox -e gpu` passes on CI).
        The CLI (`sidenet-bench run --device cuda`) refuses instead, with a one-line error."""
        if self.settings is not None:
            return self.settings.cuda_missing
        return config.getoption("bench_device") == "cuda" and not torch.cuda.is_available()

    def _resolve(self, config: pytest.Config) -> BenchSettings:
        if self.settings is not None:
            return self.settings
        values = {opt.dest: config.getoption("bench_" + opt.dest) for opt in BENCH_OPTIONS}
        return resolve(values, command=invocation(sys.argv), cuda_missing=self._cuda_missing(config))

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if self._cuda_missing(config):
            reason = "--bench-device cuda: CUDA not available (torch.cuda.is_available() is False)"
            skip = pytest.mark.skip(reason=reason)
            for item in items:
                if "cell" in getattr(item, "fixturenames", ()):
                    item.add_marker(skip)

    def pytest_cmdline_main(self, config: pytest.Config) -> None:
        """pytest-benchmark creates its storage folder (``./.benchmarks``) at start-up even when nothing will be
        saved in it, leaving an empty folder wherever ``sidenet-bench run`` or ``pytest bench/`` was started.
        Unless the user saves or compares runs (``--benchmark-save/-autosave/-compare``), point it at a temporary
        folder that is removed at the end. Runs before any plugin's ``pytest_configure``."""
        opt = config.option
        uses_storage = any(
            getattr(opt, name, None) for name in ("benchmark_save", "benchmark_autosave", "benchmark_compare")
        ) or getattr(opt, "benchmark_compare_fail", None)
        if uses_storage or getattr(opt, "benchmark_storage", None) != _DEFAULT_STORAGE:
            return
        folder = tempfile.mkdtemp(prefix="sidenet-bench-pb-storage-")
        opt.benchmark_storage = f"file://{folder}"
        config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        try:
            settings = self._resolve(config)
            if not config.getoption("help"):
                check_selection(settings)  # nothing to time, a tap the task's model lacks: before anything is made
                check_out_dir(settings.out, create=True)  # fail now, not after an hour of measuring
                check_cache_dir()  # and the cache, before the first model is trained
        except UserError as exc:  # a user error in our options: one line, exit code 4 (pytest's usage error)
            raise pytest.UsageError(str(exc)) from None
        torch.set_num_threads(settings.threads)  # pinned before any model runs; recorded per row
        logging.getLogger("sidenet").setLevel(logging.INFO)
        ctx = BenchContext(settings)
        try:
            check_output_files(*ctx.output_paths())
            check_output_paths(*ctx.output_paths())  # the lock, stamp and plots folder beside them
        except UserError as exc:
            raise pytest.UsageError(str(exc)) from None
        config.stash[_CTX] = ctx
        if not config.pluginmanager.is_registered(_THIS_MODULE):
            # its fixtures (bench_ctx, persist_cell), visible to every test: module functions, because pytest
            # deprecates a plugin instance's session fixtures and warns about static ones
            config.pluginmanager.register(_THIS_MODULE, "sidenet-bench-fixtures")
        config.pluginmanager.register(Progress(config), "sidenet-bench-progress")
        if not any(isinstance(p, NoticePrinter) for p in config.pluginmanager.get_plugins()):  # `run` brings its own
            config.pluginmanager.register(NoticePrinter(), "sidenet-bench-notices")  # its pytest_configure runs now

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "cell" not in metafunc.fixturenames:
            return
        s = metafunc.config.stash[_CTX].settings
        cells = [Cell(*cell) for cell in s.cells()]
        metafunc.parametrize("cell", cells, ids=str)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo) -> object:
        """Remember which cells passed: a cell that failed its checks or was interrupted is never written."""
        outcome = yield
        report = outcome.get_result()
        ctx = item.config.stash.get(_CTX, None)
        if ctx is not None and report.when == "call" and report.passed:
            ctx.passed.add(report.nodeid)

    def pytest_benchmark_update_machine_info(self, config: pytest.Config, machine_info: dict) -> None:
        ctx = config.stash.get(_CTX, None)
        if ctx is not None:
            machine_info["sidenet"] = ctx.environment()
        machine_info.setdefault("platform", platform.platform())

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """Merge this session's passed cells into the stored results and render the report (atomically); with
        nothing new, re-render the report only if it does not show the stored results (a run killed in between)."""
        config = session.config
        ctx = config.stash.get(_CTX, None)
        if ctx is not None:
            ctx.close()  # the timing workers end with the session
        bs = getattr(config, "_benchmarksession", None)
        if ctx is None or bs is None or bs.disabled:
            return
        results_path, report_path = ctx.output_paths()
        if exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR):
            # finished cells are in the results already (persist_cell); the next run renders the report
            config.stash[_SUMMARY] = f"sidenet-bench: stopped early; {_kept(ctx.passed, config, results_path)}"
            return
        finished = [b for b in bs.benchmarks if b.fullname in ctx.passed and b]
        store = _store(config)
        new = _results_json(config, finished) if finished else None
        try:
            if new is not None:
                store.add(new, render=True)
                summary = f"sidenet-bench: results {results_path}; report {report_path}"
                flagged = summary_line(new.get("benchmarks") or [])  # this run's rows only
                summary += f"\n{flagged}" if flagged else ""
            elif store.refresh_report():
                summary = f"sidenet-bench: nothing new measured; {report_path} re-rendered from {results_path}"
            else:
                summary = f"sidenet-bench: nothing new measured; {results_path} and {report_path} left as they were"
        except UserError as exc:
            summary = f"sidenet-bench: error: {exc}"
        except OSError as exc:  # a full disk, a folder removed, a path in the way: the store names it, keeps the rows
            summary = f"sidenet-bench: error: {store.failure_line(exc, new)}"
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        for notice in store.notices():  # old results set aside (another machine's rows, an unreadable file)
            summary += f"\nsidenet-bench: {notice}"
        config.stash[_SUMMARY] = summary

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
        line = config.stash.get(_SUMMARY, None)
        if line:
            terminalreporter.write_line(line)


def _kept(passed: set[str], config: pytest.Config, results_path: object) -> str:
    """What an interrupted run kept: only cells whose rows were written count as kept; a finished cell whose write
    failed (a full disk: persist_cell warned) is said to be lost, not claimed to be in the results file."""
    written = passed & config.stash.get(_PERSISTED, set())
    if not passed:
        return "no cell finished"
    kept = f"{len(written)} finished cell(s) kept in {results_path}" if written else f"none written to {results_path}"
    lost = len(passed) - len(written)
    return kept + (
        f"; {lost} finished but not written (the write failed), measured again by the next run" if lost else ""
    )


def _store(config: pytest.Config) -> ResultsStore:
    if _STORE not in config.stash:
        ctx = config.stash[_CTX]
        config.stash[_STORE] = ResultsStore(*ctx.output_paths(), ctx.machine, render=write_report)
    return config.stash[_STORE]


def _results_json(config: pytest.Config, benchmarks: list[Any]) -> dict[str, Any]:
    """pytest-benchmark's JSON for ``benchmarks``, each row stamped with the run that measured it. Machine and
    commit info are gathered once per session (py-cpuinfo and git are slow); the run record too, so every row
    of one run carries the same one (results merge across runs: resume, re-measured subsets)."""
    if _RUN not in config.stash:
        bs = config._benchmarksession  # type: ignore[attr-defined]
        commit_info = config.hook.pytest_benchmark_generate_commit_info(config=config)
        run = measured_by(commit_info, config.stash[_CTX].settings.command)
        config.stash[_RUN] = (bs.get_machine_info(), commit_info, run)
    machine_info, commit_info, run = config.stash[_RUN]
    for b in benchmarks:
        b.extra_info["run"] = run
    return config.hook.pytest_benchmark_generate_json(
        config=config, benchmarks=benchmarks, include_data=True, machine_info=machine_info, commit_info=commit_info
    )


class Progress:
    """How far the whole run is, one line per finished cell: cells done of all, elapsed, and the time left.

    Time left (:class:`sidenet.bench.cell_costs.Estimator`): each remaining cell's recorded cost on this machine from an
    earlier run (by cell key) where it did not train, else the pace of this run's cells of its task and batch size.
    Training is not predicted: the line says so while cells without any basis remain. A line also says when a cell
    starts training or tracing (announced by the library). Silent with ``-q`` (pytest's) or quiet settings
    (``--bench-quiet``, ``sidenet-bench run -q``)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.total = self.measured = self.skipped = self.failed = 0
        self.start = self.cell_start = time.monotonic()
        self.cell_trained = False
        self.costs = cell_costs.load()
        self.estimator = cell_costs.Estimator(dict(self.costs))
        self.pending: dict[str, tuple[str, str]] = {}  # node id -> (cell key, group) of cells still to run
        self.stop_listening = listen(self.now)  # the library says when it starts training or tracing

    @property
    def quiet(self) -> bool:
        ctx = self.config.stash.get(_CTX, None)
        return self.config.option.verbose < 0 or (ctx is not None and ctx.settings.quiet)

    def now(self, what: str) -> None:
        """A line when a cell starts something slow (training a model, tracing a system): what and how far."""
        self.cell_trained = True
        done = self.measured + self.skipped + self.failed
        self._write(
            f"sidenet-bench: cell {done + 1}/{self.total}: {what} ({_minutes(time.monotonic() - self.start)} elapsed)"
        )

    def _write(self, line: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or self.quiet:
            return
        # announced while a cell runs, i.e. while pytest captures its output: step outside the capture to be seen
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.ensure_newline()
            reporter.write_line(line)
            reporter.flush()  # seen now, also when the output goes to a file or a pipe

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self.stop_listening()
        cell_costs.save(self.costs)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        ctx = self.config.stash[_CTX]
        for item in session.items:
            cell = getattr(item, "callspec", None) and item.callspec.params.get("cell")
            if not isinstance(cell, Cell):
                continue
            self.total += 1
            if ctx.stored_result(cell.task, cell.chain, cell.exit, cell.batch_size) is None:  # else skipped: ~0 s
                key = ctx.cell_key(cell.task, cell.chain, cell.exit, cell.batch_size)
                self.pending[item.nodeid] = (key, f"{cell.task} bs{cell.batch_size}")
        self.start = time.monotonic()

    def pytest_runtest_logstart(self, nodeid: str, location: object) -> None:
        self.cell_start = time.monotonic()
        self.cell_trained = False

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.nodeid.split("::")[-1].startswith("test_cell"):
            return
        if report.when == "call":
            if report.passed:
                self.measured += 1
            elif report.skipped:  # resume (its row is stored already) or not runnable here
                self.skipped += 1
            else:
                self.failed += 1
        elif report.when == "setup" and not report.passed:
            self.skipped += report.skipped
            self.failed += report.failed
        else:
            return
        key_group = self.pending.pop(report.nodeid, None)
        if key_group is not None and report.passed:
            seconds = time.monotonic() - self.cell_start
            cell_costs.record(self.costs, key_group[0], seconds, self.cell_trained)
            self.estimator.finished(key_group[1], seconds, self.cell_trained)
        self._write(self.line(time.monotonic()))

    def line(self, now: float) -> str:
        done = self.measured + self.skipped + self.failed
        text = f"sidenet-bench: cell {done}/{self.total} ({self.measured} measured, {self.skipped} skipped"
        text += f", {self.failed} failed" if self.failed else ""
        text += f"), {_minutes(now - self.start)} elapsed"
        if not self.pending:
            return text
        seconds, from_record, unknown = self.estimator.left(self.pending.values())
        known = len(self.pending) - unknown
        if known:
            basis = "recorded costs" if from_record == known else "this run's pace" if not from_record else "both"
            text += f", about {_minutes(seconds)} left for {known} cell(s) ({basis})"
        if unknown:
            text += f"; {unknown} cell(s) not estimated yet"
        if unknown or self.estimator.may_train(self.pending.values()):
            text += ", training not included"
        return text


def _minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"
