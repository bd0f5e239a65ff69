"""The report on EENets (``eenet`` rows, Demir & Akbas 2024): the "EENets here" paragraph generated from each row's
numbers and ``system_details``, the collapse mark and footnote of the comparison table, rows from before
``system_details`` existed, and the results contract for the new key. Every expected number is computed by hand from
the rows below."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_report import five, tables
from test_report_exit_systems import comparison, exit_rows, pair, results, section_of, side_info
from test_row_record import minimal_row

from sidenet.report import render_markdown, write_report
from sidenet.results import load_results
from sidenet.row_record import check_row, row_problems
from sidenet_core.errors import UserError

TITLE = "**EENets here**"
TAPS = ["layer1.0", "layer1.1"]
DETAILS: dict[str, Any] = {
    "kind": "eenet",
    "rule": "fine",
    "n_exits": 2,
    "lam": 1.0,
    "loss": "v2",
    "epochs": 1,
    "lr": 0.0001,
    "taps": TAPS,
    "exit_costs": [0.18, 0.30],
    "trained_from": "none",
    "post_chain": "none",
    "backbone_test_accuracy": 0.931,
    "backbone_val_accuracy": 0.95,
    "threshold_mode": "0.5",
    "paper_rule_exit_rates": {"val": [0.6, 0.1], "test": [0.58, 0.12]},
    "collapse": {"collapsed": False, "exit": 0, "share": 0.6, "split": "val"},
}
COLLAPSED = {"collapsed": True, "exit": 0, "share": 0.996, "split": "val"}
FOOTNOTE = (
    "⚠ collapsed (`eenet`): 99.6% of validation inputs took exit 1 of 2 (layer1.0): the confidence branches "
    "collapsed (seen in the paper's own λ logs); the operating point is that exit's accuracy, not an early-exit "
    "trade-off."
)


def details(**change: Any) -> dict[str, Any]:
    return {**copy.deepcopy(DETAILS), **change}


def eenet_rows(
    chain: str = "none", exit_: str = "eenet", acc: float = 0.915, flops: float = 0.45e9, bs1: float = 1.8, **extra: Any
) -> list[dict[str, Any]]:
    """An eenet row pair (bs 1 and 64) on ``chain``: the original MainNet 92.00% at 1.2 GFLOP/sample, paired bs 1
    speedup ``bs1`` (q1–q3 ∓ 0.1); ``extra`` overrides keys (``system_details`` included)."""
    info = side_info(
        **{
            "exit_system": {"system": "eenet", "lam": 1.0, "loss": "v2"},
            "retrains_backbone": True,
            "policy": "eenet",
            "threshold": 0.5,
            "thresholds": [0.5, 0.5],
            "threshold_source": "fixed",
            "tap": "/".join(TAPS),
            "taps": TAPS,
            "exit_rate": 0.7,
            "exit_rates": [0.58, 0.12],
            "flops_per_sample": flops,
            "predicted_flops_per_sample": flops,
            "mainnet_flops_per_sample": 1.2e9,
            "training_seconds": 30.5,
            "oracle": None,
            "sweep": None,
            "system_details": details(),
            **extra,
        }
    )
    return pair(chain, exit_, five(bs1, 0.1), five(bs1 * 0.8, 0.05), test_accuracy=acc, **info)


def eenet_paragraph(md: str) -> str:
    return next(line for line in section_of(md).splitlines() if line.startswith(TITLE))


def row_text(paragraph: str, who: str) -> str:
    """The sentences on one row: from its ``*who*`` up to the next row's."""
    start = paragraph.index(f"*{who}*")
    following = paragraph.find(" *`", start + 1)
    return paragraph[start : following if following != -1 else len(paragraph)]


# ---------------------------------------------------------------------------------------------------
# The paragraph
# ---------------------------------------------------------------------------------------------------


