"""The ``sidenet-bench`` console script: ``run`` the benchmark matrix, ``report`` a results JSON, ``list``
what can be benchmarked.

Bad input (:class:`UserError`) becomes one ``sidenet-bench: error: ...`` line and exit code 2, like an
argparse usage error, and nothing is written; any other exception is a bug and keeps its traceback.
``run`` validates every input before any work starts, then measures through the same code as
``pytest bench/`` (it runs that suite in-process), so both write the same JSON + Markdown.
"""

from __future__ import annotations

import argparse
import importlib
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sidenet.bench_options import add_cli_options, pytest_args
from sidenet.bench_options import resolve as resolve_options
from sidenet_core.errors import UserError

PROG = "sidenet-bench"

# (heading, module, attribute): looked up lazily so `list` works while parts of the package are missing
# and never pays for importing torch-heavy modules at parser build time.
LISTINGS: tuple[tuple[str, str, str], ...] = (
    ("tasks", "sidenet.tasks", "TASKS"),
    ("compressors", "compressors", "COMPRESSORS"),
    ("exit systems", "sidenet.exits", "EXIT_SYSTEMS"),
    ("exit policies", "sidenet.policies", "POLICIES"),
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
    from sidenet.report import write_report  # matplotlib is slow to import; only `report` needs it
    from sidenet.results import load_results

    results_path = Path(args.results)
    results = load_results(results_path)
    out = Path(args.output) if args.output else _default_output(results_path)
    _check_report_output(out, results_path)
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"output {str(out)!r} cannot be created: {str(ancestor)!r} is not a directory")
    try:
        written = write_report(results, out)
    except OSError as exc:  # e.g. a read-only folder; files are replaced atomically, so nothing is half-written
        raise UserError(f"cannot write report {str(out)!r}: {exc.strerror or exc}") from None
    print(written)
    return 0


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
    """A task's default compressor chains (what `run` measures when no --chain is given)."""
    chains = tuple(getattr(item, "default_chains", ()) or ())
    return f" [default chains: {', '.join(chains)}]" if chains and chains != ("none",) else ""


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
        print(f"{heading}:")
        for line in _listing(module, attr):
            print(f"  {line}")
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


def _find_bench_dir() -> Path:
    """The ``bench/`` suite: ``./bench`` when it is ours, else the one next to the installed ``sidenet`` package
    (a checkout or an editable install)."""
    import sidenet

    candidates = [Path.cwd() / "bench", Path(sidenet.__file__).resolve().parent.parent / "bench"]
    for folder in candidates:
        conftest = folder / "conftest.py"
        try:
            if conftest.is_file() and "sidenet.harness" in conftest.read_text(encoding="utf-8"):
                return folder.resolve()
        except OSError:
            continue
    raise UserError(
        "the benchmark suite (bench/conftest.py) was not found; run from a sidenet-bench checkout "
        "(git clone + pip install -e .)"
    )


def _run_settings(args: argparse.Namespace) -> Any:
    return resolve_options(vars(args), command="sidenet-bench run")


def _pytest_args(settings: Any, bench: Path, quiet: bool) -> list[str]:
    args = [str(bench), "--benchmark-only", "-p", "no:cacheprovider"]  # rootdir + ini: the checkout's
    args += ["-q", "--benchmark-quiet"] if quiet else ["-s"]  # -s: progress bars (with ETA) reach the terminal
    return args + pytest_args(settings, quiet)


def _cmd_run(args: argparse.Namespace) -> int:
    from sidenet.cache import check_cache_dir
    from sidenet.harness import check_data, check_out_dir, quiet_from_env

    # 1. validate everything, cheapest first; nothing is written until all of it passed
    settings = _run_settings(args)
    bench = _find_bench_dir()
    check_out_dir(settings.out, create=False)
    check_data(settings.tasks)
    check_out_dir(settings.out, create=True)
    check_cache_dir()  # a bad cache directory fails now, not after the first model is trained
    quiet = bool(args.quiet or quiet_from_env())
    if not quiet:
        print(
            f"{PROG}: {settings.n_cells()} cell(s) over {len(settings.tasks)} task(s), chains "
            f"{'; '.join(f'{t}: ' + ', '.join(settings.chains_for(t)) for t in settings.tasks)} → {settings.out}",
            flush=True,
        )
    # 2. measure through the bench suite itself (same code, same outputs as `pytest bench/`)
    import pytest

    previous = os.environ.get("SIDENET_BENCH_QUIET")
    if quiet:
        os.environ["SIDENET_BENCH_QUIET"] = "1"
    try:
        code = int(pytest.main(_pytest_args(settings, bench, quiet)))
    finally:
        if quiet:
            if previous is None:
                os.environ.pop("SIDENET_BENCH_QUIET", None)
            else:
                os.environ["SIDENET_BENCH_QUIET"] = previous
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
    """Console entry point; returns the exit code (argparse itself exits 2 on usage errors, 0 on --help)."""
    args = build_parser().parse_args(argv)
    try:
        code = int(args.handler(args))
        sys.stdout.flush()  # here, where a closed pipe can be handled, not at interpreter exit
        return code
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; finished files are intact, a new run resumes", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `sidenet-bench list | head -1`: the reader has what it wanted
        # Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
