"""``ExitTrace``: what every exit of a cascade would answer for every sample, and what leaving there costs.

Recorded once per split (every row through every segment and every exit head, FLOPs counted per part), it holds
per sample × per exit the logits and the cumulative FLOPs of leaving there. Accuracy, exit rates and FLOPs at any
thresholds, the threshold sweep, the selection on validation and the oracle bounds all follow from it without
running a model again; the real cascade is then run once on test, at the selected thresholds, to check that the
trace's prediction is what executes.

Costs are cumulative and include every exit head evaluated on the way: leaving at exit ``e`` costs segments
0 … e plus heads 0 … e; running to the end costs every segment and every head.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from sidenet.engine.policies import ExitView, Policy, head_output
from sidenet_core.flops import count_flops
from sidenet_core.layouts import to_device
from sidenet_core.staged import StagedModel

NEVER_EXIT = 1.000001  # any threshold above 1 means no row exits (confidences lie in [0, 1])


@dataclass
class ExitTrace:
    """One split's trace. ``E`` exits (taps with a head), ``C`` classes, ``N`` rows."""

    exit_logits: torch.Tensor  # [N, E, C]
    final_logits: torch.Tensor  # [N, C] the MainNet's own output (all segments)
    labels: torch.Tensor  # [N]
    cost: np.ndarray  # [N, E + 1] cumulative FLOPs of leaving at exit e (E: running to the end)
    taps: tuple[str, ...]  # the tap of each exit
    exit_confidence: torch.Tensor | None = None  # [N, E]: the heads' own confidence branches (EENets), if any

    def __post_init__(self) -> None:
        n, e = self.exit_logits.shape[:2]
        if self.final_logits.shape[0] != n or len(self.labels) != n or self.cost.shape != (n, e + 1):
            raise ValueError("trace parts disagree on the number of rows or exits")
        if self.exit_confidence is not None and tuple(self.exit_confidence.shape) != (n, e):
            raise ValueError("trace confidences disagree with its logits on the number of rows or exits")
        if len(self.taps) != e:
            raise ValueError(f"{e} exits but {len(self.taps)} taps")

    @property
    def n_rows(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_exits(self) -> int:
        return int(self.exit_logits.shape[1])

    def predictions(self) -> np.ndarray:
        """[N, E + 1] predicted class at each exit, the MainNet's last."""
        exits = self.exit_logits.argmax(-1)
        return torch.cat([exits, self.final_logits.argmax(-1, keepdim=True)], 1).numpy()

    def correct(self) -> np.ndarray:
        """[N, E + 1] whether each exit (the MainNet last) is right."""
        return self.predictions() == self.labels.numpy()[:, None]

    def scores(self, policy: Policy) -> np.ndarray:
        """[N, E] the policy's score at each exit."""
        own = self.exit_confidence
        cols = [
            policy.score(ExitView(self.exit_logits[:, e], None, e, None if own is None else own[:, e])).float()
            for e in range(self.n_exits)
        ]
        return torch.stack(cols, 1).numpy().astype(np.float64) if cols else np.zeros((self.n_rows, 0))

    def to_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        own = {} if self.exit_confidence is None else {f"{prefix}.exit_confidence": self.exit_confidence}
        return {
            f"{prefix}.exit_logits": self.exit_logits,
            f"{prefix}.final_logits": self.final_logits,
            f"{prefix}.labels": self.labels,
            f"{prefix}.cost": torch.from_numpy(np.ascontiguousarray(self.cost)),
            **own,
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str, taps: Sequence[str]) -> ExitTrace:
        t = {k.removeprefix(f"{prefix}."): v for k, v in tensors.items() if k.startswith(f"{prefix}.")}
        return cls(
            t["exit_logits"], t["final_logits"], t["labels"], t["cost"].numpy(), tuple(taps), t.get("exit_confidence")
        )


@dataclass(frozen=True)
class Outcome:
    """A cascade at given thresholds, predicted from a trace."""

    thresholds: tuple[float, ...]
    exit_index: np.ndarray  # [N] where each row leaves (E: the end)
    row_correct: np.ndarray  # [N]
    row_cost: np.ndarray  # [N]

    @property
    def accuracy(self) -> float:
        return float(self.row_correct.mean())

    @property
    def flops_per_sample(self) -> float:
        return float(self.row_cost.mean())

    def exit_rates(self, n_exits: int) -> list[float]:
        """Fraction of rows leaving at each exit head, in order (the rest ran to the end)."""
        return [float((self.exit_index == e).mean()) for e in range(n_exits)]


def exit_index_at(scores: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """[N] the first exit whose score reaches its threshold, else E (the end)."""
    n, e = scores.shape
    passed = scores >= np.asarray(thresholds, dtype=np.float64)[None, :]
    first = np.where(passed.any(1), passed.argmax(1), e)
    return first.astype(np.int64) if n else np.zeros(0, dtype=np.int64)


def outcome(trace: ExitTrace, scores: np.ndarray, thresholds: Sequence[float]) -> Outcome:
    idx = exit_index_at(scores, thresholds)
    rows = np.arange(trace.n_rows)
    return Outcome(tuple(float(t) for t in thresholds), idx, trace.correct()[rows, idx], trace.cost[rows, idx])


def outcome_summary(trace: ExitTrace, out: Outcome) -> dict[str, float | list[float]]:
    return {
        "accuracy": out.accuracy,
        "exit_rate": float((out.exit_index < trace.n_exits).mean()),
        "exit_rates": out.exit_rates(trace.n_exits),
        "flops_per_sample": out.flops_per_sample,
    }


# ---------------------------------------------------------------- shared-threshold sweep and selection


@dataclass(frozen=True)
class SharedSweep:
    """The cascade at every candidate shared threshold (one value for every exit), most permissive last."""

    thresholds: np.ndarray  # descending; [0] = NEVER_EXIT
    exit_rate: np.ndarray
    accuracy: np.ndarray
    flops: np.ndarray
    loss: np.ndarray  # MainNet accuracy − cascade accuracy (fraction)
    loss_se: np.ndarray  # standard error of the paired per-row difference


def shared_sweep(trace: ExitTrace, scores: np.ndarray, reference: np.ndarray | None = None) -> SharedSweep:
    """Every exit at the same threshold ``t``: rows leave at the first exit whose score reaches ``t``.

    ``reference``: [N] whether the network the loss is measured against is right on each row; default the
    trace's own last column. A system that retrains the backbone (EENets) passes the *original* MainNet's, so the
    loss it is selected under includes what retraining cost, not just what exiting costs on top.

    Why one threshold for all exits: it is one degree of freedom, chosen under the same SE-bounded rule as the
    single SideNet's; per-exit thresholds fitted jointly on 1,300–1,900 validation texts would chase the noise of
    a handful of rows (a 0.5 pt target is ~6–10 samples there). The heads are distilled to the MainNet's softmax,
    so their confidences mean about the same at every tap.
    """
    scores = np.asarray(scores, dtype=np.float64)
    correct = trace.correct().astype(np.float64)
    main = (correct[:, -1] if reference is None else np.asarray(reference, dtype=bool)).astype(np.float64)
    if main.shape != (trace.n_rows,):
        raise ValueError(f"reference has {main.shape[0]} rows, the trace {trace.n_rows}")
    n, e = scores.shape
    # Exact at every distinct score, however many (no grid): as ``t`` falls, a row's exit moves earlier exactly
    # when ``t`` passes a new running maximum of its scores along the exits (a "record"). Each record is an event
    # moving that row from the next later record (or the end) to its own exit; summing the events' changes in
    # order of falling value gives the cascade at every candidate in O(N·E log(N·E)). For one exit the candidates,
    # the order of the sums and so every number are those of the single SideNet's sweep before the one path.
    running = np.maximum.accumulate(scores, axis=1) if e else scores
    is_record = np.ones((n, e), dtype=bool)
    if e > 1:
        is_record[:, 1:] = running[:, 1:] > running[:, :-1]
    later = np.full((n, e), e, dtype=np.int64)  # the next record after each exit (e: the end)
    for j in range(e - 2, -1, -1):
        later[:, j] = np.where(is_record[:, j + 1], j + 1, later[:, j + 1])
    rows, new = np.nonzero(is_record)
    old = later[rows, new]
    order = np.argsort(-scores[rows, new], kind="stable")
    rows, new, old = rows[order], new[order], old[order]
    event_values = scores[rows, new]
    ref = main[rows]
    d_new, d_old = ref - correct[rows, new], ref - correct[rows, old]
    cum = lambda x: np.concatenate([[0.0], np.cumsum(x)])  # noqa: E731
    cum_d, cum_d2 = cum(d_new - d_old), cum(d_new * d_new - d_old * d_old)
    cum_cost = cum(trace.cost[rows, new] - trace.cost[rows, old])
    cum_exits = cum((new < e).astype(np.float64) - (old < e))
    candidates = np.concatenate([[NEVER_EXIT], np.unique(scores)[::-1]])
    taken = np.searchsorted(-event_values, -candidates, side="right")  # events with value >= each candidate
    d0 = main - correct[:, e]
    loss = (d0.sum() + cum_d[taken]) / max(n, 1)
    mean_sq = (np.square(d0).sum() + cum_d2[taken]) / max(n, 1)
    var = np.maximum(mean_sq - loss**2, 0.0) * n / max(n - 1, 1)
    se = np.sqrt(var / max(n, 1))
    flops = (trace.cost[:, e].sum() + cum_cost[taken]) / max(n, 1)
    rate = cum_exits[taken] / max(n, 1)
    return SharedSweep(candidates, rate, main.mean() - loss, flops, loss, se)


def paired_loss(reference: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    """Mean of the paired per-row difference reference − cascade (right = 1) and its standard error."""
    d = np.asarray(reference, dtype=np.float64) - np.asarray(correct, dtype=np.float64)
    n = len(d)
    if not n:
        return 0.0, 0.0
    return float(d.mean()), float(np.sqrt(d.var() * n / max(n - 1, 1) / n))


def select_shared(sw: SharedSweep, target_loss_pt: float, margin_se: float = 1.0) -> tuple[float, int]:
    """The most permissive shared threshold whose loss + margin·SE meets the target; (threshold, index)."""
    ok = sw.loss + margin_se * sw.loss_se <= target_loss_pt / 100.0 + 1e-12
    ok[0] = True  # never exiting meets any non-negative target
    idx = int(np.flatnonzero(ok)[-1])
    return float(sw.thresholds[idx]), idx


# ---------------------------------------------------------------- oracle bounds


def oracle_first_correct(trace: ExitTrace) -> dict[str, float]:
    """Each row leaves at the first exit (the MainNet included) that is right; a row no exit gets right leaves
    at the first exit (the cheapest way to be wrong). The floor on compute for this exit placement at the highest
    accuracy it can reach."""
    correct = trace.correct()
    any_right = correct.any(1)
    idx = np.where(any_right, correct.argmax(1), 0)
    cost = trace.cost[np.arange(trace.n_rows), idx]
    return {"accuracy": float(any_right.mean()), "flops_per_sample": float(cost.mean())}


def oracle_agree(trace: ExitTrace) -> dict[str, float]:
    """Each row leaves at the first exit whose prediction equals the MainNet's: the MainNet's accuracy exactly,
    at the least compute this placement allows for it."""
    pred = trace.predictions()
    agree = pred == pred[:, -1:]
    idx = agree.argmax(1)  # the last column always agrees
    rows = np.arange(trace.n_rows)
    return {
        "accuracy": float((pred[rows, idx] == trace.labels.numpy()).mean()),
        "flops_per_sample": float(trace.cost[rows, idx].mean()),
    }


def oracle_flops_at(trace: ExitTrace, accuracy: float) -> float | None:
    """The least FLOPs/sample any exit policy on this placement needs to reach ``accuracy`` (None: unreachable).

    A row answered right costs at least its first right exit; a row answered wrong at least the first exit. So
    reaching k right rows costs at least Σ first-exit costs + the k smallest (first-right − first-exit) extras:
    every system's (accuracy, FLOPs) point on these exits lies on or above this curve.
    """
    correct = trace.correct()
    any_right = correct.any(1)
    rows = np.arange(trace.n_rows)
    base = trace.cost[:, 0]
    extra = np.sort(trace.cost[rows, correct.argmax(1)][any_right] - base[any_right])
    need = int(np.ceil(accuracy * trace.n_rows - 1e-9))
    if need > len(extra):
        return None
    return float((base.sum() + extra[: max(need, 0)].sum()) / trace.n_rows)


def oracle_summary(trace: ExitTrace, accuracy: float, flops_per_sample: float) -> dict[str, float | None]:
    """The two oracle points and the system's FLOPs relative to the oracle curve at its own accuracy."""
    first, agree = oracle_first_correct(trace), oracle_agree(trace)
    floor = oracle_flops_at(trace, accuracy)
    return {
        "first_correct_accuracy": first["accuracy"],
        "first_correct_flops_per_sample": first["flops_per_sample"],
        "agree_accuracy": agree["accuracy"],
        "agree_flops_per_sample": agree["flops_per_sample"],
        "flops_at_accuracy": floor,
        "flops_vs_oracle": (flops_per_sample / floor) if floor else None,
    }


# ---------------------------------------------------------------- recording


@torch.inference_mode()
def collect_trace(
    batches: Iterable[tuple[Any, torch.Tensor]],
    n_rows: int,
    labels: torch.Tensor,
    staged: StagedModel,
    heads: Sequence[nn.Module],
    device: torch.device | str | None = None,
) -> ExitTrace:
    """Every row through every segment and every exit head (no exits taken), FLOPs counted per part.

    ``batches``: (inputs, row indices) covering the split once, rows of equal length per batch (texts), so a
    row's FLOPs do not depend on which rows shared its batch; ``heads[i]`` reads tap ``i``. Outputs come back to
    the CPU."""
    n_exits = len(heads)
    if n_exits != len(staged.taps):
        raise ValueError(f"{n_exits} exit heads for {len(staged.taps)} taps: give a head at every tap")
    exit_logits: torch.Tensor | None = None
    exit_confidence: torch.Tensor | None = None
    final_logits: torch.Tensor | None = None
    segment_flops = np.zeros((n_rows, n_exits + 1))
    head_flops = np.zeros((n_rows, n_exits))
    for inputs, idx in batches:
        rows = idx.numpy()
        state = to_device(inputs, device)
        for i in range(n_exits + 1):
            flops, state = count_flops(staged.segment, i, state)
            segment_flops[rows, i] = flops / len(idx)
            if i == n_exits:
                break
            flops, out = count_flops(lambda s=state, h=heads[i]: h(staged.features(s)))
            logits, own = head_output(out)
            head_flops[rows, i] = flops / len(idx)
            if exit_logits is None:
                exit_logits = torch.empty(n_rows, n_exits, logits.shape[-1])
            exit_logits[idx, i] = logits.float().cpu()
            if own is not None:
                if exit_confidence is None:
                    exit_confidence = torch.zeros(n_rows, n_exits)
                exit_confidence[idx, i] = own.float().cpu()
        if final_logits is None:
            final_logits = torch.empty(n_rows, state.shape[-1])
        final_logits[idx] = state.float().cpu()
    if final_logits is None or exit_logits is None:
        raise ValueError("no batches to trace")
    cum_segments = np.cumsum(segment_flops, 1)
    cum_heads = np.cumsum(head_flops, 1)
    cost = np.concatenate([cum_segments[:, :n_exits] + cum_heads, (cum_segments[:, -1] + cum_heads[:, -1])[:, None]], 1)
    return ExitTrace(exit_logits, final_logits, labels, cost, tuple(staged.taps), exit_confidence)
