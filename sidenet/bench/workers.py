"""Timing workers: every timed round runs in a clean process that only loaded what it times.

Why: what ran before in a process changes what a timing measures there. Timed in the bench process, ``int8`` at
batch size 1 on the Fashion-MNIST ResNet read ~1× in runs that trained its SideNet first and ~4× in runs that only
loaded it (the int8 convolutions had first run at the training batch size: :func:`sidenet.bench.cells.fresh_copy`), and
the fp32 MainNet timed beside each cell drifted 0.83-1.34× between the cells of one run (README, "Timing in clean
workers").

How: workers are children of multiprocessing's ``forkserver``: a server process started as a new interpreter
(never a fork of the bench process), which imports torch and this package and then forks one child per worker.
A worker's whole history is therefore: import, load (or rebuild without training) what it times, warm up, run
the rounds it is asked for. Anything that would train in it — a MainNet, a SideNet, a compressor step, an EENet,
a learned policy, a trace, whatever :func:`sidenet_core.status.announce` announces — raises :class:`TrainingRefused`
instead, so a cache miss can never slip training into a timed process. (pyperf runs each benchmark in worker
processes for the same reason; optimum-benchmark isolates each run in a launcher process.)

A worker times its own rounds (``time.perf_counter`` around the slice, inside the worker), so nothing of the
pipe, pickling or the bench process's state reaches a round's time. It also reports its own CPU seconds, which
the bench subtracts from the machine's busy time to see what *other* processes used meanwhile
(:func:`cpu_busy_seconds`).

Protocol over one pipe: the worker sends ``("ready", facts)`` after building, then answers each request
``(verb, *args)`` with ``("ok", value)`` or ``("error", kind, one line)``; ``("close",)`` ends it. ``("serve",
spec)`` builds again from another spec in the same process and serves that instead (the bench reuses a worker
for the cells of one task and chain: :mod:`sidenet.bench.cells`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import torch

from sidenet_core.errors import UserError
from sidenet_core.layouts import batch_size_of, to_device
from sidenet_core.status import listen

START_METHOD = "forkserver"
# what the forkserver imports once, so each worker starts in milliseconds instead of re-importing torch,
# torchvision and transformers (~3 s); importing is not running: no thread pool, no model, no CUDA context. The
# bench's own modules are imported here too, so workers run the code the bench process loaded at its start (an
# edit on disk during a run would otherwise reach workers forked after it).
PRELOAD = (
    "torch",
    "torchvision",
    "transformers",
    "sidenet.bench.harness",
    "sidenet.bench.cells",
    "sidenet.bench.worker_imports",
)
READY_TIMEOUT_S = 1800.0  # a worker that has not built in this long is hung (an ORT export takes ~10 s)
REPLY_TIMEOUT_S = 600.0  # one request (a round, a warm-up) longer than this is a hung worker


class TrainingRefused(RuntimeError):
    """Raised inside a timing worker when building what it times would train (or trace) something."""


class WorkerFailed(RuntimeError):
    """A worker died, hung or raised; the message is the worker's own one line."""


def refuse_training() -> Callable[[], None]:
    """In this process, every announced training or tracing step raises :class:`TrainingRefused` (the library
    announces each one before it starts: :mod:`sidenet_core.status`). Returns the call that lifts the refusal."""

    def refuse(what: str) -> None:
        raise TrainingRefused(
            f"a timing worker was asked to start {what!r}; workers only load what the bench process already "
            "trained and cached (is the cache shared? SIDENET_BENCH_CACHE)"
        )

    return listen(refuse)


def cpu_busy_seconds() -> float | None:
    """CPU seconds every core of the machine spent busy since boot (``/proc/stat``: user + nice + system + irq +
    softirq + steal); None where there is no ``/proc/stat``. Differences of this over a cell, minus what the bench
    and its workers used themselves, are the load other processes put on the machine."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:9]]
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6] + ticks[7]  # not idle (3), not iowait (4)
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """This process's CPU seconds (user + system), all of its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Served:
    """What a worker built: ``run(batch)`` is what it times; ``check(batch)`` returns what the bench compares with
    its own run of the same thing (predicted classes); ``extra`` are named measurements the bench may ask for
    (``component_latency``), each ``fn(slices, sync, *args) -> value``; ``facts`` go into the worker's ready reply."""

    run: Callable[[Any], Any]
    check: Callable[[Any], list[int]] | None = None
    extra: dict[str, Callable[..., Any]] = field(default_factory=dict)  # fn(slices, sync, *args)
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerJob:
    """How a worker builds what it times: ``build(spec) -> Served`` (a module-level function, pickled by name),
    on ``device`` with ``threads`` intra-op threads. ``role`` ("reference" | "variant") and ``label`` are for
    messages and provenance."""

    build: Callable[[Any], Served]
    spec: Any
    threads: int
    device: str
    role: str
    label: str


