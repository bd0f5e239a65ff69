"""Bolukbasi, Wang, Dekel & Saligrama (ICML 2017), *Adaptive Neural Networks for Efficient Inference*.

Two exit systems, one learned policy:

* ``learned`` — adaptive early exit: the SideNets of ``sidenet-multi`` (or one tap), but at each exit a small
  policy decides, trained on the exits' outputs instead of thresholding the softmax.
* ``cascade`` — network selection: a small network answers first (default: the task's distilled student, the
  model its ``small_network_chain`` makes), the cell's MainNet runs only for the rows the policy sends on.

**The policy** (:class:`LearnedPolicy`): at exit ``e`` a logistic model on the exit's softmax statistics (max
probability, top-1 − top-2 margin, 1 − normalised entropy) gives P(exit). It is trained from the last exit
backwards as weighted binary classification (the paper's §3): a row's target says whether leaving here loses
nothing against what the rest of the cascade — the later exits under their already-trained policies, then the
MainNet — would give, pricing compute at ``tradeoff`` per full-network cost:

    exit:     err_e + λ·cost_e            continue: err_down + λ·cost_down
    target = exit ≤ continue,             weight = |exit − continue|

so rows where the choice does not matter carry no weight. ``tradeoff=auto`` fits a policy per λ in
:data:`TRADEOFFS` and keeps the one whose validation-selected operating point spends the fewest FLOPs.

Training data: a trace on (a seeded subset of) the training split, never validation or test; validation picks λ
and the shared threshold on the policy's score (the same SE-bounded rule as every system); test only reports.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from sidenet.engine import cache
from sidenet.engine.policies import ExitView, Policy
from sidenet.engine.trace import ExitTrace, collect_trace, select_shared, shared_sweep
from sidenet.exits.base import (
    BuiltSystem,
    ExitSystemConfig,
    SystemContext,
    check_taps,
    check_taps_for,
    parse_count,
    register_exit_system,
    resolve_taps,
)
from sidenet.exits.heads import EVAL_BATCH, device_fields
from sidenet.exits.sidenet_systems import n_params, sidenet_heads
from sidenet.tasks import Task
from sidenet.tasks.compressed import normalize_chain
from sidenet_core.errors import UserError
from sidenet_core.layouts import model_logits, select_rows
from sidenet_core.staged import StagedModel
from sidenet_core.status import announce

TRADEOFFS: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5)
FIT_STEPS = 300
FIT_L2 = 1e-3
MIN_FIT_ROWS, MAX_FIT_ROWS = 100, 100_000_000  # fewer rows fit noise; more than any split holds (it is clipped)


def softmax_stats(logits: torch.Tensor) -> torch.Tensor:
    """[B, 3]: max probability, top-1 − top-2 margin, 1 − normalised entropy of the softmax."""
    p = logits.float().softmax(-1)
    top = p.topk(min(2, p.shape[-1]), dim=-1).values
    margin = top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0.0)
    ent = -(p * p.clamp_min(1e-12).log()).sum(-1) / math.log(max(p.shape[-1], 2))
    return torch.stack([top[:, 0], margin, 1.0 - ent], 1)


def policy_targets(
    exit_err: np.ndarray, exit_cost: np.ndarray, down_err: np.ndarray, down_cost: np.ndarray, tradeoff: float
) -> tuple[np.ndarray, np.ndarray]:
    """(target, weight) per row at one exit: leave (1) when err + λ·cost of leaving is no more than of going on."""
    leave = exit_err + tradeoff * exit_cost
    stay = down_err + tradeoff * down_cost
    return (leave <= stay).astype(np.float64), np.abs(leave - stay)


def fit_logistic(x: torch.Tensor, y: np.ndarray, w: np.ndarray, seed: int = 0) -> torch.Tensor:
    """Weighted logistic regression (standardised inputs, light L2); returns [D + 1] weights in input units.

    Full-batch L-BFGS on a convex loss: deterministic, converges in well under a second on 50k rows."""
    yt, wt = torch.as_tensor(y, dtype=torch.float64), torch.as_tensor(w, dtype=torch.float64)
    d = x.shape[1]
    if float(wt.sum()) <= 0:  # nothing to learn: never leave here
        return torch.cat([torch.zeros(d, dtype=torch.float64), torch.tensor([-20.0], dtype=torch.float64)])
    if bool((yt[wt > 0] == yt[wt > 0][0]).all()):  # every weighted row says the same: a constant decision
        return torch.cat([torch.zeros(d, dtype=torch.float64), torch.tensor([20.0 if yt[wt > 0][0] else -20.0])])
    xs = x.double()
    mean, std = xs.mean(0), xs.std(0).clamp_min(1e-6)
    z = (xs - mean) / std
    torch.manual_seed(seed)
    theta = torch.zeros(d + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([theta], max_iter=FIT_STEPS, line_search_fn="strong_wolfe")
    wn = wt / wt.sum()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logit = z @ theta[:d] + theta[d]
        loss = (wn * nn.functional.binary_cross_entropy_with_logits(logit, yt, reduction="none")).sum()
        loss = loss + FIT_L2 * (theta[:d] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        coef = theta[:d] / std
        bias = theta[d] - (theta[:d] * mean / std).sum()
    return torch.cat([coef, bias.reshape(1)]).detach()


@dataclass
class LearnedPolicy:
    """Per-exit logistic policies on softmax statistics; score = P(leave here)."""

    tradeoff: float
    weights: list[torch.Tensor] = field(default_factory=list)  # one [4] per exit
    name: ClassVar[str] = "learned"

    def new(self) -> LearnedPolicy:
        return LearnedPolicy(self.tradeoff)

    def score(self, view: ExitView) -> torch.Tensor:
        if not self.weights:
            raise RuntimeError("the learned policy has not been fitted")
        w = self.weights[view.exit_index].to(device=view.logits.device, dtype=torch.float32)
        return torch.sigmoid(softmax_stats(view.logits) @ w[:-1] + w[-1])

    def fit(self, trace: ExitTrace) -> None:
        """Train every exit's policy from the last exit backwards (module docstring)."""
        correct = trace.correct()
        cost = trace.cost / float(trace.cost[:, -1].mean())  # compute in units of the whole network's
        e_last = trace.n_exits
        down_err, down_cost = 1.0 - correct[:, e_last], cost[:, e_last]
        weights: list[torch.Tensor] = [torch.zeros(4)] * e_last
        for e in reversed(range(e_last)):
            y, w = policy_targets(1.0 - correct[:, e], cost[:, e], down_err, down_cost, self.tradeoff)
            stats = softmax_stats(trace.exit_logits[:, e])
            weights[e] = fit_logistic(stats, y, w).float()
            leave = (torch.sigmoid(stats @ weights[e][:-1] + weights[e][-1]) >= 0.5).numpy()
            down_err = np.where(leave, 1.0 - correct[:, e], down_err)
            down_cost = np.where(leave, cost[:, e], down_cost)
        self.weights = weights

    def identity(self) -> dict[str, Any]:
        blob = b"".join(w.numpy().astype(np.float32).tobytes() for w in self.weights)
        return {"name": self.name, "tradeoff": self.tradeoff, "weights": hashlib.sha256(blob).hexdigest()[:16]}


