"""The report's exit-system comparison: the table of every system at its operating point with the oracle rows, the
reading generated from it, the complementarity per exit system and the accuracy-vs-FLOPs plot per task. Every cell
checked here is computed by hand from the rows below."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_report import PNG_MAGIC, five, make_results, row, tables, task_section

from sidenet.cli import main
from sidenet.report import render_markdown, write_report
from sidenet.report.exit_systems import oracle_points
from sidenet.report.plots import plan_plots, render_figure
from sidenet.report.tables import Complementarity, group_by_task, verdict

T = "mnist"
MULTI = "sidenet-multi"
TAPS3 = ["layer1", "layer2", "layer3"]
SWEEP = {
    "threshold": [0.5, 0.7, 0.9, 1.0],
    "test_accuracy": [0.80, 0.89, 0.915, 0.92],
    "exit_rate": [0.95, 0.8, 0.6, 0.0],
    "flops_per_sample": [0.3e9, 0.45e9, 0.6e9, 1.2e9],
}
MULTI_SWEEP = {
    "threshold": [0.5, 0.7, 0.87, 1.0],
    "test_accuracy": [0.85, 0.91, 0.918, 0.92],
    "exit_rate": [0.99, 0.96, 0.929, 0.0],
    "flops_per_sample": [0.2e9, 0.3e9, 0.4e9, 1.2e9],
}
SIDE_ORACLE = {
    "first_correct_accuracy": 0.95,
    "first_correct_flops_per_sample": 0.4e9,
    "agree_accuracy": 0.92,
    "agree_flops_per_sample": 0.45e9,
    "flops_at_accuracy": 0.5e9,
    "flops_vs_oracle": 1.2,
}
MULTI_ORACLE = {  # no flops_vs_oracle: the report divides predicted FLOPs (0.4e9) by flops_at_accuracy (0.32e9)
    "first_correct_accuracy": 0.96,
    "first_correct_flops_per_sample": 0.25e9,
    "agree_accuracy": 0.92,
    "agree_flops_per_sample": 0.3e9,
    "flops_at_accuracy": 0.32e9,
}


def pair(
    chain: str, exit_: str, bs1: list[float] | None, bs64: list[float] | None, **info: Any
) -> list[dict[str, Any]]:
    """The bs 1 and bs 64 rows of one variant (IQR 5% unless ``iqr64`` is given), with paired ratios."""
    iqr64 = info.pop("iqr64", 0.05)
    one = row(T, chain, exit_, 1, 0.005, 0.00025, timing_samples=10, **info)
    many = row(T, chain, exit_, 64, 0.1, 0.1 * iqr64, timing_samples=640, **info)
    for r, ratios in ((one, bs1), (many, bs64)):
        if ratios is not None:
            r["extra_info"]["aa_paired_ratios" if chain == exit_ == "none" else "paired_speedup"] = ratios
    return [one, many]


def side_info(**extra: Any) -> dict[str, Any]:
    return {
        "threshold": 0.9,
        "threshold_source": "validation",
        "target_loss_pt": 0.5,
        "mainnet_test_accuracy": 0.92,
        "exit_system": {"system": "sidenet", "policy": "softmax"},
        "tap": "layer1",
        "taps": ["layer1"],
        "exit_rate": 0.6,
        "exit_rates": [0.6],
        "flops_per_sample": 0.6e9,
        "predicted_flops_per_sample": 0.6e9,
        "training_seconds": 12.345,
        "oracle": SIDE_ORACLE,
        "sweep": SWEEP,
        **extra,
    }


def multi_info(**extra: Any) -> dict[str, Any]:
    return side_info(
        **{
            "threshold": 0.87,
            "thresholds": [0.87, 0.87, 0.87],
            "exit_system": {"system": MULTI, "taps": "all", "policy": "softmax"},
            "retrains_backbone": False,
            "tap": "layer1/layer2/layer3",
            "taps": TAPS3,
            "exit_rate": 0.929,
            "exit_rates": [0.117, 0.648, 0.164],
            "flops_per_sample": 0.4e9,
            "predicted_flops_per_sample": 0.4e9,
            "training_seconds": 55.75,
            "oracle": MULTI_ORACLE,
            "sweep": MULTI_SWEEP,
            **extra,
        }
    )


def exit_rows() -> list[dict[str, Any]]:
    """fp32 MainNet, sidenet, sidenet-multi and the never-exit overhead on chain none; int8 alone, + sidenet and +
    sidenet-multi (bs 64 noisy). Paired speedups vs the fp32 MainNet, median (q1–q3):

    bs 1: sidenet 1.5 (1.45–1.55), multi 2.0 (1.9–2.1), int8 2.0 (1.9–2.1), int8+sidenet 2.7, int8+multi 3.6 (3.5–3.7)
    bs 64: sidenet 1.2, multi 1.6 (1.55–1.65), int8 1.6 (1.55–1.65), int8+sidenet 1.536, int8+multi 2.56 (2.51–2.61)
    """
    fp32 = {"test_accuracy": 0.92, "flops_per_sample": 1.2e9, "mainnet_test_accuracy": 0.92, "dtype": "fp32"}
    int8 = {"dtype": "int8", "chain_test_accuracy": 0.918}
    return [
        *pair("none", "none", five(1.0, 0.02), five(1.0, 0.02), **fp32),
        *pair("none", "sidenet", five(1.5, 0.05), five(1.2, 0.05), test_accuracy=0.915, **side_info()),
        *pair("none", MULTI, five(2.0, 0.1), five(1.6, 0.05), test_accuracy=0.918, **multi_info()),
        *pair("none", "sidenet-noexit", five(0.97, 0.01), five(0.98, 0.01), test_accuracy=0.92,
              **side_info(threshold=1.000001, threshold_source="never-exit", exit_rate=0.0, exit_rates=[0.0],
                          flops_per_sample=1.25e9)),
        *pair("int8", "none", five(2.0, 0.1), five(1.6, 0.05), test_accuracy=0.918, flops_per_sample=1.2e9,
              mainnet_test_accuracy=0.92, **int8),
        *pair("int8", "sidenet", five(2.7, 0.1), five(1.536, 0.05), test_accuracy=0.912, **side_info(), **int8),
        *pair("int8", MULTI, five(3.6, 0.1), five(2.56, 0.05), iqr64=0.15, test_accuracy=0.916,
              **multi_info(flops_per_sample=0.44e9), **int8),
    ]  # fmt: skip


def results(rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {**make_results(), "benchmarks": exit_rows() if rows is None else rows}


def section_of(md: str) -> str:
    """The task's "Exit systems" subsection (up to the table of all rows)."""
    section = task_section(md, T)
    return section[section.index("### Exit systems") : section.index("### All rows")]


