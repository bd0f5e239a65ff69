"""The report on EENets (``eenet`` rows, Demir & Akbas 2024): the "EENets here" block generated from each row's
numbers and ``system_details`` (one bullet per trained network, one nested line per row), the collapse mark and
footnote of the comparison table, rows from before ``system_details`` existed, and the results contract for the new
key. Every expected number is computed by hand from the rows below."""

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

from sidenet.bench.results import load_results
from sidenet.bench.row_record import check_row, row_problems
from sidenet.report import render_markdown, write_report
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


def eenet_block(md: str) -> str:
    """The "EENets here" block: its lead line, a blank line, then the bullet list (up to the next blank line)."""
    section = section_of(md)
    start = section.index(TITLE)
    return section[start : section.index("\n\n", section.index("\n- ", start))]


def lead_of(block: str) -> str:
    return block.splitlines()[0]


def bullets(block: str) -> list[tuple[str, list[str]]]:
    """The block's bullets: (one trained EENet's line, its nested row lines), in order."""
    out: list[tuple[str, list[str]]] = []
    for line in block.splitlines()[2:]:
        if line.startswith("- "):
            out.append((line[2:], []))
        else:
            assert line.startswith("  - "), line  # nothing else in the list
            out[-1][1].append(line[4:])
    return out


def row_line(block: str, who: str) -> str:
    """The one nested line on the row ``who``."""
    (line,) = [r for _, rows in bullets(block) for r in rows if r.startswith(f"*{who}* (")]
    return line


def with_exit_rows(*rows: list[dict[str, Any]]) -> str:
    return eenet_block(render_markdown(results([*exit_rows(), *(r for pair_ in rows for r in pair_)]), None))


VAL = {"threshold_source": "validation", "threshold": 0.8, "thresholds": [0.8, 0.8], "exit_rate": 0.3}
# the SideNet sweep reaches 91.00% of the original 92.00% (−1 pt) between (0.4e9, 90.0%) and (0.8e9, 91.5%):
# 0.4e9 + 0.4e9 · (0.91 − 0.90) / (0.915 − 0.90) = 0.6667e9 = 55.6% of the original 1.2e9
EENET_SWEEP = {
    "threshold": [0.0, 0.5, 0.9, 1.000001],
    "test_accuracy": [0.80, 0.90, 0.915, 0.92],
    "exit_rate": [1.0, 0.7, 0.3, 0.0],
    "flops_per_sample": [0.2e9, 0.4e9, 0.8e9, 1.2e9],
}


# ---------------------------------------------------------------------------------------------------
# The block: a lead line, one bullet per trained EENet, one nested line per row
# ---------------------------------------------------------------------------------------------------