def _sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def _serve(conn: Connection, job: WorkerJob) -> None:
    """The worker's main loop (runs in the child)."""
    try:
        torch.set_num_threads(job.threads)
        refuse_training()
        device = torch.device(job.device)
        sync = _sync(device)
        served, facts = _build(job, job.spec)
        conn.send(("ready", {"pid": os.getpid(), "ppid": os.getppid(), **facts}))
    except BaseException as exc:
        _send_error(conn, exc)
        return
    slices: list[list[Any]] = []
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        verb, args = message[0], message[1:]
        try:
            if verb == "close":
                conn.send(("ok", None))
                return
            if verb == "serve":
                served, reply = _build(job, args[0])
            elif verb == "slices":
                slices = [[to_device(b, device) for b in part] for part in args[0]]
                reply: Any = len(slices)
            elif verb == "run":
                reply = _timed_slice(served.run, slices, int(args[0]), sync)
            elif verb == "prime":  # the first batch of a slice, untimed
                reply = _timed_slice(served.run, [slices[int(args[0]) % len(slices)][:1]] if slices else [], 0, sync)
            elif verb == "check":
                with torch.inference_mode():
                    reply = (
                        [p for b in slices[int(args[0]) % len(slices)] for p in served.check(b)]
                        if served.check
                        else None
                    )
            elif verb == "extra":
                reply = served.extra[args[0]](slices, sync, *args[1:])
            elif verb == "threads":  # tests: disturb a worker on purpose
                torch.set_num_threads(int(args[0]))
                reply = torch.get_num_threads()
            elif verb == "seconds_per_row":
                reply = _seconds_per_row(served.run, args[0], sync)
            else:
                raise ValueError(f"unknown request {verb!r}")
            conn.send(("ok", reply))
        except BaseException as exc:
            _send_error(conn, exc)


def _build(job: WorkerJob, spec: Any) -> tuple[Served, dict[str, Any]]:
    start = time.perf_counter()
    served = job.build(spec)
    return served, {
        "threads": torch.get_num_threads(),
        "build_s": time.perf_counter() - start,
        "trained": False,  # anything that would have trained raised TrainingRefused
        **served.facts,
    }


def _send_error(conn: Connection, exc: BaseException) -> None:
    kind = "user" if isinstance(exc, UserError) else "refused" if isinstance(exc, TrainingRefused) else "bug"
    line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    detail = "" if kind != "bug" else traceback.format_exc(limit=6)
    with contextlib.suppress(OSError, ValueError):
        conn.send(("error", kind, f"{type(exc).__name__}: {line}" if kind == "bug" else line, detail))


def _timed_slice(fn: Callable[[Any], Any], slices: list[list[Any]], k: int, sync: Callable[[], None]) -> list[float]:
    """[seconds, own CPU seconds] of ``fn`` over every batch of slice ``k`` (mod the slice count)."""
    if not slices:
        raise RuntimeError("no slices were sent to this worker")
    part = slices[k % len(slices)]
    cpu = own_cpu_seconds()
    with torch.inference_mode():
        start = time.perf_counter()
        for b in part:
            fn(b)
        sync()
        seconds = time.perf_counter() - start
    return [seconds, own_cpu_seconds() - cpu]


def _seconds_per_row(fn: Callable[[Any], Any], batches: list[Any], sync: Callable[[], None]) -> float:
    """Time per row of ``fn`` over ``batches`` (one warm batch first, then batches for ~50 ms)."""
    with torch.inference_mode():
        fn(batches[0])
        sync()
        rows, start = 0, time.perf_counter()
        for b in batches:
            fn(b)
            rows += batch_size_of(b)
            if time.perf_counter() - start > 0.05:
                break
        sync()
    return (time.perf_counter() - start) / max(1, rows)


_CONTEXT: Any = None


def _context() -> Any:
    """The forkserver context, its preload set once per bench process (before the server starts)."""
    global _CONTEXT
    if _CONTEXT is None:
        ctx = multiprocessing.get_context(START_METHOD)
        ctx.set_forkserver_preload(list(PRELOAD))
        _CONTEXT = ctx
    return _CONTEXT


