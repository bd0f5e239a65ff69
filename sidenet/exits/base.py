"""The exit-system axis of a cell: each system a frozen config, registered by name, parsed from the chain grammar.

``sidenet-multi:taps=layer1/layer2,policy=entropy`` → ``SideNetMulti(taps="layer1/layer2", policy="entropy")``.
Every field takes part in the cell key (defaults included) and ``label()`` is the one spelling of a config, so
``sidenet:policy=softmax`` and ``sidenet`` are one cell.

A system says whether it is ``timed`` (the ``oracle`` bound is not: it is computed from every other system's
trace and shown beside it) and whether it ``retrains_backbone``, and builds its cascade parts from a
:class:`SystemContext` (the task, its data, the compressed MainNet and how to stage it, and a way to ask for the
model of another chain: what the network-selection cascade needs). The generic measuring path
(:func:`sidenet.bench.pipeline.prepare_system`) traces what ``build`` returns, selects thresholds on validation and runs
the real cascade on test. Adding a system: one module of its own under
``sidenet/exits/`` (or in your package) with a config class decorated ``@register_exit_system`` and a ``build``,
imported by :mod:`sidenet.exits`, and one test. This module knows no system by name.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from sidenet.engine.chain import parse_step
from sidenet.engine.policies import POLICIES, Policy
from sidenet.tasks import Encoded, Task
from sidenet.tasks.compressed import bert_layer_count
from sidenet_core.errors import UserError
from sidenet_core.layouts import RESNET_STAGES
from sidenet_core.registry import Registry
from sidenet_core.staged import StagedModel

TAP_SEPARATOR = "/"
_TAP_NAME = re.compile(r"[A-Za-z0-9_.-]+", re.ASCII)  # stage, block or layer names: layer2, layer2.0, 3


@dataclass
class SystemContext:
    """What a system builds from: one task × chain, its compressed MainNet on ``device``."""

    task: Task
    data: dict[str, Encoded]
    num_classes: int
    model: nn.Module  # the chain's MainNet (compressed; the fp32 one for chain none)
    model_key: str  # its cache identity
    baseline: nn.Module  # the task's fp32 MainNet
    device: torch.device
    progress: bool
    stage: Callable[[Sequence[str]], StagedModel]  # the task's staging of ``model`` at the given taps
    mainnet_for: Callable[[str], tuple[nn.Module, str]] | None = None  # another chain's model and key
    chain: str = "none"  # the canonical chain ``model`` came from
    baseline_key: str = ""  # the fp32 MainNet's cache identity (systems that retrain start from it)
    # apply a chain to any model: (model, its key, chain) -> (compressed copy, key); what EENets need to put the
    # post-training steps (int8, casts) on the network they retrained
    compress: Callable[[nn.Module, str, str], tuple[nn.Module, str]] | None = None


@dataclass
class BuiltSystem:
    """A system's cascade parts before thresholds are chosen."""

    staged: StagedModel
    heads: list[nn.Module]
    policy: Policy
    identity: dict[str, Any]  # everything that makes these parts what they are (cache keys of trained heads ...)
    training_seconds: float  # training the heads took (as recorded when they were trained; cached ones too)
    params: int  # parameters the system adds to the MainNet
    # the validation step: (val trace, target pt, margin) → (policy, thresholds); None: one shared threshold on
    # ``policy``'s scores (sidenet.engine.trace.select_shared). Learned policies pick among fitted candidates here.
    choose: Callable[[Any, float, float], tuple[Policy, list[float]]] | None = None
    # [N val rows] whether the network the loss is measured against is right (None: the trace's own last column).
    # Systems that retrain the backbone give the original MainNet's, so selection counts what retraining cost.
    reference_val: Any = None
    # (val trace, test trace) -> JSON-able details of the system recorded with its rows (e.g. EENets' collapse)
    describe: Callable[[Any, Any], dict[str, Any]] | None = None
    # every policy ``choose`` may pick (learned systems fit several); empty: just ``policy``. A timing worker finds
    # the bench's pick among them by identity (sidenet.bench.pipeline.cascade_at) instead of selecting again.
    candidates: tuple[Policy, ...] = ()


@dataclass(frozen=True)
class ExitSystemConfig:
    """Base of every exit system's config; fields are strings as written in the grammar."""

    name: ClassVar[str]
    description: ClassVar[str]
    timed: ClassVar[bool] = True
    retrains_backbone: ClassVar[bool] = False
    has_exits: ClassVar[bool] = True
    # where the operating point's thresholds come from: "validation" (selected there), or a value the system fixes
    # itself (sidenet-noexit: "never-exit"); recorded in the row as threshold_source
    threshold_source: ClassVar[str] = "validation"
    # the system whose validation selection and sweep this one's rows show, when it only measures another's
    # overhead (sidenet-noexit: "sidenet"); None: its own
    overhead_of: ClassVar[str | None] = None
    # What a bench does with the system when the user does not say: the specs it measures when no exit system is
    # given (a system registered from outside measures nothing unasked), in ``default_rank`` order; and the chains
    # its cells run on — "every" chain a task runs (the suite's own question on each compression), only the
    # "plain" MainNet (an overhead that compression does not change), or the "system" chains (``none`` and the
    # task's ``exit_system_chains``: one compressed chain is enough for a complementarity verdict).
    bench_defaults: ClassVar[tuple[str, ...]] = ()
    default_rank: ClassVar[int] = 1000
    runs_on: ClassVar[str] = "system"
    # whether ``--bench-threshold`` fixes the threshold of this system's default spec (it keeps selection otherwise)
    takes_fixed_threshold: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        return {"system": self.name, **dataclasses.asdict(self)}

    def label(self) -> str:
        """The canonical spec: the name, then the fields that differ from their defaults, sorted."""
        changed = [
            (f.name, getattr(self, f.name))
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != f.default and f.default is not dataclasses.MISSING
        ]
        return self.name + (":" + ",".join(f"{k}={v}" for k, v in sorted(changed)) if changed else "")

    def build(self, ctx: SystemContext) -> BuiltSystem:
        raise UserError(f"exit system {self.name!r} has no cascade to build")

    def check_task(self, task: Task) -> None:
        """One-line UserError when this config cannot run on ``task`` (a tap its MainNet does not have, a small
        network chain that does not exist), found without data or training.

        Why apart from ``__post_init__``: a config is parsed without a task, but some of its values only mean
        something for one (tap names differ between a ResNet and a BERT). Checked when the settings are built, so a
        typo fails in a second, not after the MainNet trained. Default: nothing task-specific to check."""