def _tradeoffs(spec: str) -> tuple[float, ...]:
    if spec == "auto":
        return TRADEOFFS
    try:
        value = float(spec)
    except ValueError:
        raise UserError(f"tradeoff must be a number ≥ 0 or auto, got {spec!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise UserError(f"tradeoff must be a number ≥ 0 or auto, got {spec!r}")
    return (value,)


def _check_fit(system: str, tradeoff: str, fit_rows: str) -> None:
    _tradeoffs(tradeoff)
    parse_count(system, "fit_rows", fit_rows, MIN_FIT_ROWS, MAX_FIT_ROWS)


def _check_small(spec: str) -> None:
    """The small network's chain must exist before anything trains: a typo (``small=distl``) used to surface only
    after the MainNet was trained, when the cascade asked for that chain's model."""
    try:
        normalize_chain(spec)
    except UserError as exc:
        raise UserError(f"cascade small={spec!r}: {exc}; or small=task (the task's own small network)") from None


def _train_trace(
    ctx: SystemContext, staged: StagedModel, heads: Sequence[nn.Module], rows: int, key: dict
) -> ExitTrace:
    """The exits' outputs on a seeded subset of the training split (cached: it costs a pass of the network)."""
    train = ctx.data["train"]
    n = min(rows, len(train))
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n].sort().values
    position = torch.full((len(train),), -1, dtype=torch.long)
    position[idx] = torch.arange(n)
    cache_key = cache.artifact_key("policy-trace", {**key, "rows": n, **device_fields(ctx.device)})
    taps = tuple(staged.taps)
    hit = cache.load_tensors(cache_key)
    if hit is not None:
        return ExitTrace.from_tensors(hit[0], "train", taps)
    announce(f"tracing {n} training rows of {ctx.task.name} for the learned exit policy")
    batches = (
        (inputs, position[rows_]) for inputs, rows_ in ctx.task.batches(train, EVAL_BATCH, idx=idx, by_length=True)
    )
    trace = collect_trace(batches, n, train.labels[idx], staged, heads, ctx.device)
    cache.store_tensors(cache_key, trace.to_tensors("train"), {"task": ctx.task.name, "rows": n})
    return trace


