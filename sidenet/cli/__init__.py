"""The ``sidenet-bench`` console script: ``run`` the benchmark matrix, ``report`` a results JSON, ``list``
what can be benchmarked.

Bad input (:class:`UserError`) becomes one ``sidenet-bench: error: ...`` line and exit code 2, like an
argparse usage error, and nothing is written; any other exception is a bug and keeps its traceback.
``run`` validates every input before any work starts, then measures through the same code as
``pytest bench/``: it runs the test module shipped in the package (:mod:`sidenet.cli.bench_suite`) in-process and
hands the bench plugin (:mod:`sidenet.cli.plugin`) its settings as an object, so both write the same JSON +
Markdown, and an installed package runs the bench from any folder.

Output never turns into a traceback either: a terminal that cannot show ``→ λ ×`` gets ASCII stand-ins, a
standard output that fails (a full disk) and Ctrl-C are one line on stderr and a non-zero exit, and a closed pipe
ends ``list``/``report`` quietly (the reader has what it wanted) but never lets ``run`` claim a success it did
not have. While ``run`` measures, notices (a cache entry rebuilt, a wait on another run's lock) are printed as
they happen (:class:`NoticePrinter`).
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import dataclasses
import errno
import importlib
import os
import re
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sidenet.bench.options import BENCH_OPTIONS, PYTEST_PREFIX, add_cli_options
from sidenet.bench.options import resolve as resolve_options
from sidenet_core.errors import UserError

PROG = "sidenet-bench"


# ---------------------------------------------------------------------------------------------------
# output that degrades instead of failing
# ---------------------------------------------------------------------------------------------------

# what the CLI (and the report and progress lines it prints) writes beyond ASCII, spelt in ASCII for a terminal
# whose encoding lacks it (PYTHONIOENCODING=ascii, a latin-1 locale); anything else becomes '?'
_ASCII_STAND_INS = {
    "→": "->",
    "←": "<-",
    "×": "x",
    "λ": "lambda",
    "≥": ">=",
    "≤": "<=",
    "±": "+-",
    "…": "...",
    "—": "-",
    "–": "-",
    "−": "-",
    "·": ".",
    "µ": "u",
    "⚠": "(!)",
    "✓": "ok",
}
_ERRORS = "sidenet-bench-ascii"
_PROBE = "".join(_ASCII_STAND_INS)


def _stand_in(exc: UnicodeError) -> tuple[str, int]:
    """Codec error handler: ASCII stand-ins for the characters the stream's encoding cannot write."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    text = exc.object[exc.start : exc.end]
    return "".join(_ASCII_STAND_INS.get(ch, "?") for ch in text), exc.end


codecs.register_error(_ERRORS, _stand_in)