def test_eenet_paragraph_states_each_rows_numbers() -> None:
    int8 = eenet_rows(
        "int8", acc=0.93, bs1=2.8, dtype="int8", system_details=details(post_chain="int8", threshold_mode="val")
    )
    md = render_markdown(results([*exit_rows(), *eenet_rows(), *int8]), None)
    text = eenet_paragraph(md)
    assert text.startswith(
        "**EENets here** (Demir & Akbas 2024: similar accuracy at 20% of the original network's computational cost; "
        '"similar" read here as ≤ 1 pt below the original MainNet on test;'
    )
    assert text.index("*`eenet`*") < text.index("*`int8` + `eenet`*")  # chain none first
    plain = row_text(text, "`eenet`")
    assert plain.startswith("*`eenet`* (on the fp32 MainNet; EENet-trained from the fp32 MainNet): exits at taps ")
    assert (
        "layer1.0/layer1.1 (placement rule `fine`), 18.0% / 30.0% of the plain network's FLOPs up to each (exit block "
        "included); λ 1, loss v2, 1 epoch at lr 0.0001, training 30.5 s (backbone and exits together)." in plain
    )
    # backbone 0.931 vs the original 0.92: +1.10 pt
    assert "Retrained backbone with exits off: 93.10% on test vs the original MainNet's 92.00% (+1.10 pt)." in plain
    # 0.45e9 / 1.2e9 = 37.5%; 0.915 − 0.92 = −0.50 pt; paired bs 1 ratios 1.8 ∓ 0.1
    assert (
        "Operating point (the paper's rule: leave at the first exit whose confidence branch says ≥ 0.5): 91.50% on "
        "test (-0.50 pt vs the original MainNet), 450 MFLOP/sample = 37.5% of the original MainNet's, "
        "1.80× (1.70–1.90)† at bs 1." in plain
    )
    # 37.5% / 20% = 1.88
    assert (
        "Against the paper's headline: not met on FLOPs (37.5% of the FLOPs, 1.88× the paper's 20%; -0.50 pt, "
        "within 1 pt)." in plain
    )
    # the SideNet's sweep reaches 91.50% at 600 MFLOP; 600 / 450 = 1.33
    assert "SideNet on the same chain (`sidenet`): 91.50% (-0.50 pt), 600 MFLOP/sample (FLOP speedup 2.00×)" in plain
    assert (
        "SideNet FLOPs at the EENet's 91.50% (read off its test sweep): 600 MFLOP/sample vs the EENet's "
        "450 MFLOP/sample → the EENet needs 1.33× fewer FLOPs." in plain
    )
    assert "ollapse" not in text  # no row is flagged
    chained = row_text(text, "`int8` + `eenet`")
    assert chained.startswith("*`int8` + `eenet`* (on `int8`; EENet-trained from the fp32 MainNet, then `int8`): ")
    assert (
        "Operating point (thresholds chosen on validation; the paper's rule, confidence ≥ 0.5, would send "
        "58.0% / 12.0% of test inputs out at the exits): 93.00% on test (+1.00 pt vs the original MainNet)" in chained
    )
    assert "2.80× (2.70–2.90)† at bs 1" in chained
    assert "SideNet on the same chain (`int8` + `sidenet`): 91.20% (-0.80 pt)" in chained
    # the SideNet's sweep tops out at 92.00%, below the EENet's 93.00%
    assert (
        "SideNet FLOPs at the EENet's 93.00% (read off its test sweep): n/a (the sweep reaches at most 92.00%) vs the "
        "EENet's 450 MFLOP/sample." in chained
    )


def test_eenet_paragraph_follows_the_reading() -> None:
    section = section_of(render_markdown(results([*exit_rows(), *eenet_rows()]), None))
    assert section.index("**Reading**") < section.index(TITLE) < section.index("#### Complementarity per exit system")


@pytest.mark.parametrize(
    ("acc", "flops", "headline", "sidenet"),
    [
        (  # 0.2e9 / 1.2e9 = 16.7% at −0.50 pt; the sweep's 91.50% costs 600 M: 3.00× the EENet's 200 M
            0.915,
            0.2e9,
            "Against the paper's headline: met (16.7% of the FLOPs at -0.50 pt).",
            "600 MFLOP/sample vs the EENet's 200 MFLOP/sample → the EENet needs 3.00× fewer FLOPs.",
        ),
        (  # −2.00 pt; the sweep at 90.00%: 0.45e9 + 0.15e9 · (0.90 − 0.89) / (0.915 − 0.89) = 510 M
            0.90,
            0.2e9,
            "Against the paper's headline: not met on accuracy (16.7% of the FLOPs; -2.00 pt, beyond 1 pt).",
            "510 MFLOP/sample vs the EENet's 200 MFLOP/sample → the EENet needs 2.55× fewer FLOPs.",
        ),
        (  # 1.2e9 / 1.2e9 = 100% at −2.00 pt; the sweep's 90.00% at 510 M: the SideNet 1.2e9 / 0.51e9 = 2.35× fewer
            0.90,
            1.2e9,
            "Against the paper's headline: not met on FLOPs and accuracy (100.0% of the FLOPs, 5.00× the paper's 20%; "
            "-2.00 pt, beyond 1 pt).",
            "510 MFLOP/sample vs the EENet's 1.20 GFLOP/sample → the SideNet needs 2.35× fewer FLOPs.",
        ),
    ],
    ids=["met", "accuracy-missed", "both-missed"],
)
def test_eenet_against_the_paper_and_the_sidenet(acc: float, flops: float, headline: str, sidenet: str) -> None:
    text = eenet_paragraph(render_markdown(results([*exit_rows(), *eenet_rows(acc=acc, flops=flops)]), None))
    assert headline in text
    assert sidenet in text