def comparison(md: str) -> dict[tuple[str, str, str], dict[str, str]]:
    """The comparison table keyed by (system, chain, taps)."""
    table = tables(section_of(md))[0]
    return {(r["system"], r["chain"], r["taps"]): r for r in table}


def per_system(md: str) -> dict[tuple[str, str], dict[str, str]]:
    section = section_of(md)
    block = section[section.index("#### Complementarity per exit system") :]
    return {(r["system"], r["chain"]): r for r in tables(block)[0]}


# ---------------------------------------------------------------------------------------------------
# The comparison table
# ---------------------------------------------------------------------------------------------------


def test_comparison_rows_and_order() -> None:
    table = tables(section_of(render_markdown(results(), None)))[0]
    assert [(r["system"], r["chain"], r["taps"]) for r in table] == [
        ("MainNet (fp32)", "none", "—"),
        ("sidenet", "none", "layer1"),
        (MULTI, "none", "layer1/layer2/layer3"),
        ("oracle: first right exit", "none", "layer1"),
        ("oracle: agrees with MainNet", "none", "layer1"),
        ("oracle: first right exit", "none", "layer1/layer2/layer3"),
        ("oracle: agrees with MainNet", "none", "layer1/layer2/layer3"),
        ("sidenet", "int8", "layer1"),
        (MULTI, "int8", "layer1/layer2/layer3"),
    ]  # the never-exit overhead (sidenet-noexit) has no operating point to compare


