"""Timing workers (sidenet.bench.workers,
sidenet.bench.timing.timed_in_workers): rounds run in clean processes, never the
bench's, in A B A order across the variant and reference processes; a worker that would train refuses."""

from __future__ import annotations

import os
import statistics

import pytest
import worker_builds

from sidenet.bench.timing import timed_in_workers, worker_schedule
from sidenet.bench.timing_checks import row_flags
from sidenet.bench.workers import TrainingRefused, Worker, WorkerFailed, WorkerJob


class _Benchmark:
    """The bits of pytest-benchmark's fixture that timed_in_workers uses (pedantic with a per-fixture timer)."""

    def __init__(self) -> None:
        self._timer = None
        self.durations: list[float] = []

    def pedantic(self, target, teardown, rounds, warmup_rounds, iterations):
        for _ in range(rounds):
            start = self._timer()
            target()
            self.durations.append(self._timer() - start)
            teardown()


def _worker(build, **spec) -> Worker:
    return Worker(WorkerJob(build, spec, threads=1, device="cpu", role=spec.get("role", "variant"), label="test"))


@pytest.fixture
def sleepers():
    made: list[Worker] = []

    def make(delay: float, label: str) -> Worker:
        w = _worker(worker_builds.sleeper, delay=delay, label=label)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


@pytest.mark.e2e
def test_a_worker_is_another_process_not_forked_from_the_bench():
    w = _worker(worker_builds.where_am_i)
    try:
        facts = w.ready()
        assert facts["pid"] != os.getpid() and facts["built_in"] == facts["pid"]
        # a child of the forkserver (a fresh interpreter that only imported modules), not of this process
        assert facts["ppid"] != os.getpid()
        assert facts["trained"] is False and facts["threads"] == 1
    finally:
        w.close()
    assert not w.process.is_alive()


def test_a_worker_asked_to_train_refuses_in_one_line():
    w = _worker(worker_builds.trainer)
    with pytest.raises(TrainingRefused, match="timing worker was asked to start 'training the tiny MainNet'"):
        w.ready()
    w.process.join(5)
    assert not w.process.is_alive()


def test_a_worker_asked_to_serve_another_spec_builds_it_in_the_same_process_and_serves_it():
    w = _worker(worker_builds.sleeper, delay=0.0, label="first")
    try:
        first = w.ready()
        w.serve({"delay": 0.0, "label": "second"}, "second cell")
        second = w.served_ready()
        assert second["label"] == "second" and w.serving is second and w.facts is first
        assert w.served == ["test", "second cell"]
        assert w.call("extra", "stamps") == []  # the new build's state: nothing of the first one's runs
        w.serve({}, "third cell")  # a build that fails (no delay) fails the request, in one line
        with pytest.raises(WorkerFailed, match="third cell variant worker failed: KeyError"):
            w.served_ready()
    finally:
        w.close()


def test_a_reused_worker_asked_to_train_refuses_too():
    w = _worker(worker_builds.where_am_i)
    try:
        pid = w.ready()["pid"]
        w.serve({"train": True}, "trainer cell")
        with pytest.raises(TrainingRefused, match="training the tiny MainNet"):
            w.served_ready()
        assert pid != os.getpid()
    finally:
        w.close()


def test_rounds_alternate_a_b_a_across_the_two_processes(sleepers):
    variants = [sleepers(0.01, f"v{j}") for j in range(2)]
    references = [sleepers(0.02, f"r{j}") for j in range(2)]
    for w in variants + references:
        w.call("slices", [[0], [0], [0], [0]])  # four slices of one batch
    bench = _Benchmark()
    info: dict = {}
    per_pair = timed_in_workers(bench, list(zip(variants, references, strict=True)), 8, info)
    # the order the batches really ran in, read from the processes' own clocks (one monotonic clock per machine)
    events = sorted(
        (t, name)
        for w, name in [(variants[0], "A0"), (variants[1], "A1"), (references[0], "B0"), (references[1], "B1")]
        for t in w.call("extra", "stamps")
    )
    order = [name for _, name in events]
    warm = ["A0", "B0", "A1", "B1"]  # each worker's untimed warm-up, pair by pair
    assert order == warm + ["A0", "B0", "A0"] * 2 + ["A1", "B1", "A1"] * 2
    # each pair timed whole slices: pair j the slices k with k % 2 == j; its values reach the row
    assert [p["slices"] for p in per_pair] == [[0, 2], [1, 3]]
    assert all(len(p["round_s"]) == 4 and len(p["reference_s"]) == 2 for p in per_pair)
    # what pytest-benchmark recorded is what the workers measured, not the pipe's round trip
    assert bench.durations == per_pair[0]["round_s"] + per_pair[1]["round_s"]
    assert all(0.01 <= d < 1.0 for d in bench.durations)
    assert len(info["paired_speedup"]) == 8 and 1.3 < statistics.median(info["paired_speedup"]) < 3