def _degrade_output() -> None:
    """Let stdout and stderr write what their encoding lacks as ASCII stand-ins instead of raising
    UnicodeEncodeError in the middle of a listing or a run. Streams that can write everything keep their error
    handler (so nothing changes on a UTF-8 terminal)."""
    for stream in (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            _PROBE.encode(encoding)
            continue
        except (UnicodeEncodeError, LookupError):
            pass
        with contextlib.suppress(AttributeError, ValueError, OSError):  # not a TextIOWrapper, or closed
            stream.reconfigure(errors=_ERRORS)


class _OutputFailed(Exception):
    """Standard output cannot be written (a full disk, an I/O error): neither bad input nor a bug."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(f"cannot write to standard output ({exc.strerror or exc}); send it to a working file or pipe")


class _RunCutOff(Exception):
    """``run``'s output failed under it (``| head`` closed the pipe, a full disk): the run stopped, so it must not
    exit 0, and it says so on stderr, where the user still looks."""

    def __init__(self, out: Path, exc: OSError) -> None:
        if isinstance(exc, BrokenPipeError):
            why, fix = (
                "standard output was closed (its reader, e.g. `head`, left)",
                "send the output to a file (> run.log)",
            )
        else:
            why, fix = (
                f"writing its output failed ({exc.strerror or exc})",
                "free space or send the output elsewhere",
            )
        super().__init__(
            f"{why}, so the run stopped: cells it finished are kept in {str(out / 'results')!r} and a new run "
            f"resumes after them; {fix}"
        )


# how a failing output shows itself (a closed pipe is BrokenPipeError); any other OSError out of pytest is a bug
_OUTPUT_ERRNOS = frozenset({errno.EPIPE, errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG})


def _say(text: str = "") -> None:
    """``print`` to stdout; a write that fails other than by a closed pipe becomes :class:`_OutputFailed`."""
    try:
        print(text)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise _OutputFailed(exc) from exc


def _flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise _OutputFailed(exc) from exc


def _silence_stdout() -> None:
    """Point stdout at /dev/null: Python flushes it again at exit, and that flush must not fail too (a second
    error message, with a traceback, after ours)."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _cli_flags(message: str) -> str:
    """``message`` with pytest's ``--bench-NAME`` flags spelt as this CLI's ``--NAME``: the settings are validated
    by code shared with ``pytest bench/``, whose messages name pytest's flags."""
    stems = sorted((opt.stem for opt in BENCH_OPTIONS), key=len, reverse=True)
    pattern = re.escape(PYTEST_PREFIX) + "(" + "|".join(re.escape(s) for s in stems) + r")(?![\w-])"
    return re.sub(pattern, r"--\1", message)


# (heading, module, attribute): looked up lazily so `list` works while parts of the package are missing
# and never pays for importing torch-heavy modules at parser build time.
LISTINGS: tuple[tuple[str, str, str], ...] = (
    ("tasks", "sidenet.tasks", "TASKS"),
    ("compressors", "compressors", "COMPRESSORS"),
    ("exit systems", "sidenet.exits", "EXIT_SYSTEMS"),
    ("exit policies", "sidenet.engine.policies", "POLICIES"),
)


# ---------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------


def _default_output(results: Path) -> Path:
    return Path("reports") / f"{results.stem}.md"


def _check_report_output(out: Path, results: Path) -> None:
    """Refuse an ``-o`` that writing the report would destroy or misplace: the results file itself (by path,
    hard link or symlink), a directory, anything but a regular file (device, FIFO, socket; also behind a
    symlink), or a name without ``.md`` (the plots folder ``<stem>_plots/`` is named from it)."""
    try:
        same = out.resolve() == results.resolve() or (out.exists() and os.path.samefile(out, results))
    except (OSError, RuntimeError) as exc:  # e.g. a symlink loop
        raise UserError(f"output {str(out)!r} cannot be checked ({exc}); pass another file name") from None
    if same:
        suggestion = _default_output(results)
        if suggestion.resolve() == results.resolve():
            suggestion = suggestion.with_name(f"{results.stem}_report.md")
        raise UserError(
            f"output {str(out)!r} is the results file itself; pass a Markdown name such as {str(suggestion)!r}"
        )
    try:
        st = out.stat()  # follows a symlink: what would be replaced is the thing it points at
    except (FileNotFoundError, NotADirectoryError):  # under a file: the parent check below says so
        st = None  # a new file, or a dangling symlink (replaced by the report, pointing nowhere before)
    except OSError as exc:
        raise UserError(
            f"output {str(out)!r} cannot be checked ({exc.strerror or exc}); pass another file name"
        ) from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")]
        kinds += [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")]
        kind = next((name for test, name in kinds if test(st.st_mode)), "a special file")
        kind = f"a symlink to {kind}" if out.is_symlink() else kind
        fix = (
            f"a file name such as {str(out / 'report.md')!r}"
            if stat.S_ISDIR(st.st_mode)
            else "a new or regular .md file"
        )
        raise UserError(f"output {str(out)!r} is {kind}, not a regular file; pass {fix}")
    if out.suffix.lower() != ".md":
        raise UserError(
            f"output {str(out)!r} does not end in .md (its plots go to <stem>_plots/ beside it); "
            f"pass a name such as {str(out.with_name(out.stem + '.md'))!r}"
        )


def _cmd_report(args: argparse.Namespace) -> int:
    """Render a results JSON. Onto a run's report (``<out>/<name>.md`` beside ``<out>/results/<name>.json``) it
    takes that run's lock and writes its stamp (:func:`sidenet.bench.store.render_report`): a report racing a run never
    leaves an older report behind a stamp that says it is current."""
    from sidenet.bench.results import load_results
    from sidenet.bench.store import render_report
    from sidenet.report import write_report  # matplotlib is slow to import; only `report` needs it

    results_path = Path(args.results)
    load_results(results_path)  # a malformed file is a one-line error before anything is written
    out = Path(args.output) if args.output else _default_output(results_path)
    _check_report_output(out, results_path)
    plots = out.with_name(f"{out.stem}_plots")
    if (plots.exists() or plots.is_symlink()) and not plots.is_dir():
        raise UserError(f"{str(plots)!r} (the report's plots folder) is not a folder; move it away or pass another -o")
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"output {str(out)!r} cannot be created: {str(ancestor)!r} is not a directory")
    try:
        written = render_report(results_path, out, write_report)
    except OSError as exc:  # files are replaced atomically (figures staged): nothing is half-written or left behind
        raise _report_write_error(out, exc) from None
    print(written)
    return 0


def _report_write_error(out: Path, exc: OSError) -> UserError:
    """One line naming the path that could not be written (the report, its plots folder, the lock) and why."""
    from sidenet.bench.store import WriteError

    why = exc.reason if isinstance(exc, WriteError) else exc.strerror or str(exc)
    culprit = Path(str(exc.filename)) if exc.filename else out
    if culprit == out:
        return UserError(f"cannot write report {str(out)!r} ({why}); pass another -o or free that path")
    return UserError(f"cannot write report {str(out)!r}: {str(culprit)!r}: {why}; move it away or pass another -o")


def _add_report_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="render a results JSON into a Markdown report with plots",
        description="Render a pytest-benchmark JSON written by `pytest bench/ --benchmark-only` into "
        "Markdown (tables + plots in <stem>_plots/ next to it). Files are replaced atomically; the output must "
        "end in .md and is never the results file, a directory or a device/FIFO/socket.",
    )
    p.add_argument("results", metavar="RESULTS.json", help="pytest-benchmark JSON with sidenet-bench rows")
    p.add_argument(
        "-o", "--output", metavar="FILE", help="Markdown file to write, ending in .md (default: reports/<stem>.md)"
    )
    p.set_defaults(handler=_cmd_report)