def test_eenet_without_a_sidenet_row_or_sweep_says_so() -> None:
    rows = [r for r in exit_rows() if r["extra_info"]["exit"] != "sidenet"]
    text = eenet_paragraph(render_markdown(results([*rows, *eenet_rows()]), None))
    assert "No `sidenet` row on the fp32 MainNet to compare with." in text
    rows = exit_rows()
    for r in rows:
        if r["extra_info"]["exit"] == "sidenet":
            r["extra_info"]["sweep"] = None
    text = eenet_paragraph(render_markdown(results([*rows, *eenet_rows()]), None))
    assert "(read off its test sweep): n/a (no sweep recorded) vs the EENet's 450 MFLOP/sample." in text


def test_the_flops_share_is_of_the_original_mainnet_the_row_recorded() -> None:
    """``mainnet_flops_per_sample`` is the reference (an EENet retrains the MainNet); the fp32 row only without it."""
    text = eenet_paragraph(render_markdown(results([*exit_rows(), *eenet_rows(mainnet_flops_per_sample=1.5e9)]), None))
    assert "450 MFLOP/sample = 30.0% of the original MainNet's" in text  # 0.45e9 / 1.5e9
    rows = eenet_rows()
    for r in rows:
        del r["extra_info"]["mainnet_flops_per_sample"]
    text = eenet_paragraph(render_markdown(results([*exit_rows(), *rows]), None))
    assert "450 MFLOP/sample = 37.5% of the original MainNet's" in text  # 0.45e9 / the fp32 row's 1.2e9


def test_no_eenet_paragraph_without_eenet_rows() -> None:
    md = render_markdown(results(), None)
    assert TITLE not in md and "**Reading**" in md
    assert "EENets" not in section_of(md)


# ---------------------------------------------------------------------------------------------------
# Collapse: the table's mark and footnote, the paragraph's warning
# ---------------------------------------------------------------------------------------------------


def test_a_collapsed_row_is_marked_and_explained() -> None:
    collapsed = eenet_rows(system_details=details(collapse=COLLAPSED))
    healthy = eenet_rows("int8", dtype="int8")
    md = render_markdown(results([*exit_rows(), *collapsed, *healthy]), None)
    rows = comparison(md)
    assert ("eenet (retrains backbone) ⚠ collapsed", "none", "layer1.0/layer1.1") in rows
    assert ("eenet (retrains backbone)", "int8", "layer1.0/layer1.1") in rows  # not flagged: no mark
    section = section_of(md)
    assert f"- {FOOTNOTE}" in section
    assert section.count("⚠ collapsed (") == 1  # one footnote, for the one flagged row
    text = eenet_paragraph(md)
    warning = (
        "⚠ Collapsed: 99.6% of validation inputs took exit 1 of 2 (layer1.0): the confidence branches collapsed "
        "(seen in the paper's own λ logs); the operating point is that exit's accuracy, not an early-exit trade-off."
    )
    assert warning in row_text(text, "`eenet`")
    assert "ollapse" not in row_text(text, "`int8` + `eenet`")


def test_collapse_onto_the_final_output_names_it() -> None:
    collapse = {"collapsed": True, "exit": 2, "share": 1.0, "split": "val"}  # exit = n_exits: ran to the end
    md = render_markdown(results([*exit_rows(), *eenet_rows(system_details=details(collapse=collapse))]), None)
    assert (
        "100.0% of validation inputs ran to the final output: the confidence branches collapsed (seen in the paper's "
        "own λ logs); the operating point is the final output's accuracy, not an early-exit trade-off."
        in section_of(md)
    )


@pytest.mark.parametrize(
    "collapse",
    [
        {"collapsed": False, "exit": 0, "share": 0.6, "split": "val"},
        {"collapsed": "true", "exit": 0, "share": 0.996},
        {"collapsed": 1},
        [True],
        None,
    ],
    ids=["not-collapsed", "string", "number", "list", "null"],
)
def test_only_a_json_true_marks_a_row_collapsed(collapse: Any) -> None:
    md = render_markdown(results([*exit_rows(), *eenet_rows(system_details=details(collapse=collapse))]), None)
    table = tables(section_of(md))[0]
    assert [r["system"] for r in table if r["system"].startswith("eenet")] == ["eenet (retrains backbone)"]
    assert "collapsed" not in section_of(md).lower()


