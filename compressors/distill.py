"""``distil``: knowledge distillation (Hinton et al. 2015) into a smaller student of the same family.

* ResNet teacher → a fresh torchvision-layout ResNet (``sidenet_core.layouts.build_resnet``) with
  ``student_arch`` blocks and ``student_width`` channels (input channels and classes taken from the
  teacher), so it splits like the teacher.
* BERT teacher → a copy of the teacher keeping ``student_layers`` of its encoder layers: layer indices
  ``(i + 1) · L // student_layers - 1`` (every k-th layer, ending with the last one, which the pooler
  and classifier were trained on), plus the teacher's embeddings, pooler and classifier. Copying the
  teacher rather than rebuilding from its config means a pruned teacher (fewer heads / narrower FFN)
  distils too.

Loss: ``alpha · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + (1 − alpha) · CE(student, labels)``,
AdamW at ``lr`` (default 1e-3 for ResNets, 5e-5 for BERT; cosine decay when the epoch's batches have a
``len``), gradients clipped at norm 1. Data: ``compress_(..., train_batches=fn)`` where ``fn()`` returns one
epoch of ``(inputs, labels)``. The teacher only runs forward, in eval mode. Put ``distil`` before
``int8``/``fp16``/``bf16`` in a chain: the student is trained in fp32.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from compressors.base import (
    CompressContext,
    CompressorConfig,
    is_quantized,
    logits_of,
    model_family,
    record,
    register_compressor,
)
from sidenet_core.errors import UserError
from sidenet_core.precision import autocast
from sidenet_core.train_convs import one_by_one_outputs_as_matmuls

_DEFAULT_LR = {"resnet": 1e-3, "bert": 5e-5}


@dataclass(frozen=True)
class DistilConfig(CompressorConfig):
    """Train a smaller student on the teacher's soft targets (temperature ``temperature``) + labels."""

    name: ClassVar[str] = "distil"

    student_arch: str = "resnet10"  # ResNet students: see sidenet_core.layouts.ARCHS
    student_width: int = 32  # ResNet students: channels of the first stage
    student_layers: int = 3  # BERT students: encoder layers kept from the teacher
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the soft-target (KD) term; 1 - alpha goes to cross-entropy on labels
    epochs: int = 3
    lr: float | None = None  # None: 1e-3 (ResNet) / 5e-5 (BERT)
    weight_decay: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        from sidenet_core.layouts import ARCHS

        if self.student_arch not in ARCHS:
            raise UserError(f"distil student_arch {self.student_arch!r} is not one of {', '.join(ARCHS)}")
        if self.student_width < 1 or self.student_layers < 1:
            raise UserError("distil student_width and student_layers must be >= 1")
        if not self.temperature > 0:
            raise UserError(f"distil temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise UserError(f"distil alpha (weight of the KD term) must be in [0, 1], got {self.alpha}")
        if self.epochs < 1:
            raise UserError(f"distil epochs must be >= 1, got {self.epochs}")
        if self.lr is not None and not self.lr > 0:
            raise UserError(f"distil lr must be > 0 (or none for the default), got {self.lr}")
        if not self.weight_decay >= 0:
            raise UserError(f"distil weight_decay must be >= 0, got {self.weight_decay}")

    def trains(self) -> bool:
        return True

    def rebuild(self, parent: nn.Module, shapes: dict[str, tuple[int, ...]], ctx: CompressContext) -> nn.Module:
        """The student's architecture comes from the config (and, for a ResNet, one example batch)."""
        resnet = model_family(parent, "distil") == "resnet"
        return build_student(parent, self, ctx.example("distil") if resnet else None)


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """Hinton KD: α·T²·KL(teacher_T ‖ student_T) + (1 − α)·CE(student, labels)."""
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits.float() / t, -1),
        F.log_softmax(teacher_logits.float() / t, -1),
        log_target=True,
        reduction="batchmean",
    ) * (t * t)
    if alpha >= 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits.float(), labels)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _resnet_student(teacher: nn.Module, config: DistilConfig, example: torch.Tensor) -> nn.Module:
    from sidenet_core.layouts import build_resnet

    if not isinstance(example, torch.Tensor) or example.dim() != 4:
        raise UserError("ResNet distillation needs image batches [B, C, H, W] from train_batches")
    with torch.no_grad():
        num_classes = int(logits_of(teacher, example[:1]).shape[-1])
    torch.manual_seed(config.seed)
    student = build_resnet(config.student_arch, config.student_width, int(example.shape[1]), num_classes)
    return student.to(next(teacher.parameters()).device)


