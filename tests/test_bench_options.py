"""Bench options are declared once: the pytest options and the CLI's come from the same table, and the same choices
given to either entry point resolve to the same settings (``sidenet-bench run`` hands those to the plugin as an
object, ``pytest bench/`` resolves its own ``--bench-*`` options)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sidenet.bench.options import (
    BENCH_OPTIONS,
    PYTEST_PREFIX,
    add_cli_options,
    add_pytest_options,
    resolve,
)


class ArgparseGroup:
    """pytest's option group, enough of it: ``addoption`` onto an argparse parser."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser

    def addoption(self, *flags: str, **kwargs: object) -> None:
        self.parser.add_argument(*flags, **kwargs)


def pytest_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_pytest_options(ArgparseGroup(parser))
    return parser


def cli_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_cli_options(parser)
    return parser


def test_every_option_exists_in_both_entry_points_with_the_same_help() -> None:
    pytest_help, cli_help = pytest_parser().format_help(), cli_parser().format_help()
    for opt in BENCH_OPTIONS:
        assert PYTEST_PREFIX + opt.stem in pytest_help, opt.stem
        assert "--" + opt.stem in cli_help, opt.stem
    pytest_actions = {a.dest: a for a in pytest_parser()._actions}
    cli_actions = {a.dest: a for a in cli_parser()._actions}
    for opt in BENCH_OPTIONS:
        assert pytest_actions["bench_" + opt.dest].help == cli_actions[opt.dest].help == opt.help


def test_both_entry_points_resolve_the_same_choices_to_the_same_settings(tmp_path: Path) -> None:
    argv = [
        "--task", "tiny-resnet", "--task", "tiny-bert", "--chain", "int8", "--exit", "sidenet-multi:taps=layer1/layer2",
        "--exit", "learned", "--batch-size", "1", "--batch-size", "8", "--threads", "1", "--target-loss", "0.75",
        "--timing-samples", "16", "--rounds", "3", "--out", str(tmp_path), "--name", "x", "--force", "--quiet",
        "--worker-pairs", "3", "--min-round-ms", "50", "--fresh-workers",
    ]  # fmt: skip
    settings = resolve(vars(cli_parser().parse_args(argv)), command="cli")
    assert settings.rounds == 3 and settings.exits == ("sidenet-multi:taps=layer1/layer2", "learned")
    assert settings.quiet and settings.force and settings.fresh_workers and settings.worker_pairs == 3
    as_pytest = [PYTEST_PREFIX + a.removeprefix("--") if a.startswith("--") else a for a in argv]
    given = vars(pytest_parser().parse_args(as_pytest))
    assert resolve({k.removeprefix("bench_"): v for k, v in given.items()}, command="cli") == settings


def test_absent_options_take_the_documented_defaults(tmp_path: Path) -> None:
    settings = resolve(vars(cli_parser().parse_args(["--out", str(tmp_path)])), command="cli")
    assert settings.timing_samples == 192 and settings.rounds == 8 and settings.device == "cpu"
    assert "learned" in settings.exits and "cascade" in settings.exits and settings.batch_sizes == (1, 64)