def test_eenet_block_states_the_setup_once_and_each_rows_numbers() -> None:
    int8 = eenet_rows(
        "int8",
        acc=0.93,
        bs1=2.8,
        dtype="int8",
        **VAL,
        system_details=details(post_chain="int8", threshold_mode="val", backbone_test_accuracy=0.929),
    )
    block = with_exit_rows(eenet_rows(), int8)
    assert lead_of(block) == (
        "**EENets here** (Demir & Akbas 2024: similar accuracy at 20% of the original network's computational cost; "
        '"similar" read here as ≤ 1 pt below the original MainNet on test). An EENet retrains the MainNet, so every '
        "Δ and FLOPs share below is vs the original MainNet. Each trained EENet's setup is stated once, then one line "
        "per row; a row's SideNet comparison is the FLOPs the SideNet on the same chain needs for that row's test "
        "accuracy, read off the SideNet's test sweep."
    )
    assert block.splitlines()[1] == ""  # a blank line before the list
    (setup, rows), *more = bullets(block)  # the same trained network on two chains: one bullet
    assert more == []
    assert setup == (
        "**`eenet`** (EENet-trained from the fp32 MainNet): exits at taps layer1.0/layer1.1 (placement rule `fine`), "
        "18.0% / 30.0% of the plain network's FLOPs up to each (exit block included); λ 1, loss v2, 1 epoch at lr "
        # backbone 0.931 vs the original 0.92: +1.10 pt; after int8 0.929: +0.90 pt
        "0.0001, training 30.5 s (backbone and exits together). Retrained backbone with exits off: 93.10% on test vs "
        "the original MainNet's 92.00% (+1.10 pt); after `int8`: 92.90% (+0.90 pt). Within 1 pt of the original "
        "MainNet: n/a (no test sweep recorded)."
    )
    assert rows == [
        # 0.45e9 / 1.2e9 = 37.5%; 0.915 − 0.92 = −0.50 pt; paired bs 1 ratios 1.8 ∓ 0.1; 37.5% > 20%: FLOPs missed;
        # the SideNet's sweep reaches 91.50% at 600 MFLOP: 600 / 450 = 1.33
        "*`eenet`* (the paper's rule: exit at confidence ≥ 0.5): 91.50% on test (-0.50 pt), 37.5% of the FLOPs, "
        "1.80× (1.70–1.90)† at bs 1; paper's headline: not met on FLOPs; this EENet needs 1.33× fewer FLOPs than the "
        "SideNet on the same chain at this accuracy.",
        # no paper-rule row on int8, so the val row says where that rule sends inputs; the int8 SideNet's sweep tops
        # out at 92.00%, below the EENet's 93.00%
        "*`int8` + `eenet`* (thresholds chosen on validation; the paper's rule would send 58.0% / 12.0% of test "
        "inputs out): 93.00% on test (+1.00 pt), 37.5% of the FLOPs, 2.80× (2.70–2.90)† at bs 1; paper's headline: "
        "not met on FLOPs; SideNet comparison n/a: the SideNet's sweep tops out at 92.00%.",
    ]
    assert "ollapse" not in block  # no row is flagged


def test_rows_of_one_trained_network_share_one_bullet() -> None:
    """Same taps, rule, λ, loss, epochs, lr and starting chain: one bullet; another λ: another bullet. On a chain the
    paper-rule row comes first though its name sorts after; chain none before the compressed chains."""
    paper = eenet_rows(exit_="eenet:threshold=0.5")
    val = eenet_rows(exit_="eenet:th=val", **VAL, system_details=details(threshold_mode="val"))
    int8 = eenet_rows("int8", exit_="eenet:threshold=0.5", dtype="int8", system_details=details(post_chain="int8"))
    lam = eenet_rows(exit_="eenet:lam=0.25", training_seconds=40.0, system_details=details(lam=0.25))
    block = with_exit_rows(int8, val, lam, paper)
    (other, other_rows), (one, one_rows) = bullets(block)  # groups in their first rows' order: `eenet:lam…` first
    assert one.startswith("**`eenet:threshold=0.5`, `eenet:th=val`** (EENet-trained from the fp32 MainNet): ")
    assert "λ 1, loss v2, 1 epoch at lr 0.0001, training 30.5 s" in one
    assert [r.split(" (", 1)[0] for r in one_rows] == [
        "*`eenet:threshold=0.5`*",
        "*`eenet:th=val`*",
        "*`int8` + `eenet:threshold=0.5`*",
    ]
    assert one_rows[1].startswith("*`eenet:th=val`* (thresholds chosen on validation): ")  # its rule row is shown
    assert other.startswith("**`eenet:lam=0.25`** (EENet-trained from the fp32 MainNet): ")
    assert "λ 0.25, loss v2, 1 epoch at lr 0.0001, training 40.0 s" in other
    assert [r.split(" (", 1)[0] for r in other_rows] == ["*`eenet:lam=0.25`*"]
    assert block.count("Retrained backbone with exits off") == 2  # once per trained network, not per row
    for key, value in (("trained_from", "prune"), ("epochs", 2), ("taps", ["layer1.0"]), ("loss", "v1")):
        changed = eenet_rows("int8", dtype="int8", system_details=details(**{key: value}))
        assert len(bullets(with_exit_rows(eenet_rows(), changed))) == 2, key