def _bert_student(teacher: nn.Module, config: DistilConfig) -> nn.Module:
    n = len(teacher.bert.encoder.layer)
    k = config.student_layers
    if k >= n:
        raise UserError(f"distil student_layers={k} must be below the teacher's {n} layers")
    keep = [(i + 1) * n // k - 1 for i in range(k)]
    student = copy.deepcopy(teacher)
    student.bert.encoder.layer = nn.ModuleList([student.bert.encoder.layer[i] for i in keep])
    student.config.num_hidden_layers = k
    return student


def build_student(teacher: nn.Module, config: DistilConfig, example: Any) -> nn.Module:
    """The untrained student for ``teacher`` (its architecture only): used to rebuild a cached student
    before loading its trained weights. Parameters are trainable even if the teacher's are frozen."""
    family = model_family(teacher, "distil")
    student = _resnet_student(teacher, config, example) if family == "resnet" else _bert_student(teacher, config)
    for p in student.parameters():
        p.requires_grad_(True)
    return student


@register_compressor("distil", DistilConfig, "knowledge distillation into a smaller ResNet / fewer BERT layers")
def _apply_distil(teacher: nn.Module, config: DistilConfig, ctx: CompressContext) -> nn.Module:
    family = model_family(teacher, "distil")
    if ctx.train_batches is None:
        raise UserError(
            "distil needs training data: pass compress_(..., train_batches=lambda: [(inputs, labels), ...])"
        )
    if is_quantized(teacher) or any(p.dtype != torch.float32 for p in teacher.parameters()):
        raise UserError("distil needs an fp32 teacher; put distil before int8/fp16/bf16 in the chain")
    student = build_student(teacher, config, ctx.example("distil") if family == "resnet" else None)
    if family == "resnet":
        kept: Any = f"{config.student_arch}@{config.student_width}"
    else:
        n, k = len(teacher.bert.encoder.layer), config.student_layers
        kept = [(i + 1) * n // k - 1 for i in range(k)]
    teacher_params, student_params = _n_params(teacher), _n_params(student)
    if student_params >= teacher_params:
        raise UserError(
            f"distil student has {student_params} parameters, not fewer than the teacher's {teacher_params}; "
            "choose a smaller student_arch / student_width / student_layers"
        )
    losses = _train(student, teacher, config, ctx, family)
    record(
        student,
        student=kept,
        teacher_params=teacher_params,
        student_params=student_params,
        first_epoch_loss=losses[0],
        last_epoch_loss=losses[-1],
    )
    return student.eval()


def distil_into(student: nn.Module, teacher: nn.Module, epochs: int, ctx: CompressContext, family: str) -> list[float]:
    """Train an existing ``student`` (e.g. a pruned copy of ``teacher``) with the KD loss at the ``distil``
    defaults for ``epochs`` epochs; per-epoch mean losses. Used by ``prune:finetune=kd``."""
    if ctx.train_batches is None:
        raise UserError("KD fine-tuning needs train_batches: pass compress_(..., train_batches=...)")
    return _train(student, teacher, DistilConfig(epochs=epochs), ctx, family)


def _cosine(total: int) -> Callable[[int], float]:
    return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def _train(
    student: nn.Module, teacher: nn.Module, config: DistilConfig, ctx: CompressContext, family: str
) -> list[float]:
    assert ctx.train_batches is not None
    torch.manual_seed(config.seed)
    lr = config.lr if config.lr is not None else _DEFAULT_LR[family]
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=config.weight_decay)
    sched = None
    teacher_was_training = teacher.training
    teacher.eval()
    student.train()
    epoch_losses: list[float] = []
    # exact: convolutions on 1×1 maps (a ResNet's layer4 on small images) as matrix products (sidenet_core.train_convs)
    with one_by_one_outputs_as_matmuls(student, teacher):
        try:
            for epoch in range(config.epochs):
                batches = ctx.train_batches()
                if sched is None and epoch == 0 and hasattr(batches, "__len__"):
                    total = max(1, len(batches) * config.epochs)  # type: ignore[arg-type]
                    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(total))
                total_loss, steps = 0.0, 0
                for inputs, labels in batches:
                    with autocast(ctx.train_precision):
                        with torch.no_grad():
                            teacher_logits = logits_of(teacher, inputs)
                        student_logits = logits_of(student, inputs)
                    loss = kd_loss(student_logits, teacher_logits, labels, config.temperature, config.alpha)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
                    opt.step()
                    if sched is not None:
                        sched.step()
                    total_loss += float(loss.detach())
                    steps += 1
                if steps == 0:
                    raise UserError("distil train_batches() yielded no batches")
                epoch_losses.append(total_loss / steps)
        finally:
            teacher.train(teacher_was_training)
    return epoch_losses
