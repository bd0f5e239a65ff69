"""The cache keys of compressed MainNets are pinned: a changed key silently orphans every cached trained step (hours
of retraining on the real tasks), so refactoring how chains are parsed or how compressors declare their traits must
leave them alone.

The keys below were computed at commit 0a25fac (before compressors carried their traits in the registry, issue
#22) by ``compress_mainnet`` on the tiny tasks, with the parent MainNet's key fixed to ``mainnet-pinned`` and the
library versions that every artifact key hashes fixed to ``{"pinned": "1"}`` (so the pins hold on any install; what
they guard is the recipe a step is keyed by: the parent's key, every config field, the task's fine-tuning recipe).
The MainNet is untrained: keys do not depend on weights, and this keeps the test fast.
"""

from __future__ import annotations

import pytest
import torch

from sidenet.engine import cache
from sidenet.tasks import TASKS
from sidenet.tasks.compressed import compress_mainnet

pytestmark = pytest.mark.e2e  # every test here compresses (and trains) tiny models through the whole pipeline

# (task, chain as written) -> (Compressed.key, Compressed.chain, Compressed.dtype), computed at commit 0a25fac
PINNED: dict[tuple[str, str], tuple[str, str, str]] = {
    ("tiny-resnet", "none"): ("mainnet-pinned", "none", "fp32"),
    ("tiny-resnet", "int8"): ("compressed-3fe14b852b62a706", "int8", "int8"),
    ("tiny-resnet", "prune:ratio=0.5"): ("compressed-7c57d4bdb8e6953d", "prune:ratio=0.5", "fp32"),
    ("tiny-resnet", "prune:ratio=0.5,finetune_epochs=0"): (
        "compressed-3601cacac64d1c55",
        "prune:finetune_epochs=0,ratio=0.5",
        "fp32",
    ),
    ("tiny-resnet", "prune:ratio=0.5,finetune=kd"): (
        "compressed-9686655fba8ad176",
        "prune:finetune=kd,ratio=0.5",
        "fp32",
    ),
    ("tiny-resnet", "distil:epochs=1,student_width=4"): (
        "compressed-cc08b4a7fc869a67",
        "distil:epochs=1,student_width=4",
        "fp32",
    ),
    ("tiny-resnet", "prune:ratio=0.5+int8"): ("compressed-aa6ec1603d1fa59e", "prune:ratio=0.5+int8", "int8"),
    ("tiny-resnet", "fp16"): ("compressed-0900771bf7f83338", "fp16", "fp16"),
    ("tiny-resnet", "bf16"): ("compressed-68c793a706a65629", "bf16", "bf16"),
    ("tiny-resnet", "int8:granularity=block"): ("compressed-84a87671f574a038", "int8:granularity=block", "int8"),
    ("tiny-resnet", "prune:ratio=0.5+distil:epochs=1,student_width=2+int8"): (
        "compressed-70bf624750ab70b6",
        "prune:ratio=0.5+distil:epochs=1,student_width=2+int8",
        "int8",
    ),
    ("tiny-bert", "none"): ("mainnet-pinned", "none", "fp32"),
    ("tiny-bert", "int8"): ("compressed-3fe14b852b62a706", "int8", "int8"),
    ("tiny-bert", "int8:backend=ort"): ("compressed-77f3701602219ad2", "int8:backend=ort", "int8"),
    ("tiny-bert", "prune:ratio=0.5"): ("compressed-d4370e5c9986b257", "prune:ratio=0.5", "fp32"),
    ("tiny-bert", "distil:epochs=1,student_layers=2"): (
        "compressed-3b48aedc37b06acd",
        "distil:epochs=1,student_layers=2",
        "fp32",
    ),
    ("tiny-bert", "prune:ratio=0.5+int8"): ("compressed-d701471465585dc1", "prune:ratio=0.5+int8", "int8"),
    ("tiny-bert", "fp16"): ("compressed-0900771bf7f83338", "fp16", "fp16"),
}


@pytest.mark.parametrize("task_name", ["tiny-resnet", "tiny-bert"])
def test_compressed_keys_are_those_of_commit_0a25fac(task_name, monkeypatch, tmp_path):
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(cache, "library_versions", lambda libraries=(): {"pinned": "1"})
    task = TASKS.get(task_name)
    splits = task.load_data()
    data = {n: task.encode(x, y) for n, (x, y) in splits.parts()}
    torch.manual_seed(0)
    mainnet = task.build_mainnet(splits.num_classes).eval().requires_grad_(False)
    chains = [chain for (name, chain) in PINNED if name == task_name]
    got, cold = {}, {}
    for chain in chains:
        cold[chain] = comp = compress_mainnet(task, mainnet, "mainnet-pinned", data, chain, progress=False)
        got[(task_name, chain)] = (comp.key, comp.chain, comp.dtype)
    assert got == {k: v for k, v in PINNED.items() if k[0] == task_name}
    # a warm run (trained steps loaded from the cache, rebuilt by their configs) keeps the key too
    warm = compress_mainnet(task, mainnet, "mainnet-pinned", data, "prune:ratio=0.5", progress=False)
    assert warm.key == PINNED[(task_name, "prune:ratio=0.5")][0]
    assert warm.steps == cold["prune:ratio=0.5"].steps  # the log of the run that trained it: loaded, not retrained