def test_a_backbone_without_its_post_chain_is_named_by_its_chain() -> None:
    int8 = eenet_rows(
        "int8", dtype="int8", system_details={**details(backbone_test_accuracy=0.925), "post_chain": None}
    )
    (setup, _), *_ = bullets(with_exit_rows(eenet_rows(), int8))
    assert "vs the original MainNet's 92.00% (+1.10 pt); after `int8`: 92.50% (+0.50 pt)." in setup


def test_rows_differing_in_training_time_show_the_range() -> None:
    block = with_exit_rows(eenet_rows(), eenet_rows("int8", dtype="int8", training_seconds=31.25))
    (setup, _), *_ = bullets(block)
    assert "training 30.5–31.2 s (backbone and exits together)" in setup  # sig3(31.25) = 31.2


@pytest.mark.parametrize(("target", "goal"), [(0.5, "the 0.5 pt target"), (1.0, "the 1 pt target")])
def test_a_validation_row_that_exits_nothing_says_so(target: float, goal: str) -> None:
    never = {**VAL, "threshold": 1.000001, "thresholds": [1.000001, 1.000001], "exit_rate": 0.0}
    val = eenet_rows(
        exit_="eenet:threshold=val",
        acc=0.92,
        flops=1.2e9,
        target_loss_pt=target,
        **never,
        system_details=details(threshold_mode="val"),
    )
    block = with_exit_rows(eenet_rows(), val)
    # 1.2e9 / 1.2e9 = 100.0% at +0.00 pt; the SideNet's sweep reaches 92.00% at its 1.2e9 end: the same FLOPs
    assert row_line(block, "`eenet:threshold=val`") == (
        f"*`eenet:threshold=val`* (nothing exits: no threshold met {goal} on validation): 92.00% on test "
        "(+0.00 pt), 100.0% of the FLOPs, 1.80× (1.70–1.90)† at bs 1; paper's headline: not met on FLOPs; the SideNet "
        "on the same chain needs the same FLOPs (±2%) at this accuracy."
    )
    some = eenet_rows(exit_="eenet:threshold=val", **VAL, system_details=details(threshold_mode="val"))
    assert row_line(with_exit_rows(eenet_rows(), some), "`eenet:threshold=val`").startswith(
        "*`eenet:threshold=val`* (thresholds chosen on validation): "
    )


def test_the_test_sweep_reading_within_one_pt() -> None:
    block = with_exit_rows(eenet_rows(sweep=EENET_SWEEP))
    (setup, _), *_ = bullets(block)
    assert setup.endswith(
        "Read off the test sweep of *`eenet`* (all thresholds, not a selected operating point): within 1 pt of the "
        "original MainNet it needs ≥ 55.6% of the FLOPs (paper: 20%)."
    )
    # the paper-rule row's sweep is read, though a validation row on chain none has one that gets there at 25.0%
    cheap = {
        **EENET_SWEEP,
        "test_accuracy": [0.80, 0.91, 0.915, 0.92],
        "flops_per_sample": [0.2e9, 0.3e9, 0.8e9, 1.2e9],
    }
    val = eenet_rows(exit_="eenet:threshold=val", **VAL, sweep=cheap, system_details=details(threshold_mode="val"))
    paper = eenet_rows("int8", dtype="int8", sweep=EENET_SWEEP, system_details=details(post_chain="int8"))
    (setup, _), *_ = bullets(with_exit_rows(val, paper))
    assert "Read off the test sweep of *`int8` + `eenet`* (" in setup and "≥ 55.6% of the FLOPs" in setup
    assert "25.0%" not in setup
    (setup, _), *_ = bullets(with_exit_rows(val))  # no paper-rule row: the row there is
    assert "Read off the test sweep of *`eenet:threshold=val`* (" in setup and "≥ 25.0% of the FLOPs" in setup
    # exactly 1 pt below (91.00% at 0.9e9): that point; a sweep that tops out at 90.50% (−1.50 pt) never gets there
    edge = {**EENET_SWEEP, "test_accuracy": [0.80, 0.85, 0.91, 0.905], "flops_per_sample": [0.2e9, 0.4e9, 0.9e9, 1.2e9]}
    (setup, _), *_ = bullets(with_exit_rows(eenet_rows(sweep=edge)))
    assert "it needs ≥ 75.0% of the FLOPs (paper: 20%)." in setup  # 0.9e9 / 1.2e9
    short = {**EENET_SWEEP, "test_accuracy": [0.80, 0.85, 0.90, 0.905]}
    (setup, _), *_ = bullets(with_exit_rows(eenet_rows(sweep=short)))
    assert setup.endswith("within 1 pt of the original MainNet it needs n/a: the sweep tops out at 90.50% (-1.50 pt).")


