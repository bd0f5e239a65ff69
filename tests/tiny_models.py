"""The tiny MainNets every test file builds (one definition, so they cannot drift apart)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def make_tiny_resnet() -> nn.Module:
    """A width-8 ResNet-10 on 1-channel inputs with 4 classes (torchvision layout), eval mode."""
    from sidenet.tasks.image import build_resnet

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
    from sidenet.flops import count_flops

    return count_flops(logits, model, inputs)[0]


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).float().mean())
