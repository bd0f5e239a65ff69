"""Every Python example in the README's "Library use" and "Extending" sections runs, on tiny models.

Why: those sections are what a new user copies first; an example that drifted from the API (a renamed import, a
changed signature) fails here instead of in their hands. The names a block leaves to the reader (``my_resnet``,
``x_train``, ``side1`` …) are given tiny stand-ins; everything the block itself writes runs as written.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from sidenet import SideNetConfig, fit_sidenet, stage_model
from sidenet.data import tiny_image_splits
from sidenet.exits import EXIT_SYSTEMS, parse_exit_system
from sidenet.tasks import DATASETS, TASKS
from sidenet_core.layouts import build_resnet

README = Path(__file__).resolve().parent.parent / "README.md"
SECTIONS = ("## Library use", "## Extending")
_FENCE = re.compile(r"^( *)```python\n(.*?)^\1```", re.M | re.S)


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def readme_blocks() -> list[tuple[str, str]]:
    """(id, dedented code) of every ```python block in the README's library sections, in order."""
    text = README.read_text(encoding="utf-8")
    blocks: list[tuple[str, str]] = []
    for heading in SECTIONS:
        for i, match in enumerate(_FENCE.finditer(_section(text, heading))):
            code = textwrap.dedent("\n".join(line[len(match.group(1)) :] for line in match.group(2).splitlines()))
            blocks.append((f"{heading[3:].split(':')[0].strip().lower().replace(' ', '-')}-{i}", code))
    return blocks


def test_the_readme_has_the_examples_this_file_runs() -> None:
    """The extraction itself can fail: the sections exist and hold the examples named below."""
    ids = [block_id for block_id, _ in readme_blocks()]
    assert ids == ["library-use-0", "library-use-1", "extending-0", "extending-1"], ids


@pytest.fixture
def stand_ins() -> dict[str, Any]:
    """What the README leaves to the reader: a 10-class tiny ResNet and its data, trained SideNets at three taps."""
    torch.manual_seed(0)
    model = build_resnet("resnet10", 8, 1, 10).eval()
    x_train, y_train = torch.rand(64, 1, 16, 16), torch.randint(0, 10, (64,))
    staged = stage_model(model, ("layer1", "layer2", "layer3"))
    feats = []
    with torch.no_grad():
        main_logits = model(x_train)
        state = staged.segment(0, x_train)
        for i in range(3):
            feats.append(staged.features(state))
            state = staged.segment(i + 1, state)
    sides = [fit_sidenet(f, y_train, main_logits, 10, SideNetConfig(epochs=1), progress=False) for f in feats]
    return {
        "my_resnet": model,
        "x_train": x_train,
        "y_train": y_train,
        "x": torch.rand(5, 1, 16, 16),
        "side1": sides[0],
        "side2": sides[1],
        "side3": sides[2],
        "load_my_splits": tiny_image_splits,
    }


def _run(block_id: str, scope: dict[str, Any]) -> dict[str, Any]:
    code = dict(readme_blocks())[block_id]
    exec(compile(code, f"README.md[{block_id}]", "exec"), scope)  # our own README, on purpose
    return scope


def test_library_use_one_sidenet(stand_ins: dict[str, Any]) -> None:
    scope = _run("library-use-0", dict(stand_ins))
    out = scope["out"]
    assert out.logits.shape == (5, 10)
    assert out.exited.dtype == torch.bool and out.exited.shape == (5,)


def test_library_use_several_exits(stand_ins: dict[str, Any]) -> None:
    scope = _run("library-use-1", dict(stand_ins))
    out = scope["out"]
    assert out.logits.shape == (5, 10)
    assert set(out.exit_index.tolist()) <= {0, 1, 2, 3}


@pytest.fixture
def clean_registries() -> Iterator[None]:
    """The examples register a data set, a task and an exit system; leave the registries as they were."""
    before = (set(DATASETS), set(TASKS), set(EXIT_SYSTEMS))
    yield
    for registry, names in zip((DATASETS, TASKS, EXIT_SYSTEMS), before, strict=True):
        for name in set(registry) - names:
            registry.remove(name)


def test_extending_a_task(stand_ins: dict[str, Any], clean_registries: None) -> None:
    _run("extending-0", dict(stand_ins))
    task = TASKS.get("my-task")
    assert task.config.dataset == "my-data" and task.config.tap == "layer2"
    assert DATASETS.get("my-data")().num_classes == tiny_image_splits().num_classes


def test_extending_an_exit_system_runs_through_the_bench_path(clean_registries: None) -> None:
    """The README's exit system registers, parses from the grammar and runs the measuring path on a tiny task:
    thresholds chosen on validation, its real cascade on test, rows leaving at both of its exits' taps."""
    from sidenet.bench.pipeline import load_or_train_mainnet, load_task_data, prepare_system
    from sidenet.tasks.compressed import compress_mainnet

    scope = _run("extending-1", {})
    cls = scope["EntropyPair"]
    assert EXIT_SYSTEMS.get("entropy-pair") is cls
    config = parse_exit_system("entropy-pair:taps=layer1/layer3")
    task = TASKS.get("tiny-resnet")
    data = load_task_data(task)
    mainnet, meta = load_or_train_mainnet(task, data.data, data.num_classes, progress=False)
    compressed = compress_mainnet(task, mainnet, meta["key"], data.data, "none", progress=False)
    p = prepare_system(task, data.data, data.num_classes, config, compressed, mainnet, progress=False)
    assert p.built.staged.taps == ("layer1", "layer3")
    assert p.built.policy.name == "entropy"
    assert len(p.thresholds) == 2 and 0.0 <= p.test_eval["accuracy"] <= 1.0
    assert len(p.test_eval["exit_rates"]) == 2
