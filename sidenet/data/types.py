"""The one container every data loader returns, so tasks never care where the data came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


# eq=False: a generated __eq__ would compare tensors element-wise and raise; identity is what we want.
@dataclass(frozen=True, eq=False)
class Splits:
    """Train/val/test splits of one labelled data set. inputs are either a float32 tensor [N, C, H, W]
    in [0, 1] (images) or a tuple[str, ...] (texts); labels an int64 tensor [N]."""

    train: tuple[Any, torch.Tensor]
    val: tuple[Any, torch.Tensor]
    test: tuple[Any, torch.Tensor]
    classes: tuple[str, ...]
    source: str  # one line: where it came from + how the split was made (goes into reports)

    def __post_init__(self) -> None:
        if not self.classes or not all(isinstance(c, str) and c for c in self.classes):
            raise ValueError(f"classes must be a non-empty tuple of names, got {self.classes!r}")
        if not self.source.strip() or "\n" in self.source:
            raise ValueError("source must be one non-empty line (it goes into reports)")
        kinds = {_check_part(name, part, len(self.classes)) for name, part in self.parts()}
        if len(kinds) != 1:
            raise ValueError("train/val/test must all be images or all be texts, not a mix")

    def parts(self) -> tuple[tuple[str, tuple[Any, torch.Tensor]], ...]:
        """(name, (inputs, labels)) for train, val and test, in that order."""
        return (("train", self.train), ("val", self.val), ("test", self.test))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def is_text(self) -> bool:
        return isinstance(self.train[0], tuple)

    def sizes(self) -> dict[str, int]:
        """Examples per split, e.g. for the report's data table."""
        return {name: len(part[1]) for name, part in self.parts()}


def _check_part(name: str, part: tuple[Any, torch.Tensor], num_classes: int) -> str:
    """Validate one split; return its kind ("image" or "text") so mixes can be caught."""
    if not isinstance(part, tuple) or len(part) != 2:
        raise ValueError(f"{name} must be an (inputs, labels) pair")
    inputs, labels = part
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
        raise ValueError(f"{name} labels must be a 1-D int64 tensor")
    if isinstance(inputs, torch.Tensor):
        if inputs.dtype != torch.float32 or inputs.dim() != 4:
            raise ValueError(
                f"{name} images must be a float32 [N, C, H, W] tensor, got {inputs.dtype} {tuple(inputs.shape)}"
            )
        if inputs.numel() and (float(inputs.min()) < 0.0 or float(inputs.max()) > 1.0):
            raise ValueError(f"{name} images must lie in [0, 1]; divide raw bytes by 255")
        kind = "image"
    elif isinstance(inputs, tuple):
        if not all(isinstance(t, str) for t in inputs):
            raise ValueError(f"{name} texts must all be str")
        kind = "text"
    else:
        raise ValueError(f"{name} inputs must be a float32 tensor or a tuple of str, got {type(inputs).__name__}")
    if len(inputs) != len(labels):
        raise ValueError(f"{name} has {len(inputs)} inputs but {len(labels)} labels")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{name} labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]"
        )
    return kind
