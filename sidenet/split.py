"""Cut a MainNet into ``head`` and ``rest`` that share its modules, for a real early exit.

Forward hooks or ``output_hidden_states=True`` save nothing (the whole network still runs), so the
exit needs an explicit split: ``rest(head(x)) == model(x)`` exactly (max diff 0), and ``rest`` can be
run on any subset of rows. A split exposes four operations:

* ``head(inputs) -> state``: the MainNet up to the tap.
* ``features(state) -> [B, D]``: the pooled tap feature the SideNet reads (not part of the MainNet).
* ``rest(state) -> logits``: the remainder of the MainNet.
* ``select(state, idx) -> state``: the rows ``idx`` of a state (used to run ``rest`` on survivors).

Adapters: torchvision-style ResNets (by stage name), BERT-family transformers models (by layer
index) and :class:`CallableSplit` for bring-your-own models.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sidenet.errors import UserError

Inputs = Any  # a tensor, or a dict of tensors sharing batch dim 0 (e.g. input_ids + attention_mask)


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


def batch_size_of(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return int(obj.shape[0])
    if isinstance(obj, dict):
        return batch_size_of(next(iter(obj.values())))
    if isinstance(obj, tuple | list):
        return batch_size_of(obj[0])
    raise TypeError(f"cannot find the batch size of {type(obj).__name__}")


class Split(nn.Module):
    """Base class: subclasses hold references to the MainNet's own modules (no copies)."""

    tap: str

    def head(self, inputs: Inputs) -> Any:
        raise NotImplementedError

    def rest(self, state: Any) -> torch.Tensor:
        raise NotImplementedError

    def features(self, state: Any) -> torch.Tensor:
        raise NotImplementedError

    def select(self, state: Any, idx: torch.Tensor) -> Any:
        return select_rows(state, idx)

    def forward(self, inputs: Inputs) -> torch.Tensor:
        """The full MainNet through the split (equal to the original forward)."""
        return self.rest(self.head(inputs))

    def feature_dim(self, example_inputs: Inputs) -> int:
        with torch.no_grad():
            return int(self.features(self.head(example_inputs)).shape[-1])


# ---------------------------------------------------------------- ResNet (torchvision layout)

RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")