def _choose(candidates: list[LearnedPolicy]) -> Any:
    """The validation step of ``tradeoff=auto``: each candidate's shared threshold by the usual rule, then the
    candidate spending the fewest validation FLOPs at its threshold (ties: the smaller λ)."""

    def choose(val: ExitTrace, target_pt: float, margin_se: float) -> tuple[Policy, list[float]]:
        best: tuple[float, float, LearnedPolicy, float] | None = None
        for policy in candidates:
            sw = shared_sweep(val, val.scores(policy))
            threshold, i = select_shared(sw, target_pt, margin_se)
            key = (float(sw.flops[i]), policy.tradeoff)
            if best is None or key < best[:2]:
                best = (*key, policy, threshold)
        assert best is not None
        return best[2], [best[3]] * val.n_exits

    return choose


def _learned_parts(
    ctx: SystemContext, staged: StagedModel, heads: list[nn.Module], tradeoff: str, rows: int, key: dict
) -> tuple[list[LearnedPolicy], Any, float]:
    """The fitted candidates, their validation step, and the seconds the fitting took. Fitted weights are cached
    (keyed by the training trace's identity, λ and the fit's settings), so a timing worker that rebuilds the
    system loads them instead of fitting (it may not train anything: sidenet.bench.workers)."""
    seconds = 0.0
    lams = _tradeoffs(tradeoff)
    n = min(rows, len(ctx.data["train"]))
    fit_keys = [
        cache.artifact_key(
            "policy-fit",
            {**key, "rows": n, **device_fields(ctx.device), "tradeoff": lam, "steps": FIT_STEPS, "l2": FIT_L2},
        )
        for lam in lams
    ]
    hits = [cache.load_tensors(k) for k in fit_keys]
    start = time.perf_counter()
    trace = None if all(h is not None for h in hits) else _train_trace(ctx, staged, heads, rows, key)
    seconds += time.perf_counter() - start
    candidates = []
    for lam, fit_key, hit in zip(lams, fit_keys, hits, strict=True):
        policy = LearnedPolicy(lam)
        if hit is not None:
            tensors, meta = hit
            policy.weights = [tensors[f"exit{e}"] for e in range(len(tensors))]
            seconds += float(meta.get("seconds", 0.0))  # what fitting took when it ran
        else:
            assert trace is not None
            announce(f"fitting the learned exit policy (λ {lam:g}) on {ctx.task.name}")
            fit_start = time.perf_counter()
            policy.fit(trace)
            fit_s = time.perf_counter() - fit_start
            seconds += fit_s
            weights = {f"exit{e}": w for e, w in enumerate(policy.weights)}
            cache.store_tensors(fit_key, weights, {"tradeoff": lam, "seconds": fit_s})
        candidates.append(policy)
    return candidates, _choose(candidates), seconds


