"""Latency, FLOPs and accuracy of every cell (task × exit system × batch size).

Only the timing happens here; what a cell measures and records lives in :mod:`sidenet.harness`,
shared with the ``sidenet-bench`` CLI.
"""

from __future__ import annotations

from sidenet.harness import run_cell


def test_cell(benchmark, cell, bench_ctx) -> None:
    run_cell(benchmark, cell.task, cell.exit, cell.batch_size, bench_ctx)
    info = benchmark.extra_info
    # Sanity checks on what was recorded (a broken measurement must fail, not produce a table row):
    assert 0.0 <= info["test_accuracy"] <= 1.0
    assert 0.0 <= info["exit_rate"] <= 1.0
    assert info["flops_per_sample"] > 0