def test_comparison_cells_are_computed_from_the_rows() -> None:
    rows = comparison(render_markdown(results(), None))
    ref = rows[("MainNet (fp32)", "none", "—")]
    assert ref["Δ acc (pt)"] == "ref" and ref["FLOP speedup"] == "ref" and ref["test acc (%)"] == "92.00"
    assert ref["speedup bs 1"] == "ref; A/A 1.00 (0.98–1.02)§" and ref["training (s)"] == "—"
    side = rows[("sidenet", "none", "layer1")]
    assert side["threshold"] == "0.9" and side["test acc (%)"] == "91.50" and side["Δ acc (pt)"] == "-0.50"
    assert side["exit rate (%)"] == "60.0"  # one exit: no per-exit breakdown
    assert side["FLOPs/sample"] == "600 MFLOP" and side["FLOP speedup"] == "2.00×"  # 1.2e9 / 0.6e9
    assert side["p50 latency/sample bs 1 (IQR)"] == "0.500 ms ±5.0%"  # 0.005 s / 10 samples
    assert side["speedup bs 1"] == "1.50× (1.45–1.55)†" and side["speedup bs 64"] == "1.20× (1.15–1.25)†"
    assert side["training (s)"] == "12.3" and side["FLOPs ÷ oracle at equal acc"] == "1.20×"
    multi = rows[(MULTI, "none", "layer1/layer2/layer3")]
    assert multi["exit rate (%)"] == "92.9 (11.7 / 64.8 / 16.4)"
    assert multi["threshold"] == "0.87"  # one shared threshold: not repeated per exit
    assert multi["Δ acc (pt)"] == "-0.20" and multi["FLOP speedup"] == "3.00×"
    assert multi["training (s)"] == "55.8"
    assert multi["FLOPs ÷ oracle at equal acc"] == "1.25×"  # predicted 0.4e9 / flops_at_accuracy 0.32e9
    both = rows[(MULTI, "int8", "layer1/layer2/layer3")]
    assert both["Δ acc (pt)"] == "-0.40" and both["FLOP speedup"] == "2.73×"  # 1.2 / 0.44
    assert both["p50 latency/sample bs 64 (IQR)"] == "0.156 ms ±15.0% ⚠"  # noisy: flagged, kept
    assert both["speedup bs 64"] == "2.56× (2.51–2.61)†"


def test_oracle_rows_show_accuracy_and_flops_and_are_not_timed() -> None:
    md = render_markdown(results(), None)
    rows = comparison(md)
    first = rows[("oracle: first right exit", "none", "layer1/layer2/layer3")]
    assert first["test acc (%)"] == "96.00" and first["Δ acc (pt)"] == "+4.00"
    assert first["FLOPs/sample"] == "250 MFLOP" and first["FLOP speedup"] == "4.80×"  # 1.2e9 / 0.25e9
    agree = rows[("oracle: agrees with MainNet", "none", "layer1")]
    assert agree["test acc (%)"] == "92.00" and agree["Δ acc (pt)"] == "+0.00" and agree["FLOP speedup"] == "2.67×"
    for r in (first, agree):
        assert [r[k] for k in ("p50 latency/sample bs 1 (IQR)", "speedup bs 1", "speedup bs 64")] == ["not timed"] * 3
        assert r["threshold"] == r["exit rate (%)"] == r["training (s)"] == "—"
    assert "bounds, not systems" in section_of(md)