def test_eenet_block_follows_the_reading() -> None:
    section = section_of(render_markdown(results([*exit_rows(), *eenet_rows()]), None))
    assert section.index("**Reading**") < section.index(TITLE) < section.index("#### Complementarity per exit system")


@pytest.mark.parametrize(
    ("acc", "flops", "headline", "sidenet"),
    [
        (  # 0.2e9 / 1.2e9 = 16.7% at −0.50 pt; the sweep's 91.50% costs 600 M: 3.00× the EENet's 200 M
            0.915,
            0.2e9,
            "16.7% of the FLOPs, 1.80× (1.70–1.90)† at bs 1; paper's headline: met;",
            "this EENet needs 3.00× fewer FLOPs than the SideNet on the same chain at this accuracy.",
        ),
        (  # −2.00 pt; the sweep at 90.00%: 0.45e9 + 0.15e9 · (0.90 − 0.89) / (0.915 − 0.89) = 510 M
            0.90,
            0.2e9,
            "(-2.00 pt), 16.7% of the FLOPs, 1.80× (1.70–1.90)† at bs 1; paper's headline: not met on accuracy;",
            "this EENet needs 2.55× fewer FLOPs than the SideNet on the same chain at this accuracy.",
        ),
        (  # 1.2e9 / 1.2e9 = 100% at −2.00 pt; the sweep's 90.00% at 510 M: the SideNet 1.2e9 / 0.51e9 = 2.35× fewer
            0.90,
            1.2e9,
            "100.0% of the FLOPs, 1.80× (1.70–1.90)† at bs 1; paper's headline: not met on FLOPs and accuracy;",
            "the SideNet on the same chain needs 2.35× fewer FLOPs at this accuracy.",
        ),
        (  # 0.59e9 / 1.2e9 = 49.2%; the sweep's 91.50% costs 600 M, 1.017× the EENet's 590 M: a tie (±2%)
            0.915,
            0.59e9,
            "49.2% of the FLOPs, 1.80× (1.70–1.90)† at bs 1; paper's headline: not met on FLOPs;",
            "the SideNet on the same chain needs the same FLOPs (±2%) at this accuracy.",
        ),
        (  # 0.24e9 / 1.2e9 = 20.0% at −1.00 pt: both limits count as met; the sweep at 91.00%:
            # 0.45e9 + 0.15e9 · (0.91 − 0.89) / (0.915 − 0.89) = 570 M, 2.375× the EENet's 240 M
            0.91,
            0.24e9,
            "(-1.00 pt), 20.0% of the FLOPs, 1.80× (1.70–1.90)† at bs 1; paper's headline: met;",
            "this EENet needs 2.38× fewer FLOPs than the SideNet on the same chain at this accuracy.",
        ),
    ],
    ids=["met", "accuracy-missed", "both-missed", "tie", "at-the-limits"],
)
def test_eenet_against_the_paper_and_the_sidenet(acc: float, flops: float, headline: str, sidenet: str) -> None:
    line = row_line(with_exit_rows(eenet_rows(acc=acc, flops=flops)), "`eenet`")
    assert headline in line
    assert line.endswith(sidenet)


def test_eenet_without_a_sidenet_row_or_sweep_says_so() -> None:
    rows = [r for r in exit_rows() if r["extra_info"]["exit"] != "sidenet"]
    block = eenet_block(render_markdown(results([*rows, *eenet_rows()]), None))
    assert row_line(block, "`eenet`").endswith("; no `sidenet` row on this chain to compare with.")
    rows = exit_rows()
    for r in rows:
        if r["extra_info"]["exit"] == "sidenet":
            r["extra_info"]["sweep"] = None
    block = eenet_block(render_markdown(results([*rows, *eenet_rows()]), None))
    assert row_line(block, "`eenet`").endswith("; SideNet comparison n/a: no SideNet sweep recorded.")


