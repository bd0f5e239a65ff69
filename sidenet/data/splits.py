"""Seeded stratified splitting with exact split sizes.

Why not a per-class shuffle-and-cut: rounding each class separately makes the split sizes drift
(e.g. 4999 instead of 5000 validation examples). Here the sizes are rounded once for the whole set
(largest remainder) and each class gets its share rounded down or up, so every class keeps its
proportion to within one example *and* every split has exactly the requested size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from sidenet.data.types import Splits
from sidenet_core.errors import UserError

_SUM_TOLERANCE = 1e-6


def stratified_split(labels: torch.Tensor, fractions: Sequence[float], seed: int) -> list[torch.Tensor]:
    """Split ``range(len(labels))`` into ``len(fractions)`` disjoint index tensors, one per fraction.

    Each class is divided in proportion to ``fractions`` (within one example per class and split);
    split sizes are ``len(labels) * fraction`` rounded by largest remainder. Deterministic for a
    seed; the returned indices are sorted so the original order survives inside each split.
    """
    fracs = _check_fractions(fractions)
    labels = _check_labels(labels)
    classes, counts = torch.unique(labels, sorted=True, return_counts=True)
    table = _allocate(counts.tolist(), fracs)
    gen = torch.Generator().manual_seed(int(seed))
    parts: list[list[torch.Tensor]] = [[] for _ in fracs]
    for row, cls in zip(table, classes.tolist(), strict=True):
        members = torch.nonzero(labels == cls, as_tuple=True)[0]
        shuffled = members[torch.randperm(len(members), generator=gen)]
        for j, chunk in enumerate(torch.split(shuffled, row)):
            parts[j].append(chunk)
    return [torch.sort(torch.cat(p)).values if p else torch.empty(0, dtype=torch.int64) for p in parts]


def _check_fractions(fractions: Sequence[float]) -> list[float]:
    fracs = [float(f) for f in fractions]
    if not fracs:
        raise UserError("stratified_split needs at least one fraction, e.g. [0.8, 0.2]")
    if any(not math.isfinite(f) or f < 0 for f in fracs):
        raise UserError(f"split fractions must be finite and >= 0, got {fracs}; e.g. [0.7, 0.15, 0.15]")
    if abs(sum(fracs) - 1.0) > _SUM_TOLERANCE:
        raise UserError(f"split fractions must sum to 1, got {fracs} (sum {sum(fracs):.6g}); rescale them")
    total = sum(fracs)
    return [f / total for f in fracs]


def _check_labels(labels: torch.Tensor) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
        raise UserError("stratified_split needs a 1-D label tensor; pass labels, not inputs")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise UserError(f"stratified_split needs integer class labels, got {labels.dtype}; cast with .long()")
    return labels.long()


def _largest_remainder(total: int, weights: Sequence[float]) -> list[int]:
    """Integers proportional to ``weights`` that sum to ``total`` (ties go to the earlier entry)."""
    ideal = [total * w for w in weights]
    out = [_floor(x) for x in ideal]
    order = sorted(range(len(ideal)), key=lambda j: (-(ideal[j] - out[j]), j))
    diff = total - sum(out)
    for j in order[:diff]:
        out[j] += 1
    for j in [j for j in reversed(order) if out[j] > 0][: max(0, -diff)]:  # float fuzz overshoot
        out[j] -= 1
    return out


def _floor(x: float) -> int:
    """floor() that treats 5499.9999999 (float error in 6000 * 55000/60000) as 5500."""
    return math.floor(x + 1e-9 * max(1.0, abs(x)))


def _allocate(counts: Sequence[int], fracs: Sequence[float]) -> list[list[int]]:
    """Per-class split sizes: row c sums to counts[c], column j to the global size of split j.

    Each cell is floor or floor + 1 of its ideal ``counts[c] * fracs[j]``; which cells get the + 1
    is a 0/1 matrix with given row and column sums, built with Ryser's greedy (always hand a row's
    ones to the columns that still need the most). If the global sizes cannot be met that way
    (never seen in practice) each class is rounded on its own instead.
    """
    fallback = [_largest_remainder(n, fracs) for n in counts]
    floors = [[_floor(n * f) for f in fracs] for n in counts]
    row_need = [n - sum(row) for n, row in zip(counts, floors, strict=True)]
    sizes = _largest_remainder(sum(counts), fracs)
    col_need = [t - sum(col) for t, col in zip(sizes, zip(*floors, strict=True), strict=True)]
    if min(row_need + col_need) < 0:
        return fallback
    table = [row[:] for row in floors]
    for c, need in enumerate(row_need):
        residual = [counts[c] * f - fl for f, fl in zip(fracs, floors[c], strict=True)]
        order = sorted(range(len(fracs)), key=lambda j: (-col_need[j], -residual[j], j))
        chosen = [j for j in order[:need] if col_need[j] > 0]
        if len(chosen) < need:
            return fallback
        for j in chosen:
            table[c][j] += 1
            col_need[j] -= 1
    return table


def carve_val_from_train(
    name: str,
    folder: object,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    classes: tuple[str, ...],
    val_size: int,
    seed: int,
) -> Splits:
    """Official train/test image sets → train minus a seeded stratified val of ``val_size``, val, test."""
    train_x, train_y = train
    n = len(train_y)
    if not 0 <= val_size < n:
        raise UserError(f"val_size must be in [0, {n}) for {name}'s {n} training images, got {val_size}")
    fit_idx, val_idx = stratified_split(train_y, [(n - val_size) / n, val_size / n], seed)
    return Splits(
        train=(train_x[fit_idx], train_y[fit_idx]),
        val=(train_x[val_idx], train_y[val_idx]),
        test=test,
        classes=classes,
        source=(
            f"{name} from {folder}; train = official {n} train minus a seeded (seed={seed}) "
            f"stratified val of {val_size}; test = official {len(test[1])} test"
        ),
    )