class Worker:
    """One timing worker (a child of the forkserver). Start it, then :meth:`ready` waits for its build."""

    def __init__(self, job: WorkerJob) -> None:
        ctx = _context()
        self.job = job
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, job), daemon=True, name=f"sidenet-{job.role}")
        self.process.start()
        child.close()
        self.facts: dict[str, Any] | None = None  # the ready reply: pid, ppid and the first build's facts
        self.serving: dict[str, Any] | None = None  # facts of what it serves now (its last build)
        self.label = job.label  # of what it serves now (messages)
        self.served: list[str] = []  # labels of the specs it served, in order (the first: what it was started for)
        self.cpu_total = 0.0  # its own CPU seconds in every run it was asked for, warm-ups included

    def ready(self) -> dict[str, Any]:
        """Wait for the build; the worker's facts (pid, ppid, threads, build seconds)."""
        if self.facts is None:
            _tag, value = self._reply(READY_TIMEOUT_S, expect="ready")
            self.facts = self.serving = value
            self.served.append(self.job.label)
        return self.facts

    def serve(self, spec: Any, label: str) -> None:
        """Ask the worker to build ``spec`` and serve it from now on (its facts: :attr:`serving`); returns at once,
        :meth:`served_ready` waits, so the workers of a pair build side by side."""
        self.ready()
        try:
            self.conn.send(("serve", spec))
        except (BrokenPipeError, OSError) as exc:
            raise WorkerFailed(f"{label} {self.job.role} worker is gone ({exc})") from None
        self.label = label
        self.served.append(label)

    def served_ready(self) -> dict[str, Any]:
        """Wait for the build :meth:`serve` asked for; its facts."""
        self.serving = self._reply(READY_TIMEOUT_S, expect="ok")[1]
        return self.serving

    def call(self, verb: str, *args: Any, timeout: float = REPLY_TIMEOUT_S) -> Any:
        self.ready()
        try:
            self.conn.send((verb, *args))
        except (BrokenPipeError, OSError) as exc:
            raise WorkerFailed(f"{self.label} {self.job.role} worker is gone ({exc})") from None
        return self._reply(timeout, expect="ok")[1]

    def warm(self, k: int) -> None:
        """Run slice ``k`` once, untimed (warm-up)."""
        _, cpu = self.call("run", k)
        self.cpu_total += float(cpu)

    def prime(self, k: int) -> None:
        """Run the first batch of slice ``k`` once, untimed (a short warm-up for a worker that is already warm)."""
        _, cpu = self.call("prime", k)
        self.cpu_total += float(cpu)

    def run(self, k: int) -> float:
        """Time slice ``k`` in the worker; its seconds."""
        seconds, cpu = self.call("run", k)
        self.cpu_total += float(cpu)
        return float(seconds)

    def _reply(self, timeout: float, expect: str) -> tuple[str, Any]:
        if not self.conn.poll(timeout):
            self.kill()
            raise WorkerFailed(f"{self.label} {self.job.role} worker did not answer within {timeout:.0f} s")
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            code = self.process.exitcode
            self.kill()
            raise WorkerFailed(f"{self.label} {self.job.role} worker died (exit code {code})") from None
        if message[0] == "error":
            _, kind, line, detail = message
            self.kill()
            if kind == "user":
                raise UserError(line)
            if kind == "refused":
                raise TrainingRefused(line)
            raise WorkerFailed(f"{self.label} {self.job.role} worker failed: {line}\n{detail}")
        if message[0] != expect:
            raise WorkerFailed(f"{self.label} {self.job.role} worker sent {message[0]!r}, expected {expect!r}")
        return message[0], message[1]

    def close(self) -> None:
        """Ask the worker to end; kill it if it does not within a few seconds."""
        if self.process.is_alive():
            with contextlib.suppress(Exception):
                self.conn.send(("close",))
                if self.conn.poll(5):
                    self.conn.recv()
            self.process.join(5)
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        with contextlib.suppress(OSError):
            self.conn.close()


__all__ = [
    "PRELOAD",
    "START_METHOD",
    "Served",
    "TrainingRefused",
    "Worker",
    "WorkerFailed",
    "WorkerJob",
    "cpu_busy_seconds",
    "own_cpu_seconds",
    "refuse_training",
]
