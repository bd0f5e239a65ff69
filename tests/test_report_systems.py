"""The report's registry of per-system readings (``sidenet.report.readings``, one module per family under
``sidenet.report.systems``): a system with no reading module still gets first-class rows with the generic reading,
and a registered reading's order, footnote and paragraph reach the report without any name-keyed code."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from test_report import five, tables, task_section
from test_report_exit_systems import MULTI, T, comparison, exit_rows, pair, results, section_of, side_info

from sidenet.exits import EXIT_SYSTEMS
from sidenet.report import render_markdown
from sidenet.report.plots import plan_plots, render_figure
from sidenet.report.readings import GENERIC_ORDER, READINGS, Family, SystemReading, reading_of, register_reading
from sidenet.report.variants import Variant

NEW = "halting"  # an exit system no reading module describes
SPEC = f"{NEW}:budget=2"


def halting_rows() -> list[dict[str, Any]]:
    """The rows of ``exit_rows`` plus the unknown system on chains ``none`` and ``int8`` (tap layer2, no oracle)."""
    info = side_info(
        threshold=0.8,
        exit_system={"system": NEW, "budget": 2},
        tap="layer2",
        taps=["layer2"],
        exit_rate=0.55,
        exit_rates=[0.55],
        flops_per_sample=0.7e9,
        predicted_flops_per_sample=0.7e9,
        oracle=None,
    )
    int8 = {"dtype": "int8", "chain_test_accuracy": 0.918}
    return [
        *exit_rows(),
        *pair("none", SPEC, five(1.4, 0.05), five(1.1, 0.05), test_accuracy=0.91, **info),
        *pair("int8", SPEC, five(2.6, 0.1), five(1.5, 0.05), test_accuracy=0.905, **info, **int8),
    ]


def test_readings_name_registered_exit_systems_and_unknown_ones_get_the_generic_one() -> None:
    assert set(READINGS.names()) <= set(EXIT_SYSTEMS.names())  # a reading keyed on a misspelt name never applies
    assert NEW not in READINGS
    generic = reading_of(SPEC)
    assert (generic.name, generic.has_exits, generic.order, generic.family) == (NEW, True, GENERIC_ORDER, None)
    assert reading_of("cascade:small=prune").network_selection and not reading_of("sidenet-noexit").has_exits


def test_unknown_exit_system_gets_first_class_rows_with_the_generic_reading() -> None:
    md = render_markdown(results(halting_rows()), "p")
    table = comparison(md)
    mine = table[(SPEC, "none", "layer2")]
    assert (mine["threshold"], mine["test acc (%)"], mine["Δ acc (pt)"], mine["exit rate (%)"]) == (
        "0.8",
        "91.00",
        "-1.00",
        "55.0",
    )
    assert mine["FLOPs/sample"] == "700 MFLOP" and mine["FLOP speedup"] == "1.71×"
    assert mine["speedup bs 1"].startswith("1.40×")
    assert (SPEC, "int8", "layer2") in table
    # the generic order: after every system with an order (sidenet, sidenet-multi), on each chain
    systems = [key[0] for key in table if key[1] == "none" and not key[0].startswith(("oracle", "MainNet"))]
    assert systems == ["sidenet", MULTI, SPEC]
    section = section_of(md)
    per_system = next(t for t in tables(section) if "complementarity bs 1" in t[0] and "system" in t[0])
    assert [(r["system"], r["chain"]) for r in per_system if r["system"] == SPEC] == [(SPEC, "int8")]
    assert "Bolukbasi et al. 2017" not in section and "EENets here" not in section  # no family, no paper prose
    every_row = tables(task_section(md, T).split("### All rows")[1])[0]
    assert [r["chain"] for r in every_row if r["exit"] == SPEC] == ["none", "int8"]


def test_unknown_exit_system_is_drawn_with_the_generic_marker() -> None:
    spec = next(s for s in plan_plots(results(halting_rows())) if s.kind == "exit_systems")
    labels = render_figure(spec).axes[0].get_legend_handles_labels()[1]
    assert f"{SPEC}: sweep" in labels and f"{SPEC} [int8]: sweep" in labels
    flops = next(s for s in plan_plots(results(halting_rows())) if s.kind == "flops")
    lines = {line.get_label(): line for line in render_figure(flops).axes[0].get_lines()}
    assert lines[f"{SPEC} [none] sweep"].get_marker() == reading_of(SPEC).marker == "P"


@pytest.fixture
def halting_reading() -> Iterator[SystemReading]:
    """A reading for the new system, registered for one test: first in order, with a footnote and a paragraph."""

    def paragraph(variants: Sequence[Variant], sizes: Sequence[int]) -> str:
        ours = [v for v in variants if reading_of(v.exit).name == NEW]
        return f"**Halting here:** {len(ours)} row(s), batch sizes {list(sizes)}." if ours else ""

    family = Family(NEW, order=0, mentions=lambda v: reading_of(v.exit).name == NEW, footnote="HALTING NOTE",
                    paragraph=paragraph)  # fmt: skip
    reading = register_reading(SystemReading(NEW, order=-1, marker="v", family=family))
    try:
        yield reading
    finally:
        READINGS.remove(NEW)


def test_a_registered_reading_brings_its_order_footnote_and_paragraph(halting_reading: SystemReading) -> None:
    md = render_markdown(results(halting_rows()), "p")
    section = section_of(md)
    systems = [key[0] for key in comparison(md) if key[1] == "none" and not key[0].startswith(("oracle", "MainNet"))]
    assert systems == [SPEC, "sidenet", MULTI]
    assert section.count("- HALTING NOTE") == 1
    assert "**Halting here:** 2 row(s), batch sizes [1, 64]." in section
    assert section.index("**Reading**") < section.index("**Halting here:**")
    plain = render_markdown(results(exit_rows()), "p")  # the family says nothing where its systems did not run
    assert "HALTING NOTE" not in plain and "Halting here" not in plain