# ---------------------------------------------------------------------------------------------------
# Rows from before system_details, and malformed ones
# ---------------------------------------------------------------------------------------------------


def test_a_row_without_system_details_renders(tmp_path: Path) -> None:
    rows = eenet_rows()
    for r in rows:
        del r["extra_info"]["system_details"]
    md = write_report(results([*exit_rows(), *rows]), tmp_path / "r.md").read_text(encoding="utf-8")
    assert ("eenet (retrains backbone)", "none", "layer1.0/layer1.1") in comparison(md)
    text = eenet_paragraph(md)
    assert "*`eenet`* (on the fp32 MainNet): exits at taps layer1.0/layer1.1; training 30.5 s" in text
    assert "No system details recorded (results written before eenet rows recorded them)." in text
    assert "The retrained backbone's own accuracy (exits off) is not recorded." in text
    assert "Operating point (thresholds: fixed): 91.50% on test (-0.50 pt vs the original MainNet)" in text
    assert "the EENet needs 1.33× fewer FLOPs." in text  # the comparisons need no details


MALFORMED = {
    "exit_costs": "cheap",
    "taps": 3,
    "lam": "big",
    "epochs": True,
    "rule": 7,
    "backbone_test_accuracy": "x",
    "threshold_mode": [0.5],
    "paper_rule_exit_rates": {"test": [None]},
    "collapse": {"collapsed": True, "exit": "first", "share": None, "split": 3},
    "trained_from": {},
    "post_chain": 8,
    "n_exits": -1,
}


@pytest.mark.parametrize(
    "bad",
    [
        {"system_details": "eenet"},
        {"system_details": [1, 2]},
        {"system_details": MALFORMED},
        {"system_details": {**MALFORMED, "collapse": {"collapsed": True, "exit": 7, "share": 2}, "n_exits": 9}},
        {"system_details": None, "training_seconds": None, "test_accuracy": None, "flops_per_sample": None},
    ],
    ids=["string", "list", "wrong-member-types", "exit-out-of-range", "missing-numbers"],
)
def test_malformed_system_details_render_without_a_crash(tmp_path: Path, bad: dict[str, Any]) -> None:
    rows = eenet_rows()
    for r in rows:
        r["extra_info"].update(bad)
    md = write_report(results([*exit_rows(), *rows]), tmp_path / "r.md").read_text(encoding="utf-8")
    assert eenet_paragraph(md).count("*`eenet`*") == 1


def test_a_collapse_without_its_numbers_still_warns() -> None:
    collapse = {"collapsed": True}
    md = render_markdown(results([*exit_rows(), *eenet_rows(system_details=details(collapse=collapse))]), None)
    assert ("eenet (retrains backbone) ⚠ collapsed", "none", "layer1.0/layer1.1") in comparison(md)
    assert re.search(r"⚠ collapsed \(`eenet`\): — of validation inputs took one exit: the confidence", md)


# ---------------------------------------------------------------------------------------------------
# The results contract
# ---------------------------------------------------------------------------------------------------


def test_row_record_declares_system_details() -> None:
    row = {**minimal_row(), "exit": "eenet", "retrains_backbone": True, "system_details": details()}
    assert row_problems(row) == []
    assert check_row(row).system_details == DETAILS
    assert row_problems({**row, "system_details": None}) == []
    problems = row_problems({**row, "system_details": ["eenet"]})
    assert any(p.startswith("system_details = list") for p in problems), problems
    with pytest.raises(RuntimeError, match="RowRecord"):
        check_row({**row, "system_details": "eenet"})


@pytest.mark.parametrize("value", ["eenet", [DETAILS], 1, True])
def test_results_files_with_a_non_object_system_details_are_refused(tmp_path: Path, value: Any) -> None:
    row = {"name": "r", "stats": {"median": 0.01}, "extra_info": {**minimal_row(), "system_details": value}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"benchmarks": [row]}), encoding="utf-8")
    with pytest.raises(UserError, match="system_details"):
        load_results(path)
    for ok in (None, details()):
        row["extra_info"]["system_details"] = ok
        path.write_text(json.dumps({"benchmarks": [row]}), encoding="utf-8")
        assert load_results(path)["benchmarks"][0]["extra_info"]["system_details"] == ok
