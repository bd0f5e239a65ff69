"""The SideNet (Morisot 2020, "Add a SideNet to your MainNet"): one hidden layer on a pooled tap."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from sidenet_core.errors import UserError


@dataclass(frozen=True)
class SideNetConfig:
    """How the SideNet is built and trained (the MainNet stays frozen throughout).

    ``targets``: ``labels`` (cross-entropy on ground truth), ``soft`` (KL to the MainNet's softmax at
    ``temperature`` — better calibrated, and the exit is judged against the MainNet anyway), or
    ``both`` (the mean of the two).
    """

    hidden: int = 128
    dropout: float = 0.1
    targets: Literal["labels", "soft", "both"] = "soft"
    temperature: float = 2.0
    epochs: int = 20
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden < 1:
            raise UserError(f"SideNet hidden width must be >= 1, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"SideNet dropout must be in [0, 1), got {self.dropout}")
        if self.targets not in ("labels", "soft", "both"):
            raise UserError(f"SideNet targets must be labels, soft or both, got {self.targets!r}")
        if self.temperature <= 0:
            raise UserError(f"SideNet temperature must be > 0, got {self.temperature}")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise UserError("SideNet epochs, batch_size and lr must be positive")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class SideNet(nn.Module):
    """Linear → ReLU → (dropout) → Linear on a pooled feature ``[B, in_dim]``."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_dim, self.num_classes, self.hidden = in_dim, num_classes, hidden
        # Fixed standardisation of the tap feature (set from training features by ``fit_sidenet``):
        # pooled activations have very different scales at different taps; this keeps one recipe.
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_std", torch.ones(in_dim))
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.feature_mean) / self.feature_std)
