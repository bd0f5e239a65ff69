"""Timing (sidenet.bench.timing): slices, the A B A pairing around one MainNet round per slice, slice sizing."""

from __future__ import annotations

import pytest
import torch

from sidenet.bench.timing import deal, plan_slices, stratified_order, timed_in_workers


class _Fake:
    """An in-process stand-in for a timing worker: records what it ran, returns set durations."""

    def __init__(self, name: str, events: list[str], durations: list[float] | None = None) -> None:
        self.name, self.events, self.durations = name, events, list(durations or [])

    def warm(self, k: int) -> None:
        self.events.append(f"warm-{self.name}{k}")

    def prime(self, k: int) -> None:
        self.events.append(f"prime-{self.name}{k}")

    def run(self, k: int) -> float:
        self.events.append(f"{self.name}{k}")
        return self.durations.pop(0) if self.durations else 1.0


class _Benchmark:
    def __init__(self) -> None:
        self._timer = None
        self.times: list[float] = []

    def pedantic(self, target, teardown, rounds, warmup_rounds, iterations) -> None:
        for _ in range(rounds):
            start = self._timer()
            target()
            self.times.append(self._timer() - start)
            teardown()


def test_each_slice_runs_twice_around_one_mainnet_round() -> None:
    """Slice k runs in rounds 2k and 2k+1 with one fp32 MainNet round on the same slice between them (A B A), so
    one ratio has the MainNet right after the row's round and one right before — a cost of going first cannot bias
    every speedup one way — and each ratio divides by the MainNet round adjacent in time."""
    events: list[str] = []
    info: dict[str, object] = {}
    pairs = [(_Fake("row", events), _Fake("main", events))]
    timed_in_workers(_Benchmark(), pairs, 6, info)
    assert events[:2] == ["warm-row0", "prime-main0"]  # warm-up, untimed
    assert events[2:] == ["row0", "main0", "row0", "row1", "main1", "row1", "row2", "main2", "row2"]
    assert len(info["paired_speedup"]) == 6 and info["pairing"] == "aba"


def test_variants_already_warm_are_not_warmed_again_and_references_are_primed() -> None:
    events: list[str] = []
    pairs = [(_Fake("row", events), _Fake("main", events)), (_Fake("row", events), _Fake("main", events))]
    timed_in_workers(_Benchmark(), pairs, 4, {}, variants_warm=True)
    assert events[:2] == ["prime-main0", "prime-main1"]
    assert not any(e.startswith("warm-") for e in events)


def test_each_ratio_divides_by_its_own_slices_mainnet_round() -> None:
    """The k-th MainNet time pairs with rounds 2k and 2k+1 only; pytest-benchmark records the workers' times."""
    events: list[str] = []
    row, main = _Fake("row", events, [1.0, 2.0, 3.0, 4.0]), _Fake("main", events, [30.0, 50.0])
    info: dict[str, object] = {}
    bench = _Benchmark()
    per_pair = timed_in_workers(bench, [(row, main)], 4, info)
    assert info["paired_speedup"] == [30.0 / 1.0, 30.0 / 2.0, 50.0 / 3.0, 50.0 / 4.0]
    assert info["paired_mainnet_median_s"] == 40.0
    assert bench.times == [1.0, 2.0, 3.0, 4.0]
    assert per_pair == [
        {
            "slices": [0, 1],
            "round_s": [1.0, 2.0, 3.0, 4.0],
            "reference_s": [30.0, 50.0],
            "paired_speedup": info["paired_speedup"],
            "reference_median_s": 40.0,
        }
    ]


def test_an_odd_round_count_is_rounded_up_so_each_slice_has_both_orders() -> None:
    events: list[str] = []
    info: dict[str, object] = {}
    timed_in_workers(_Benchmark(), [(_Fake("row", events), _Fake("main", events))], 3, info)
    assert events[2:] == ["row0", "main0", "row0", "row1", "main1", "row1"]
    assert len(info["paired_speedup"]) == 4


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # defaults: 192 inputs over 8 rounds → 4 slices of 48; a slow MainNet needs no growth
        ((192, 8, 1, 10_000, 0.01, 0.2), (4, 48)),
        # bs 64: a slice is at least one batch
        ((192, 8, 64, 10_000, 0.01, 0.2), (4, 64)),
        # a fast MainNet (0.5 ms/row at bs 64): slices grow in powers of two of the batch count until ≥ 0.2 s
        ((192, 8, 64, 10_000, 0.0005, 0.2), (4, 512)),
        # growth stops at the test split: fewer, reused slices rather than a round past the data
        ((192, 8, 64, 1_000, 0.00001, 0.2), (1, 512)),
        # off (0 ms): exactly the inputs asked for; an odd round count is rounded up first
        ((16, 1, 8, 100, 0.0, 0.0), (1, 16)),
        ((30, 7, 1, 100, 0.0, 0.0), (4, 8)),
    ],
)
def test_slices_are_sized_by_inputs_batches_and_the_minimum_round_time(args, expected) -> None:
    plan = plan_slices(*args)
    assert (plan.slices, plan.rows) == expected
    assert plan.rows % args[2] == 0 or plan.rows == args[3]  # whole batches unless the split is smaller


def test_every_prefix_of_the_stratified_order_keeps_the_class_shares() -> None:
    labels = torch.tensor([0] * 600 + [1] * 300 + [2] * 100)
    order = stratified_order(labels)
    assert sorted(order.tolist()) == list(range(1000))  # a permutation
    for n in (10, 37, 192, 500):
        counts = torch.bincount(labels[order[:n]], minlength=3).float()
        assert torch.all((counts - n * torch.tensor([0.6, 0.3, 0.1])).abs() <= 1.0), (n, counts)
    assert torch.equal(order, stratified_order(labels))  # fixed seed: the same timing set every run


def test_dealt_slices_are_equal_in_count_classes_and_lengths() -> None:
    gen = torch.Generator().manual_seed(1)
    rows = torch.arange(400)
    labels = torch.randint(0, 2, (400,), generator=gen)
    sizes = torch.randint(5, 60, (400,), generator=gen)
    slices = deal(rows, labels, sizes, 4)
    assert [len(s) for s in slices] == [100] * 4
    assert len(set(torch.cat(slices).tolist())) == 400  # disjoint
    mean_sizes = [float(sizes[s].float().mean()) for s in slices]
    assert max(mean_sizes) - min(mean_sizes) < 0.05 * sum(mean_sizes) / 4  # alike in what they cost
    positives = [int(labels[s].sum()) for s in slices]
    assert max(positives) - min(positives) <= 1
    assert not torch.equal(slices[0], slices[0].sort().values)  # shuffled within: batches mix lengths
