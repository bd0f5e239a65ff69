"""Image tasks: a torchvision ResNet trained from scratch on small grayscale/colour images."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from sidenet.data import Splits
from sidenet.engine.sidenet import SideNetConfig
from sidenet.tasks.base import DATASETS, Batch, Encoded, Task, finish_training, recipe_fields, subset_train
from sidenet_core.errors import UserError
from sidenet_core.layouts import ARCHS, build_resnet
from sidenet_core.precision import autocast, resolve
from sidenet_core.train_convs import one_by_one_outputs_as_matmuls


@dataclass(frozen=True)
class ImageTaskConfig:
    """A ResNet recipe. Inputs are zero-padded to ``pad_to`` and standardised with train statistics.

    ``width`` scales every stage (64 = torchvision's ResNet); the ImageNet stem (7×7/2 + max-pool) is
    kept, which on 32×32 inputs leaves 8×8 maps after the stem: cheap enough to train on 2 cores.
    """

    name: str
    dataset: str
    description: str
    arch: str = "resnet18"
    width: int = 64
    in_channels: int = 1
    pad_to: int = 32
    epochs: int = 6
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = True
    train_precision: str = "auto"  # see sidenet_core.precision
    tap: str = "layer1"
    seed: int = 0
    target_loss_pt: float = 0.5
    selection_margin_se: float = 1.0  # see Task.selection_margin_se
    sidenet: SideNetConfig = field(default_factory=SideNetConfig)
    default_chains: tuple[str, ...] = ("none",)  # compressor chains a bench runs when none are given
    small_network_chain: str = "distil"  # the small network of the `cascade` exit system (a chain of the MainNet)
    train_subset: int = 0  # train on this many training rows, drawn at random (0: all); the quick profile's trade
    trades: str = ""  # what this recipe trades for time, stated in the report (the quick profile)
    accuracy_floor: float = 0.0  # the test accuracy its MainNet must reach (0: none stated); checked and reported

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise UserError(f"unknown arch {self.arch!r} (valid: {', '.join(ARCHS)})")
        if self.tap not in ("layer1", "layer2", "layer3"):
            raise UserError(f"image tap {self.tap!r} must be layer1, layer2 or layer3")
        if self.epochs < 1 or self.batch_size < 1 or self.width < 8 or self.lr <= 0:
            raise UserError(f"task {self.name!r}: epochs, batch_size, lr must be positive and width >= 8")


def _random_crop_flip(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


class ImageTask(Task):
    modality = "image"

    def __init__(self, config: ImageTaskConfig) -> None:
        self.config = config
        self.name = config.name
        self.description = config.description
        self.tap = config.tap
        self.sidenet = config.sidenet
        self.default_target_loss_pt = config.target_loss_pt
        self.selection_margin_se = config.selection_margin_se
        self.default_chains = config.default_chains
        self.small_network_chain = config.small_network_chain
        self.trades = config.trades
        self.accuracy_floor = config.accuracy_floor
        self._norm: tuple[float, float] | None = None

    def recipe(self) -> dict[str, Any]:
        cfg = recipe_fields(self.config)  # what does not change the MainNet is left out
        cfg["train_precision"] = self.precision()  # "auto" differs per CPU
        return {"type": "image", **cfg}

    def precision(self) -> str:
        """Resolved training precision. bf16 only when no stride-2 conv sees a 1×1 map: torch 2.14's CPU
        bf16 weight-gradient kernel returns uninitialised values there (found by our tests; pad_to ≤ 16)."""
        resolved = resolve(self.config.train_precision)
        if resolved == "bf16" and self.config.pad_to <= 16:
            return "fp32"
        return resolved

    def training_precision(self) -> str:
        return self.precision()

    def load_data(self) -> Splits:
        splits = subset_train(DATASETS.get(self.config.dataset)(), self.config.train_subset, self.config.seed)
        x = splits.train[0]
        if x.shape[1] != self.config.in_channels:
            raise UserError(f"task {self.name!r} expects {self.config.in_channels} channels, data has {x.shape[1]}")
        self._norm = (float(x.mean()), float(x.std()))
        return splits

    def encode(self, inputs: torch.Tensor, labels: torch.Tensor) -> Encoded:
        if self._norm is None:
            raise RuntimeError("call load_data() before encode()")
        mean, std = self._norm
        pad = self.config.pad_to - inputs.shape[-1]
        x = (inputs.float() - mean) / std  # standardise first so the zero padding is the mean
        if pad > 0:
            x = F.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
        return Encoded(x.contiguous(), labels)

    def batches(
        self, data: Encoded, batch_size: int, idx: torch.Tensor | None = None, by_length: bool = False
    ) -> list[Batch]:
        if idx is None:
            idx = torch.arange(len(data))
        return [(data.rows.index_select(0, i), i) for i in idx.split(batch_size)]

    def build_mainnet(self, num_classes: int) -> nn.Module:
        torch.manual_seed(self.config.seed)
        c = self.config
        return build_resnet(c.arch, c.width, c.in_channels, num_classes)

    def finetune_overrides(self) -> dict[str, Any]:
        """One short epoch at a fifth of the learning rate: recovers accuracy after pruning."""
        return {"epochs": 1, "lr": self.config.lr / 5}

    def train_mainnet(
        self, model: nn.Module, train: Encoded, progress: bool = True, **overrides: Any
    ) -> dict[str, Any]:
        c = replace(self.config, **overrides)
        gen = torch.Generator().manual_seed(c.seed)
        # channels_last while training: oneDNN's NHWC kernels ran the step 1.1-1.3x faster (Zen 4; AVX2-capped and
        # bf16 alike); the model goes back to the default layout below, so evaluation and timing never see it
        model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(
            model.parameters(), lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay, nesterov=True
        )
        n = len(train)
        steps_per_epoch = math.ceil(n / c.batch_size)
        total = steps_per_epoch * c.epochs
        warmup = min(200, total // 10)

        def lr_at(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
        model.train()
        start, step, loss_val = time.perf_counter(), 0, float("nan")
        bar = tqdm(total=total, desc=f"train {self.name} MainNet", unit="step", disable=not progress, leave=False)
        with one_by_one_outputs_as_matmuls(model):  # exact; layer4's 1×1 maps (sidenet_core.train_convs)
            for _ in range(c.epochs):
                perm = torch.randperm(n, generator=gen)
                for i in perm.split(c.batch_size):
                    x = train.rows.index_select(0, i)
                    if c.augment:
                        x = _random_crop_flip(x, 2, gen)
                    x = x.contiguous(memory_format=torch.channels_last)
                    with autocast(self.precision()):
                        loss = F.cross_entropy(model(x), train.labels.index_select(0, i))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    step += 1
                    loss_val = loss.item()
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_val:.3f}")
        bar.close()
        model.to(memory_format=torch.contiguous_format)
        return finish_training(model, self.name, self.precision(), c.epochs, step, loss_val, start)
