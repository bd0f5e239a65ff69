"""The bench's pytest plugin ships in the package (issue #22), and Ctrl-C during start-up is one line (#26).

``sidenet-bench run`` hands pytest the packaged test module and a :class:`~sidenet.cli.plugin.BenchPlugin` built
with its settings, so it works from any folder, with no ``bench/`` beside it; ``pytest bench/`` loads the same
plugin from ``bench/conftest.py`` and parses its own ``--bench-*`` options. ``import sidenet`` is light (its public
API is imported on first use), so the console script is running, and catches Ctrl-C, before torch is imported.
"""

from __future__ import annotations

import importlib.util
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sidenet.cli.plugin import BenchPlugin

ROOT = Path(__file__).resolve().parents[1]
CELLS = ["--task", "tiny-resnet", "--exit", "none", "--chain", "none", "--threads", "1"]


def _env(tmp_path: Path, *front: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDENET_BENCH_")}
    env.update(SIDENET_BENCH_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([*map(str, front), str(ROOT), env.get("PYTHONPATH", "")])
    return env


# ---------------------------------------------------------------------------------------------------
# Ctrl-C while the console script imports (#26)
# ---------------------------------------------------------------------------------------------------

# Makes `import torch` announce itself on stderr and then take a minute: the window in which a real user's Ctrl-C
# lands (torch takes seconds to import). Loaded by the interpreter itself, before the console script starts.
SLOW_TORCH = """
import sys, time

class SlowTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            sys.stderr.write("slow import: torch\\n")
            sys.stderr.flush()
            time.sleep(60)
        return None

sys.meta_path.insert(0, SlowTorch())
"""
# what the `sidenet-bench` console script setuptools writes does, word for word
CONSOLE_SCRIPT = "import sys; from sidenet.cli import main; sys.exit(main())"


def _read_stderr_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    assert proc.stderr is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    seen, deadline = b"", time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline and proc.poll() is None:
        if sel.select(timeout=1):
            seen += os.read(proc.stderr.fileno(), 4096)
    return seen


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a child process")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list"], "sidenet-bench: interrupted"),
        (["run", *CELLS, "-q"], "sidenet-bench: interrupted; finished files are intact, a new run resumes"),
    ],
    ids=["list", "run"],
)
def test_ctrl_c_during_the_start_up_imports_is_one_line_and_exit_130(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_TORCH, encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-c", CONSOLE_SCRIPT, *argv],
        cwd=tmp_path,
        env=_env(tmp_path, hook),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        seen = _read_stderr_until(proc, b"slow import: torch\n", 120)
        assert b"slow import: torch\n" in seen, seen.decode(errors="replace")
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err = (seen + rest).decode(errors="replace")
    assert "Traceback" not in err, err
    assert err.splitlines() == ["slow import: torch", message], err
    assert proc.returncode == 130, (proc.returncode, err)


@pytest.mark.e2e
def test_importing_sidenet_imports_no_torch_yet_every_public_name_is_there() -> None:
    code = textwrap.dedent(
        """
        import sys
        import sidenet, sidenet.cli
        assert "torch" not in sys.modules, "import sidenet / sidenet.cli pulled in torch"
        from sidenet import *
        from sidenet import EarlyExit, register_policy
        from sidenet.engine.early_exit import EarlyExit as defined
        assert EarlyExit is defined and callable(register_policy)
        missing = [n for n in sidenet.__all__ if n not in globals()]
        assert not missing, missing
        assert set(sidenet.__all__) <= set(dir(sidenet))
        try:
            sidenet.NoSuchName
        except AttributeError as exc:
            assert "NoSuchName" in str(exc)
        else:
            raise AssertionError("an unknown name must be an AttributeError")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


# ---------------------------------------------------------------------------------------------------
# one plugin, two ways in
# ---------------------------------------------------------------------------------------------------


def test_bench_conftest_re_exports_every_hook_of_one_plugin() -> None:
    names = [name for name in vars(BenchPlugin) if name.startswith("pytest_")]
    assert {"pytest_addoption", "pytest_configure", "pytest_sessionfinish", "pytest_terminal_summary"} <= set(names)
    spec = importlib.util.spec_from_file_location("_bench_conftest_probe", ROOT / "bench" / "conftest.py")
    assert spec is not None and spec.loader is not None
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    missing = [n for n in names if not hasattr(conftest, n)]
    assert not missing, f"bench/conftest.py does not re-export {missing}"
    assert {id(getattr(conftest, n).__self__) for n in names} == {id(conftest._PLUGIN)}  # one instance
    assert conftest._PLUGIN.settings is None  # it reads the --bench-* options


def _collected(stdout: str) -> list[str]:
    return sorted(line.split("::", 1)[1] for line in stdout.splitlines() if "::test_cell[" in line)


@pytest.mark.e2e
def test_the_plugin_built_with_settings_runs_the_packaged_suite_from_any_folder(tmp_path: Path) -> None:
    """What ``run`` does, minus the measuring: a folder with no ``bench/``, no ``--bench-*`` argv (an option given
    anyway does not override the settings object), and the cells are the settings'."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = textwrap.dedent(
        f"""
        import sys, pytest
        from pathlib import Path
        import sidenet.cli
        from sidenet.bench.options import resolve
        from sidenet.cli.plugin import BenchPlugin

        values = {{"task": ["tiny-resnet"], "exit": ["none"], "chain": ["none"], "batch_size": [1, 4],
                   "threads": 1, "out": {str(tmp_path / "out")!r}, "quiet": True}}
        settings = resolve(values, command="probe")
        suite = Path(sidenet.cli.__file__).with_name("bench_suite.py")
        args = [str(suite), "--collect-only", "-q", "-p", "no:cacheprovider", "--bench-batch-size", "7"]
        sys.exit(pytest.main(args, plugins=[BenchPlugin(settings)]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=work, env=_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _collected(proc.stdout) == ["test_cell[tiny-resnet-none-none-bs1]", "test_cell[tiny-resnet-none-none-bs4]"]
    assert sorted(p.name for p in work.iterdir()) == []  # nothing left where it ran (no .benchmarks)


@pytest.mark.e2e
def test_pytest_bench_still_reads_its_own_options(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "bench/",
        "--benchmark-only",
        "--collect-only",
        "-q",
        "-p",
        "no:cacheprovider",
    ]
    cmd += [a.replace("--", "--bench-", 1) if a.startswith("--") else a for a in CELLS]
    cmd += ["--bench-batch-size", "3", "--bench-out", str(tmp_path / "out"), "--bench-quiet"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _collected(proc.stdout) == ["test_cell[tiny-resnet-none-none-bs3]"]
    assert "bench/test_latency.py::test_cell[" in proc.stdout  # collected under the file users run
