"""Publishing a report: figures staged then moved into ``<stem>_plots/``, the Markdown replaced atomically (written
through a symlink to its target), and stale figures of an earlier report at that path pruned.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from sidenet.report import plots, render
from sidenet_core import atomic


def _prune_stale_plots(plot_dir: Path, keep: list[Path], manifest: Path) -> None:
    """Drop figures an earlier report at this path wrote that this one no longer writes, then record ``keep``.

    Only names listed in ``manifest`` (written by the previous report) are ever removed: files the user put
    in the plots folder are never touched, and a folder without a manifest (an older version wrote it) is
    left alone. The manifest lives beside the Markdown (hidden), not in the folder, which holds figures only.
    """
    names = sorted({p.name for p in keep})
    previous: set[str] = set()
    try:
        record = json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        record = None  # unreadable: treat as absent (prune nothing)
    if isinstance(record, dict) and record.get("plots_dir") == plot_dir.name and isinstance(record.get("files"), list):
        previous = {
            n
            for n in record["files"]
            if isinstance(n, str) and n.endswith(".png") and n == Path(n).name and not n.startswith(".")
        }
    for name in sorted(previous - set(names)):
        old = plot_dir / name
        if old.is_file() and not old.is_symlink():  # what we wrote is a regular file; anything else is not ours
            old.unlink(missing_ok=True)
    if names or record is not None:
        atomic.write_json(manifest, {"plots_dir": plot_dir.name, "files": names, "written_by": "sidenet-bench"})


def write_report(results: dict[str, Any], out_md: Path) -> Path:
    """Write plots to ``<stem>_plots/`` next to ``out_md``, then the Markdown; each file replaced atomically.

    The Markdown is rendered before anything touches the disk. The figures are rendered into a hidden staging
    folder beside the report and the Markdown into its temp file; only when all of that worked are the figures
    moved into ``<stem>_plots/`` (one atomic rename each) and the Markdown published. So a failure while
    rendering or writing (a full disk, a report name the file system refuses) leaves the previous report and
    its plots folder as they were, with no figure of the failed report behind: none was published. Then figures
    of the previous report that this one no longer has are removed, as listed in the hidden manifest
    ``.<name>.plots.json`` beside ``out_md`` (:func:`_prune_stale_plots`); other files in the plots folder are
    only ever replaced by a figure's name.

    A Markdown path that is a symlink is written through: its target is replaced (atomically, in the target's
    folder) and the link kept, as the results JSON is (:func:`sidenet_core.atomic.atomic_path`). The figures, the
    manifest and the image links stay with the path the caller named, where the store looks for them.
    """
    out_md = Path(out_md)
    plot_dir = out_md.parent / f"{out_md.stem}_plots"
    markdown = render.render_markdown(results, plot_dir.name)  # looked up at call time: tests replace it
    created: list[Path] = []  # figures this call added to the plots folder (not replaced): undone on failure
    try:
        with (
            atomic.atomic_path(out_md, follow_symlinks=True) as md_tmp,
            atomic.staging_dir(out_md.parent, plot_dir) as stage,
        ):
            md_tmp.write_text(markdown, encoding="utf-8")
            staged = plots.write_plots(results, stage)
            written = _publish_plots(staged, plot_dir, created)
    except BaseException:
        _unpublish(created, plot_dir)
        raise
    _prune_stale_plots(plot_dir, written, out_md.with_name(f".{out_md.name}.plots.json"))
    return out_md


def _publish_plots(staged: list[Path], plot_dir: Path, created: list[Path]) -> list[Path]:
    """Move the staged figures into ``plot_dir`` (created if needed), one atomic rename each; ``created`` collects
    the names that did not exist there before, and the folder itself when this made it."""
    if not staged:
        return []
    if not plot_dir.is_dir():
        plot_dir.mkdir()
        created.append(plot_dir)
    published = []
    for figure in staged:
        target = plot_dir / figure.name
        new = not (target.exists() or target.is_symlink())
        os.replace(figure, target)
        if new:
            created.append(target)
        published.append(target)
    return published


def _unpublish(created: list[Path], plot_dir: Path) -> None:
    """Undo :func:`_publish_plots` as far as it can: figures it added go, and the plots folder if it made it."""
    for path in reversed(created):  # the folder, made first, goes last (once empty)
        with contextlib.suppress(OSError):
            if path == plot_dir:
                path.rmdir()
            else:
                path.unlink()
