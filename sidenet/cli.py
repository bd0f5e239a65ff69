"""The ``sidenet-bench`` console script: ``report`` a results JSON, ``list`` what can be benchmarked.

Bad input (:class:`UserError`) becomes one ``sidenet-bench: error: ...`` line and exit code 2, like an
argparse usage error; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sidenet.errors import UserError

PROG = "sidenet-bench"

# (heading, module, attribute): looked up lazily so `list` works while parts of the package are missing
# and never pays for importing torch-heavy modules at parser build time.
LISTINGS: tuple[tuple[str, str, str], ...] = (
    ("tasks", "sidenet.tasks", "TASKS"),
    ("compressors", "compressors", "COMPRESSORS"),
    ("exit systems", "sidenet.policies", "POLICIES"),
)


# ---------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------


def _default_output(results: Path) -> Path:
    return Path("reports") / f"{results.stem}.md"


def _cmd_report(args: argparse.Namespace) -> int:
    from sidenet.report import write_report  # matplotlib is slow to import; only `report` needs it
    from sidenet.results import load_results

    results_path = Path(args.results)
    results = load_results(results_path)
    out = Path(args.output) if args.output else _default_output(results_path)
    if out.is_dir():
        raise UserError(f"output {str(out)!r} is a directory; pass a file name such as {str(out / 'report.md')!r}")
    print(write_report(results, out))
    return 0


def _add_report_parser(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="render a results JSON into a Markdown report with plots",
        description="Render a pytest-benchmark JSON written by `pytest bench/ --benchmark-only` into "
        "Markdown (tables + plots in <stem>_plots/ next to it). Files are replaced atomically.",
    )
    p.add_argument("results", metavar="RESULTS.json", help="pytest-benchmark JSON with sidenet-bench rows")
    p.add_argument("-o", "--output", metavar="FILE", help="Markdown file to write (default: reports/<stem>.md)")
    p.set_defaults(handler=_cmd_report)


# ---------------------------------------------------------------------------------------------------
# list
# ---------------------------------------------------------------------------------------------------


def _description(item: Any) -> str:
    """First line of ``item.description`` (or of its docstring): `list` prints one line per entry."""
    text = getattr(item, "description", None) or getattr(item, "__doc__", None) or ""
    lines = str(text).strip().splitlines()
    return lines[0].strip() if lines else ""


def _listing(module: str, attr: str) -> list[str]:
    """Lines for one registry; a module that cannot be imported yet is reported, not fatal."""
    try:
        registry = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        return [f"(unavailable: {module}.{attr}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"]
    names = list(registry.names())
    if not names:
        return ["(none yet)"]
    width = max(len(n) for n in names)
    return [f"{name:<{width}}  {_description(registry.get(name))}".rstrip() for name in names]


def _cmd_list(args: argparse.Namespace) -> int:
    for heading, module, attr in LISTINGS:
        print(f"{heading}:")
        for line in _listing(module, attr):
            print(f"  {line}")
    return 0


def _add_list_parser(sub: Any) -> None:
    p = sub.add_parser(
        "list",
        help="list tasks, compressors and exit systems",
        description="List the registered tasks, compressors and exit systems, one line each.",
    )
    p.set_defaults(handler=_cmd_list)


# ---------------------------------------------------------------------------------------------------
# run (placeholder)
# ---------------------------------------------------------------------------------------------------


def _add_run_parser(sub: Any) -> None:
    """Hook for the ``run`` subcommand (owned by the bench harness); intentionally adds nothing yet."""


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
        return int(args.handler(args))
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