def test_worker_schedule_gives_each_pair_whole_slices():
    assert worker_schedule(8, 2) == [(0, 0), (0, 2), (1, 1), (1, 3)]
    assert worker_schedule(7, 1) == [(0, 0), (0, 1), (0, 2), (0, 3)]


def _row(chain, exit_, ref_s, **extra):
    info = {"task": "t", "device": "cpu", "batch_size": 1, "chain": chain, "exit": exit_}
    info["paired_mainnet_median_s"] = ref_s
    info.update(extra)
    return {"extra_info": info}


def test_a_deliberately_slowed_reference_worker_is_caught_by_the_reference_check(sleepers):
    """Two cells share one reference worker (as the bench does per task and batch size); between them the reference
    is disturbed. The second cell's reference drifts from the reference cell's, and the check flags only it."""
    reference = sleepers(0.004, "r")
    reference.call("slices", [[0, 0]])
    rows = []
    for cell, exit_ in enumerate(("none", "sidenet")):
        if cell == 1:
            assert reference.call("extra", "set_delay", 0.008) == 0.008  # the disturbance
        variant = sleepers(0.002, f"v{cell}")
        variant.call("slices", [[0, 0]])
        info: dict = {}
        timed_in_workers(_Benchmark(), [(variant, reference)], 4, info)
        extra = {"aa_paired_ratios": [1.0, 1.01, 0.99, 1.0]} if exit_ == "none" else {"exit_rate": 0.5}
        rows.append(_row("none", exit_, info["paired_mainnet_median_s"], **extra))
    flags = row_flags(rows)
    assert flags[0] == []
    assert [f.kind for f in flags[1]] == ["reference-drift"], flags[1]


def test_checks_flag_a_busy_machine_an_a_a_out_of_band_and_implausible_rows():
    ref = _row("none", "none", 0.010, aa_paired_ratios=[1.08, 1.1, 1.09, 1.1])
    busy = _row("none", "sidenet", 0.010, machine_load={"other_cpu_share": 0.4}, paired_speedup=[1.0], exit_rate=0.5)
    free_lunch = _row("none", "sidenet-noexit", 0.010, exit_rate=0.0, paired_speedup=[2.5, 2.5])
    fine = _row("none", "sidenet", 0.0101, exit_rate=0.5, paired_speedup=[1.4], flops_per_sample=50.0,
                chain_flops_per_sample=100.0)  # fmt: skip
    too_good = _row("none", "sidenet", 0.0101, exit_rate=0.5, paired_speedup=[9.0], flops_per_sample=50.0,
                    chain_flops_per_sample=100.0)  # fmt: skip
    flags = [{f.kind for f in fs} for fs in row_flags([ref, busy, free_lunch, fine, too_good])]
    assert flags[0] == {"aa-out-of-band"}  # every row of the task and batch size carries it
    assert flags[1] == {"aa-out-of-band", "busy"}
    assert flags[2] == {"aa-out-of-band", "implausible"}
    assert flags[3] == {"aa-out-of-band"}
    assert flags[4] == {"aa-out-of-band", "implausible"}
    quiet_ref = _row("none", "none", 0.010, aa_paired_ratios=[1.0, 1.01, 0.99, 1.0])
    assert [fs for fs in row_flags([quiet_ref, fine])] == [[], []]
