"""Latency, FLOPs and accuracy of every cell (task × chain × exit system × batch size): the bench's test module.

Shipped in the package, not only in a checkout's ``bench/``: ``sidenet-bench run`` hands pytest this file's path
(with :class:`sidenet.cli.plugin.BenchPlugin` built from its settings), so an installed package runs the bench
from any folder. ``bench/test_latency.py`` imports :func:`test_cell` from here, so ``pytest bench/`` runs the same
test. Only the timing happens here; what a cell measures and records lives in :mod:`sidenet.bench.harness`; the
rounds run in worker processes (:mod:`sidenet.bench.cells`). The ``cell``, ``bench_ctx`` and ``persist_cell``
fixtures come from the plugin, ``benchmark`` from pytest-benchmark.
"""

from __future__ import annotations

from typing import Any

import pytest

from sidenet.bench.cells import run_cell
from sidenet_core.errors import UserError


def test_cell(benchmark: Any, cell: Any, bench_ctx: Any, persist_cell: Any) -> None:
    stored = bench_ctx.stored_result(cell.task, cell.chain, cell.exit, cell.batch_size)
    if stored is not None:  # resume: decided before any data is loaded or model trained
        pytest.skip(f"already measured in {stored}; --bench-force (sidenet-bench run --force) to re-measure")
    error = None
    try:
        run_cell(benchmark, cell.task, cell.exit, cell.batch_size, bench_ctx, chain=cell.chain)
    except UserError as exc:  # bad input found while preparing (e.g. missing data): one line, no traceback
        error = str(exc)
    if error is not None:  # failed outside the except block, so pytest does not print the chained error again
        pytest.fail(error, pytrace=False)
    info = benchmark.extra_info
    # Sanity checks on what was recorded (a broken measurement must fail, not produce a table row):
    assert 0.0 <= info["test_accuracy"] <= 1.0
    assert 0.0 <= info["exit_rate"] <= 1.0
    assert info["flops_per_sample"] > 0
    persist_cell(benchmark)  # last: only a cell that passed is written, and at once (a later kill keeps it)
