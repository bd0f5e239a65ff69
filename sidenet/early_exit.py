"""``EarlyExit``: MainNet head → SideNet → (only the rows that did not exit) → MainNet rest.

The exit is real: rows whose confidence passes the threshold are compacted out of the batch before
``rest`` runs, so they never touch the rest of the network (tests instrument ``rest`` to prove it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sidenet.policies import POLICIES
from sidenet.sidenet import SideNet
from sidenet.split import Inputs, Split


@dataclass
class ExitOutput:
    logits: torch.Tensor  # [B, C]: the SideNet's for exited rows, the MainNet's for the others
    exited: torch.Tensor  # [B] bool
    confidence: torch.Tensor  # [B]


class EarlyExit(nn.Module):
    """A MainNet split plus a SideNet at its tap, with an exit threshold.

    ``threshold`` 0 exits every row; any value above 1 exits none (confidences lie in [0, 1]).
    """

    def __init__(self, split: Split, side: SideNet, threshold: float, policy: str = "softmax") -> None:
        super().__init__()
        if not threshold >= 0.0:  # also rejects NaN
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        self.split = split
        self.side = side
        self.threshold = float(threshold)
        self.policy = POLICIES.get(policy)

    @torch.no_grad()
    def run(self, inputs: Inputs) -> ExitOutput:
        state = self.split.head(inputs)
        side_logits = self.side(self.split.features(state))
        conf = self.policy.confidence(side_logits)
        exited = conf >= self.threshold
        stay = (~exited).nonzero().squeeze(1)
        if stay.numel() == 0:
            return ExitOutput(side_logits, exited, conf)
        if stay.numel() == exited.numel():  # nobody exits (always so at bs 1): no row copies, no scatter
            return ExitOutput(self.split.rest(state), exited, conf)
        rest_logits = self.split.rest(self.split.select(state, stay))
        logits = side_logits.to(rest_logits.dtype).index_copy(0, stay, rest_logits)
        return ExitOutput(logits, exited, conf)

    def forward(self, inputs: Inputs) -> torch.Tensor:
        return self.run(inputs).logits
