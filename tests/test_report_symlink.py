"""#26 leftover: a report whose Markdown path is a symlink is written through the link to its target, atomically,
as the results JSON is (``sidenet_core.atomic.atomic_path(follow_symlinks=True)``); the link itself stays."""

from __future__ import annotations

import json
import os
from pathlib import Path

from test_report import make_results

from sidenet.cli import main
from sidenet.report import render_markdown, write_report


def linked_report(tmp_path: Path) -> tuple[Path, Path]:
    """``latest.md`` → ``runs/report.md`` (a relative link to an existing report in another folder)."""
    target = tmp_path / "runs" / "report.md"
    target.parent.mkdir()
    target.write_text("previous report\n", encoding="utf-8")
    link = tmp_path / "latest.md"
    link.symlink_to(Path("runs") / "report.md")
    return link, target


def test_write_report_writes_through_a_symlinked_markdown_path(tmp_path: Path) -> None:
    link, target = linked_report(tmp_path)
    write_report(make_results(), link)
    assert link.is_symlink() and os.readlink(link) == str(Path("runs") / "report.md")
    assert target.read_text(encoding="utf-8") == render_markdown(make_results(), "latest_plots")
    assert sorted(p.name for p in (tmp_path / "latest_plots").iterdir())  # the figures beside the named path
    assert not list(tmp_path.rglob("*.partial"))


def test_report_command_writes_through_a_symlinked_markdown_path(tmp_path: Path) -> None:
    link, target = linked_report(tmp_path)
    results = tmp_path / "results.json"
    results.write_text(json.dumps(make_results()), encoding="utf-8")
    assert main(["report", str(results), "-o", str(link)]) == 0
    assert link.is_symlink()
    assert target.read_text(encoding="utf-8").startswith("# sidenet-bench report")