def test_systems_sharing_a_placement_share_its_oracle_unless_their_heads_differ() -> None:
    same = pair("none", "sidenet-multi:taps=layer1", None, None, test_accuracy=0.915, **side_info())
    other = pair("none", "mine", None, None, test_accuracy=0.915,
                 **side_info(oracle={**SIDE_ORACLE, "first_correct_accuracy": 0.97}))  # fmt: skip
    variants = group_by_task(results([*exit_rows(), *same, *other]))[T]
    points = [(p.label, p.taps, p.systems) for p in oracle_points(variants) if p.kind == "first_correct"]
    assert points == [
        ("oracle: first right exit (mine)", ("layer1",), ("mine",)),
        ("oracle: first right exit (sidenet, sidenet-multi:taps=layer1)", ("layer1",),
         ("sidenet", "sidenet-multi:taps=layer1")),
        ("oracle: first right exit", ("layer1", "layer2", "layer3"), (MULTI,)),
    ]  # fmt: skip
    agree = [p for p in oracle_points(variants) if p.kind == "agree" and p.taps == ("layer1",)]
    assert len(agree) == 1 and agree[0].label == "oracle: agrees with MainNet"  # same numbers: one row


def test_retrained_backbone_and_per_exit_thresholds_are_stated() -> None:
    eenet = pair("none", "eenet:lr=0.1", five(1.8, 0.1), five(1.4, 0.1), test_accuracy=0.917,
                 **multi_info(retrains_backbone=True, thresholds=[0.5, 0.75, 0.9]))  # fmt: skip
    rows = comparison(render_markdown(results([*exit_rows(), *eenet]), None))
    row_ = rows[("eenet:lr=0.1 (retrains backbone)", "none", "layer1/layer2/layer3")]
    assert row_["threshold"] == "0.5 / 0.75 / 0.9"
    assert ("eenet:lr=0.1", "none", "layer1/layer2/layer3") not in rows


# ---------------------------------------------------------------------------------------------------
# Reading and complementarity
# ---------------------------------------------------------------------------------------------------


def reading(md: str) -> str:
    return next(line for line in section_of(md).splitlines() if line.startswith("**Reading**"))


def test_reading_states_only_what_the_rows_say() -> None:
    text = reading(render_markdown(results(), None))
    assert text.startswith("**Reading** (target: ≤ 0.5 pt below the fp32 MainNet on test, the task's selection target)")
    assert (
        "`sidenet-multi` saves the most FLOPs within the target: FLOP speedup 3.00× (400 MFLOP/sample; -0.20 pt)."
        in text
    )
    assert "Fastest measured within the target: `sidenet-multi` at bs 1 (2.00×) and bs 64 (1.60×)." in text
    assert "`sidenet` 1.20× on tap layer1, `sidenet-multi` 1.25× on taps layer1/layer2/layer3." in text
    assert (
        "If each input left at its first right exit, the exits on taps layer1/layer2/layer3 would reach 96.00% "
        "(+4.00 pt) at 250 MFLOP/sample (FLOP speedup 4.80×)." in text
    )
    assert "`int8` + `sidenet-multi` is the fastest within the target at bs 1: 3.60× (-0.40 pt)." in text
    assert "Outside the target" not in text


def test_reading_names_systems_outside_the_target() -> None:
    rows = exit_rows()
    for r in rows:
        if r["extra_info"]["exit"] == MULTI:
            r["extra_info"]["test_accuracy"] = 0.91  # -1.00 pt on chain none, -1.00 on int8
    text = reading(render_markdown(results(rows), None))
    assert "`sidenet` saves the most FLOPs within the target: FLOP speedup 2.00× (600 MFLOP/sample; -0.50 pt)." in text
    assert "Outside the target on test: `sidenet-multi` (-1.00 pt)." in text
    assert "Fastest measured within the target: `sidenet` at bs 1 (1.50×) and bs 64 (1.20×)." in text
    assert "No exit system on a compressed chain stays within the target on test." in text