def test_the_flops_share_is_of_the_original_mainnet_the_row_recorded() -> None:
    """``mainnet_flops_per_sample`` is the reference (an EENet retrains the MainNet); the fp32 row only without it."""
    block = with_exit_rows(eenet_rows(mainnet_flops_per_sample=1.5e9))
    assert "(-0.50 pt), 30.0% of the FLOPs, " in row_line(block, "`eenet`")  # 0.45e9 / 1.5e9
    rows = eenet_rows()
    for r in rows:
        del r["extra_info"]["mainnet_flops_per_sample"]
    block = with_exit_rows(rows)
    assert "(-0.50 pt), 37.5% of the FLOPs, " in row_line(block, "`eenet`")  # 0.45e9 / the fp32 row's 1.2e9


def test_no_eenet_block_without_eenet_rows() -> None:
    md = render_markdown(results(), None)
    assert TITLE not in md and "**Reading**" in md
    assert "EENets" not in section_of(md)


# ---------------------------------------------------------------------------------------------------
# Collapse: the table's mark and footnote, the paragraph's warning
# ---------------------------------------------------------------------------------------------------


WARNING = (
    "99.6% of validation inputs took exit 1 of 2 (layer1.0): the confidence branches collapsed (seen in the paper's "
    "own λ logs); the operating point is that exit's accuracy, not an early-exit trade-off."
)


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
    ((setup, lines),) = bullets(eenet_block(md))  # one trained network; only its fp32 chain collapsed
    assert setup.endswith(f"⚠ Collapsed on the fp32 MainNet: {WARNING}")
    assert setup.count("ollapse") == 2  # the one warning ("Collapsed", "collapsed")
    assert not any("ollapse" in line for line in lines)


def test_a_collapse_every_chain_shares_is_said_once() -> None:
    rows = [eenet_rows(c, dtype=c, system_details=details(collapse=COLLAPSED)) for c in ("none", "int8")]
    block = with_exit_rows(*rows)
    ((setup, _),) = bullets(block)
    assert setup.endswith(f"⚠ Collapsed: {WARNING}")
    assert block.count("⚠ Collapsed") == 1


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
    ((setup, lines),) = bullets(eenet_block(md))
    assert setup == (
        "**`eenet`**: exits at taps layer1.0/layer1.1; training 30.5 s (backbone and exits together); no system "
        "details recorded (older results). The retrained backbone's own accuracy (exits off) is not recorded. Within "
        "1 pt of the original MainNet: n/a (no test sweep recorded)."
    )
    assert lines == [
        "*`eenet`* (thresholds: fixed): 91.50% on test (-0.50 pt), 37.5% of the FLOPs, 1.80× (1.70–1.90)† at bs 1; "
        "paper's headline: not met on FLOPs; this EENet needs 1.33× fewer FLOPs than the SideNet on the same chain "
        "at this accuracy."  # the comparisons need no details
    ]


def test_rows_without_system_details_each_get_their_own_bullet() -> None:
    old = [eenet_rows(), eenet_rows("int8", dtype="int8")]
    for rows in old:
        for r in rows:
            del r["extra_info"]["system_details"]
    block = with_exit_rows(*old, eenet_rows("int8", exit_="eenet:threshold=0.5", dtype="int8"))
    assert [(setup.split(" ", 1)[0], [r.split(" (", 1)[0] for r in lines]) for setup, lines in bullets(block)] == [
        ("**`eenet`**:", ["*`eenet`*"]),
        ("**`eenet:threshold=0.5`**", ["*`int8` + `eenet:threshold=0.5`*"]),  # int8's paper-rule row first
        ("**`eenet`**:", ["*`int8` + `eenet`*"]),
    ]


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
    ((setup, lines),) = bullets(eenet_block(md))
    assert setup.startswith("**`eenet`**") and len(lines) == 1 and lines[0].startswith("*`eenet`* (")


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