# ---------------------------------------------------------------------------------------------------
# list
# ---------------------------------------------------------------------------------------------------


def _description(item: Any) -> str:
    """First line of ``item.description`` (or of its docstring): `list` prints one line per entry."""
    text = getattr(item, "description", None) or getattr(item, "__doc__", None) or ""
    lines = str(text).strip().splitlines()
    return lines[0].strip() if lines else ""


def _chains(item: Any) -> str:
    """A task's default compressor chains (what `run` measures when no --chain is given); an exit system's
    default specs (what `run` measures when no --exit is given)."""
    chains = tuple(getattr(item, "default_chains", ()) or ())
    listed = f" [default chains: {', '.join(chains)}]" if chains and chains != ("none",) else ""
    defaults = tuple(getattr(item, "bench_defaults", ()) or ())  # an exit system's specs run when none is given
    return listed + (f" [default: {', '.join(defaults)}]" if defaults else "")


def _listing(module: str, attr: str) -> list[str]:
    """Lines for one registry; a module that cannot be imported yet is reported, not fatal."""
    try:
        registry = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        return [f"(unavailable: {module}.{attr}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"]
    if isinstance(registry, dict):  # a plain name → description table (e.g. the harness's exit systems)
        entries = [(str(name), str(text)) for name, text in registry.items()]
    else:
        entries = [(name, _description(registry.get(name)) + _chains(registry.get(name))) for name in registry.names()]
    if not entries:
        return ["(none yet)"]
    width = max(len(n) for n, _ in entries)
    return [f"{name:<{width}}  {text}".rstrip() for name, text in entries]


