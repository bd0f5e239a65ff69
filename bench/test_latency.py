"""Latency, FLOPs and accuracy of every cell: what ``pytest bench/ --benchmark-only`` runs.

The test itself ships in the package (:mod:`sidenet.cli.bench_suite`, also what ``sidenet-bench run`` runs from
any folder); importing it here makes pytest collect it under this file.
"""

from sidenet.cli.bench_suite import test_cell

__all__ = ["test_cell"]