def test_complementarity_per_exit_system() -> None:
    rows = per_system(render_markdown(results(), None))
    assert list(rows) == [("sidenet", "int8"), (MULTI, "int8")]
    side, multi = rows[("sidenet", "int8")], rows[(MULTI, "int8")]
    # sidenet: 2.7 / (2.0 · 1.5) = 0.90, spread 2.6 / (2.1 · 1.55) … 2.8 / (1.9 · 1.45); bs 64 1.536 / (1.6 · 1.2)
    assert side["speedup C, S, C + S bs 1"] == "2.00×, 1.50×, 2.70×"
    assert side["complementarity bs 1"] == "0.90 (0.80–1.02)" and side["complementarity bs 64"] == "0.80 (0.72–0.89)"
    assert side["verdict"] == "bs 1: complementary · bs 64: partly complementary"
    # sidenet-multi: 3.6 / (2.0 · 2.0) = 0.90, spread 3.5 / (2.1 · 2.1) = 0.79 … 3.7 / (1.9 · 1.9) = 1.02
    assert multi["speedup C, S, C + S bs 1"] == "2.00×, 2.00×, 3.60×"
    assert multi["complementarity bs 1"] == "0.90 (0.79–1.02)"
    # bs 64: 2.56 / (1.6 · 1.6) = 1.00, spread 2.51 / (1.65 · 1.65) = 0.92 … 2.61 / (1.55 · 1.55) = 1.09; noisy row
    assert multi["complementarity bs 64"] == "1.00 (0.92–1.09) ⚠"
    assert multi["verdict"] == "bs 1: complementary · bs 64: complementary ⚠"
    assert multi["FLOP speedup C, S, C + S"] == "1.00×, 3.00×, 2.73×"
    assert multi["FLOP complementarity"] == "0.91" and multi["Δ acc C + S (pt)"] == "-0.40"  # 2.727 / (1.0 · 3.0)


def test_complementarity_per_system_says_what_is_missing() -> None:
    rows = [r for r in exit_rows() if not (r["extra_info"]["chain"] == "none" and r["extra_info"]["exit"] == MULTI)]
    multi = per_system(render_markdown(results(rows), None))[(MULTI, "int8")]
    assert multi["complementarity bs 1"] == "—" and multi["speedup C, S, C + S bs 1"] == "2.00×, —, 3.60×"
    assert multi["verdict"] == "bs 1: — (no `sidenet-multi` alone row) · bs 64: — (no `sidenet-multi` alone row)"


def test_verdict_names_the_system() -> None:
    assert verdict(Complementarity(0.5), system=MULTI) == (
        "overlapping (0.50): `sidenet-multi` saves less on the compressed MainNet"
    )
    assert (
        verdict(Complementarity(0.5)) == "overlapping (0.50): the SideNet's exit saves less on the compressed MainNet"
    )


# ---------------------------------------------------------------------------------------------------
# Older and malformed rows
# ---------------------------------------------------------------------------------------------------

NEW_KEYS = ("taps", "tap", "exit_rates", "oracle", "training_seconds", "predicted_flops_per_sample", "thresholds")


def test_an_older_results_file_renders_through_the_cli(tmp_path: Path) -> None:
    rows = exit_rows()
    for r in rows:
        for key in NEW_KEYS:
            r["extra_info"].pop(key, None)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(results(rows)), encoding="utf-8")
    assert main(["report", str(path), "-o", str(tmp_path / "old.md")]) == 0
    assert "### Exit systems" in (tmp_path / "old.md").read_text(encoding="utf-8")


def test_rows_without_the_new_keys_render_dashes() -> None:
    rows = exit_rows()
    for r in rows:
        for key in NEW_KEYS:
            r["extra_info"].pop(key, None)
    md = render_markdown(results(rows), None)
    table = comparison(md)
    multi = table[(MULTI, "none", "—")]
    assert multi["exit rate (%)"] == "92.9"  # the total only: no per-exit rates recorded
    assert multi["training (s)"] == multi["FLOPs ÷ oracle at equal acc"] == "—"
    assert not any(key[0].startswith("oracle") for key in table)  # no oracle recorded: no oracle rows
    assert "— in training (s), FLOPs ÷ oracle at equal acc, taps: not recorded by some rows" in md
    assert "Against the oracle" not in reading(md)
    assert per_system(md)[(MULTI, "int8")]["complementarity bs 1"] == "0.90 (0.79–1.02)"  # needs none of them