def _cmd_list(args: argparse.Namespace) -> int:
    for heading, module, attr in LISTINGS:
        _say(f"{heading}:")
        for line in _listing(module, attr):
            _say(f"  {line}")
    return 0


def _add_list_parser(sub: Any) -> None:
    p = sub.add_parser(
        "list",
        help="list tasks, compressors, exit systems and exit policies",
        description="List the registered tasks, compressors, exit systems (what `run --exit` takes) and exit "
        "policies (how a SideNet's logits become a confidence), one line each.",
    )
    p.set_defaults(handler=_cmd_list)


# ---------------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------------

_PYTEST_USAGE_ERROR = 4
_PYTEST_INTERRUPTED = 2


def _run_settings(args: argparse.Namespace) -> Any:
    try:
        return resolve_options(vars(args), command="sidenet-bench run")
    except UserError as exc:
        raise UserError(_cli_flags(str(exc))) from None


def _pytest_args(suite: Path, quiet: bool) -> list[str]:
    """pytest's own options only: the bench's settings reach the plugin as an object, never as argv.
    ``--confcutdir``: no ``conftest.py`` of the folders above the package is loaded into the run (a virtual
    environment inside another project would otherwise bring that project's)."""
    args = [str(suite), "--benchmark-only", "-p", "no:cacheprovider", f"--confcutdir={suite.parent}"]
    return args + (["-q", "--benchmark-quiet"] if quiet else ["-s"])  # -s: progress bars (with ETA) are seen


class NoticePrinter:
    """pytest plugin of ``sidenet-bench run``: every notice (:func:`sidenet_core.status.notify`, and the library's
    logged warnings: a cache entry deleted and rebuilt, a wait on another run's lock, an unusable cost record)
    reaches the terminal when it happens, out of pytest's capture like the progress lines. Without it they sat in
    pytest's log capture, shown only for a failed cell, and a run waiting minutes on a lock looked hung. Shown with
    ``-q`` too: a notice is not progress."""

    def __init__(self) -> None:
        self.config: Any = None  # pytest.Config (pytest is imported only when a run starts)
        self.stop: Callable[[], None] | None = None

    def pytest_configure(self, config: Any) -> None:
        from sidenet_core.status import listen_notices

        self.config = config
        self.stop = listen_notices(self.write)

    def pytest_unconfigure(self, config: Any) -> None:
        if self.stop is not None:
            self.stop()
            self.stop = None

    def write(self, message: str) -> None:
        line = f"{PROG}: notice: {' '.join(message.split())}"  # one line, whatever it was given
        plugins = self.config.pluginmanager
        reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
        uncaptured = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()
        with contextlib.suppress(OSError), uncaptured:  # a notice that cannot be shown must not stop the run
            if reporter is None:
                print(line, file=sys.stderr, flush=True)
                return
            if getattr(getattr(reporter, "_tw", None), "width_of_current_line", 0):  # after `-q`'s progress dots
                reporter.write("\n")
            reporter.write_line(line)
            reporter.flush()


def _cmd_run(args: argparse.Namespace) -> int:
    from sidenet.bench.harness import check_data, check_out_dir, check_selection, quiet_from_env
    from sidenet.engine.cache import check_cache_dir

    # 1. validate everything, cheapest first; nothing is written until all of it passed (directories are only
    #    inspected until then: a refused run leaves no folders behind)
    settings = _run_settings(args)
    try:
        check_selection(settings)
    except UserError as exc:
        raise UserError(_cli_flags(str(exc))) from None
    check_out_dir(settings.out, create=False)
    check_cache_dir(create=False)
    check_data(settings.tasks)
    check_cache_dir()  # a bad cache directory fails now, not after the first model is trained ...
    check_out_dir(settings.out, create=True)  # ... and before the output directory is made
    quiet = bool(args.quiet or quiet_from_env())
    try:
        code = _measure(settings, quiet)
        _flush_stdout()  # output still buffered (a pipe) fails here, where it is the run's failure, not at exit
        return code
    except (OSError, _OutputFailed) as exc:  # `run | head -1`, `run > /dev/full`: the run stopped where it was
        cause = exc.__cause__ if isinstance(exc, _OutputFailed) else exc
        if not isinstance(cause, OSError) or cause.errno not in _OUTPUT_ERRNOS:
            raise
        raise _RunCutOff(settings.out, cause) from None


