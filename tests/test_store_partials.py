"""A killed run's temp files are cleaned up where they were written, symlink targets included."""

from __future__ import annotations

import os
from pathlib import Path

from sidenet.bench import store

DEAD_PID = 2**22 + 12345  # above Linux's default pid_max (4194304): never a live process


def test_dead_partials_beside_a_symlinked_reports_target_are_removed(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (elsewhere / "real.md").write_text("old report\n", encoding="utf-8")
    (out / "run.md").symlink_to(os.path.relpath(elsewhere / "real.md", out))
    dead = elsewhere / f".real.md.{DEAD_PID}.abc.partial"
    live = elsewhere / f".real.md.{os.getpid()}.abc.partial"
    dead.write_text("half", encoding="utf-8")
    live.write_text("in progress", encoding="utf-8")
    store._remove_stale_partials(out / "run.json", out / "run.md")
    assert not dead.exists()
    assert live.exists()  # a live writer's temp file is left alone
    assert (elsewhere / "real.md").read_text(encoding="utf-8") == "old report\n"
