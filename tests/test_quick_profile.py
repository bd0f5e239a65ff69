"""The quick profile: its cells are what the README says, its tasks train less under their own names (so their
MainNets never replace the full ones), and the report states what it traded and whether the floors were met."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_report import make_results, row

from sidenet.bench.harness import QUICK_TASKS, task_profile
from sidenet.bench.options import resolve
from sidenet.data import Splits
from sidenet.report.render import render_markdown
from sidenet.tasks import TASKS
from sidenet.tasks.base import subset_train
from sidenet_core.precision import isa_capped_below_bf16
from sidenet_core.precision import resolve as resolve_precision


def settings(**given: object):
    values = {"profile": "quick", "out": str(Path("/tmp/quick-out")), **given}
    return resolve(values, "pytest bench/ --bench-profile quick")


def test_the_quick_profile_runs_the_cells_the_readme_names() -> None:
    s = settings()
    assert s.tasks == ("fashion-mnist-quick", "rotten-tomatoes-quick")
    expected = [
        (t, c, e, b) for t in QUICK_TASKS for c in ("none", "int8") for b in (1, 64) for e in ("none", "sidenet")
    ]
    assert s.cells() == expected and s.n_cells() == 16
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "--bench-profile quick" in readme and "16 cells" in readme
    # given options win over the profile's defaults
    assert settings(task=["rotten-tomatoes-quick"], exit=["sidenet-multi"]).cells()[0][:3] == (
        "rotten-tomatoes-quick",
        "none",
        "sidenet-multi",
    )


def test_quick_tasks_train_less_under_their_own_names_and_leave_the_full_recipes_alone() -> None:
    full, quick = TASKS.get("fashion-mnist"), TASKS.get("fashion-mnist-quick")
    assert "train_subset" not in full.recipe()  # the full MainNet's cache key is what it was before the profile
    assert quick.recipe()["epochs"] < full.recipe()["epochs"]
    assert quick.recipe()["name"] != full.recipe()["name"]
    text_full, text_quick = TASKS.get("rotten-tomatoes"), TASKS.get("rotten-tomatoes-quick")
    assert text_quick.recipe()["epochs"] < text_full.recipe()["epochs"]
    for t in (quick, text_quick):
        assert t.trades.startswith("quick profile") and 0.5 < t.accuracy_floor < 1
        assert t.default_chains == ("none", "int8")
    assert full.trades == "" and full.accuracy_floor == 0.0


def test_a_training_subset_is_seeded_and_leaves_validation_and_test_alone() -> None:
    x = torch.arange(100, dtype=torch.float32).view(100, 1, 1, 1) / 100
    labels = torch.arange(100) % 4
    splits = Splits((x, labels), (x[:10], labels[:10]), (x[:20], labels[:20]), ("a", "b", "c", "d"), "toy")
    a, b = subset_train(splits, 30, seed=0), subset_train(splits, 30, seed=0)
    assert len(a.train[1]) == 30 and torch.equal(a.train[0], b.train[0])
    assert not torch.equal(a.train[0], subset_train(splits, 30, seed=1).train[0])
    assert a.val is splits.val and a.test is splits.test and "30 of 100" in a.source
    assert subset_train(splits, 0, seed=0) is splits
    texts = Splits(
        (tuple("abcdefghij"), labels[:10]), (("x",), labels[:1]), (("y",), labels[:1]), ("a", "b", "c", "d"), "t"
    )
    assert len(subset_train(texts, 4, seed=0).train[0]) == 4


@pytest.mark.parametrize(("accuracy", "verdict"), [(0.905, "met"), (0.88, "⚠ below it")])
def test_the_report_states_the_trade_and_the_floor(accuracy: float, verdict: str) -> None:
    task = TASKS.get("fashion-mnist-quick")
    profile = task_profile(task, "quick", accuracy)
    assert profile["floor_met"] is (accuracy >= task.accuracy_floor)
    results = make_results()
    results["benchmarks"] = [
        row("fashion-mnist-quick", "none", "none", 1, 0.01, 0.001, test_accuracy=accuracy, task_profile=profile),
    ]
    md = render_markdown(results, None)
    section = md.split("## Task `fashion-mnist-quick`", 1)[1]
    assert "**Profile `quick`**: quick profile: the MainNet trains 2 epochs at lr 0.05 (full: 8 at 0.1)." in section
    assert f"{100 * accuracy:.2f}% on test against a stated floor of 89.0%: {verdict}." in section


def test_full_profile_rows_say_nothing_extra() -> None:
    results = make_results()
    before = render_markdown(results, None)
    for b in results["benchmarks"]:
        b["extra_info"]["task_profile"] = task_profile(TASKS.get("fashion-mnist"), "full", 0.9)
    assert render_markdown(results, None) == before


def test_capping_the_isa_below_bf16_trains_in_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert isa_capped_below_bf16() and resolve_precision("auto") == "fp32"
    assert resolve_precision("bf16") == "bf16"  # an explicit choice is kept
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    assert not isa_capped_below_bf16()
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert isa_capped_below_bf16()