def _measure(settings: Any, quiet: bool) -> int:
    """Run the bench's test module shipped in the package (:mod:`sidenet.cli.bench_suite`, the same test as
    ``pytest bench/``, so the same outputs) with the bench plugin built from ``settings``; pytest's exit code
    mapped. The settings travel as an object: nothing is turned back into ``--bench-*`` argv and parsed again, and
    no environment variable carries quiet mode."""
    if not quiet:
        chains = "; ".join(f"{t}: " + ", ".join(settings.chains_for(t)) for t in settings.tasks)
        cells = f"{settings.n_cells()} cell(s) over {len(settings.tasks)} task(s)"
        _say(f"{PROG}: {cells}, chains {chains} → {settings.out}")
        _flush_stdout()
    import pytest

    from sidenet.bench.harness import invocation
    from sidenet.cli.plugin import BenchPlugin

    # what the plugin used to re-resolve from argv: the output folder absolute, the command as the user typed it
    given = dataclasses.replace(settings, out=settings.out.resolve(), command=invocation(sys.argv), quiet=quiet)
    suite = Path(__file__).resolve().with_name("bench_suite.py")  # by path: pytest imports (and rewrites) it
    code = int(pytest.main(_pytest_args(suite, quiet), plugins=[NoticePrinter(), BenchPlugin(given)]))
    if code == 0:
        return 0
    if code == _PYTEST_USAGE_ERROR:
        return 2
    if code == _PYTEST_INTERRUPTED:
        return 130
    return 1


def _add_run_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="benchmark the matrix task × chain × exit system × batch size; write results JSON + report",
        description="Validate every input, then time each cell through the same code as `pytest bench/ "
        "--benchmark-only` and write <out>/results/<name>.json and <out>/<name>.md (atomically). Cells already "
        "stored there with the same settings and library versions are skipped (resume) unless --force. "
        "Trained MainNets/SideNets are cached ($SIDENET_BENCH_CACHE) and reused.",
    )
    add_cli_options(p)
    p.set_defaults(handler=_cmd_run)


# ---------------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Does an early-exit SideNet still save compute on a compressed model?",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_parser(sub)
    _add_report_parser(sub)
    _add_list_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code (argparse itself exits 2 on usage errors, 0 on --help).

    Everything heavy (torch, the registries, pytest) is imported in here, after this function started, and a
    Ctrl-C at any point of it, start-up imports included, is one line on stderr and exit code 130: importing
    ``sidenet.cli`` itself is light (``sidenet`` exposes its API lazily) so there is nothing left for a Ctrl-C to
    interrupt with a traceback before this ``try``."""
    command: str | None = None
    try:
        _degrade_output()
        args = build_parser().parse_args(argv)
        command = args.command
        code = int(args.handler(args))
        _flush_stdout()  # here, where a closed pipe or a full disk can be handled, not at interpreter exit
        return code
    except UserError as exc:
        return _fail(str(exc), 2)
    except KeyboardInterrupt:
        if command == "run":
            return _fail("interrupted; finished files are intact, a new run resumes", 130, prefix="")
        return _fail("interrupted", 130, prefix="")
    except (_OutputFailed, _RunCutOff) as exc:
        _silence_stdout()
        return _fail(str(exc), 1)
    except BrokenPipeError:  # `sidenet-bench list | head -1`: the reader has what it wanted (`run` says otherwise)
        _silence_stdout()
        return 0


def _fail(message: str, code: int, prefix: str = "error: ") -> int:
    """One line on stderr (never a second error if stderr is gone too); returns ``code``."""
    with contextlib.suppress(OSError):
        print(f"{PROG}: {prefix}{message}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
