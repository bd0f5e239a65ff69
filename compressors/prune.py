"""``prune``: structured pruning with torch-pruning to a target FLOP fraction, then an optional fine-tune.

* ResNet: output channels of every conv (residual-coupled channels pruned together), ranked by
  ``GroupMagnitudeImportance(p=2)`` with one ratio for every layer (local ranking); ``fc`` is ignored (its outputs
  are the classes; its inputs shrink with layer4).
* BERT: whole attention heads (``prune_num_heads``) and FFN width (``intermediate.dense`` outputs). The
  hidden size is kept: embeddings, every layer's output projections, the pooler and the classifier are
  ignored, so the residual stream, the split state and the head keep their width. After each
  ``pruner.step()`` every ``BertSelfAttention`` is patched (``num_attention_heads``,
  ``attention_head_size``, ``all_head_size``, ``scaling``) — torch-pruning changes only the Linears.

The FLOP target is reached by measurement, not by a formula: ``steps`` rounds, round *i* aiming at
``ratio ** (i / steps)`` of the original FLOPs. In each round the channel ratio is bisected on copies
of the model (FlopCounterMode on ``example_inputs``) for the smallest pruning that meets the round's
target, and that copy goes on to the next round. The result is checked: FLOPs ≤ (ratio + tolerance) ×
the original, else a UserError (e.g. ``round_to`` too coarse for a narrow model). ``prune`` returns a new
model and leaves the caller's untouched. Fine-tuning (``finetune_epochs`` epochs on the pruned model
after the last round) follows ``finetune``: ``task`` calls the caller's ``finetune(model)`` (one epoch of
the task's own recipe: cross-entropy on labels) once per epoch; ``kd`` distils from the unpruned model
instead (:func:`compressors.distill.distil_into`: soft targets at T = 4 plus labels, the ``distil``
compressor's defaults, on ``train_batches``). Why ``kd``: a pruned network that keeps the teacher's
layout can match the teacher's output distribution, which carries more signal per example than the
labels (on Rotten Tomatoes two epochs of label fine-tuning left the half-FLOP MiniLM 3 pt below the
MainNet). ``round_to`` rounds kept channel counts down, so narrow layers lose proportionally more than
wide ones.

The pruned model has non-standard layer widths: it cannot be reloaded into the original architecture from a
state_dict as it is. :func:`shaped_like` makes the original architecture as wide as a pruned state_dict's
tensors say (no pruning search), so the pruned weights load into it; the cache rebuilds pruned models that way.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from compressors.base import (
    CompressContext,
    CompressorConfig,
    apply_in,
    count_model_flops,
    is_quantized,
    model_family,
    record,
    register_compressor,
)
from sidenet_core.errors import UserError

log = logging.getLogger(__name__)

FINETUNE_METHODS = ("task", "kd")
MAX_CHANNEL_RATIO = 0.9  # never remove more than this share of a layer's channels in one round
_SEARCH_ITERS = 14
_SEARCH_RESOLUTION = 0.005  # channel-ratio interval at which bisection stops
_SEARCH_SLACK = 0.01  # stop bisecting once FLOPs are within [target - slack, target]


@dataclass(frozen=True)
class PruneConfig(CompressorConfig):
    """Structured pruning to keep ``ratio`` of the FLOPs (0.5 = half), then ``finetune_epochs`` epochs."""

    name: ClassVar[str] = "prune"
    label_fields: ClassVar[tuple[str, ...]] = ("ratio",)

    ratio: float = 0.5  # target FLOPs after pruning / FLOPs before, in (0, 1)
    round_to: int = 8  # kept channel counts are multiples of this (ResNet convs, BERT FFN width)
    steps: int = 3  # iterative rounds (importance re-ranked each round)
    finetune_epochs: int = 1  # fine-tuning epochs after pruning; 0 = no fine-tuning
    finetune: str = "task"  # "task": the caller's finetune(model) (labels); "kd": distil from the unpruned model
    tolerance: float = 0.02  # accepted overshoot of the FLOP target (fraction of the original FLOPs)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.ratio < 1.0:
            raise UserError(f"prune ratio is the FLOP fraction to keep and must be in (0, 1), got {self.ratio}")
        if self.round_to < 1:
            raise UserError(f"prune round_to must be >= 1, got {self.round_to}")
        if self.steps < 1:
            raise UserError(f"prune steps must be >= 1, got {self.steps}")
        if self.finetune_epochs < 0:
            raise UserError(f"prune finetune_epochs must be >= 0, got {self.finetune_epochs}")
        if self.finetune not in FINETUNE_METHODS:
            raise UserError(f"prune finetune must be one of {', '.join(FINETUNE_METHODS)}, got {self.finetune!r}")
        if not 0.0 <= self.tolerance < 1.0:
            raise UserError(f"prune tolerance must be in [0, 1), got {self.tolerance}")

    def trains(self) -> bool:
        """Fine-tuned weights are worth caching; ``finetune_epochs=0`` is a cheap, deterministic re-prune."""
        return self.finetune_epochs > 0

    def uses_task_finetune(self) -> bool:
        return self.finetune_epochs > 0 and self.finetune == "task"

    def rebuild(self, parent: nn.Module, shapes: dict[str, tuple[int, ...]], ctx: CompressContext) -> nn.Module:
        """As wide as the cached weights say (:func:`shaped_like`: no pruning search, ~0.1 s instead of seconds per
        model), falling back to pruning ``parent`` again without fine-tuning (deterministic: magnitude importance)
        where its layers are not ones that function knows."""
        try:
            return shaped_like(parent, shapes)
        except (ValueError, UserError) as exc:
            log.info("pruned architecture not rebuilt from its weights (%s): pruning again", exc)
            return apply_in(parent, dataclasses.replace(self, finetune_epochs=0), ctx)


def _tp() -> Any:
    try:
        import torch_pruning
    except ImportError:
        raise UserError("prune needs torch-pruning: pip install torch-pruning==1.6.1") from None
    return torch_pruning


def _bert_attentions(model: nn.Module) -> list[nn.Module]:
    return [layer.attention.self for layer in model.bert.encoder.layer]


def _prune_once(model: nn.Module, family: str, channel_ratio: float, config: PruneConfig, example: Any) -> None:
    """One torch-pruning step at ``channel_ratio`` on ``model``, in place (deterministic)."""
    tp = _tp()
    if channel_ratio <= 0.0:
        return
    imp = tp.importance.GroupMagnitudeImportance(p=2)
    if family == "resnet":
        _base_pruner(tp, model, example, imp, channel_ratio, config, [model.fc]).step()
        return
    attns = _bert_attentions(model)
    num_heads: dict[nn.Module, int] = {}
    for a in attns:
        for lin in (a.query, a.key, a.value):
            num_heads[lin] = a.num_attention_heads
    # keep at least one head per layer: torch-pruning removes ceil(ratio · heads)
    min_heads = min(a.num_attention_heads for a in attns)
    head_ratio = min(channel_ratio, (min_heads - 1) / min_heads) if min_heads > 1 else 0.0
    base = model.bert
    ignored: list[nn.Module] = [model.classifier, base.embeddings]
    if base.pooler is not None:
        ignored.append(base.pooler)
    for layer in base.encoder.layer:  # the hidden size (residual stream) is never pruned
        ignored += [layer.attention.output.dense, layer.output.dense]
    pruner = _base_pruner(
        tp,
        model,
        example,
        imp,
        channel_ratio,
        config,
        ignored,
        num_heads=num_heads,
        prune_num_heads=head_ratio > 0,
        prune_head_dims=False,
        head_pruning_ratio=head_ratio,
        output_transform=lambda out: out.logits,
    )
    pruner.step()
    for a in attns:
        heads = pruner.num_heads[a.query]
        a.num_attention_heads = heads
        a.attention_head_size = a.query.out_features // heads
        a.all_head_size = a.query.out_features
        if hasattr(a, "scaling"):
            a.scaling = a.attention_head_size**-0.5


def shaped_like(parent: nn.Module, shapes: dict[str, tuple[int, ...]]) -> nn.Module:
    """A copy of the unpruned ``parent`` whose layers are as wide as ``shapes`` says (name → shape of a pruned
    model's state_dict, e.g. from its safetensors file), weights uninitialised: what loading a pruned model's
    weights needs, without repeating the pruning search (seconds per model on a ResNet-18). Covers what this
    compressor prunes: convolutions without groups, batch norms and linears, and BERT's attention heads (the head
    size is never pruned, so a layer's head count is its query width over the head size). A ValueError for
    anything else whose shape changed (the caller then prunes again)."""
    model = copy.deepcopy(parent)
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        changed = False
        for attr, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            want = shapes.get(prefix + attr)
            if want is None or tuple(tensor.shape) == tuple(want):
                continue
            if len(want) != tensor.dim():
                raise ValueError(f"{prefix}{attr}: {tuple(want)} does not fit {tuple(tensor.shape)}")
            new = torch.empty(want, dtype=tensor.dtype, device=tensor.device)
            if isinstance(tensor, nn.Parameter):
                setattr(module, attr, nn.Parameter(new, requires_grad=tensor.requires_grad))
            else:
                module.register_buffer(attr, new)
            changed = True
        if changed:
            _adopt_widths(name, module)
    if model_family(model, "prune") == "bert":
        for a in _bert_attentions(model):
            a.num_attention_heads = a.query.out_features // a.attention_head_size
            a.all_head_size = a.query.out_features
    return model


def _adopt_widths(name: str, module: nn.Module) -> None:
    """The width attributes of a layer whose tensors :func:`shaped_like` resized."""
    if isinstance(module, nn.Conv2d) and module.groups == 1:
        module.out_channels, module.in_channels = module.weight.shape[:2]
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, nn.BatchNorm2d):
        module.num_features = module.weight.shape[0] if module.weight is not None else module.running_mean.shape[0]
    else:
        raise ValueError(f"{name or 'the model'} ({type(module).__name__}) changed shape; it is not one prune makes")


def _search_round(
    model: nn.Module, family: str, config: PruneConfig, example: Any, base_flops: int, target: float
) -> tuple[nn.Module, float]:
    """Prune a copy of ``model`` with the smallest channel ratio that brings FLOPs to ≤ ``target``.

    Returns (pruned copy, its FLOPs as a fraction of ``base_flops``); when no tried ratio meets the
    target, the copy with the fewest FLOPs (the caller checks the final result against the tolerance).
    """

    def trial(r: float) -> tuple[nn.Module, float]:
        m = copy.deepcopy(model)
        _prune_once(m, family, r, config, example)
        return m, count_model_flops(m, example) / base_flops

    # Bisection assumes FLOPs fall as the ratio grows; that holds until a ratio would empty a narrow layer
    # (torch-pruning then skips that group, so FLOPs jump back up). Starting from the middle keeps the
    # search in the monotone range whenever the target is reachable.
    lo, hi = 0.0, MAX_CHANNEL_RATIO
    best: tuple[nn.Module, float] | None = None  # meets the target with the smallest ratio so far
    fallback: tuple[nn.Module, float] | None = None  # fewest FLOPs seen
    for _ in range(_SEARCH_ITERS):
        mid = (lo + hi) / 2
        pruned, frac = trial(mid)
        if fallback is None or frac < fallback[1]:
            fallback = (pruned, frac)
        if frac <= target:
            hi, best = mid, (pruned, frac)
            if frac >= target - _SEARCH_SLACK:
                break
        else:
            lo = mid
        if hi - lo < _SEARCH_RESOLUTION:
            break
    result = best or fallback
    assert result is not None
    return result


@register_compressor(
    "prune", PruneConfig, "structured pruning (torch-pruning) to a FLOP ratio, then fine-tune (labels or finetune=kd)"
)
def _apply_prune(model: nn.Module, config: PruneConfig, ctx: CompressContext) -> nn.Module:
    family = model_family(model, "prune")
    if is_quantized(model) or any(p.dtype != torch.float32 for p in model.parameters()):
        raise UserError("prune needs an fp32 model; put prune before int8/fp16/bf16 in the chain")
    if config.finetune_epochs > 0 and config.finetune == "task" and ctx.finetune is None:
        raise UserError(
            f"prune finetune_epochs={config.finetune_epochs} needs compress_(..., finetune=train_one_epoch) "
            "or set finetune_epochs=0"
        )
    if config.finetune_epochs > 0 and config.finetune == "kd" and ctx.train_batches is None:
        raise UserError(
            "prune finetune=kd needs training data: pass compress_(..., train_batches=lambda: [(inputs, labels)])"
        )
    teacher = model
    example = ctx.example("prune")
    if family == "bert" and not isinstance(example, dict):
        raise UserError("BERT example_inputs must be a dict with input_ids (and attention_mask)")
    was_training = model.training
    model = copy.deepcopy(model).eval()  # the caller's model stays untouched if the target is missed
    with torch.no_grad():
        base_flops = count_model_flops(model, example)
    achieved = 1.0
    for i in range(1, config.steps + 1):
        target = config.ratio ** (i / config.steps)
        model, achieved = _search_round(model, family, config, example, base_flops, target)
    if achieved > config.ratio + config.tolerance:
        raise UserError(
            f"prune reached {achieved:.3f} of the FLOPs, not <= {config.ratio} + {config.tolerance}; "
            f"lower round_to (now {config.round_to}) or raise the ratio"
        )
    kd_losses: dict[str, float] = {}
    if config.finetune == "kd" and config.finetune_epochs > 0:
        from compressors.distill import distil_into

        losses = distil_into(model, teacher, config.finetune_epochs, ctx, family)
        kd_losses = {"first_epoch_kd_loss": losses[0], "last_epoch_kd_loss": losses[-1]}
    else:
        for _ in range(config.finetune_epochs):
            assert ctx.finetune is not None
            ctx.finetune(model)
    model.train(was_training)
    if family == "bert":
        heads = [a.num_attention_heads for a in _bert_attentions(model)]
        widths = [layer.intermediate.dense.out_features for layer in model.bert.encoder.layer]
        record(model, flops_ratio=round(achieved, 6), heads=heads, ffn_widths=widths, **kd_losses)
    else:
        convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
        record(model, flops_ratio=round(achieved, 6), conv_channels=convs, **kd_losses)
    return model


def _base_pruner(
    tp: Any, model: nn.Module, example: Any, imp: Any, ratio: float, config: Any, ignored: list, **extra: Any
):
    """torch-pruning's BasePruner with the settings every family shares (ratio cap, round_to)."""
    return tp.pruner.BasePruner(
        model,
        example,
        importance=imp,
        pruning_ratio=ratio,
        max_pruning_ratio=MAX_CHANNEL_RATIO,
        ignored_layers=ignored,
        round_to=config.round_to,
        **extra,
    )
