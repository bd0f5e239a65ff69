"""An interrupted run says what it kept: only cells whose rows reached the results file, never a finished cell
whose write failed (a full disk mid-run, then Ctrl-C)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sidenet.cli import plugin


def _config(persisted: set[str] | None) -> SimpleNamespace:
    stash = pytest.Stash()
    if persisted is not None:
        stash[plugin._PERSISTED] = persisted
    return SimpleNamespace(stash=stash)


def test_a_finished_cell_whose_write_failed_is_not_called_kept() -> None:
    line = plugin._kept({"a", "b"}, _config({"a"}), "out/results/r.json")
    assert line.startswith("1 finished cell(s) kept in out/results/r.json; 1 finished but not written")
    assert "measured again by the next run" in line


def test_nothing_written_says_so() -> None:
    line = plugin._kept({"a"}, _config(None), "r.json")
    assert line.startswith("none written to r.json; 1 finished but not written")


def test_every_written_cell_is_kept_and_nothing_else_is_said() -> None:
    assert plugin._kept({"a", "b"}, _config({"a", "b"}), "r.json") == "2 finished cell(s) kept in r.json"
    assert plugin._kept(set(), _config(None), "r.json") == "no cell finished"
