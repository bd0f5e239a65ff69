"""The Morisot 2020 family and the two references: the MainNet alone, one SideNet, the SideNet that never exits
(its pure overhead), SideNets at several taps, and the untimed oracle bound.

They live apart from :mod:`sidenet.exits.base` so that the registry knows no system: every built-in registers
itself from its own module, as a user's system does from theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from sidenet.engine.policies import Policy, make_policy
from sidenet.engine.trace import NEVER_EXIT
from sidenet.exits.base import (
    BuiltSystem,
    ExitSystemConfig,
    SystemContext,
    _check_policy,
    check_taps,
    check_taps_for,
    register_exit_system,
    resolve_taps,
)
from sidenet.exits.heads import load_or_train_sidenet
from sidenet.tasks import Task
from sidenet.tasks.compressed import tap_for


def sidenet_heads(ctx: SystemContext, taps: Sequence[str]) -> tuple[list[nn.Module], list[str], float]:
    """One SideNet per tap, each trained on that tap alone (so it is the same cache entry the single ``sidenet``
    system uses at that tap)."""
    heads, keys, seconds = [], [], 0.0
    for tap in taps:
        side, meta = load_or_train_sidenet(
            ctx.task, ctx.stage((tap,)), ctx.data, ctx.num_classes, ctx.model_key, ctx.progress, ctx.device
        )
        heads.append(side)
        keys.append(meta["key"])
        seconds += float(meta.get("seconds", 0.0))
    return heads, keys, seconds


def n_params(modules: Sequence[nn.Module]) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


@register_exit_system
@dataclass(frozen=True)
class MainNetAlone(ExitSystemConfig):
    name: ClassVar[str] = "none"
    description: ClassVar[str] = "the MainNet alone: the baseline every speedup and accuracy delta is measured against"
    has_exits: ClassVar[bool] = False
    bench_defaults: ClassVar[tuple[str, ...]] = ("none",)
    default_rank: ClassVar[int] = 0
    runs_on: ClassVar[str] = "every"


@register_exit_system
@dataclass(frozen=True)
class SideNetSystem(ExitSystemConfig):
    name: ClassVar[str] = "sidenet"
    bench_defaults: ClassVar[tuple[str, ...]] = ("sidenet",)
    default_rank: ClassVar[int] = 10
    runs_on: ClassVar[str] = "every"
    takes_fixed_threshold: ClassVar[bool] = True
    description: ClassVar[str] = (
        "MainNet + SideNet cascade (Morisot 2020) at the threshold chosen on validation, or a fixed one"
    )
    policy: str = "softmax"

    def __post_init__(self) -> None:
        _check_policy(self.policy)

    def build(self, ctx: SystemContext) -> BuiltSystem:
        tap = tap_for(ctx.task, ctx.baseline, ctx.model)
        heads, keys, seconds = sidenet_heads(ctx, (tap,))
        policy = make_policy(self.policy)
        identity = {"system": self.to_dict(), "taps": [tap], "heads": keys, "policy": policy.identity()}
        return BuiltSystem(ctx.stage((tap,)), heads, policy, identity, seconds, n_params(heads))


@register_exit_system
@dataclass(frozen=True)
class SideNetNoExit(ExitSystemConfig):
    name: ClassVar[str] = "sidenet-noexit"
    description: ClassVar[str] = "the same cascade with a threshold above 1: nothing exits, the SideNet's pure overhead"
    # the row's threshold_source; and the system whose validation selection and sweep its rows show (it has none
    # of its own: its operating point is fixed), so a row reads as that SideNet's overhead
    threshold_source: ClassVar[str] = "never-exit"
    overhead_of: ClassVar[str | None] = "sidenet"
    bench_defaults: ClassVar[tuple[str, ...]] = ("sidenet-noexit",)
    default_rank: ClassVar[int] = 20
    runs_on: ClassVar[str] = "plain"  # its overhead on a compressed MainNet would repeat the same question

    def build(self, ctx: SystemContext) -> BuiltSystem:
        """The ``sidenet`` system's parts (the same trained SideNet, one cache entry) at a threshold above 1."""
        built = SideNetSystem().build(ctx)
        built.identity = {**built.identity, "system": self.to_dict()}  # its own traces' cache entry

        def never(val: Any, target: float, margin_se: float) -> tuple[Policy, list[float]]:
            return built.policy, [NEVER_EXIT] * len(built.heads)

        built.choose = never
        return built


@register_exit_system
@dataclass(frozen=True)
class SideNetMulti(ExitSystemConfig):
    name: ClassVar[str] = "sidenet-multi"
    bench_defaults: ClassVar[tuple[str, ...]] = ("sidenet-multi",)
    default_rank: ClassVar[int] = 30
    description: ClassVar[str] = (
        "SideNets at several taps (default: every ResNet stage 1-3 / BERT layer 1..L-1); a row leaves at the first "
        "exit whose confidence passes one shared threshold chosen on validation"
    )
    taps: str = "all"  # '/'-separated tap names (layer1/layer2, 1/3/5), or all
    policy: str = "softmax"

    def __post_init__(self) -> None:
        _check_policy(self.policy)
        check_taps(self.name, self.taps)

    def check_task(self, task: Task) -> None:
        check_taps_for(task, self.name, self.taps)

    def build(self, ctx: SystemContext) -> BuiltSystem:
        taps = resolve_taps(ctx, self.taps)
        staged = ctx.stage(taps)  # validates the taps (order, range) with the adapters' one-line errors
        heads, keys, seconds = sidenet_heads(ctx, staged.taps)
        policy = make_policy(self.policy)
        identity = {"system": self.to_dict(), "taps": list(staged.taps), "heads": keys, "policy": policy.identity()}
        return BuiltSystem(staged, heads, policy, identity, seconds, n_params(heads))


@register_exit_system
@dataclass(frozen=True)
class OracleBound(ExitSystemConfig):
    name: ClassVar[str] = "oracle"
    description: ClassVar[str] = (
        "not timed: the least compute an exit placement allows (each row leaves at its first right exit, or at the "
        "first agreeing with the MainNet), computed from every exit system's trace and shown beside it"
    )
    timed: ClassVar[bool] = False
