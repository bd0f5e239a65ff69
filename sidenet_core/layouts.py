"""Model layouts every layer needs: row selection on nested batches, torchvision ResNet stages and BERT masks.

Bottom layer (``sidenet_core``): the compressors (which rebuild ResNets, export BERT segments to ONNX, compile
BERT layers) and the sidenet library (which cuts MainNets into stages) share these, so neither imports the other.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torchvision
from torch import nn

Inputs = Any  # a tensor, or a dict of tensors sharing batch dim 0 (e.g. input_ids + attention_mask)

RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")
ARCHS = {"resnet18": (2, 2, 2, 2), "resnet10": (1, 1, 1, 1)}


def select_rows(obj: Any, idx: torch.Tensor) -> Any:
    """Rows ``idx`` of a tensor, or of every tensor in a dict/tuple (batch dim 0)."""
    if isinstance(obj, torch.Tensor):
        return obj.index_select(0, idx)
    if isinstance(obj, dict):
        return {k: select_rows(v, idx) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return type(obj)(select_rows(v, idx) for v in obj)
    if obj is None:
        return None
    if hasattr(obj, "select_rows"):  # a state object that knows its own rows (e.g. TextState)
        return obj.select_rows(idx)
    raise TypeError(f"cannot select rows of {type(obj).__name__}")


def to_device(obj: Any, device: torch.device | str | None) -> Any:
    """``obj`` (a tensor, an ``nn.Module`` — moved in place — or a dict / list / tuple of tensors) on ``device``;
    for the CPU or None the very same object (inputs and models are built there), so CPU runs do not change by
    a bit."""
    if device is None or torch.device(device).type == "cpu":
        return obj
    if isinstance(obj, torch.Tensor | nn.Module):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def model_logits(model: nn.Module, inputs: Inputs) -> torch.Tensor:
    """A classifier's logits for a tensor or a dict of tensors (transformers models return an output object)."""
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return out.logits if hasattr(out, "logits") else out


def batch_size_of(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return int(obj.shape[0])
    if isinstance(obj, dict):
        return batch_size_of(next(iter(obj.values())))
    if isinstance(obj, tuple | list):
        return batch_size_of(obj[0])
    if hasattr(obj, "hidden"):
        return int(obj.hidden.shape[0])
    raise TypeError(f"cannot find the batch size of {type(obj).__name__}")


# ---------------------------------------------------------------- ResNet (torchvision layout)


def build_resnet(arch: str, width: int, in_channels: int, num_classes: int) -> nn.Module:
    """torchvision's ResNet with ``in_channels`` inputs and stage widths width·(1, 2, 4, 8)."""
    model = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, list(ARCHS[arch]), num_classes)
    if width != 64:  # rebuild stages at another width, keeping torchvision's module layout
        model.inplanes = width
        model.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        model.bn1 = nn.BatchNorm2d(width)
        blocks = ARCHS[arch]
        model.layer1 = model._make_layer(torchvision.models.resnet.BasicBlock, width, blocks[0])
        model.layer2 = model._make_layer(torchvision.models.resnet.BasicBlock, width * 2, blocks[1], stride=2)
        model.layer3 = model._make_layer(torchvision.models.resnet.BasicBlock, width * 4, blocks[2], stride=2)
        model.layer4 = model._make_layer(torchvision.models.resnet.BasicBlock, width * 8, blocks[3], stride=2)
        model.fc = nn.Linear(width * 8, num_classes)
        for m in model.modules():  # torchvision's init for the rebuilt modules
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


# ---------------------------------------------------------------- BERT family (transformers)


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean over real (mask = 1) tokens; the one function the mean-pooled classifier and every tap use, so both
    paths agree exactly."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


@functools.cache
def _bidirectional_mask_fn() -> Callable[..., Any] | None:
    """transformers 5's mask builder, or None on 4.x (looked up once: this runs on the timed path)."""
    try:
        from transformers.masking_utils import create_bidirectional_mask
    except ImportError:
        return None
    return create_bidirectional_mask


def bert_layer_mask(base: nn.Module, attention_mask: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor | None:
    """The mask BERT's own forward hands its layers, for the installed transformers version."""
    create_bidirectional_mask = _bidirectional_mask_fn()
    if create_bidirectional_mask is not None:
        return create_bidirectional_mask(config=base.config, inputs_embeds=hidden, attention_mask=attention_mask)
    use_sdpa = (
        getattr(base, "attn_implementation", None) == "sdpa"
        and getattr(base, "position_embedding_type", "absolute") == "absolute"
    )
    if use_sdpa:
        from transformers.modeling_attn_mask_utils import _prepare_4d_attention_mask_for_sdpa

        return _prepare_4d_attention_mask_for_sdpa(attention_mask, hidden.dtype, tgt_len=hidden.shape[1])
    return base.get_extended_attention_mask(attention_mask, attention_mask.shape)
