"""EENets (Demir & Akbas 2024, arXiv 2409.05336): exit blocks with a confidence branch, trained jointly with the
backbone under a cost-aware loss.

Unlike the SideNet, an EENet **retrains the MainNet**: exit blocks (optional BatchNorm → global average pool →
a confidence branch ``Linear → 1, sigmoid`` and a classifier ``Linear → K``) are placed after the residual block
(BERT: the encoder layer) whose cumulative FLOPs first pass a rule's fraction of the plain network's FLOPs F, and
the whole network is trained, initialised from the task's trained MainNet, under

    P′ᵢ = cᵢ·pᵢ + (1 − cᵢ)·P′ᵢ₊₁,   C′ᵢ = cᵢ·costᵢ + (1 − cᵢ)·C′ᵢ₊₁   (P′ₙ = the network's own softmax, C′ₙ = 1)
    v2 (the paper's default): L = Σᵢ₌₀…ₙ [NLL(P′ᵢ) + λ·mean C′ᵢ];   v1: L = NLL(P′₀) + λ·mean C′₀

(the reference code's ``loss_v2`` includes the i = n term, so this does too). At inference a row leaves at the
first exit whose confidence branch reaches the threshold (the paper: 0.5), at any batch size: the cascade compacts
the batch (the reference code runs batch 1 only).

Choices made here, and why:

* **Initialised from the trained MainNet, fine-tuned for a few epochs** (the paper trains 150 epochs from scratch):
  the question this suite asks is what exits add to *this* MainNet, on 2 CPU cores. Adam (the paper's optimiser)
  at a small learning rate for the backbone and 10× that for the new exit blocks, cosine-decayed.
* **BatchNorm on the pooled features** (BatchNorm1d after the pool, not BatchNorm2d before it): in eval mode both
  are the same per-channel affine map before a linear pool; the exit block reads the staged model's pooled
  features, so every adapter (ResNet, BERT, user models) gets exits without new hooks. BERT exits have no BN.
* **Composition with compressors**: the steps of the chain that train (``prune`` with fine-tuning, ``distil``) run
  first and EENet training starts from their output; the post-training steps after them (``int8``, casts) are
  applied to the EENet-trained network. A post-training step before a training step cannot be composed (a
  one-line error). On a ResNet, ``int8`` is applied per residual block (``int8:granularity=block``) because the
  exits sit inside stages that a per-stage graph would swallow; the row's compression log says so.
* **Collapse** (every input taking one exit, as in the paper's own λ logs) is measured on validation at the
  paper's rule and reported, never hidden.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from sidenet.engine import cache
from sidenet.engine.chain import NONE, ChainStep, format_chain, parse_chain
from sidenet.engine.policies import make_policy
from sidenet.engine.trace import ExitTrace, exit_index_at
from sidenet.exits.base import BuiltSystem, ExitSystemConfig, SystemContext, parse_count, register_exit_system
from sidenet.exits.heads import EVAL_BATCH, device_fields, freeze
from sidenet.tasks.compressed import bert_layer_count, chain_configs
from sidenet_core.errors import UserError
from sidenet_core.flops import count_flops
from sidenet_core.layouts import model_logits, to_device
from sidenet_core.precision import autocast
from sidenet_core.staged import StagedModel, resnet_block_taps
from sidenet_core.status import announce
from sidenet_core.train_convs import one_by_one_outputs_as_matmuls

RULES = ("pareto", "fine", "linear", "golden")
LOSSES = ("v1", "v2")
GOLDEN = 1.61803398875
COLLAPSE_SHARE = 0.99  # one exit taking at least this share of validation rows is a collapse
HEAD_LR_FACTOR = 10.0  # the exit blocks start from scratch; the backbone from a trained MainNet
# upper bounds of the integer parameters: one exit per block at most (a ResNet-152 has 50), and training that
# fine-tunes a trained MainNet (default 1 epoch; the paper's 150 are from scratch) is never worth days of a bench
INT_RANGES: dict[str, tuple[int, int]] = {"exits": (1, 64), "epochs": (1, 100)}


# ---------------------------------------------------------------- placement


def flop_thresholds(rule: str, n_exits: int, total: float) -> list[float]:
    """The cumulative-FLOP threshold of each exit under ``rule`` (the paper's four distributions)."""
    if rule not in RULES:
        raise UserError(f"eenet rule {rule!r} is not one of {', '.join(RULES)}")
    out = []
    for i in range(n_exits):
        if rule == "pareto":
            out.append(total * (1 - 0.8 ** (i + 1)))
        elif rule == "fine":
            out.append(total * (1 - 0.95 ** (i + 1)))
        elif rule == "linear":
            out.append(total * (i + 1) / (n_exits + 1))
        else:
            out.append(total * GOLDEN ** (i - n_exits))
    return out


def place_exits(cumulative: Sequence[float], total: float, n_exits: int, rule: str) -> list[int]:
    """Indices of the block boundaries that get an exit: walking the blocks in order, exit ``k`` goes after the
    first block whose cumulative FLOPs reach threshold ``k``, one exit per block at most (the reference code's
    rule, so two thresholds passed by one block put the second exit one block later)."""
    thresholds = flop_thresholds(rule, n_exits, total)
    chosen: list[int] = []
    for b, flops in enumerate(cumulative):
        if len(chosen) < n_exits and flops >= thresholds[len(chosen)]:
            chosen.append(b)
    if len(chosen) < n_exits:
        raise UserError(
            f"eenet rule {rule!r} places only {len(chosen)} of {n_exits} exits before the network's last block; "
            "use fewer exits or another rule"
        )
    return chosen


# ---------------------------------------------------------------- exit block and loss


class ExitBlock(nn.Module):
    """Pooled features → (logits [B, K], confidence [B] in [0, 1])."""

    def __init__(self, dim: int, num_classes: int, batch_norm: bool) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim) if batch_norm else nn.Identity()
        self.confidence = nn.Linear(dim, 1)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm(features)
        return self.classifier(h), torch.sigmoid(self.confidence(h)).squeeze(-1)