@pytest.mark.parametrize(
    "bad",
    [
        {"taps": 3, "exit_rates": "x", "oracle": [1], "training_seconds": "fast", "thresholds": {"a": 1}},
        {"taps": [None, {}], "exit_rates": [None, "a", 2.5], "oracle": {"first_correct_accuracy": "hi"}},
        {"oracle": {"flops_at_accuracy": 0, "first_correct_flops_per_sample": 0, "agree_accuracy": None}},
        {"exit_system": "sidenet", "retrains_backbone": "yes", "training_seconds": -1},
    ],
    ids=["wrong-types", "wrong-element-types", "zeros-and-nulls", "strings"],
)
def test_malformed_new_keys_render_without_a_crash(tmp_path: Path, bad: dict[str, Any]) -> None:
    """The renderer itself copes (whatever load_results comes to reject): tables, reading and plot."""
    rows = exit_rows()
    for r in rows:
        if r["extra_info"]["exit"] != "none":
            r["extra_info"].update(bad)
    md = write_report(results(rows), tmp_path / "r.md").read_text(encoding="utf-8")
    assert "### Exit systems" in md
    assert not [key for key in comparison(md) if "retrains" in key[0]]  # only a JSON true says so


# ---------------------------------------------------------------------------------------------------
# The plot
# ---------------------------------------------------------------------------------------------------


def test_exit_systems_plot_is_written_linked_and_listed(tmp_path: Path) -> None:
    out = write_report(results(), tmp_path / "r.md")
    png = tmp_path / "r_plots" / f"{T}_exit_systems.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    manifest = json.loads((tmp_path / ".r.md.plots.json").read_text(encoding="utf-8"))
    assert f"{T}_exit_systems.png" in manifest["files"]
    md = out.read_text(encoding="utf-8")
    assert f"](r_plots/{T}_exit_systems.png)" in section_of(md)  # inside the Exit systems subsection
    # the sweep reaches 80% (below the MainNet's 92% − 10 pt): the caption says where the axis starts
    assert "accuracy axis from the fp32 MainNet − 10 pt (82.0%)" in md


def test_exit_systems_plot_zooms_and_keeps_its_legend_outside() -> None:
    spec = next(s for s in plan_plots(results()) if s.kind == "exit_systems")
    fig = render_figure(spec)
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert 81.0 < lo < 82.0 and 96.0 < hi < 97.5  # MainNet − 10 pt (minus a margin) up to the 96% oracle point
    assert ax.get_xlabel() == "FLOPs/sample (GFLOP)" and ax.get_ylabel() == "test accuracy (%)"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert ax.get_legend() is None  # the legend belongs to the figure, below the axes
    assert {"sidenet: sweep", "sidenet-multi [int8]: sweep", "fp32 MainNet", "MainNet [int8]"} <= set(labels)
    assert "oracle: first right exit [taps layer1/layer2/layer3]" in labels
    assert "oracle: agrees with MainNet [tap layer1]" in labels


def test_exit_systems_plot_only_where_it_adds_to_the_flops_plot() -> None:
    old = exit_rows()
    for r in old:
        for key in NEW_KEYS:
            r["extra_info"].pop(key, None)
    sidenet_only = [r for r in old if r["extra_info"]["exit"] != MULTI]
    assert not [s for s in plan_plots(results(sidenet_only)) if s.kind == "exit_systems"]  # one system, no oracle
    assert [s.filename for s in plan_plots(results(old)) if s.kind == "exit_systems"] == [f"{T}_exit_systems.png"]


def test_one_exit_systems_plot_per_device() -> None:
    gpu = json.loads(json.dumps(exit_rows()))
    for r in gpu:
        r["extra_info"]["device"] = "cuda"
    data = results([*exit_rows(), *gpu])
    assert [s.filename for s in plan_plots(data) if s.kind == "exit_systems"] == [
        f"{T}_cpu_exit_systems.png",
        f"{T}_cuda_exit_systems.png",
    ]
    md = render_markdown(data, "p")
    section = section_of(md)
    assert section.index("#### Device `cpu`") < section.index("p/mnist_cpu_exit_systems.png")
    assert section.index("#### Device `cuda`") < section.index("p/mnist_cuda_exit_systems.png")
