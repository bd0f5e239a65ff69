"""Exit policies: turn SideNet logits into a confidence in [0, 1]; a row exits if confidence >= threshold.

``softmax`` (the max softmax probability) is the SideNet paper's rule. Policies are registered so a
user can add their own with ``@register_policy("name")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sidenet.registry import Registry


@dataclass(frozen=True)
class ExitPolicy:
    name: str
    description: str
    confidence: Callable[[torch.Tensor], torch.Tensor]


POLICIES: Registry[ExitPolicy] = Registry("exit policy")


def register_policy(name: str, description: str) -> Callable[[Callable[[torch.Tensor], torch.Tensor]], ExitPolicy]:
    def deco(fn: Callable[[torch.Tensor], torch.Tensor]) -> ExitPolicy:
        return POLICIES.add(name, ExitPolicy(name, description, fn))

    return deco


@register_policy("softmax", "max softmax probability of the SideNet (Morisot 2020)")
def softmax_confidence(logits: torch.Tensor) -> torch.Tensor:
    return logits.softmax(-1).amax(-1)


@register_policy("entropy", "1 - normalised entropy of the SideNet's softmax")
def entropy_confidence(logits: torch.Tensor) -> torch.Tensor:
    logp = logits.log_softmax(-1)
    ent = -(logp.exp() * logp).sum(-1)
    return (1.0 - ent / math.log(logits.shape[-1])).clamp(0.0, 1.0)