def eenet_loss(
    probs: Sequence[torch.Tensor],
    confidences: Sequence[torch.Tensor],
    costs: Sequence[float],
    labels: torch.Tensor,
    lam: float,
    version: str = "v2",
) -> torch.Tensor:
    """The cost-aware loss. ``probs``: softmax of every exit, then the network's own ([B, K] each; E + 1);
    ``confidences``: [B] per exit (E); ``costs``: FLOPs up to each exit ÷ the plain network's (E; the end costs 1)."""
    if len(probs) != len(confidences) + 1 or len(costs) != len(confidences):
        raise ValueError("eenet_loss: give E + 1 probabilities, E confidences and E costs")
    if version not in LOSSES:
        raise ValueError(f"eenet loss {version!r} is not one of {LOSSES}")

    def nll(p: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(p.clamp_min(1e-12).log(), labels)

    cum_p = probs[-1]
    cum_c = torch.ones_like(confidences[0]) if confidences else torch.ones(labels.shape[0])
    total = nll(cum_p) + lam * cum_c.mean() if version == "v2" else cum_p.new_zeros(())
    for i in range(len(confidences) - 1, -1, -1):
        c = confidences[i]
        cum_p = c.unsqueeze(1) * probs[i] + (1 - c.unsqueeze(1)) * cum_p
        cum_c = c * costs[i] + (1 - c) * cum_c
        if version == "v2":
            total = total + nll(cum_p) + lam * cum_c.mean()
    if version == "v1":
        total = nll(cum_p) + lam * cum_c.mean()
    return total


def _forward_all(staged: StagedModel, heads: nn.ModuleList, inputs: Any) -> tuple[list[Any], torch.Tensor]:
    """Every exit block's output and the network's own logits (training: no row leaves)."""
    outs, state = [], inputs
    for i in range(len(heads)):
        state = staged.segment(i, state)
        outs.append(heads[i](staged.features(state)))
    return outs, staged.segment(len(heads), state)


@dataclass(frozen=True)
class EENetRecipe:
    """What EENet training is given (all part of its cache key)."""

    lam: float
    loss: str
    epochs: int
    lr: float
    costs: tuple[float, ...]
    batch_size: int
    precision: str
    seed: int = 0


def train_eenet(
    task: Any, staged: StagedModel, heads: nn.ModuleList, train: Any, recipe: EENetRecipe, progress: bool
) -> dict[str, Any]:
    """Backbone and exit blocks together, in place, under :func:`eenet_loss`; returns a small training log."""
    backbone = [p for p in staged.parameters() if p.requires_grad]
    opt = torch.optim.Adam(
        [{"params": backbone, "lr": recipe.lr}, {"params": heads.parameters(), "lr": recipe.lr * HEAD_LR_FACTOR}]
    )
    gen = torch.Generator().manual_seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    epochs = [task.epoch_batches(train, recipe.batch_size, gen) for _ in range(recipe.epochs)]
    total = sum(len(e) for e in epochs)
    warmup = max(1, total // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / total))
    )
    staged.train()
    heads.train()
    start, loss_val = time.perf_counter(), float("nan")
    bar = tqdm(total=total, desc=f"train {task.name} EENet", unit="step", disable=not progress, leave=False)
    with one_by_one_outputs_as_matmuls(staged):  # exact; layer4's 1×1 maps (sidenet_core.train_convs)
        for batches in epochs:
            for idx in batches:
                if len(idx) < 2:  # BatchNorm in training mode needs two rows (an epoch's last batch can have one)
                    continue
                inputs, _ = task.batches(train, len(idx), idx=idx)[0]
                labels = train.labels.index_select(0, idx)
                with autocast(recipe.precision):
                    outs, final = _forward_all(staged, heads, inputs)
                probs = [o[0].float().softmax(-1) for o in outs] + [final.float().softmax(-1)]
                confs = [o[1].float() for o in outs]
                loss = eenet_loss(probs, confs, recipe.costs, labels, recipe.lam, recipe.loss)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([*backbone, *heads.parameters()], 5.0)
                opt.step()
                sched.step()
                loss_val = loss.item()
                bar.update(1)
                bar.set_postfix(loss=f"{loss_val:.3f}")
    bar.close()
    freeze(staged)
    freeze(heads)
    bad = [n for n, p in [*staged.named_parameters(), *heads.named_parameters()] if not torch.isfinite(p).all()]
    if bad:
        raise RuntimeError(f"EENet training produced non-finite weights in {bad[:3]}")
    return {"steps": total, "final_loss": loss_val, "seconds": time.perf_counter() - start}


# ---------------------------------------------------------------- composing with a chain


def split_chain(chain: str) -> tuple[str, str]:
    """(the steps EENet training starts from, the post-training steps applied after it), as chain specs. Which
    steps train is each compressor config's own answer (``trains()`` / ``post_training()``), parsed once."""
    steps = parse_chain(chain)
    configs = chain_configs(steps)
    last = max((i for i, c in enumerate(configs) if c.trains()), default=-1)
    before = [s for s, c in zip(steps[:last], configs[:last], strict=True) if c.post_training()]
    if before:
        raise UserError(
            f"eenet cannot compose chain {chain!r}: {before[0].name} comes before a step that trains; EENet training "
            "would undo it. Put post-training steps (int8, casts) last"
        )
    prefix, suffix = steps[: last + 1], steps[last + 1 :]
    return format_chain(prefix) if prefix else NONE, format_chain(suffix) if suffix else NONE


def post_chain_for(model: nn.Module, suffix: str) -> str:
    """The post-training steps as applied to an EENet on a ResNet, whose exits sit inside stages: each step's
    config says how (``with_exits_inside_stages``: ``int8`` quantises per block unless the user chose a
    granularity)."""
    if suffix == NONE or bert_layer_count(model) is not None:
        return suffix
    from compressors import COMPRESSORS

    steps = []
    for step in parse_chain(suffix):
        params = COMPRESSORS.get(step.name).config_cls.with_exits_inside_stages(dict(step.params))
        steps.append(ChainStep(step.name, tuple(sorted(params.items()))))
    return format_chain(tuple(steps))


def _check_casts(model: nn.Module, post: str, taps: Sequence[str]) -> None:
    """Steps that wrap whole ResNet stages (``whole_stages``: the fp16/bf16 casts): an exit inside a stage could
    not be cut out of such a model."""
    from compressors import COMPRESSORS

    wrapping = [s.name for s in parse_chain(post) if COMPRESSORS.get(s.name).config_cls.whole_stages]
    inside = [t for t in taps if "." in t]
    if bert_layer_count(model) is None and inside and wrapping:
        raise UserError(
            f"eenet cannot compose {post!r} on a ResNet with exits inside stages ({', '.join(inside)}): the cast "
            "wraps whole stages; drop the cast or use a placement whose exits fall at stage ends"
        )


# ---------------------------------------------------------------- the exit system


def block_taps(model: nn.Module) -> tuple[str, ...]:
    """Every block boundary that leaves a rest: ResNet residual blocks, BERT layers 1 … L−1."""
    layers = bert_layer_count(model)
    if layers is not None:
        return tuple(str(k) for k in range(1, layers))
    return resnet_block_taps(model)


def flop_profile(staged: StagedModel, example: Any) -> list[float]:
    """FLOPs per sample of every segment of ``staged`` on ``example`` (E + 1 values; their sum is F)."""
    rows = float(example["input_ids"].shape[0] if isinstance(example, dict) else example.shape[0])
    out, state = [], example
    with torch.no_grad():
        for i in range(staged.n_segments):
            flops, state = count_flops(staged.segment, i, state)
            out.append(flops / rows)
    return out


def _float_field(name: str, value: str, low: float = 0.0) -> float:
    try:
        x = float(value)
    except ValueError:
        raise UserError(f"eenet {name} must be a number, got {value!r}") from None
    if not x >= low or math.isinf(x):
        raise UserError(f"eenet {name} must be >= {low}, got {value!r}")
    return x


def _int_field(name: str, value: str) -> int:
    low, high = INT_RANGES[name]
    return parse_count("eenet", name, value, low, high)


@register_exit_system
@dataclass(frozen=True)
class EENetSystem(ExitSystemConfig):
    name: ClassVar[str] = "eenet"
    # the paper's rule (exit when the confidence branch says >= 0.5), and the same trained EENet at a threshold
    # chosen on validation, like every other system
    bench_defaults: ClassVar[tuple[str, ...]] = ("eenet", "eenet:threshold=val")
    default_rank: ClassVar[int] = 60
    description: ClassVar[str] = (
        "EENets (Demir & Akbas 2024): exit blocks with a confidence branch placed by a FLOP rule, trained jointly "
        "with the backbone (from the MainNet) under the cost-aware loss; exits when the branch passes 0.5"
    )
    retrains_backbone: ClassVar[bool] = True
    exits: str = "2"  # number of exit blocks
    rule: str = "fine"  # placement: pareto | fine | linear | golden
    lam: str = "1.0"  # λ, the cost term's weight (swept to trace a curve: one trained network per value)
    loss: str = "v2"  # v2: every exit's term (the paper's default); v1: the first only
    epochs: str = "1"  # EENet training epochs, from the trained MainNet
    lr: str = "0.0001"  # Adam learning rate of the backbone (exit blocks: 10×)
    threshold: str = "0.5"  # the confidence branch's exit threshold, or "val": chosen on validation

    def __post_init__(self) -> None:
        flop_thresholds(self.rule, 1, 1.0)
        if self.loss not in LOSSES:
            raise UserError(f"eenet loss {self.loss!r} is not one of {', '.join(LOSSES)}")
        if _float_field("lr", self.lr) <= 0:
            raise UserError(f"eenet lr must be > 0, got {self.lr!r}")
        # one spelling per value (lam=1, lam=1.0 and lam=1e0 are one cell): numbers written back canonically
        canonical = {
            "exits": str(_int_field("exits", self.exits)),
            "epochs": str(_int_field("epochs", self.epochs)),
            "lam": repr(_float_field("lam", self.lam)),
            "lr": repr(_float_field("lr", self.lr)),
        }
        if self.threshold != "val":
            canonical["threshold"] = repr(_float_field("threshold", self.threshold))
        for name, value in canonical.items():
            object.__setattr__(self, name, value)

    def build(self, ctx: SystemContext) -> BuiltSystem:
        prefix, suffix = split_chain(ctx.chain)
        if prefix == NONE:
            start, start_key = ctx.baseline, ctx.baseline_key
        elif ctx.mainnet_for is None:
            raise UserError(f"eenet on chain {ctx.chain!r} needs the harness (a context that gives other chains)")
        else:
            start, start_key = ctx.mainnet_for(prefix)
        backbone = copy.deepcopy(start)
        taps, costs, heads = self._place(ctx, backbone)
        post = post_chain_for(backbone, suffix)
        _check_casts(backbone, post, taps)  # before any training: a chain that cannot compose fails in a second
        recipe = EENetRecipe(
            lam=float(self.lam),
            loss=self.loss,
            epochs=int(self.epochs),
            lr=float(self.lr),
            costs=tuple(round(c, 6) for c in costs),
            batch_size=int(getattr(getattr(ctx.task, "config", None), "batch_size", 64)),
            precision=ctx.task.training_precision(),
        )
        key, meta = self._load_or_train(ctx, backbone, heads, taps, recipe, start_key, prefix)
        model, model_key = backbone, key
        if post != NONE:
            if ctx.compress is None:
                raise UserError(f"eenet on chain {ctx.chain!r} needs a context that can apply {post!r}")
            model, model_key = ctx.compress(backbone, key, post)
        staged = ctx.task.staged_model(model, taps)
        policy = make_policy("branch")
        reference = _reference_correct(ctx)  # losses on validation are against the original MainNet, both modes
        fixed = None if self.threshold == "val" else float(self.threshold)
        identity = {
            "system": self.to_dict(),
            "taps": list(taps),
            "eenet": key,
            "post_chain": post,
            "model": model_key,
            "policy": policy.identity(),
        }
        details = {
            "kind": "eenet",
            "rule": self.rule,
            "n_exits": len(taps),
            "lam": recipe.lam,
            "loss": recipe.loss,
            "epochs": recipe.epochs,
            "lr": recipe.lr,
            "taps": list(taps),
            "exit_costs": [float(c) for c in costs],
            "trained_from": prefix,
            "post_chain": post,
            "threshold_mode": "val" if fixed is None else self.threshold,
        }
        return BuiltSystem(
            staged,
            list(heads),
            policy,
            identity,
            float(meta.get("seconds", 0.0)),
            sum(p.numel() for p in heads.parameters()),
            choose=None if fixed is None else (lambda val, target, margin: (policy, [fixed] * len(taps))),
            reference_val=reference,
            describe=lambda val, test: {**details, **describe_traces(val, test)},
        )

    def _place(self, ctx: SystemContext, backbone: nn.Module) -> tuple[tuple[str, ...], list[float], nn.ModuleList]:
        """The rule's taps (from the plain network's FLOPs per block), each exit's cost ÷ F (exit block included)
        and fresh exit blocks for them."""
        example = to_device(ctx.task.batches(ctx.data["val"], 8, by_length=True)[0][0], ctx.device)
        every = block_taps(backbone)
        profile = flop_profile(ctx.task.staged_model(backbone, every), example)
        total = float(sum(profile))
        cumulative = np.cumsum(profile)[:-1].tolist()
        chosen = place_exits(cumulative, total, int(self.exits), self.rule)
        taps = tuple(every[b] for b in chosen)
        staged = ctx.task.staged_model(backbone, taps)
        dims = [staged.feature_dim(example, i) for i in range(len(taps))]
        torch.manual_seed(0)
        batch_norm = bert_layer_count(backbone) is None
        heads = nn.ModuleList([ExitBlock(d, ctx.num_classes, batch_norm) for d in dims]).to(ctx.device)
        head_flops = [
            count_flops(lambda h=h, d=d: h.eval()(torch.zeros(1, d, device=ctx.device)))[0]
            for h, d in zip(heads, dims, strict=True)
        ]
        costs = [(cumulative[b] + hf) / total for b, hf in zip(chosen, head_flops, strict=True)]
        return taps, costs, heads

    def _load_or_train(
        self,
        ctx: SystemContext,
        backbone: nn.Module,
        heads: nn.ModuleList,
        taps: tuple[str, ...],
        recipe: EENetRecipe,
        start_key: str,
        prefix: str,
    ) -> tuple[str, dict[str, Any]]:
        """Backbone and exits from the cache (keyed by the network trained from and the whole recipe), or trained
        now and cached; both come back frozen."""
        key = cache.artifact_key(
            "eenet",
            {"parent": start_key, "taps": list(taps), "recipe": recipe.__dict__, **device_fields(ctx.device)},
        )
        net = nn.ModuleDict({"backbone": backbone, "exits": heads})
        meta = cache.load_into(net, key)
        if meta is None:
            for p in backbone.parameters():
                p.requires_grad_(True)
            announce(f"training the {ctx.task.name} EENet ({self.label()}, from {prefix})")
            staged = ctx.task.staged_model(backbone, taps)
            log = train_eenet(ctx.task, staged, heads, ctx.data["train"], recipe, ctx.progress)
            meta = {"task": ctx.task.name, "chain": prefix, "taps": list(taps), "log": log, "seconds": log["seconds"]}
            cache.store(net, key, meta)
        freeze(backbone)
        freeze(heads)
        return key, meta


# the fp32 MainNet's right/wrong on validation, per MainNet object and validation split: every EENet config of a task
# (λ, rule, threshold mode, chain, batch size) is selected against the same reference, one pass for them all
_REFERENCE: weakref.WeakKeyDictionary[nn.Module, list[tuple[Any, str, np.ndarray]]] = weakref.WeakKeyDictionary()


def _reference_correct(ctx: SystemContext) -> np.ndarray:
    """[N] whether the original fp32 MainNet is right on each validation row (the loss an EENet is selected under
    counts what retraining cost). Computed once per MainNet, validation split (the same object) and device."""
    known = _REFERENCE.setdefault(ctx.baseline, [])
    val, device = ctx.data["val"], str(ctx.device)
    for seen_val, seen_device, right in known:
        if seen_val is val and seen_device == device:
            return right
    baseline_key = getattr(ctx, "baseline_key", "")
    key = cache.artifact_key(
        "reference-val",
        {"mainnet": baseline_key, "val": _labels_digest(val.labels), "rows": len(val), **device_fields(ctx.device)},
    )
    hit = cache.load_tensors(key) if baseline_key else None
    if hit is not None:  # a timing worker rebuilding an EENet loads this instead of running the MainNet on val
        right = hit[0]["right"].numpy().astype(bool)
    else:
        announce(f"running the fp32 {ctx.task.name} MainNet on validation (the EENet selection's reference)")
        right = _reference_pass(ctx)
        if baseline_key:
            cache.store_tensors(key, {"right": torch.from_numpy(right.astype(np.uint8))}, {"task": ctx.task.name})
    known.append((val, device, right))
    return right


def _labels_digest(labels: torch.Tensor) -> str:
    return hashlib.sha256(labels.numpy().tobytes()).hexdigest()[:16]


@torch.inference_mode()
def _reference_pass(ctx: SystemContext) -> np.ndarray:
    val = ctx.data["val"]
    right = np.zeros(len(val), dtype=bool)
    for inputs, idx in ctx.task.batches(val, EVAL_BATCH, by_length=True):
        pred = model_logits(ctx.baseline, to_device(inputs, ctx.device)).argmax(-1).cpu()
        right[idx.numpy()] = (pred == val.labels.index_select(0, idx)).numpy()
    return right


def describe_traces(val: ExitTrace, test: ExitTrace) -> dict[str, Any]:
    """The retrained backbone's own accuracy (exits off), exit rates at the paper's rule, and collapse."""
    branch = make_policy("branch")
    rates: dict[str, list[float]] = {}
    counts: dict[str, np.ndarray] = {}
    for name, trace in (("val", val), ("test", test)):
        idx = exit_index_at(trace.scores(branch), [0.5] * trace.n_exits)
        counts[name] = np.bincount(idx, minlength=trace.n_exits + 1) / max(trace.n_rows, 1)
        rates[name] = [float(x) for x in counts[name][: trace.n_exits]]
    top = int(np.argmax(counts["val"]))
    share = float(counts["val"][top])
    return {
        "backbone_test_accuracy": float(test.correct()[:, -1].mean()),
        "backbone_val_accuracy": float(val.correct()[:, -1].mean()),
        "paper_rule_exit_rates": rates,
        "collapse": {"collapsed": share >= COLLAPSE_SHARE, "exit": top, "share": share, "split": "val"},
    }
