"""Train a SideNet on cached tap features with the MainNet frozen (it never sees a gradient)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sidenet.engine.sidenet import SideNet, SideNetConfig


def sidenet_loss(
    logits: torch.Tensor, labels: torch.Tensor, main_logits: torch.Tensor, cfg: SideNetConfig
) -> torch.Tensor:
    """Cross-entropy on labels, KL to the MainNet's tempered softmax (× T², Hinton et al.), or their mean."""
    t = cfg.temperature
    soft = F.kl_div(
        F.log_softmax(logits / t, -1), F.log_softmax(main_logits / t, -1), log_target=True, reduction="batchmean"
    ) * (t * t)
    if cfg.targets == "soft":
        return soft
    hard = F.cross_entropy(logits, labels)
    return hard if cfg.targets == "labels" else 0.5 * (hard + soft)


def fit_sidenet(
    features: torch.Tensor,
    labels: torch.Tensor,
    main_logits: torch.Tensor,
    num_classes: int,
    cfg: SideNetConfig,
    progress: bool = True,
    desc: str = "train SideNet",
) -> SideNet:
    """AdamW + cosine decay on precomputed ``[N, D]`` features; returns the SideNet in eval mode."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    features = features.float()
    side = SideNet(features.shape[1], num_classes, cfg.hidden, cfg.dropout)
    side.feature_mean.copy_(features.mean(0))
    side.feature_std.copy_(features.std(0).clamp_min(1e-6))
    opt = torch.optim.AdamW(side.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(labels)
    steps = cfg.epochs * ((n + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    side.train()
    for _ in tqdm(range(cfg.epochs), desc=desc, unit="epoch", disable=not progress, leave=False):
        for i in torch.randperm(n, generator=gen).split(cfg.batch_size):
            loss = sidenet_loss(side(features[i]), labels[i], main_logits[i], cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    side.eval()
    return side
