"""Small learnable synthetic data for the ``tiny-*`` CI tasks: the whole pipeline runs in seconds,
with real learning curves (neither chance nor a trivial 100 %) and no files or network."""

from __future__ import annotations

import math
import random

import torch

from sidenet.data.types import Splits
from sidenet_core.errors import UserError

POSITIVE_WORDS: tuple[str, ...] = (
    "good",
    "great",
    "fine",
    "excellent",
    "wonderful",
    "enjoyable",
    "superb",
    "lovely",
)
NEGATIVE_WORDS: tuple[str, ...] = ("bad", "awful", "poor", "terrible", "boring", "dull", "weak", "horrible")
FILLER_WORDS: tuple[str, ...] = (
    "the", "a", "this", "movie", "film", "was", "is", "it", "plot", "acting", "story", "and",
    "very", "quite", "really", "with", "of", "characters", "ending", "music", "overall", "but", "scenes",
)  # fmt: skip
# Every word tiny_text_splits can emit (lower-case), e.g. to build a test WordPiece vocabulary.
TINY_TEXT_VOCAB: tuple[str, ...] = tuple(sorted({*FILLER_WORDS, *POSITIVE_WORDS, *NEGATIVE_WORDS}))
TEXT_CLASSES: tuple[str, ...] = ("negative", "positive")
LABEL_NOISE = 0.05
_MIN_WORDS, _MAX_WORDS = 4, 12


def tiny_image_splits(
    n_train: int = 512,
    n_val: int = 256,
    n_test: int = 256,
    num_classes: int = 4,
    size: int = 16,
    channels: int = 1,
    seed: int = 0,
) -> Splits:
    """Noisy images whose class is the location of a faint bright square, with 5 % of labels flipped.

    A tiny CNN learns it in a few epochs; faint patches and the flipped labels keep accuracy below 100 %.
    """
    _check_sizes(n_train, n_val, n_test)
    grid = math.ceil(math.sqrt(num_classes))
    if num_classes < 2 or channels < 1 or size // grid < 2:
        raise UserError(
            f"tiny images need num_classes >= 2, channels >= 1, size >= {2 * grid}; "
            f"got {num_classes}, {channels}, {size}"
        )
    gen = torch.Generator().manual_seed(seed)
    parts = [_images(n, num_classes, size, channels, grid, gen) for n in (n_train, n_val, n_test)]
    return Splits(
        train=parts[0],
        val=parts[1],
        test=parts[2],
        classes=tuple(f"patch{k}" for k in range(num_classes)),
        source=(
            f"synthetic tiny images (seed={seed}): {channels}x{size}x{size} noise + a class-located square, "
            f"{num_classes} classes, {LABEL_NOISE:.0%} label noise; "
            f"generated {n_train}/{n_val}/{n_test} train/val/test"
        ),
    )


def tiny_text_splits(n_train: int = 512, n_val: int = 256, n_test: int = 256, seed: int = 0) -> Splits:
    """Two-class sentences of 4-12 words: filler plus mostly positive or negative words; 5 % flipped."""
    _check_sizes(n_train, n_val, n_test)
    rng = random.Random(seed)
    parts = [_texts(n, rng) for n in (n_train, n_val, n_test)]
    return Splits(
        train=parts[0],
        val=parts[1],
        test=parts[2],
        classes=TEXT_CLASSES,
        source=(
            f"synthetic tiny sentiment texts (seed={seed}): {_MIN_WORDS}-{_MAX_WORDS} words from a "
            f"{len(TINY_TEXT_VOCAB)}-word vocabulary, {LABEL_NOISE:.0%} label noise; "
            f"generated {n_train}/{n_val}/{n_test} train/val/test"
        ),
    )


def _check_sizes(*sizes: int) -> None:
    if any(n < 1 for n in sizes):
        raise UserError(f"synthetic split sizes must all be >= 1, got {list(sizes)}")


def _balanced_labels(n: int, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """Every class present (when n >= num_classes) and as balanced as n allows."""
    return (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]


def _flip_some(labels: torch.Tensor, num_classes: int, gen: torch.Generator) -> torch.Tensor:
    """Replace LABEL_NOISE of the labels by a different class, so no model can reach 100 %."""
    flip = torch.rand(len(labels), generator=gen) < LABEL_NOISE
    shift = torch.randint(1, num_classes, (len(labels),), generator=gen)
    return torch.where(flip, (labels + shift) % num_classes, labels)


def _images(
    n: int, num_classes: int, size: int, channels: int, grid: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    clean = _balanced_labels(n, num_classes, gen)
    cell = size // grid
    patch = max(2, cell // 2)
    images = 0.25 + 0.2 * torch.randn(n, channels, size, size, generator=gen)
    contrast = 0.15 + 0.45 * torch.rand(n, generator=gen)  # faint patches are the hard examples
    jitter = torch.randint(-1, 2, (n, 2), generator=gen)
    for i, k in enumerate(clean.tolist()):
        top = _clamp((k // grid) * cell + (cell - patch) // 2 + int(jitter[i, 0]), size - patch)
        left = _clamp((k % grid) * cell + (cell - patch) // 2 + int(jitter[i, 1]), size - patch)
        images[i, :, top : top + patch, left : left + patch] += contrast[i]
    return images.clamp_(0.0, 1.0), _flip_some(clean, num_classes, gen)


def _clamp(value: int, high: int) -> int:
    return min(max(value, 0), high)


def _texts(n: int, rng: random.Random) -> tuple[tuple[str, ...], torch.Tensor]:
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    clean = _balanced_labels(n, 2, gen)
    texts = tuple(_sentence(bool(label), rng) for label in clean.tolist())
    return texts, _flip_some(clean, 2, gen)


def _sentence(positive: bool, rng: random.Random) -> str:
    """Filler words plus 1-3 class words; sometimes one opposite word, always outnumbered."""
    own, other = (POSITIVE_WORDS, NEGATIVE_WORDS) if positive else (NEGATIVE_WORDS, POSITIVE_WORDS)
    length = rng.randint(_MIN_WORDS, _MAX_WORDS)
    n_own = rng.randint(1, 3)
    words = [rng.choice(own) for _ in range(n_own)]
    if n_own >= 2 and rng.random() < 0.3:
        words.append(rng.choice(other))
    words += [rng.choice(FILLER_WORDS) for _ in range(length - len(words))]
    rng.shuffle(words)
    return " ".join(words)
