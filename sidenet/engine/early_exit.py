"""``EarlyExit``: MainNet head → SideNet → (only the rows that did not exit) → MainNet rest.

A thin alias of the one-exit :class:`~sidenet.engine.cascade.Cascade`, kept because the README's "Library use"
promises it (``EarlyExit(split, side, threshold)``, with ``split``/``side``/``threshold`` attributes); the bench builds
every cascade, the SideNet's included, as a ``Cascade`` from an exit system's parts. Rows whose confidence passes the
threshold are compacted out of the batch before ``rest`` runs, so they never touch the rest of the network (tests
instrument ``rest``).
"""

from __future__ import annotations

from torch import nn

from sidenet.engine.cascade import Cascade, ExitOutput
from sidenet.engine.policies import Policy, make_policy
from sidenet_core.staged import StagedModel


class EarlyExit(Cascade):
    """A MainNet split plus a SideNet at its (first) tap, with an exit threshold.

    ``threshold`` 0 exits every row; any value above 1 exits none (confidences lie in [0, 1]).
    """

    def __init__(self, split: StagedModel, side: nn.Module, threshold: float, policy: str | Policy = "softmax") -> None:
        super().__init__(split, [side], make_policy(policy) if isinstance(policy, str) else policy, [threshold])
        self.split = split
        self.side = side
        self.threshold = float(threshold)


__all__ = ["EarlyExit", "ExitOutput"]