class ResNetSplit(Split):
    """Split a torchvision-layout ResNet after a stage (``layer1`` … ``layer3``).

    head = conv1, bn1, relu, maxpool, layer1..tap; rest = later stages, avgpool, flatten, fc.
    """

    def __init__(self, model: nn.Module, tap: str) -> None:
        super().__init__()
        if tap not in RESNET_STAGES[:-1]:
            raise UserError(f"ResNet tap {tap!r} is not one of {', '.join(RESNET_STAGES[:-1])} (layer4 leaves no rest)")
        missing = [
            n for n in ("conv1", "bn1", "relu", "maxpool", *RESNET_STAGES, "avgpool", "fc") if not hasattr(model, n)
        ]
        if missing:
            raise UserError(f"model is not a torchvision-layout ResNet (missing {missing}); use CallableSplit")
        self.tap = tap
        k = RESNET_STAGES.index(tap) + 1
        stem = [model.conv1, model.bn1, model.relu, model.maxpool]
        self.head_net = nn.Sequential(*stem, *[getattr(model, s) for s in RESNET_STAGES[:k]])
        self.rest_net = nn.Sequential(
            *[getattr(model, s) for s in RESNET_STAGES[k:]], model.avgpool, nn.Flatten(1), model.fc
        )

    def head(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.head_net(inputs)

    def rest(self, state: torch.Tensor) -> torch.Tensor:
        return self.rest_net(state)

    def features(self, state: torch.Tensor) -> torch.Tensor:
        return state.mean(dim=(2, 3))


# ---------------------------------------------------------------- BERT family (transformers)


@dataclass
class TextState:
    """Hidden states after the tap plus the 2-D padding mask (1 = real token) they belong to."""

    hidden: torch.Tensor
    attention_mask: torch.Tensor


@functools.cache
def _bidirectional_mask_fn() -> Callable[..., Any] | None:
    """transformers 5's mask builder, or None on 4.x (looked up once: this runs on the timed path)."""
    try:
        from transformers.masking_utils import create_bidirectional_mask
    except ImportError:
        return None
    return create_bidirectional_mask


def _bert_layer_mask(base: nn.Module, attention_mask: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor | None:
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


class BertSplit(Split):
    """Split a ``BertForSequenceClassification`` after encoder layer ``tap`` (1 … L-1).

    head = embeddings + the first ``tap`` layers; rest = remaining layers + pooler (or masked mean) + classifier.
    The SideNet feature is the mean of the tap's hidden states over real (unpadded) tokens, which beat
    [CLS] at every layer on Rotten Tomatoes (FINDINGS.md).
    """

    def __init__(self, model: nn.Module, tap: int | str) -> None:
        super().__init__()
        base = getattr(model, "bert", None)
        if base is None or not hasattr(model, "classifier"):
            kind = type(model).__name__
            raise UserError(f"{kind} is not a BERT sequence classifier; wrap your own model with CallableSplit")
        n_layers = len(base.encoder.layer)
        try:
            k = int(tap)
        except (TypeError, ValueError):
            raise UserError(f"BERT tap must be a layer index, got {tap!r}") from None
        if not 1 <= k < n_layers:
            raise UserError(f"BERT tap {k} is outside 1..{n_layers - 1} for a {n_layers}-layer model")
        self.pooling = getattr(model, "pooling", "cls")  # "mean": MeanPoolBertForSequenceClassification
        if self.pooling == "cls" and base.pooler is None:
            raise UserError("BERT model has no pooler; load it with add_pooling_layer=True")
        self.tap = str(k)
        self.base = base
        self.k = k
        self.dropout = model.dropout
        self.classifier = model.classifier

    def _run_layers(self, hidden: torch.Tensor, attention_mask: torch.Tensor, layers: nn.ModuleList) -> torch.Tensor:
        mask = _bert_layer_mask(self.base, attention_mask, hidden)
        for layer in layers:
            out = layer(hidden, mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def head(self, inputs: dict[str, torch.Tensor]) -> TextState:
        ids = inputs["input_ids"]
        attention_mask = inputs.get("attention_mask")
        if attention_mask is None:
            attention_mask = torch.ones_like(ids)
        hidden = self.base.embeddings(input_ids=ids, token_type_ids=inputs.get("token_type_ids"))
        hidden = self._run_layers(hidden, attention_mask, self.base.encoder.layer[: self.k])
        return TextState(hidden, attention_mask)

    def rest(self, state: TextState) -> torch.Tensor:
        hidden = self._run_layers(state.hidden, state.attention_mask, self.base.encoder.layer[self.k :])
        if self.pooling == "mean":
            from sidenet.models.mean_pool_bert import masked_mean

            pooled = masked_mean(hidden, state.attention_mask)
        else:
            pooled = self.base.pooler(hidden)
        return self.classifier(self.dropout(pooled))

    def features(self, state: TextState) -> torch.Tensor:
        from sidenet.models.mean_pool_bert import masked_mean

        return masked_mean(state.hidden, state.attention_mask)

    def select(self, state: TextState, idx: torch.Tensor) -> TextState:
        return TextState(state.hidden.index_select(0, idx), state.attention_mask.index_select(0, idx))


# ---------------------------------------------------------------- bring your own


class CallableSplit(Split):
    """Bring-your-own MainNet: give the two halves as modules and say how to pool the tap.

    ``head`` and ``rest`` must be modules of your MainNet (shared, not copied) such that
    ``rest(head(x))`` equals your model's output. ``pool`` maps the head's output to ``[B, D]``;
    the default flattens any trailing dims after averaging spatial dims of 4-D maps.
    """

    def __init__(
        self,
        head: nn.Module,
        rest: nn.Module,
        pool: Callable[[Any], torch.Tensor] | None = None,
        tap: str = "custom",
    ) -> None:
        super().__init__()
        self.head_net = head
        self.rest_net = rest
        self._pool = pool
        self.tap = tap

    def head(self, inputs: Inputs) -> Any:
        return self.head_net(inputs)

    def rest(self, state: Any) -> torch.Tensor:
        return self.rest_net(state)

    def features(self, state: Any) -> torch.Tensor:
        if self._pool is not None:
            return self._pool(state)
        if state.dim() == 4:
            return state.mean(dim=(2, 3))
        return state.flatten(1)


def split_model(model: nn.Module, tap: int | str) -> Split:
    """Pick the adapter for a known MainNet family; raise a one-line error otherwise.

    A model that is not a plain torch module graph (e.g. an ONNX Runtime wrapper made by a compressor)
    provides its own split through a ``sidenet_split(tap) -> Split`` method, which takes precedence.
    """
    own = getattr(model, "sidenet_split", None)
    if callable(own):
        return own(tap)
    if hasattr(model, "bert") and hasattr(model, "classifier"):
        return BertSplit(model, tap)
    if all(hasattr(model, s) for s in RESNET_STAGES):
        return ResNetSplit(model, str(tap))
    raise UserError(f"no split adapter for {type(model).__name__}; build one with sidenet.CallableSplit(head, rest)")
