"""Report, results loading and CLI: numbers in the tables are checked against hand-computed values."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from matplotlib.figure import Figure

from sidenet.bench.results import load_results
from sidenet.cli import main
from sidenet.report import render_markdown, write_report
from sidenet_core.errors import UserError
from sidenet_core.registry import Registry

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# ---------------------------------------------------------------------------------------------------
# Synthetic results in the exact pytest-benchmark JSON shape
# ---------------------------------------------------------------------------------------------------

THRESHOLDS = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0]
EXIT_RATES = [0.95, 0.9, 0.85, 0.8, 0.75, 0.72, 0.68, 0.64, 0.6, 0.5, 0.0]
SWEEP_ACC = [0.80, 0.83, 0.85, 0.87, 0.88, 0.89, 0.895, 0.90, 0.905, 0.912, 0.92]
HEAD_SIDE_FLOPS, REST_FLOPS = 0.35e9, 0.9e9


def stats(median: float, iqr: float, rounds: int = 20) -> dict[str, Any]:
    """pytest-benchmark's per-benchmark ``stats`` block (seconds per round)."""
    return {
        "min": median * 0.9,
        "max": median * 1.3,
        "mean": median * 1.01,
        "stddev": iqr / 1.35,
        "rounds": rounds,
        "median": median,
        "iqr": iqr,
        "q1": median - iqr / 2,
        "q3": median + iqr / 2,
        "iqr_outliers": 0,
        "stddev_outliers": 1,
        "outliers": "1;0",
        "ld15iqr": median * 0.9,
        "hd15iqr": median * 1.3,
        "ops": 1.0 / median,
        "total": median * rounds,
        "iterations": 1,
    }


def row(task: str, chain: str, exit_: str, bs: int, median: float, iqr: float, **extra: Any) -> dict[str, Any]:
    """One benchmark row; ``extra`` adds or overrides ``extra_info`` keys."""
    info: dict[str, Any] = {
        "task": task,
        "chain": chain,
        "exit": exit_,
        "threshold": None,
        "device": "cpu",
        "threads": 4,
        "batch_size": bs,
        "test_accuracy": 0.9,
        "exit_rate": 0.0,
        "flops_per_sample": 1.0e9,
        "params": 1_000_000,
        **extra,
    }
    name = f"test_bench[{task}-{chain}-{exit_}-bs{bs}]"
    return {
        "group": task,
        "name": name,
        "fullname": f"bench/test_bench.py::{name}",
        "params": {"task": task, "chain": chain, "exit": exit_, "batch_size": bs},
        "param": f"{task}-{chain}-{exit_}-bs{bs}",
        "extra_info": info,
        "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": 5, "warmup": True},
        "stats": stats(median, iqr),
    }


def cifar_rows() -> list[dict[str, Any]]:
    """Full rows: every optional key present; SideNet bs 1 is noisy, bs 64 has paired speedups."""
    main = {"test_accuracy": 0.92, "flops_per_sample": 1.2e9, "params": 11_200_000}
    flops = [HEAD_SIDE_FLOPS + (1 - r) * REST_FLOPS for r in EXIT_RATES]
    side = {
        "threshold": 0.9,
        "test_accuracy": 0.905,
        "exit_rate": 0.6,
        "flops_per_sample": flops[8],
        "params": 11_300_000,
        "mainnet_test_accuracy": 0.92,
        "target_loss_pt": 1.5,
        "tap": "layer2",
        "val_accuracy": 0.91,
        "val_exit_rate": 0.62,
        "main_ece": 0.031,
        "side_ece": 0.084,
        "reliability": {
            "main": {"confidence": [0.55, 0.75, 0.95], "accuracy": [0.5, 0.7, 0.97], "count": [10, 0, 90]},
            "side": {"confidence": [0.55, 0.75, 0.95], "accuracy": [0.4, 0.6, 0.9], "count": [30, 20, 50]},
        },
        "sweep": {
            "threshold": THRESHOLDS,
            "test_accuracy": SWEEP_ACC,
            "exit_rate": EXIT_RATES,
            "flops_per_sample": flops,
        },
        "flops_breakdown": {"head": 0.3e9, "side": 0.05e9, "rest": REST_FLOPS},
        "versions": {"torch": "2.14.1", "sidenet-bench": "0.1.0"},
    }
    return [
        row("cifar10", "none", "none", 1, 0.010, 0.0005, timing_samples=10, **main),
        row("cifar10", "none", "none", 64, 0.128, 0.0064, timing_samples=640,
            aa_paired_ratios=[1.05, 0.96, 1.0, 0.99, 1.02], **main),
        row("cifar10", "none", "sidenet", 1, 0.004, 0.0006, timing_samples=10,
            component_latency_s={"head_side": 0.00015, "rest": 0.0006}, **side),
        row("cifar10", "none", "sidenet", 64, 0.0768, 0.00384, timing_samples=640,
            paired_speedup=[1.5, 1.6, 1.7, 1.8, 1.9],
            component_latency_s={"head_side": 0.00004, "rest": 0.0002}, **side),
    ]  # fmt: skip


def sst2_rows() -> list[dict[str, Any]]:
    """Minimal rows: no optional keys at all (no timing_samples → a round is one batch)."""
    return [
        row("sst2", "none", "none", 1, 0.002, 0.0001, test_accuracy=0.90, flops_per_sample=5.6e7),
        row("sst2", "none", "none", 64, 0.064, 0.0032, test_accuracy=0.90, flops_per_sample=5.6e7),
        row("sst2", "none", "sidenet", 1, 0.001, 0.00005, threshold=0.8, test_accuracy=0.885, exit_rate=0.5,
            flops_per_sample=3.5e7),
        row("sst2", "none", "sidenet", 64, 0.040, 0.002, threshold=0.8, test_accuracy=0.885, exit_rate=0.5,
            flops_per_sample=3.5e7),
        # A compressed chain whose MainNet row is missing: Δ and speedup have nothing to compare to.
        row("sst2", "int8", "sidenet", 1, 0.0008, 0.00004, threshold=0.8, test_accuracy=0.88, exit_rate=0.5,
            flops_per_sample=1.2e7),
    ]  # fmt: skip