@register_exit_system
@dataclass(frozen=True)
class LearnedExit(ExitSystemConfig):
    name: ClassVar[str] = "learned"
    bench_defaults: ClassVar[tuple[str, ...]] = ("learned",)
    default_rank: ClassVar[int] = 40
    description: ClassVar[str] = (
        "Bolukbasi et al. 2017 adaptive early exit: the SideNets of sidenet-multi (or taps=...), each exit decided "
        "by a policy learned on the training split (λ prices compute; chosen on validation)"
    )
    taps: str = "all"
    tradeoff: str = "auto"  # λ per full-network cost; auto: the λ of TRADEOFFS best on validation
    fit_rows: str = "20000"  # training rows the policy is fitted on (a seeded subset)

    def __post_init__(self) -> None:
        _check_fit(self.name, self.tradeoff, self.fit_rows)
        check_taps(self.name, self.taps)

    def check_task(self, task: Task) -> None:
        check_taps_for(task, self.name, self.taps)

    def build(self, ctx: SystemContext) -> BuiltSystem:
        taps = resolve_taps(ctx, self.taps)
        staged = ctx.stage(taps)
        heads, keys, seconds = sidenet_heads(ctx, staged.taps)
        key = {"heads": keys, "taps": list(staged.taps), "model": ctx.model_key}
        candidates, choose, fit_s = _learned_parts(ctx, staged, list(heads), self.tradeoff, int(self.fit_rows), key)
        identity = {"system": self.to_dict(), **key, "policies": [p.identity() for p in candidates]}
        params = n_params(heads)
        return BuiltSystem(
            staged,
            list(heads),
            candidates[0],
            identity,
            seconds + fit_s,
            params,
            choose=choose,
            candidates=tuple(candidates),
        )


class TwoNetworks(StagedModel):
    """Network selection as a staged model: segment 0 runs the small network (its logits are the tap's state and
    its features), segment 1 runs the big one on the rows still inside — on their original inputs."""

    def __init__(self, small: nn.Module, big: nn.Module) -> None:
        super().__init__()
        self.small, self.big = small, big
        self.taps = ("small",)
        self.tap = "small"

    def segment(self, i: int, x: Any) -> Any:
        if i == 0:
            return _Selected(x, model_logits(self.small, x))
        return model_logits(self.big, x.inputs)

    def features(self, state: _Selected) -> torch.Tensor:
        return state.logits

    def select(self, state: _Selected, idx: torch.Tensor) -> _Selected:
        return _Selected(select_rows(state.inputs, idx), state.logits.index_select(0, idx))


@dataclass
class _Selected:
    inputs: Any
    logits: torch.Tensor

    def select_rows(self, idx: torch.Tensor) -> _Selected:
        return _Selected(select_rows(self.inputs, idx), self.logits.index_select(0, idx))


class _Logits(nn.Module):
    """The exit head of network selection: the small network's logits are its answer."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@register_exit_system
@dataclass(frozen=True)
class NetworkCascade(ExitSystemConfig):
    name: ClassVar[str] = "cascade"
    bench_defaults: ClassVar[tuple[str, ...]] = ("cascade",)
    default_rank: ClassVar[int] = 50
    description: ClassVar[str] = (
        "Bolukbasi et al. 2017 network selection: the task's small network (default its distilled student) first, "
        "the cell's MainNet only for the rows a learned policy sends on"
    )
    small: str = "task"  # a chain spec (no parameters), or task: the task's small_network_chain
    tradeoff: str = "auto"
    fit_rows: str = "20000"

    def __post_init__(self) -> None:
        _check_fit(self.name, self.tradeoff, self.fit_rows)
        if self.small != "task":
            _check_small(self.small)

    def check_task(self, task: Task) -> None:
        if self.small == "task":  # the task's own small network must exist as well
            _check_small(task.small_network_chain)

    def small_chain(self, ctx: SystemContext) -> str:
        spec = ctx.task.small_network_chain if self.small == "task" else self.small
        return normalize_chain(spec)

    def build(self, ctx: SystemContext) -> BuiltSystem:
        if ctx.mainnet_for is None:
            raise UserError("cascade needs the model of another chain; run it through the bench or prepare_system")
        small, small_key = ctx.mainnet_for(self.small_chain(ctx))
        staged = TwoNetworks(small, ctx.model)
        heads: list[nn.Module] = [_Logits()]
        key = {"small": small_key, "big": ctx.model_key}
        candidates, choose, fit_s = _learned_parts(ctx, staged, heads, self.tradeoff, int(self.fit_rows), key)
        identity = {"system": self.to_dict(), **key, "policies": [p.identity() for p in candidates]}
        params = sum(p.numel() for p in small.parameters())
        return BuiltSystem(
            staged, heads, candidates[0], identity, fit_s, params, choose=choose, candidates=tuple(candidates)
        )
