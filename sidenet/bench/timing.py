"""How a cell is timed (timing protocols 4 and 5): slices of the timing set, each run in two rounds around one fp32
MainNet round (A B A), so every ratio is taken between rounds adjacent in time on the same inputs. Protocol 5 runs
the rounds in worker processes (:func:`timed_in_workers`, :mod:`sidenet.bench.cells`).

Why slices: protocol 3 ran the whole timing set (192 inputs) in every round and one MainNet round beside each
round: 9 + 9 passes over 192 inputs per cell, two thirds of a warm default run. Here the cell's timing set is
cut into ``rounds / 2`` slices; slice k runs in rounds 2k and 2k+1 with one MainNet round between them. Every
input of the timing set is still timed (twice), a round is a quarter as long at the defaults, and the MainNet
runs once per two rounds instead of once per round. The pairing stays balanced: in each pair of rounds one ratio
has the MainNet round right after the row's round and one right before it, so a cost of going first or second
cancels as in protocol 3's ABBA order.

Why a minimum round time: a round much shorter than ~0.2 s is dominated by scheduler and timer noise (protocol
3's Fashion-MNIST bs 64 rounds ran 30-90 ms and their A/A ratios spread ±10%). A slice is grown, in whole
batches, until the fp32 MainNet needs at least ``min_round_s`` for it (measured once per task and batch size).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

# Bumped whenever how a row is timed changes (rounds, pairing, warm-up, what a round runs): a row timed under
# another protocol is a different experiment, so it is in every cell key and row. 3: balanced (ABBA) pairing, one
# warm-up pass per variant, an even number of rounds (commits 993ad13, 5bcd67f). 4: slices, A B A around one
# shared MainNet round per slice, a minimum round time (this module). 5: every round in a clean worker process
# (sidenet.bench.workers), the variant and the fp32 MainNet reference in separate processes, A B A across them, each
# cell's slices shared out over at least two worker pairs started independently (timed_in_workers). 6: a variant
# worker pair serves every cell of one task and chain, each from a fresh deep copy, handed the bench's operating
# point (sidenet.bench.cells; --bench-fresh-workers: protocol 5's pair per cell, still recorded as 6 with reuse "none").
TIMING_PROTOCOL = 6
PAIRING = "aba"  # a row's `pairing`: each MainNet round sits between the two rounds of its slice


@dataclass(frozen=True)
class SlicePlan:
    """How a cell's timing set is cut: ``slices`` slices of ``rows`` inputs each (a whole number of batches)."""

    slices: int
    rows: int

    @property
    def total(self) -> int:
        return self.slices * self.rows