def make_results() -> dict[str, Any]:
    return {
        "machine_info": {
            "node": "bench-host",
            "processor": "x86_64",
            "machine": "x86_64",
            "python_compiler": "GCC 11.4.0",
            "python_implementation": "CPython",
            "python_implementation_version": "3.11.7",
            "python_version": "3.11.7",
            "python_build": ["main", "Jan  1 2024 00:00:00"],
            "release": "6.1.0",
            "system": "Linux",
            "cpu": {"brand_raw": "AMD EPYC 7R13 Processor", "count": 16, "arch": "X86_64"},
            "sidenet": {
                "threads": 4,
                "torch": "2.14.1",
                "torchvision": "0.29.1",
                "transformers": "4.57.1",
                "device": "cpu",
                "device_name": "AMD EPYC 7R13 Processor",
                "command": "pytest bench/ --benchmark-only --benchmark-json=results/run.json",
            },
        },
        "commit_info": {"id": "0123456789abcdef0123", "time": "2025-11-22T05:00:00+00:00", "dirty": False},
        "benchmarks": [*cifar_rows(), *sst2_rows()],
        "datetime": "2025-11-22T05:10:11.123456+00:00",
        "version": "5.3.1",
    }


def write_results(path: Path, results: dict[str, Any] | None = None) -> Path:
    path.write_text(json.dumps(results or make_results()), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------------
# Helpers to read the Markdown back
# ---------------------------------------------------------------------------------------------------


def task_section(md: str, task: str) -> str:
    start = md.index(f"## Task `{task}`")
    end = md.find("\n## ", start + 1)
    return md[start : end if end != -1 else len(md)]


def tables(section: str) -> list[list[dict[str, str]]]:
    """Every GitHub-style table in ``section`` as a list of {header: cell} rows."""
    found: list[list[dict[str, str]]] = []
    lines = section.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|-"):
            headers = [c.strip() for c in lines[i].strip("|").split("|")]
            body = []
            i += 2
            while i < len(lines) and lines[i].startswith("|"):
                body.append(dict(zip(headers, (c.strip() for c in lines[i].strip("|").split("|")), strict=True)))
                i += 1
            found.append(body)
        else:
            i += 1
    return found


def main_rows(md: str, task: str) -> dict[tuple[str, str], dict[str, str]]:
    """The table of every row (the first with chain and exit columns; a complementarity headline may precede it)."""
    main = next(t for t in tables(task_section(md, task)) if t and {"chain", "exit"} <= t[0].keys())
    return {(r["chain"], r["exit"]): r for r in main}


# ---------------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------------


def test_main_table_numbers_are_computed_from_inputs() -> None:
    md = render_markdown(make_results(), None)
    rows = main_rows(md, "cifar10")
    main, side = rows[("none", "none")], rows[("none", "sidenet")]
    assert main["threshold"] == "—" and main["Δ acc (pt)"] == "ref" and main["speedup bs 1"] == "ref"
    assert main["test acc (%)"] == "92.00" and main["exit rate (%)"] == "0.0"
    assert main["FLOPs/sample"] == "1.20 GFLOP" and main["params"] == "11.2 M"
    assert main["p50 latency/sample bs 1 (IQR)"] == "1.00 ms ±5.0%"  # 0.010 s / 10 samples
    assert main["p50 latency/sample bs 64 (IQR)"] == "0.200 ms ±5.0%"  # 0.128 s / 640 samples
    assert side["threshold"] == "0.9" and side["test acc (%)"] == "90.50"
    assert side["Δ acc (pt)"] == "-1.50" and side["exit rate (%)"] == "60.0"
    assert side["FLOPs/sample"] == "710 MFLOP" and side["params"] == "11.3 M"
    assert main["FLOP speedup"] == "ref" and side["FLOP speedup"] == "1.69×"  # 1.2e9 / 7.1e8
    # bs 1: ratio of medians 1.00 ms / 0.400 ms, flagged because the SideNet timing is noisy.
    assert side["p50 latency/sample bs 1 (IQR)"] == "0.400 ms ±15.0% ⚠"
    assert side["speedup bs 1"] == "2.50× ⚠"
    # bs 64: the paired per-round ratios win over the ratio of medians (0.200 / 0.120 = 1.67).
    assert side["p50 latency/sample bs 64 (IQR)"] == "0.120 ms ±5.0%"
    assert side["speedup bs 64"] == "1.70× (1.60–1.80)†"
    assert "paired speedup" in task_section(md, "cifar10")


def test_reference_row_shows_its_a_a_noise_floor_when_measured() -> None:
    """The fp32 MainNet paired with itself (A/A): median (q1–q3) of its ratios in the reference cell, explained
    once; rows from before A/A existed keep a plain "ref"."""
    md = render_markdown(make_results(), None)
    main = main_rows(md, "cifar10")[("none", "none")]
    assert main["speedup bs 64"] == "ref; A/A 1.00 (0.99–1.02)§"  # sorted 0.96 0.99 1.00 1.02 1.05
    assert main["speedup bs 1"] == "ref"  # no ratios recorded at bs 1
    assert "§ A/A = the fp32 MainNet paired with itself" in task_section(md, "cifar10")
    assert "A/A =" not in task_section(md, "sst2")


def test_no_timing_samples_means_one_batch_per_round() -> None:
    rows = main_rows(render_markdown(make_results(), None), "sst2")
    main, side = rows[("none", "none")], rows[("none", "sidenet")]
    assert main["p50 latency/sample bs 1 (IQR)"] == "2.00 ms ±5.0%"
    assert main["p50 latency/sample bs 64 (IQR)"] == "1.00 ms ±5.0%"  # 0.064 s / 64
    assert side["speedup bs 1"] == "2.00×" and side["speedup bs 64"] == "1.60×"
    assert side["Δ acc (pt)"] == "-1.50"
    assert "paired speedup" not in task_section(render_markdown(make_results(), None), "sst2")


def test_noisy_row_is_flagged_and_kept() -> None:
    md = render_markdown(make_results(), None)
    section = task_section(md, "cifar10")
    assert "noisy: IQR/median = 0.15" in section
    assert "bs 1" in next(line for line in section.splitlines() if "noisy:" in line)
    assert "⚠" not in task_section(md, "sst2")  # 5% IQR everywhere there


def test_missing_optional_keys_render_dash() -> None:
    md = render_markdown(make_results(), None)
    sst2 = task_section(md, "sst2")
    # A compressed chain without its own MainNet row still compares to the fp32 MainNet (chain none, exit none).
    orphan = main_rows(md, "sst2")[("int8", "sidenet")]
    assert orphan["Δ acc (pt)"] == "-2.00" and orphan["speedup bs 1"] == "2.50×"  # 2.00 ms / 0.800 ms
    assert orphan["dtype"] == "—"  # no dtype recorded, and chain int8 is not known to be fp32
    assert orphan["p50 latency/sample bs 64 (IQR)"] == "—" and orphan["speedup bs 64"] == "—"
    assert "bs 1: — (no `int8` alone row)" in sst2
    # No fp32 MainNet row and no copy of its accuracy: nothing to compare to.
    alone = render_markdown({"benchmarks": sst2_rows()[-1:]}, None)
    lone = main_rows(alone, "sst2")[("int8", "sidenet")]
    assert lone["Δ acc (pt)"] == "—" and lone["speedup bs 1"] == "—" and lone["FLOP speedup"] == "—"
    assert "Calibration (ECE, 15 bins, test): MainNet — · SideNet —" in sst2
    assert "Threshold sweep: — (not recorded)" in sst2
    cifar = task_section(md, "cifar10")
    assert "MainNet 0.031 · SideNet 0.084" in cifar


def test_sweep_table_shows_spread_and_chosen_threshold() -> None:
    section = task_section(render_markdown(make_results(), None), "cifar10")
    sweep = next(t for t in tables(section) if t and "FLOPs vs MainNet (%)" in t[0])
    assert [r["threshold"] for r in sweep] == ["0.5", "0.6", "0.75", "0.9", "1"]
    chosen = next(r for r in sweep if r[""] == "← chosen")
    assert chosen["threshold"] == "0.9" and chosen["Δ acc (pt)"] == "-1.50"
    assert chosen["FLOPs vs MainNet (%)"] == "59.2"  # 710 / 1200
    assert sweep[0]["test acc (%)"] == "80.00" and sweep[0]["exit rate (%)"] == "95.0"
    assert "for ≤ 1.5 pt accuracy loss" in section and "tap `layer2`" in section


def test_header_environment_and_notes() -> None:
    md = render_markdown(make_results(), None)
    assert md.startswith("# sidenet-bench report")
    assert "`pytest bench/ --benchmark-only --benchmark-json=results/run.json`" in md
    assert "2025-11-22 05:10:11 UTC" in md
    for text in ("AMD EPYC 7R13 Processor", "**threads:** 4", "3.11.7", "2.14.1", "0.29.1", "4.57.1"):
        assert text in md
    assert "FlopCounterMode" in md and "validation" in md
    assert "![" not in md  # no plot folder given, no image links


def test_header_lists_the_runs_that_measured_merged_rows() -> None:
    """Results merge across runs; the header credits each row to its run (``extra_info["run"]``), oldest first."""
    results = make_results()
    rows = results["benchmarks"]
    first = {"when": "2026-11-22 13:15 UTC", "commit": "993ad13aaaaa", "dirty": False, "command": "pytest bench/ A"}
    second = {"when": "2026-11-22 13:36 UTC", "commit": "96ae7844bbbb", "dirty": True, "command": "pytest bench/ B"}
    for i, r in enumerate(rows):
        if i > 0:  # row 0 predates run records
            r["extra_info"]["run"] = second if i in (1, 2) else first
    md = render_markdown(results, None)
    header = md.split("## Environment")[0]
    n_first = len(rows) - 3
    assert "- **Rows measured by 3 runs**" in header
    lines = [line for line in header.splitlines() if line.startswith("  - ")]
    assert lines == [
        "  - 1 rows: by an earlier run that did not record itself",
        f"  - {n_first} rows: run finished 2026-11-22 13:15 UTC at `993ad13aaaaa`, `pytest bench/ A`",
        "  - 2 rows: run finished 2026-11-22 13:36 UTC at `96ae7844bbbb` (dirty), `pytest bench/ B`",
    ]
    for r in rows:
        r["extra_info"]["run"] = first
    assert "Rows measured by" not in render_markdown(results, None)  # one recorded run: the header says it all


def test_missing_machine_info_still_renders() -> None:
    results = {"benchmarks": sst2_rows()}
    md = render_markdown(results, "plots")
    assert "**machine:** — (fingerprint not recorded)" in md and "**torch:** —" in md and "**When:** —" in md


# ---------------------------------------------------------------------------------------------------
# Plots and write_report
# ---------------------------------------------------------------------------------------------------


def test_write_report_writes_markdown_and_valid_pngs(tmp_path: Path) -> None:
    out = write_report(make_results(), tmp_path / "run 1.md")
    assert out == tmp_path / "run 1.md"
    md = out.read_text(encoding="utf-8")
    pngs = sorted((tmp_path / "run 1_plots").glob("*.png"))
    assert [p.name for p in pngs] == [
        "cifar10_accuracy_vs_flops.png",
        "cifar10_accuracy_vs_latency.png",
        "cifar10_reliability.png",
        "sst2_accuracy_vs_latency.png",  # sst2 has no sweep or reliability: those plots are skipped
        "sst2_pareto.png",  # sst2 has a compressed chain (int8): the Pareto plot joins the headline
    ]
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert f"](run%201_plots/{png.name})" in md
    assert not list(tmp_path.rglob("*.partial"))


def test_write_report_drops_plots_it_no_longer_links(tmp_path: Path) -> None:
    out = tmp_path / "r.md"
    write_report(make_results(), out)
    write_report({**make_results(), "benchmarks": sst2_rows()}, out)
    assert sorted(p.name for p in (tmp_path / "r_plots").iterdir()) == [
        "sst2_accuracy_vs_latency.png",
        "sst2_pareto.png",
    ]
    assert "cifar10" not in out.read_text(encoding="utf-8")


def test_write_report_is_atomic_when_a_plot_fails_midway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r.md"
    write_report(make_results(), out)
    old_md = out.read_bytes()
    old_pngs = {p: p.read_bytes() for p in (tmp_path / "r_plots").glob("*.png")}
    real_savefig = Figure.savefig
    calls = {"n": 0}

    def failing_savefig(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] < 2:
            return real_savefig(self, fname, *args, **kwargs)
        Path(fname).write_bytes(PNG_MAGIC + b"half a figure")
        raise RuntimeError("killed while writing")

    monkeypatch.setattr(Figure, "savefig", failing_savefig)
    changed = make_results()
    changed["benchmarks"][2]["extra_info"]["test_accuracy"] = 0.5
    with pytest.raises(RuntimeError, match="killed"):
        write_report(changed, out)
    assert calls["n"] == 2
    assert out.read_bytes() == old_md
    for path, data in old_pngs.items():
        assert path.read_bytes()[:8] == PNG_MAGIC
        if path.name != "cifar10_accuracy_vs_flops.png":  # the one figure that finished may be new
            assert path.read_bytes() == data
    assert not list(tmp_path.rglob("*.partial"))


def test_write_report_renders_before_touching_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sidenet.report.render as render

    out = tmp_path / "r.md"
    out.write_text("previous report\n", encoding="utf-8")

    def boom(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("renderer bug")

    monkeypatch.setattr(render, "render_markdown", boom)
    with pytest.raises(RuntimeError, match="renderer bug"):
        write_report(make_results(), out)
    assert out.read_text(encoding="utf-8") == "previous report\n"
    assert not (tmp_path / "r_plots").exists()
    assert not list(tmp_path.rglob("*.partial"))


# ---------------------------------------------------------------------------------------------------
# load_results
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{not json", "is not valid JSON"),
        (json.dumps({"machine_info": {}}), "no 'benchmarks' list"),
        (json.dumps({"benchmarks": [{"name": "x", "stats": {"median": 1.0}, "extra_info": {}}]}),
         "no sidenet-bench rows"),
        (json.dumps({"benchmarks": [{"name": "x", "stats": {"median": 1.0}, "extra_info": {"task": "t"}}]}),
         "lacks keys"),
    ],
    ids=["missing", "not-json", "no-benchmarks", "foreign-rows", "missing-keys"],
)  # fmt: skip
def test_load_results_rejects_bad_files(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message) as info:
        load_results(path)
    assert "\n" not in str(info.value)


def test_load_results_keeps_only_our_rows(tmp_path: Path) -> None:
    results = make_results()
    results["benchmarks"].append({"name": "foreign", "stats": {"median": 1.0}, "extra_info": {}})
    loaded = load_results(write_results(tmp_path / "r.json", results))
    assert len(loaded["benchmarks"]) == 9


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------


def test_cli_report_writes_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_results(tmp_path / "run.json")
    out = tmp_path / "out" / "report.md"
    assert main(["report", str(src), "-o", str(out)]) == 0
    assert out.read_text(encoding="utf-8").startswith("# sidenet-bench report")
    assert capsys.readouterr().out.strip() == str(out)


def test_cli_report_default_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_results(tmp_path / "nightly.json")
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(src)]) == 0
    assert (tmp_path / "reports" / "nightly.md").is_file()
    assert (tmp_path / "reports" / "nightly_plots").is_dir()