EXIT_SYSTEMS: Registry[type[ExitSystemConfig]] = Registry("exit system")


def register_exit_system(cls: type[ExitSystemConfig]) -> type[ExitSystemConfig]:
    EXIT_SYSTEMS.add(cls.name, cls)
    return cls


def parse_exit_system(spec: str) -> ExitSystemConfig:
    """``NAME[:KEY=VALUE,...]`` → the registered config; one-line UserError for anything else."""
    step = parse_step(spec)
    cls = EXIT_SYSTEMS.get(step.name)
    fields = {f.name for f in dataclasses.fields(cls)}
    params = dict(step.params)
    unknown = sorted(set(params) - fields)
    if unknown:
        valid = ", ".join(sorted(fields)) or "none"
        raise UserError(f"exit system {step.name!r} has no parameter {unknown[0]!r} (valid: {valid})")
    return cls(**params)


RUNS_ON = ("every", "plain", "system")


def default_exits() -> tuple[str, ...]:
    """The specs a bench measures when no exit system is given: every registered system's ``bench_defaults``, by
    ``default_rank`` (then name). Read from the registry, so the list is what the systems declare, not a name list
    kept apart from them."""
    ranked = sorted((EXIT_SYSTEMS.get(n) for n in EXIT_SYSTEMS.names()), key=lambda c: (c.default_rank, c.name))
    return tuple(spec for cls in ranked for spec in cls.bench_defaults)


def canonical_exit(spec: str) -> str:
    return parse_exit_system(spec).label()


def _check_policy(name: str) -> None:
    POLICIES.get(name)


def all_taps(ctx: SystemContext) -> tuple[str, ...]:
    """Every tap that leaves a rest: ResNet stages 1–3, BERT layers 1 … L−1 of the (compressed) model."""
    layers = bert_layer_count(ctx.model)
    if layers is not None:
        return tuple(str(k) for k in range(1, layers))
    return RESNET_STAGES[:-1]


def check_taps(system: str, spec: str) -> None:
    """``all`` or distinct tap names joined by '/', each plain ASCII (whether they exist is a question for the
    task's model: :func:`check_taps_for`)."""
    if spec != "all":
        names = spec.split(TAP_SEPARATOR)
        if any(not _TAP_NAME.fullmatch(n) for n in names) or len(set(names)) != len(names):
            raise UserError(
                f"{system} taps {spec!r}: give distinct tap names (ASCII letters, digits, '.', '_', '-') joined by "
                "'/', e.g. layer1/layer2 or 1/3, or all"
            )


def check_taps_for(task: Task, system: str, spec: str) -> None:
    """One-line UserError unless ``task``'s MainNet can be cut at every tap of ``spec`` (``all`` always can).

    Why this way: which taps exist depends on the model (a ResNet's stages and blocks, a BERT's layer count), and
    the task's own staging (:meth:`Task.staged_model`, which a task may override) is the one authority on them. The
    architecture is built untrained (no data, no cache, the global RNG left as it was) and staged; the adapter's
    own message says what the taps may be."""
    if spec == "all":
        return
    try:
        with torch.random.fork_rng(devices=[]):
            model = task.build_mainnet(2)
    except UserError:
        raise
    except Exception:  # a model that cannot be built here fails where it is built for real, as before
        return
    try:
        task.staged_model(model, tuple(spec.split(TAP_SEPARATOR)))
    except UserError as exc:
        raise UserError(f"{system} taps {spec!r} do not fit task {task.name!r}: {exc}") from None


def parse_count(system: str, name: str, value: str, low: int, high: int) -> int:
    """``value`` as an integer in ``[low, high]`` written in ASCII digits; else a one-line UserError with the range.

    Why not ``str.isdigit``: it is true for '²' and other Unicode digits that ``int`` refuses (a traceback, not a
    message), and a count without an upper bound runs for days, or passes ``int``'s digit limit."""
    if not (value.isascii() and value.isdigit()) or len(value) > len(str(high)) + 2 or not low <= int(value) <= high:
        raise UserError(f"{system} {name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def resolve_taps(ctx: SystemContext, spec: str) -> tuple[str, ...]:
    return all_taps(ctx) if spec == "all" else tuple(spec.split(TAP_SEPARATOR))


__all__ = [
    "EXIT_SYSTEMS",
    "RUNS_ON",
    "BuiltSystem",
    "ExitSystemConfig",
    "SystemContext",
    "all_taps",
    "canonical_exit",
    "check_taps",
    "check_taps_for",
    "default_exits",
    "parse_count",
    "parse_exit_system",
    "register_exit_system",
    "resolve_taps",
]
