"""Exit heads: a SideNet per tap, trained once on the frozen (compressed) MainNet's tap features and cached.

Shared by every exit system that puts SideNets on a MainNet (``sidenet``, ``sidenet-multi``, and the learned policies
built on them): a SideNet at one tap of one MainNet is one cache entry, whichever system asked for it first.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from sidenet.engine import cache
from sidenet.engine.fit import fit_sidenet
from sidenet.engine.sidenet import SideNet
from sidenet.tasks import Encoded, Task
from sidenet_core.layouts import to_device
from sidenet_core.staged import StagedModel
from sidenet_core.status import announce

EVAL_BATCH = 256


def device_fields(device: torch.device | str | None) -> dict[str, str]:
    """What a cache key gains for the device: nothing on the CPU (keys stay as they were), else its type."""
    if device is None or torch.device(device).type == "cpu":
        return {}
    return {"device": torch.device(device).type}


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.inference_mode()
def collect_features(
    task: Task, split: StagedModel, data: Encoded, progress: bool, desc: str, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled tap features and MainNet logits for every row (SideNet training data), on the CPU.

    ``device``: where the split's model is; each batch is moved there."""
    feats, logits = [], []
    order = []
    for inputs, idx in tqdm(
        task.batches(data, EVAL_BATCH, by_length=True), desc=desc, disable=not progress, leave=False
    ):
        state = split.head(to_device(inputs, device))
        feats.append(split.features(state).cpu())
        logits.append(split.rest(state).cpu())
        order.append(idx)
    inv = torch.argsort(torch.cat(order))
    return torch.cat(feats)[inv], torch.cat(logits)[inv]


def weights_digest(module: nn.Module) -> str:
    """Digest of everything in the state_dict: float, bf16 and quantised tensors, packed int8 params."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        h.update(name.encode())
        _digest_value(h, value)
    return h.hexdigest()[:16]


def _digest_value(h: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor) and type(value) is not torch.Tensor and hasattr(value, "__tensor_flatten__"):
        names, context = value.__tensor_flatten__()  # a wrapper subclass (e.g. torchao's int8 weights)
        h.update(repr(context).encode())
        for name in names:
            _digest_value(h, getattr(value, name))
    elif isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.is_quantized:
            if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                _digest_value(h, t.q_per_channel_scales())
                _digest_value(h, t.q_per_channel_zero_points())
            else:
                h.update(repr((t.q_scale(), t.q_zero_point())).encode())
            t = t.int_repr()
        h.update(str(t.dtype).encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, tuple | list):
        for v in value:
            _digest_value(h, v)
    else:
        h.update(repr(value).encode())


def load_or_train_sidenet(
    task: Task,
    split: StagedModel,
    data: dict[str, Encoded],
    num_classes: int,
    mainnet_key: str,
    progress: bool,
    device: torch.device | str | None = None,
) -> tuple[SideNet, dict[str, Any]]:
    """``mainnet_key``: cache key of the (compressed) MainNet the split cuts; ``device``: where that MainNet is.

    The tap features are computed there, the SideNet is trained on the CPU and returned on ``device``."""
    example = to_device(task.batches(data["val"], 2)[0][0], device)
    side = SideNet(split.feature_dim(example), num_classes, task.sidenet.hidden, task.sidenet.dropout)
    # Keyed by the MainNet's actual weights, not only its recipe: a rebuilt MainNet that differs by a bit
    # (e.g. non-deterministic kernels) must not inherit a SideNet trained on the old one's features.
    # Features computed on a GPU differ by rounding from the CPU's: off the CPU, the device is part of the key.
    recipe = {
        "mainnet": mainnet_key,
        "weights": weights_digest(split),
        "tap": split.tap,
        "sidenet": task.sidenet.to_dict(),
        **device_fields(device),
    }
    key = cache.artifact_key("sidenet", recipe)
    meta = cache.load_into(side, key)
    if meta is None:
        announce(f"training a {task.name} SideNet at tap {split.tap}")
        start = time.perf_counter()
        feats, main_logits = collect_features(
            task, split, data["train"], progress, f"{task.name}: tap features", device
        )
        side = fit_sidenet(
            feats, data["train"].labels, main_logits, num_classes, task.sidenet, progress, f"train {task.name} SideNet"
        )
        meta = {"task": task.name, "tap": split.tap, "seconds": time.perf_counter() - start}
        cache.store(side, key, meta)
    return to_device(freeze(side), device), {"key": key, **meta}
