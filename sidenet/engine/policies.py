"""Exit policies: at an exit, a score in [0, 1] per row; a row leaves when its score reaches the exit's threshold.

A policy is an object, not a function, because the systems after the SideNet need state: Bolukbasi et al.'s
policy is *trained* on an exit trace (``fit``), and whatever it learned must be part of the cache identity of
what it decides (``identity``). The SideNet paper's rule (``softmax``: the max softmax probability) and
``entropy`` need neither; they are stateless and registered as functions of the exit's logits.

Registry: ``POLICIES`` maps a name to an entry whose ``new()`` gives a policy ready to ``fit``; stateless entries
return themselves. An exit system names its policy in the chain grammar (``sidenet:policy=entropy``). A user adds
one with ``@register_policy("name", "description")`` on ``logits -> confidence`` or registers any object with
``new()`` in ``POLICIES``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from sidenet_core.errors import UserError
from sidenet_core.registry import Registry


@dataclass(frozen=True)
class ExitView:
    """What a policy sees at one exit: the exit head's logits, the tap's pooled features, which exit it is, and
    the head's own confidence where the head has a confidence branch (EENets)."""

    logits: torch.Tensor  # [B, C]
    features: torch.Tensor | None = None  # [B, D], for policies that look past the softmax
    exit_index: int = 0
    confidence: torch.Tensor | None = None  # [B] in [0, 1]: the exit head's own confidence branch, if it has one


def head_output(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An exit head returns its logits, or ``(logits [B, C], confidence [B, 1] or [B])`` when it has a confidence
    branch of its own (EENets' exit blocks); the one place that tells the two apart."""
    if isinstance(out, tuple):
        logits, confidence = out
        return logits, confidence.reshape(-1)
    return out, None


class Policy(Protocol):
    name: str

    def score(self, view: ExitView) -> torch.Tensor:
        """[B] scores in [0, 1]; a row exits where score ≥ threshold."""
        ...

    def fit(self, trace: Any) -> None:
        """Learn from an exit trace (sidenet.engine.trace.ExitTrace); stateless policies ignore it."""
        ...

    def identity(self) -> dict[str, Any]:
        """JSON-able: what, besides its name, makes this policy decide differently (for cache keys)."""
        ...


@dataclass(frozen=True)
class ConfidencePolicy:
    """A stateless policy: a function of the exit's logits alone."""

    name: str
    description: str
    confidence: Callable[[torch.Tensor], torch.Tensor] = field(compare=False)

    def new(self) -> ConfidencePolicy:
        return self

    def score(self, view: ExitView) -> torch.Tensor:
        return self.confidence(view.logits)

    def fit(self, trace: Any) -> None:
        return None

    def identity(self) -> dict[str, Any]:
        return {"name": self.name}


POLICIES: Registry[Any] = Registry("exit policy")


def make_policy(name: str) -> Policy:
    """A fresh policy of the registered kind ``name`` (one-line error naming the valid ones otherwise)."""
    return POLICIES.get(name).new()


def register_policy(name: str, description: str) -> Callable[[Callable[[torch.Tensor], torch.Tensor]], Any]:
    """Register ``logits [B, C] -> confidence [B]`` as a stateless policy called ``name``."""

    def deco(fn: Callable[[torch.Tensor], torch.Tensor]) -> ConfidencePolicy:
        return POLICIES.add(name, ConfidencePolicy(name, description, fn))

    return deco


@register_policy("softmax", "max softmax probability of the exit head (Morisot 2020)")
def softmax_confidence(logits: torch.Tensor) -> torch.Tensor:
    return logits.softmax(-1).amax(-1)


@register_policy("entropy", "1 - normalised entropy of the exit head's softmax")
def entropy_confidence(logits: torch.Tensor) -> torch.Tensor:
    logp = logits.log_softmax(-1)
    ent = -(logp.exp() * logp).sum(-1)
    return (1.0 - ent / math.log(logits.shape[-1])).clamp(0.0, 1.0)


@dataclass(frozen=True)
class BranchPolicy:
    """The exit head's own confidence branch (EENets: a sigmoid trained with the backbone); heads without one
    (a SideNet returns logits only) cannot use it: a one-line error, not a silent fallback to the softmax."""

    name: str = "branch"
    description: str = "the exit head's own confidence branch (EENets, Demir & Akbas 2024)"

    def new(self) -> BranchPolicy:
        return self

    def score(self, view: ExitView) -> torch.Tensor:
        if view.confidence is None:
            raise UserError("policy 'branch' needs exit heads with a confidence branch (eenet); use softmax")
        return view.confidence

    def fit(self, trace: Any) -> None:
        return None

    def identity(self) -> dict[str, Any]:
        return {"name": self.name}


POLICIES.add("branch", BranchPolicy())