def test_cli_report_missing_file_is_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["report", "missing.json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("sidenet-bench: error: results file 'missing.json' does not exist")
    assert captured.err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_report_into_directory_is_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_results(tmp_path / "run.json")
    assert main(["report", str(src), "-o", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


@dataclass(frozen=True)
class FakeItem:
    description: str


def fake_module(name: str, attr: str, registry: Registry[Any]) -> types.ModuleType:
    module = types.ModuleType(name)
    setattr(module, attr, registry)
    return module


def test_cli_list_with_fake_registries(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import sidenet.exits  # noqa: F401  the real exit-system registry, imported before sidenet.tasks is faked below

    tasks: Registry[Any] = Registry("task")
    tasks.add("cifar10-resnet18", FakeItem("CIFAR-10 on a ResNet-18 MainNet\nsecond line is dropped"))
    tasks.add("sst2-distilbert", FakeItem("SST-2 sentiment on DistilBERT"))
    policies: Registry[Any] = Registry("exit policy")
    policies.add("softmax", FakeItem("max softmax probability"))
    monkeypatch.setitem(sys.modules, "sidenet.tasks", fake_module("sidenet.tasks", "TASKS", tasks))
    monkeypatch.setitem(
        sys.modules, "sidenet.engine.policies", fake_module("sidenet.engine.policies", "POLICIES", policies)
    )
    monkeypatch.setitem(sys.modules, "compressors", fake_module("compressors", "COMPRESSORS", Registry("compressor")))
    assert main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:6] == [
        "tasks:",
        "  cifar10-resnet18  CIFAR-10 on a ResNet-18 MainNet",
        "  sst2-distilbert   SST-2 sentiment on DistilBERT",
        "compressors:",
        "  (none yet)",
        "exit systems:",
    ]
    end = out.index("exit policies:")
    assert {"none", "sidenet", "sidenet-noexit"} <= {line.split()[0] for line in out[6:end]}
    assert out[end:] == ["exit policies:", "  softmax  max softmax probability"]


def test_cli_list_survives_missing_modules(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    policies: Registry[Any] = Registry("exit policy")
    policies.add("entropy", FakeItem("1 - normalised entropy"))
    monkeypatch.setitem(sys.modules, "sidenet.tasks", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "compressors", types.ModuleType("compressors"))  # no COMPRESSORS yet
    monkeypatch.setitem(
        sys.modules, "sidenet.engine.policies", fake_module("sidenet.engine.policies", "POLICIES", policies)
    )
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "tasks:\n  (unavailable: sidenet.tasks.TASKS" in out
    assert "compressors:\n  (unavailable: compressors.COMPRESSORS" in out
    assert "  entropy  1 - normalised entropy" in out


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--help"], 0),
        (["report", "--help"], 0),
        (["list", "--help"], 0),
        (["frobnicate"], 2),
        ([], 2),
        (["report"], 2),
    ],
)
def test_cli_argparse_exit_codes(argv: list[str], code: int, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == code
    captured = capsys.readouterr()
    assert (captured.out if code == 0 else captured.err).startswith("usage: sidenet-bench")


# ---------------------------------------------------------------------------------------------------
# Compressor chains: the complementarity headline and the Pareto plot
# ---------------------------------------------------------------------------------------------------

PRUNE = "prune:ratio=0.5"


def five(median: float, step: float) -> list[float]:
    """Five per-round ratios with this median and q1/q3 = median ∓ step (numpy's linear percentiles)."""
    return [median - 2 * step, median - step, median, median + step, median + 2 * step]


def chain_rows() -> list[dict[str, Any]]:
    """chains none / int8 / prune × exits none / sidenet × bs 1, 64, with hand-chosen paired speedups.

    Speedups vs the fp32 MainNet (median, q1–q3), bs 1:  int8 2.0 (1.9–2.1) · SideNet 1.5 (1.45–1.55) ·
    int8+S 2.7 (2.6–2.8) · prune 3.0 · prune+S 2.88.  bs 64: int8 1.6 · S 1.2 · int8+S 1.536 (noisy row);
    prune and prune+S carry no paired ratios at bs 64 (older JSON): 0.200/0.100 = 2.0 and 0.200/0.075 ≈ 2.667.
    Every non-baseline bs 1 round median is 0.005 s (ratio of medians 2.0 everywhere) so a report that
    ignored the paired ratios would give different numbers.
    """
    comp = {"head_side": 0.0002, "rest": 0.0006}
    sweep = {
        "threshold": [0.5, 0.9, 1.0],
        "test_accuracy": [0.85, 0.91, 0.92],
        "exit_rate": [0.9, 0.6, 0.0],
        "flops_per_sample": [0.3e9, 0.6e9, 1.2e9],
    }

    def side(**extra: Any) -> dict[str, Any]:
        return {"threshold": 0.9, "exit_rate": 0.6, "mainnet_test_accuracy": 0.92, "sweep": sweep, **extra}

    int8 = {"dtype": "int8", "compression": [{"compressor": "int8", "config": {}, "dtype": "qint8"}]}
    prune = {
        "dtype": "fp32",
        "compression": [{"compressor": "prune", "config": {"ratio": "0.5"}, "flops_ratio": 0.49, "convs": {"a": 1}}],
    }
    fp32 = {"test_accuracy": 0.92, "flops_per_sample": 1.2e9, "mainnet_test_accuracy": 0.92, "dtype": "fp32"}
    t = "mnist"
    return [
        row(t, "none", "none", 1, 0.010, 0.0005, timing_samples=10, **fp32),
        row(t, "none", "none", 64, 0.128, 0.0064, timing_samples=640, aa_paired_ratios=five(1.0, 0.02), **fp32),
        row(t, "none", "sidenet", 1, 0.005, 0.00025, timing_samples=10, test_accuracy=0.915, flops_per_sample=0.6e9,
            paired_speedup=five(1.5, 0.05), component_latency_s=comp, dtype="fp32", **side()),
        row(t, "none", "sidenet", 64, 0.1067, 0.005, timing_samples=640, test_accuracy=0.915, flops_per_sample=0.6e9,
            paired_speedup=five(1.2, 0.05), dtype="fp32", **side()),
        row(t, "int8", "none", 1, 0.005, 0.00025, timing_samples=10, test_accuracy=0.918, flops_per_sample=1.2e9,
            paired_speedup=five(2.0, 0.1), chain_test_accuracy=0.918, mainnet_test_accuracy=0.92, **int8),
        row(t, "int8", "none", 64, 0.08, 0.004, timing_samples=640, test_accuracy=0.918, flops_per_sample=1.2e9,
            paired_speedup=five(1.6, 0.05), chain_test_accuracy=0.918, mainnet_test_accuracy=0.92, **int8),
        row(t, "int8", "sidenet", 1, 0.005, 0.00025, timing_samples=10, test_accuracy=0.912, flops_per_sample=0.6e9,
            paired_speedup=five(2.7, 0.1), component_latency_s={"head_side": 0.0001, "rest": 0.0003},
            chain_test_accuracy=0.918, **side(), **int8),
        row(t, "int8", "sidenet", 64, 0.0833, 0.0125, timing_samples=640, test_accuracy=0.912, flops_per_sample=0.6e9,
            paired_speedup=five(1.536, 0.05), chain_test_accuracy=0.918, **side(), **int8),  # IQR 15%: noisy
        row(t, PRUNE, "none", 1, 0.005, 0.00025, timing_samples=10, test_accuracy=0.914, flops_per_sample=0.6e9,
            paired_speedup=five(3.0, 0.1), **prune),
        row(t, PRUNE, "none", 64, 0.064, 0.0032, timing_samples=640, test_accuracy=0.914, flops_per_sample=0.6e9,
            **prune),
        row(t, PRUNE, "sidenet", 1, 0.005, 0.00025, timing_samples=10, test_accuracy=0.911, flops_per_sample=0.36e9,
            paired_speedup=five(2.88, 0.1), component_latency_s={"head_side": 0.00008, "rest": 0.0002},
            chain_test_accuracy=0.914, **side(), **prune),
        row(t, PRUNE, "sidenet", 64, 0.048, 0.0024, timing_samples=640, test_accuracy=0.911, flops_per_sample=0.36e9,
            chain_test_accuracy=0.914, **side(), **prune),
    ]  # fmt: skip


def chain_results(rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {**make_results(), "benchmarks": rows if rows is not None else chain_rows()}


def complementarity_tables(md: str, task: str = "mnist") -> dict[str, dict[str, dict[str, str]]]:
    """The headline tables of ``task``: {chain heading: {system: row}} in report order."""
    section = task_section(md, task)
    ends = [i for heading in ("### Exit systems", "### All rows") if (i := section.find(heading)) != -1]
    headline = section[: min(ends)]
    out: dict[str, dict[str, dict[str, str]]] = {}
    for block in headline.split("\n#### ")[1:]:
        title = block.splitlines()[0]
        out[title] = {r["system"]: r for r in tables(block)[0]}
    return out


def test_complementarity_numbers_are_computed_from_paired_speedups() -> None:
    md = render_markdown(chain_results(), None)
    blocks = complementarity_tables(md)
    int8 = blocks["`int8` + SideNet"]
    assert list(int8) == ["MainNet (fp32)", "`int8` alone", "SideNet alone", "`int8` + SideNet"]
    main, alone, side, both = int8.values()
    assert main["Δ acc (pt)"] == "ref" and main["speedup bs 1"] == "ref" and main["complementarity bs 1"] == ""
    assert alone["speedup bs 1"] == "2.00× (1.90–2.10)†" and side["speedup bs 1"] == "1.50× (1.45–1.55)†"
    assert both["speedup bs 1"] == "2.70× (2.60–2.80)†"
    # 2.7 / (2.0 · 1.5) = 0.90; spread 2.6 / (2.1 · 1.55) = 0.80 … 2.8 / (1.9 · 1.45) = 1.02
    assert both["complementarity bs 1"] == "0.90 (0.80–1.02)"
    # bs 64: 1.536 / (1.6 · 1.2) = 0.80, spread 1.486 / (1.65 · 1.25) = 0.72 … 1.586 / (1.55 · 1.15) = 0.89; noisy row
    assert both["complementarity bs 64"] == "0.80 (0.72–0.89) ⚠"
    # FLOPs: int8 counts like fp32 (1.0×), the SideNet halves them (2.0×), int8+S too: 2.0 / (1.0 · 2.0)
    assert alone["FLOP speedup"] == "1.00×" and both["FLOP speedup"] == "2.00×"
    assert both["FLOP complementarity"] == "1.00"
    assert [r["complementarity bs 1"] for r in (main, alone, side)] == ["", "", ""]
    assert main["speedup bs 64"] == "ref; A/A 1.00 (0.98–1.02)§"  # the fp32 MainNet paired with itself
    assert "§ A/A = the fp32 MainNet paired with itself" in md


def test_complementarity_falls_back_to_unpaired_medians() -> None:
    prune = complementarity_tables(render_markdown(chain_results(), None))[f"`{PRUNE}` + SideNet — best at ≤1 pt"]
    alone, both = prune[f"`{PRUNE}` alone"], prune[f"`{PRUNE}` + SideNet"]
    assert alone["speedup bs 64"] == "2.00×‡"  # 0.200 ms / 0.100 ms, no paired ratios recorded
    assert both["speedup bs 64"] == "2.67×‡"  # 0.200 ms / 0.075 ms
    assert both["complementarity bs 1"] == "0.64 (0.58–0.71)"  # 2.88/(3.0·1.5); 2.78/(3.1·1.55) … 2.98/(2.9·1.45)
    assert both["complementarity bs 64"] == "1.11‡"  # 2.667 / (2.0 · 1.2): no spread with an unpaired factor
    assert both["FLOP complementarity"] == "0.83"  # (1.2/0.36) / ((1.2/0.6) · (1.2/0.6))


def test_verdicts_best_chain_and_order() -> None:
    md = render_markdown(chain_results(), None)
    section = task_section(md, "mnist")
    # prune+S is fastest at bs 1 (2.88×) within 1 pt (-0.90): first, and named in the sentence.
    assert list(complementarity_tables(md)) == [f"`{PRUNE}` + SideNet — best at ≤1 pt", "`int8` + SideNet"]
    assert (
        f"Best chain + SideNet at ≤1 pt: `{PRUNE}`, 2.88× at bs 1 (Δ -0.90 pt vs the fp32 MainNet; "
        f"SideNet alone 1.50×, `{PRUNE}` alone 3.00×)." in section
    )
    verdicts = [line for line in section.splitlines() if line.startswith("**Verdict:**")]
    assert verdicts == [
        "**Verdict:** bs 1: overlapping (0.64): the SideNet's exit saves less on the compressed MainNet · "
        "bs 64: super-additive (1.11 > 1.1): the SideNet saves more on the compressed MainNet",
        "**Verdict:** bs 1: complementary (0.90 ≥ 0.9) · bs 64: partly complementary (0.80) ⚠ noisy",
    ]
    assert "Compression steps: `prune` (flops_ratio=0.49)." in section  # dicts (convs) and config left out
    assert "Compression steps: `int8` (dtype=qint8)." in section


def test_best_chain_respects_the_accuracy_budget() -> None:
    rows = chain_rows()
    for r in rows:
        if r["extra_info"]["chain"] == PRUNE and r["extra_info"]["exit"] == "sidenet":
            r["extra_info"]["test_accuracy"] = 0.905  # -1.50 pt: out of budget, though still the fastest
    md = render_markdown(chain_results(rows), None)
    assert next(iter(complementarity_tables(md))) == "`int8` + SideNet — best at ≤1 pt"
    assert "Best chain + SideNet at ≤1 pt: `int8`, 2.70× at bs 1 (Δ -0.80 pt" in md
    for r in rows:
        if r["extra_info"]["exit"] == "sidenet" and r["extra_info"]["chain"] == "int8":
            r["extra_info"]["test_accuracy"] = 0.91  # exactly -1.00 pt: still within "≤ 1 pt"
    assert "at ≤1 pt: `int8`, 2.70× at bs 1 (Δ -1.00 pt" in render_markdown(chain_results(rows), None)
    for r in rows:
        if r["extra_info"]["exit"] == "sidenet" and r["extra_info"]["chain"] == "int8":
            r["extra_info"]["test_accuracy"] = 0.9  # -2.00 pt
    md = render_markdown(chain_results(rows), None)
    assert "No chain + SideNet stays within 1 pt of the fp32 MainNet's test accuracy with a measured bs 1" in md
    assert "best at" not in md


def test_accuracy_delta_and_dtype_columns_with_chains() -> None:
    md = render_markdown(chain_results(), None)
    int8 = complementarity_tables(md)["`int8` + SideNet"]
    assert [r["dtype"] for r in int8.values()] == ["fp32", "int8", "fp32", "int8"]
    assert [r["test acc (%)"] for r in int8.values()] == ["92.00", "91.80", "91.50", "91.20"]
    assert [r["Δ acc (pt)"] for r in int8.values()] == ["ref", "-0.20", "-0.50", "-0.80"]
    assert int8["`int8` + SideNet"]["exit rate (%)"] == "60.0" and int8["`int8` alone"]["exit rate (%)"] == "0.0"
    rows = main_rows(md, "mnist")
    assert list(rows) == [
        ("none", "none"),
        ("none", "sidenet"),
        ("int8", "none"),
        ("int8", "sidenet"),
        (PRUNE, "none"),
        (PRUNE, "sidenet"),
    ]
    assert rows[("int8", "none")]["dtype"] == "int8" and rows[(PRUNE, "sidenet")]["dtype"] == "fp32"
    # A compressed chain's MainNet is no longer its own reference: Δ and speedup vs the fp32 MainNet.
    assert rows[("int8", "none")]["Δ acc (pt)"] == "-0.20" and rows[("int8", "none")]["speedup bs 1"].startswith(
        "2.00×"
    )
    assert rows[("none", "none")]["speedup bs 1"] == "ref"


def test_complementarity_uses_chain_test_accuracy_without_the_alone_row() -> None:
    rows = [r for r in chain_rows() if not (r["extra_info"]["chain"] == "int8" and r["extra_info"]["exit"] == "none")]
    md = render_markdown(chain_results(rows), None)
    alone = complementarity_tables(md)["`int8` + SideNet"]["`int8` alone"]
    assert alone["test acc (%)"] == "91.80" and alone["Δ acc (pt)"] == "-0.20" and alone["dtype"] == "int8"
    assert alone["speedup bs 1"] == "—" and alone["exit rate (%)"] == "—"
    assert "bs 1: — (no `int8` alone row) · bs 64: — (no `int8` alone row)" in md


def test_complementarity_formula_and_verdict_thresholds() -> None:
    from sidenet.report.complementarity import Complementarity, complementarity_from, verdict
    from sidenet.report.numbers import Speedup

    c = complementarity_from(Speedup(2.0, 1.9, 2.1, True), Speedup(1.5, 1.45, 1.55, True), Speedup(2.7, 2.6, 2.8, True))
    assert c is not None and c.value == pytest.approx(0.9)
    assert c.lo == pytest.approx(2.6 / (2.1 * 1.55)) and c.hi == pytest.approx(2.8 / (1.9 * 1.45))
    mixed = complementarity_from(Speedup(2.0), Speedup(1.5, 1.4, 1.6, True), Speedup(3.0, 2.9, 3.1, True))
    assert mixed is not None and mixed.value == pytest.approx(1.0) and mixed.lo is None and not mixed.paired
    assert complementarity_from(None, Speedup(1.5), Speedup(3.0)) is None
    assert verdict(Complementarity(0.97)) == "complementary (0.97 ≥ 0.9)"
    assert verdict(Complementarity(0.89)) == "partly complementary (0.89)"
    assert verdict(Complementarity(0.55)).startswith("overlapping (0.55): the SideNet's exit saves less")
    assert verdict(Complementarity(1.10)) == "complementary (1.10 ≥ 0.9)"
    assert verdict(Complementarity(1.2)).startswith("super-additive (1.20 > 1.1)")
    assert verdict(None) == "— (a speedup is missing)"


def test_pareto_front_is_the_upper_left_envelope() -> None:
    from sidenet.report.pareto import ParetoPoint, pareto_front, pareto_points
    from sidenet.report.variants import group_by_task

    pts = [ParetoPoint("a", "estimate", lat, acc) for lat, acc in [(3, 0.9), (1, 0.8), (2, 0.7), (1, 0.75), (4, 0.9)]]
    assert [(p.latency_s, p.accuracy) for p in pareto_front(pts)] == [(1, 0.8), (3, 0.9)]
    points = pareto_points(group_by_task(chain_results())["mnist"], 1)
    assert {(p.chain, p.kind) for p in points if p.kind != "estimate"} == {
        (c, k) for c in ("none", "int8", PRUNE) for k in ("mainnet", "measured")
    }
    estimates = [p for p in points if p.kind == "estimate" and p.chain == "int8"]
    # head_side + (1 − exit_rate) · rest = 0.1 ms + (1 − 0.9) · 0.3 ms at t = 0.5
    assert estimates[0].latency_s == pytest.approx(0.00013) and estimates[0].threshold == 0.5


def test_chains_write_a_pareto_plot(tmp_path: Path) -> None:
    out = write_report(chain_results(), tmp_path / "c.md")
    md = out.read_text(encoding="utf-8")
    pareto = tmp_path / "c_plots" / "mnist_pareto.png"
    assert pareto.read_bytes()[:8] == PNG_MAGIC
    section = task_section(md, "mnist")
    # the Pareto plot sits in the headline, before the table of every row; the other plots still follow
    assert section.index("](c_plots/mnist_pareto.png)") < section.index("### All rows")
    assert "](c_plots/mnist_accuracy_vs_latency.png)" in section
    assert not list(tmp_path.rglob("*.partial"))


def test_chainless_results_render_as_before() -> None:
    md = render_markdown({**make_results(), "benchmarks": cifar_rows()}, "plots")
    lines = md.splitlines()
    skeleton = [
        line
        for line, nxt in zip(lines, [*lines[1:], ""], strict=True)
        if line.startswith(("#", "![")) or nxt.startswith("|-")  # headings, images, table header rows
    ]
    # Headings, table headers and image links as rendered before compressor chains existed, plus the exit-system
    # comparison (its own plot only with several systems or oracle points: none here).
    assert [" ".join(line.split()) for line in skeleton] == [
        "# sidenet-bench report",
        "## Environment",
        "## Timing checks",
        "## Task `cifar10`",
        "### Exit systems",
        "| system | chain | taps | threshold | test acc (%) | Δ acc (pt) | exit rate (%) | FLOPs/sample | FLOP speedup "
        "| p50 latency/sample bs 1 (IQR) | speedup bs 1 | p50 latency/sample bs 64 (IQR) | speedup bs 64 "
        "| training (s) | FLOPs ÷ oracle at equal acc |",
        "### All rows",
        "| chain | exit | threshold | test acc (%) | Δ acc (pt) | exit rate (%) | FLOPs/sample | FLOP speedup | params "
        "| p50 latency/sample bs 1 (IQR) | speedup bs 1 | p50 latency/sample bs 64 (IQR) | speedup bs 64 |",
        "### Operating points",
        "| threshold | test acc (%) | Δ acc (pt) | exit rate (%) | FLOPs/sample | FLOPs vs MainNet (%) | |",
        "![accuracy vs FLOPs/sample across the threshold sweep](plots/cifar10_accuracy_vs_flops.png)",
        "![accuracy vs latency/sample](plots/cifar10_accuracy_vs_latency.png)",
        "![reliability diagram (test)](plots/cifar10_reliability.png)",
        "## Notes",
    ]
    assert "Complementarity" not in md and "dtype" not in md.split("## Notes")[0]


def test_chains_on_two_devices_get_one_headline_and_pareto_plot_each() -> None:
    from sidenet.report.plots import plan_plots

    gpu = json.loads(json.dumps(chain_rows()))
    for r in gpu:
        r["extra_info"]["device"] = "cuda"
    results = chain_results([*chain_rows(), *gpu])
    md = render_markdown(results, "p")
    section = task_section(md, "mnist")
    assert section.index("#### Device `cpu`") < section.index("#### Device `cuda`") < section.index("### All rows")
    assert section.count("Best chain + SideNet at ≤1 pt: `prune:ratio=0.5`, 2.88× at bs 1") == 2
    assert [s.filename for s in plan_plots(results) if s.kind == "pareto"] == [
        "mnist_cpu_pareto.png",
        "mnist_cuda_pareto.png",
    ]


def test_protocol_4_noise_is_measured_within_slices_not_across_them() -> None:
    """Slices that cost more (another exit mix, longer texts) are workload, not noise: a row whose slices take 1, 2,
    3 and 4 ms but whose two rounds per slice agree is not noisy; one whose rounds within a slice disagree is."""
    from sidenet.report.numbers import is_noisy, rel_iqr

    steady = {"stats": {"data": [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0], "iqr": 2.0, "median": 2.5},
              "extra_info": {"pairing": "aba"}}  # fmt: skip
    assert rel_iqr(steady) == pytest.approx(0.0) and not is_noisy(steady)
    shaky = {"stats": {"data": [1.0, 1.5, 2.0, 3.0, 3.0, 4.5, 4.0, 6.0], "iqr": 2.5, "median": 3.0},
             "extra_info": {"pairing": "aba"}}  # fmt: skip
    assert rel_iqr(shaky) == pytest.approx(0.4) and is_noisy(shaky)
    # protocol 3 rows (every round the same inputs): pytest-benchmark's IQR / median, as before
    old = {"stats": {"data": [1.0, 1.0, 2.0, 2.0], "iqr": 1.0, "median": 1.5}, "extra_info": {"pairing": "balanced"}}
    assert rel_iqr(old) == pytest.approx(1.0 / 1.5)
