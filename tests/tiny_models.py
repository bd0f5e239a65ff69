"""The tiny MainNets (and bench settings) every test file builds: one definition, so they cannot drift apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def make_tiny_resnet() -> nn.Module:
    """A width-8 ResNet-10 on 1-channel inputs with 4 classes (torchvision layout), eval mode."""
    from sidenet_core.layouts import build_resnet

    torch.manual_seed(0)
    return build_resnet("resnet10", 8, 1, 4).eval()


def tiny_bert_config(vocab_size: int = 50):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=2,
    )


def make_tiny_bert(vocab_size: int = 50) -> nn.Module:
    """A random 4-layer BERT classifier (hidden 32, 2 labels), eval mode."""
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_bert_config(vocab_size)).eval()


# ---------------------------------------------------------------- comparing a compressed model with its original


def logits(model: nn.Module, inputs: Any) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return out.logits if hasattr(out, "logits") else out


def flops(model: nn.Module, inputs: Any) -> int:
    from sidenet_core.flops import count_flops

    return count_flops(logits, model, inputs)[0]


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).float().mean())


def tiny_text_task(n: int, gen: torch.Generator, pad_rows: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Label 1 iff token 7 or 8 occurs; the first ``pad_rows`` rows are padded after 6 tokens."""
    ids = torch.randint(5, 50, (n, 12), generator=gen)
    mask = torch.ones_like(ids)
    mask[:pad_rows, 6:] = 0
    ids = ids * mask
    y = ((ids == 7) | (ids == 8)).any(1).long()
    return {"input_ids": ids, "attention_mask": mask}, y


def tiny_text_data() -> dict[str, Any]:
    """Six training batches of 32 and 64 test rows (16 of them padded) of :func:`tiny_text_task`."""
    gen = torch.Generator().manual_seed(2)
    train = [tiny_text_task(32, gen) for _ in range(6)]
    x, y = tiny_text_task(64, gen, pad_rows=16)
    return {"train": train, "x": x, "y": y}


def train_tiny_bert(batches: list[tuple[dict[str, torch.Tensor], torch.Tensor]], epochs: int = 5) -> nn.Module:
    """:func:`make_tiny_bert` trained briefly (AdamW 3e-3), so its predictions carry information."""
    model = make_tiny_bert().train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for x, y in batches:
            loss = F.cross_entropy(model(**x).logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def tiny_image_data() -> dict[str, Any]:
    """4 classes: a fixed random 16×16 template per class plus noise (1 channel, like Fashion-MNIST); six
    training batches of 32, 64 test rows, and the first four training batches' images for calibration."""
    gen = torch.Generator().manual_seed(1)
    templates = torch.randn(4, 1, 16, 16, generator=gen)

    def task(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 4, (n,), generator=gen)
        return templates[y] + 0.8 * torch.randn(n, 1, 16, 16, generator=gen), y

    train = [task(32) for _ in range(6)]
    x, y = task(64)
    return {"train": train, "x": x, "y": y, "calibration": [b for b, _ in train[:4]]}


def train_tiny_resnet(batches: list[tuple[torch.Tensor, torch.Tensor]], epochs: int = 4) -> nn.Module:
    """:func:`make_tiny_resnet` trained briefly (SGD 0.05, momentum 0.9), so its predictions carry information."""
    model = make_tiny_resnet().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def bench_settings(**overrides: Any) -> Any:
    """BenchSettings for one cheap tiny-resnet cell; keyword arguments override fields."""
    from sidenet.bench.harness import BenchSettings

    base: dict[str, Any] = dict(
        tasks=("tiny-resnet",), batch_sizes=(1,), exits=("none",), threads=1, target_loss_pt=None,
        timing_samples=8, rounds=1, device="cpu", out=Path("reports"), name=None, command="x",
    )  # fmt: skip
    return BenchSettings.from_options(**{**base, **overrides})