def plan_slices(
    timing_samples: int, rounds: int, batch_size: int, available: int, seconds_per_row: float, min_round_s: float
) -> SlicePlan:
    """Slices for ``timing_samples`` inputs over ``rounds`` rounds (two per slice), each slice at least one batch
    and at least ``min_round_s`` of fp32 MainNet time, all within the ``available`` test rows.

    Growth is in powers of two of the batch count, so a slightly slower or faster calibration does not change the
    slice size from run to run. When the test split cannot hold that many disjoint slices, fewer are made and
    they are reused in turn (a slice then runs in more than one pair of rounds)."""
    rounds += rounds % 2
    wanted = max(1, rounds // 2)
    rows = max(batch_size, math.ceil(timing_samples / wanted))
    rows = math.ceil(rows / batch_size) * batch_size
    if min_round_s > 0 and seconds_per_row > 0:
        needed = math.ceil(min_round_s / seconds_per_row)
        batches = math.ceil(rows / batch_size)
        while batches * batch_size < needed and (batches * 2) * batch_size <= available:
            batches *= 2
        rows = batches * batch_size
    rows = max(1, min(rows, available))
    return SlicePlan(slices=max(1, min(wanted, available // rows)), rows=rows)


def stratified_order(labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A permutation of the rows whose every prefix keeps the classes' shares (within one row per class): shuffled
    within each class, then ordered by position within the class ÷ class size. The timing set is a prefix, so any
    size the slice plan asks for is exactly that many rows, stratified."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=gen)
    key = torch.empty(len(labels), dtype=torch.float64)
    for c in labels.unique():
        members = perm[labels[perm] == c]  # this class's rows, in shuffled order
        key[members] = (torch.arange(len(members), dtype=torch.float64) + 0.5) / len(members)
    return torch.argsort(key, stable=True)


def deal(
    rows: torch.Tensor, labels: torch.Tensor, sizes: torch.Tensor, slices: int, seed: int = 0
) -> list[torch.Tensor]:
    """Cut ``rows`` into ``slices`` slices of equal count that cost the fp32 MainNet alike: sorted by (label, size),
    dealt round-robin, then each slice shuffled (fixed seed) so its batches mix classes and lengths as in serving.

    Why: a round's time is compared with the other rounds of the row (the ±IQR of latency) as well as with its own
    slice's MainNet round; slices of unequal length mixes (texts) would read as timing noise."""
    order = sorted(range(len(rows)), key=lambda i: (int(labels[i]), int(sizes[i]), i))
    per = len(rows) // slices
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k in range(slices):
        part = rows[torch.tensor(order[k::slices][:per], dtype=torch.long)]
        out.append(part[torch.randperm(len(part), generator=gen)])
    return out


def time_once(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class WorkerClock:
    """A pytest-benchmark timer that reads the time a worker measured: ``benchmark.pedantic`` calls it before and
    after the target, and the target (a request to a worker) advances it by the seconds the worker timed inside
    its own process. So pytest-benchmark's stats hold the worker's round times, free of pipe and pickling time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RoundWorker(Protocol):
    """What :func:`timed_in_workers` needs of a worker (:class:`sidenet.bench.workers.Worker`)."""

    def warm(self, k: int) -> None: ...

    def prime(self, k: int) -> None: ...

    def run(self, k: int) -> float: ...


def worker_schedule(rounds: int, pairs: int) -> list[tuple[int, int]]:
    """(pair, slice) of each pair of rounds: slice k is timed by pair ``k % pairs``, each pair's slices back to
    back (pair 0's first), so every pair times whole slices and each worker runs its rounds in one stretch."""
    slices = max(1, (rounds + rounds % 2) // 2)
    return [(j, k) for j in range(pairs) for k in range(slices) if k % pairs == j]


def timed_in_workers(
    benchmark: Any,
    pairs: Sequence[tuple[RoundWorker, RoundWorker]],
    rounds: int,
    info: dict[str, Any],
    before_timing: Callable[[], None] | None = None,
    variants_warm: bool = False,
) -> list[dict[str, Any]]:
    """Time a cell's rounds in worker processes with ``benchmark.pedantic``: ``pairs`` are (variant, reference)
    workers. Slice k runs in rounds 2k and 2k+1 on the variant of pair ``k % len(pairs)`` with one reference round
    on the same slice between them (A B A across two processes; the idle one waits). Every round's time is what
    the worker measured inside itself (:class:`WorkerClock`). Returns one dict per pair: its slices, round times,
    reference times and paired ratios (``info`` gets the pooled ``paired_speedup`` and reference median).

    Each variant worker runs its first slice once untimed first (warm-up) unless ``variants_warm`` (the caller
    already ran each of them on a whole slice at this batch size: the cell's prediction check); each reference
    worker, warm from the cells before but maybe idle since, runs the first batch of its first slice (priming:
    a whole slice again cost Rotten Tomatoes ~1 s a cell and pair)."""
    if not hasattr(benchmark, "_timer") and not getattr(benchmark, "disabled", False):
        raise RuntimeError("this pytest-benchmark has no per-fixture timer (_timer); pin pytest-benchmark<6")
    rounds += rounds % 2
    schedule = worker_schedule(rounds, len(pairs))
    for j, (variant, reference) in enumerate(pairs):
        first = next(k for p, k in schedule if p == j) if any(p == j for p, _ in schedule) else 0
        if not variants_warm:
            variant.warm(first)
        reference.prime(first)
    if before_timing is not None:
        before_timing()
    clock = WorkerClock()
    per_pair: list[dict[str, Any]] = [{"slices": [], "round_s": [], "reference_s": []} for _ in pairs]
    started = 0

    def target() -> None:
        j, k = schedule[started // 2]
        seconds = pairs[j][0].run(k)
        per_pair[j]["round_s"].append(seconds)
        clock.advance(seconds)

    def after() -> None:
        nonlocal started
        j, k = schedule[started // 2]
        if started % 2 == 0:  # the first round of slice k just ended: the reference round on slice k, then A again
            per_pair[j]["slices"].append(k)
            per_pair[j]["reference_s"].append(pairs[j][1].run(k))
        started += 1

    benchmark._timer = clock
    benchmark.pedantic(target, teardown=after, rounds=len(schedule) * 2, warmup_rounds=0, iterations=1)
    ratios: list[float] = []
    for entry in per_pair:
        refs = [entry["reference_s"][i // 2] for i in range(len(entry["round_s"]))]
        entry["paired_speedup"] = [m / c for m, c in zip(refs, entry["round_s"], strict=True) if c > 0]
        entry["reference_median_s"] = statistics.median(entry["reference_s"]) if entry["reference_s"] else None
        ratios += entry["paired_speedup"]
    base = [t for entry in per_pair for t in entry["reference_s"]]
    info["paired_speedup"] = ratios
    info["paired_mainnet_median_s"] = statistics.median(base) if base else None
    info["pairing"] = PAIRING
    return per_pair


__all__ = [
    "PAIRING",
    "TIMING_PROTOCOL",
    "RoundWorker",
    "SlicePlan",
    "WorkerClock",
    "deal",
    "plan_slices",
    "stratified_order",
    "time_once",
    "timed_in_workers",
    "worker_schedule",
]
