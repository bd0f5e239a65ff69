"""A MainNet as ordered segments with taps between them: what every exit system runs on.

Forward hooks or ``output_hidden_states=True`` save nothing (the whole network still runs), so an exit needs the
network cut into segments that can be run one after another, each on any subset of rows:
``segment(n, … segment(1, segment(0, x)))`` equals ``model(x)`` exactly (max diff 0). A staged model exposes:

* ``taps``: the names of the cut points, in order (ResNet stage or block names, BERT layer indices as strings);
* ``segment(i, x)``: segment 0 takes the model inputs and returns the state at tap 0; segment ``i`` takes the
  state at tap ``i − 1``; the last (``len(taps)``) returns the logits;
* ``features(state) -> [B, D]``: the pooled feature an exit head reads at a tap (not part of the MainNet);
* ``select(state, idx)``: rows ``idx`` of a state (the survivors of an exit).

timm's ``forward_intermediates`` is the model: taps anywhere, one object. Today's head/rest split is the one-tap
case, kept by name (``head`` = segment 0, ``rest`` = every later segment, ``tap`` = the first tap) so code and
user models written against :class:`Split` keep working.

Why this sits in the bottom layer (``sidenet_core``) and not in the sidenet library: a compressor that replaces
the MainNet's runtime (ONNX Runtime, ``compressors/ort.py``) must hand back its own staged model, so the protocol
has to be importable from ``compressors`` without importing the library above it.

Adapters: torchvision-layout ResNets (by stage name ``layerS`` or residual block ``layerS.B``), BERT-family
transformers sequence classifiers (by layer index), :class:`CallableStaged` for any model given as segment modules
(:class:`CallableSplit`: two segments). ResNet taps may name residual blocks because stages are too coarse for
exits: a ResNet-18 has 3 usable stage boundaries but 7 block boundaries (:func:`resnet_block_taps`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sidenet_core.errors import UserError
from sidenet_core.layouts import RESNET_STAGES, Inputs, bert_layer_mask, masked_mean, select_rows

STAGED_HINT = (
    "build one with sidenet.CallableStaged([segment modules], pool) (two segments: sidenet.CallableSplit) and "
    "return it from your task's staged_model(model, taps)"
)


class StagedModel(nn.Module):
    """Base class: subclasses hold references to the MainNet's own modules (no copies)."""

    taps: tuple[str, ...]

    @property
    def n_segments(self) -> int:
        return len(self.taps) + 1

    def segment(self, i: int, x: Any) -> Any:
        raise NotImplementedError

    def features(self, state: Any) -> torch.Tensor:
        raise NotImplementedError

    def select(self, state: Any, idx: torch.Tensor) -> Any:
        return select_rows(state, idx)

    def run_from(self, i: int, x: Any) -> Any:
        """Segments ``i`` … last on ``x`` (the state at tap ``i − 1``, or the inputs for ``i = 0``)."""
        for j in range(i, self.n_segments):
            x = self.segment(j, x)
        return x

    def forward(self, inputs: Inputs) -> torch.Tensor:
        """The whole MainNet through its segments (equal to the original forward)."""
        return self.run_from(0, inputs)

    # the one-tap vocabulary (head → exit → rest), relative to the first tap
    def head(self, inputs: Inputs) -> Any:
        return self.segment(0, inputs)

    def rest(self, state: Any) -> torch.Tensor:
        return self.run_from(1, state)

    def feature_dim(self, example_inputs: Inputs, tap_index: int = 0) -> int:
        with torch.no_grad():
            state = example_inputs
            for i in range(tap_index + 1):
                state = self.segment(i, state)
            return int(self.features(state).shape[-1])


class Split(StagedModel):
    """The one-tap case written as two halves: subclasses give ``head`` and ``rest`` (and ``tap``)."""

    tap: str

    @property
    def taps(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.tap,)

    def segment(self, i: int, x: Any) -> Any:
        if i == 0:
            return self.head(x)
        if i == 1:
            return self.rest(x)
        raise IndexError(f"a split has 2 segments, not {i + 1}")

    def head(self, inputs: Inputs) -> Any:
        raise NotImplementedError

    def rest(self, state: Any) -> torch.Tensor:
        raise NotImplementedError


def _as_taps(taps: Any) -> tuple[Any, ...]:
    if isinstance(taps, str | int):
        return (taps,)
    return tuple(taps)


# ---------------------------------------------------------------- ResNet (torchvision layout)


_RESNET_TAP = re.compile(r"(layer\d+)(?:\.(0|[1-9]\d*))?")
_RESNET_PARTS = ("conv1", "bn1", "relu", "maxpool", *RESNET_STAGES, "avgpool", "fc")


def _check_resnet_layout(model: nn.Module) -> None:
    missing = [n for n in _RESNET_PARTS if not hasattr(model, n)]
    if missing:
        raise UserError(f"model is not a torchvision-layout ResNet (missing {missing}); {STAGED_HINT}")


def resnet_block_taps(model: nn.Module) -> tuple[str, ...]:
    """Every block-level tap ``layerS.B`` that :class:`ResNetStaged` accepts on ``model``, in network order.

    All block boundaries except the end of the network (after the last block of the last stage: no rest).
    The last block of a stage is the stage's own cut point (``layer1.1`` is ``layer1`` in a ResNet-18), so with
    one block per stage (ResNet-10) this is ``layer1.0``, ``layer2.0``, ``layer3.0``. A stage that is not an
    ``nn.Sequential`` of blocks (an int8 stage quantised as one graph) has no block taps: it can only be cut
    after as a whole, by its stage name.
    """
    _check_resnet_layout(model)
    taps = []
    for s, stage in enumerate(RESNET_STAGES):
        module = getattr(model, stage)
        if not isinstance(module, nn.Sequential):
            continue
        n = len(module) - 1 if s == len(RESNET_STAGES) - 1 else len(module)
        taps += [f"{stage}.{b}" for b in range(n)]
    return tuple(taps)


class ResNetStaged(StagedModel):
    """A torchvision-layout ResNet cut after stages (``layer1`` … ``layer3``) or residual blocks (``layerS.B``).

    ``layerS.B`` cuts after block ``B`` (0-based) of stage ``S``: an exit can sit at any block boundary except the
    network's end (after the last block of ``layer4`` no rest would remain, see :func:`resnet_block_taps`).
    ``layerS`` and ``layerS.<last block>`` name the same cut point; taps must name distinct cut points, in
    network order.

    Segment 0 = conv1, bn1, relu, maxpool and the stages (or blocks) up to the first tap; the last = the stages
    (or blocks) after the last tap, avgpool, flatten, fc. The exit feature is the spatial mean of the tap's
    feature map.

    A stage is expanded into its blocks only when a tap cuts strictly inside it; every other stage stays one
    module inside its segment's ``nn.Sequential``. That keeps stage taps working on stages that are not
    indexable as blocks — int8 quantisation per stage replaces each ``layerK`` by one FX GraphModule — and keeps
    the segments of stage-only taps exactly what they were before block taps existed.
    """

    def __init__(self, model: nn.Module, taps: str | Sequence[str]) -> None:
        super().__init__()
        names = tuple(str(t) for t in _as_taps(taps))
        if not names:
            raise UserError("a staged ResNet needs at least one tap (a stage layer1 … layer3 or a block layerS.B)")
        _check_resnet_layout(model)
        stages = [getattr(model, s) for s in RESNET_STAGES]
        # how many units (blocks; or 1 for a stage not indexable as blocks) each stage runs in all
        whole = [len(m) if isinstance(m, nn.Sequential) else 1 for m in stages]
        cuts = [self._cut_point(model, tap, stages, whole) for tap in names]  # (stage index, units run in it)
        if cuts != sorted(set(cuts)):
            raise UserError(
                f"ResNet taps {list(names)} must name distinct cut points in network order "
                "(layerS is the same cut point as layerS.<last block>)"
            )
        self.taps = names
        self.tap = names[0]
        # the network as a flat list of units; a stage is expanded into its blocks only if a tap cuts inside it
        inside = {s for s, k in cuts if k < whole[s]}
        units: list[nn.Module] = [model.conv1, model.bn1, model.relu, model.maxpool]
        starts = []
        for s, stage in enumerate(stages):
            starts.append(len(units))
            units += list(stage) if s in inside else [stage]
        units += [model.avgpool, nn.Flatten(1), model.fc]
        bounds = [0, *(starts[s] + (k if s in inside else 1) for s, k in cuts), len(units)]
        self.segments = nn.ModuleList(nn.Sequential(*units[a:b]) for a, b in itertools.pairwise(bounds))

    @staticmethod
    def _cut_point(model: nn.Module, tap: str, stages: list[nn.Module], whole: list[int]) -> tuple[int, int]:
        """``tap`` as (stage index, units of that stage run before the cut); a one-line error if invalid."""
        match = _RESNET_TAP.fullmatch(tap)
        if match is None or match.group(1) not in RESNET_STAGES:
            raise UserError(_bad_resnet_tap(model, tap))
        stage = match.group(1)
        s = RESNET_STAGES.index(stage)
        if match.group(2) is None:
            k = whole[s]
        else:
            if not isinstance(stages[s], nn.Sequential):
                raise UserError(
                    f"ResNet tap {tap!r} cuts inside stage {stage}, which is quantised as one graph; "
                    "quantise per block: int8:granularity=block"
                )
            k = int(match.group(2)) + 1
            if k > whole[s]:
                raise UserError(_bad_resnet_tap(model, tap, f"{stage} has {whole[s]} blocks"))
        if s == len(RESNET_STAGES) - 1 and k == whole[s]:
            raise UserError(_bad_resnet_tap(model, tap))
        return s, k

    @property
    def head_net(self) -> nn.Module:
        return self.segments[0]

    @property
    def rest_net(self) -> nn.Module:
        """The one-tap case's second half (with more taps, use ``segments``)."""
        if len(self.segments) != 2:
            raise AttributeError("rest_net is the second half of a one-tap split; this model has more segments")
        return self.segments[1]

    def segment(self, i: int, x: Any) -> Any:
        return self.segments[i](x)

    def features(self, state: torch.Tensor) -> torch.Tensor:
        return state.mean(dim=(2, 3))


def _bad_resnet_tap(model: nn.Module, tap: str, why: str = "") -> str:
    stage_taps = ", ".join(RESNET_STAGES[:-1])
    block_taps = ", ".join(resnet_block_taps(model)) or "none: every stage is quantised as one graph"
    because = f" ({why})" if why else ""
    return (
        f"ResNet tap {tap!r} is not a stage ({stage_taps}) or a block layerS.B ({block_taps}){because}; "
        f"the end of {RESNET_STAGES[-1]} leaves no rest"
    )


# ---------------------------------------------------------------- BERT family (transformers)


@dataclass
class TextState:
    """Hidden states after a tap plus the 2-D padding mask (1 = real token) they belong to."""

    hidden: torch.Tensor
    attention_mask: torch.Tensor

    def select_rows(self, idx: torch.Tensor) -> TextState:
        return TextState(self.hidden.index_select(0, idx), self.attention_mask.index_select(0, idx))


class BertStaged(StagedModel):
    """A ``BertForSequenceClassification`` cut after encoder layers ``taps`` (each in 1 … L−1, increasing).

    Segment 0 = embeddings + the layers up to the first tap; the last = the remaining layers + pooler (or masked
    mean) + classifier. The exit feature is the mean of the tap's hidden states over real (unpadded) tokens,
    which beat [CLS] at every layer on Rotten Tomatoes (FINDINGS.md).
    """

    def __init__(self, model: nn.Module, taps: int | str | Sequence[int | str]) -> None:
        super().__init__()
        base = getattr(model, "bert", None)
        if base is None or not hasattr(model, "classifier"):
            raise UserError(f"{type(model).__name__} is not a BERT sequence classifier; {STAGED_HINT}")
        n_layers = len(base.encoder.layer)
        ks = []
        for tap in _as_taps(taps):
            try:
                k = int(tap)
            except (TypeError, ValueError):
                raise UserError(f"BERT tap must be a layer index, got {tap!r}") from None
            if not 1 <= k < n_layers:
                raise UserError(f"BERT tap {k} is outside 1..{n_layers - 1} for a {n_layers}-layer model")
            ks.append(k)
        if not ks:
            raise UserError("a staged BERT needs at least one tap (a layer index)")
        if ks != sorted(set(ks)):
            raise UserError(f"BERT taps {ks} must be distinct and increasing")
        self.pooling = getattr(model, "pooling", "cls")  # "mean": MeanPoolBertForSequenceClassification
        if self.pooling == "cls" and base.pooler is None:
            raise UserError("BERT model has no pooler; load it with add_pooling_layer=True")
        self.taps = tuple(str(k) for k in ks)
        self.tap = self.taps[0]
        self.ks = tuple(ks)
        self.k = ks[0]
        self.base = base
        self.dropout = model.dropout
        self.classifier = model.classifier
        self._bounds = (0, *ks, n_layers)

    def _run_layers(self, hidden: torch.Tensor, attention_mask: torch.Tensor, layers: Sequence[nn.Module]) -> Any:
        mask = bert_layer_mask(self.base, attention_mask, hidden)
        for layer in layers:
            out = layer(hidden, mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def segment(self, i: int, x: Any) -> Any:
        layers = self.base.encoder.layer[self._bounds[i] : self._bounds[i + 1]]
        if i == 0:
            ids = x["input_ids"]
            attention_mask = x.get("attention_mask")
            if attention_mask is None:
                attention_mask = torch.ones_like(ids)
            hidden = self.base.embeddings(input_ids=ids, token_type_ids=x.get("token_type_ids"))
        else:
            hidden, attention_mask = x.hidden, x.attention_mask
        hidden = self._run_layers(hidden, attention_mask, layers)
        if i < len(self.taps):
            return TextState(hidden, attention_mask)
        pooled = masked_mean(hidden, attention_mask) if self.pooling == "mean" else self.base.pooler(hidden)
        return self.classifier(self.dropout(pooled))

    def features(self, state: TextState) -> torch.Tensor:
        return masked_mean(state.hidden, state.attention_mask)

    def select(self, state: TextState, idx: torch.Tensor) -> TextState:
        return state.select_rows(idx)


# ---------------------------------------------------------------- bring your own


def default_pool(state: Any) -> torch.Tensor:
    """Spatial mean of 4-D maps, else everything after the batch dim flattened."""
    if state.dim() == 4:
        return state.mean(dim=(2, 3))
    return state.flatten(1)


class CallableStaged(StagedModel):
    """Bring-your-own MainNet: its segments as modules (shared, not copied) and how to pool a tap.

    ``segments[-1](… segments[0](x))`` must equal your model's output. ``pool`` maps a tap's state to ``[B, D]``
    (default :func:`default_pool`); ``taps`` names the cut points (default ``tap1`` … ``tapN``).
    """

    def __init__(
        self,
        segments: Sequence[nn.Module],
        pool: Callable[[Any], torch.Tensor] | None = None,
        taps: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if len(segments) < 2:
            raise UserError("a staged model needs at least two segments (one tap)")
        names = tuple(taps) if taps is not None else tuple(f"tap{i + 1}" for i in range(len(segments) - 1))
        if len(names) != len(segments) - 1:
            raise UserError(f"{len(segments)} segments have {len(segments) - 1} taps between them, not {len(names)}")
        self.segments = nn.ModuleList(segments)
        self.taps = names
        self.tap = names[0]
        self._pool = pool

    def segment(self, i: int, x: Any) -> Any:
        return self.segments[i](x)

    def features(self, state: Any) -> torch.Tensor:
        return (self._pool or default_pool)(state)


class CallableSplit(CallableStaged):
    """Two segments: ``head`` and ``rest`` modules of your MainNet with ``rest(head(x)) == model(x)``."""

    def __init__(
        self,
        head: nn.Module,
        rest: nn.Module,
        pool: Callable[[Any], torch.Tensor] | None = None,
        tap: str = "custom",
    ) -> None:
        super().__init__([head, rest], pool, (tap,))
        self.head_net = head
        self.rest_net = rest


# the one-tap names, kept: a staged model with one tap is today's split
ResNetSplit = ResNetStaged
BertSplit = BertStaged


def stage_model(model: nn.Module, taps: str | int | Sequence[str | int]) -> StagedModel:
    """Pick the adapter for a known MainNet family; a one-line error otherwise.

    A model that is not a plain torch module graph (e.g. an ONNX Runtime wrapper made by a compressor) stages
    itself: ``sidenet_staged(taps)`` (any number of taps) or ``sidenet_split(tap)`` (one tap) takes precedence.
    """
    tap_list = _as_taps(taps)
    own = getattr(model, "sidenet_staged", None)
    if callable(own):
        return own(tap_list)
    own_split = getattr(model, "sidenet_split", None)
    if callable(own_split):
        if len(tap_list) != 1:
            raise UserError(
                f"{type(model).__name__} can be cut at one tap only, not at {len(tap_list)}: run exit systems with "
                "several exits on a chain without it (e.g. `int8` instead of `int8:backend=ort`), or the single SideNet"
            )
        return own_split(tap_list[0])
    if hasattr(model, "bert") and hasattr(model, "classifier"):
        return BertStaged(model, tap_list)
    if all(hasattr(model, s) for s in RESNET_STAGES):
        return ResNetStaged(model, [str(t) for t in tap_list])
    raise UserError(f"no staging adapter for {type(model).__name__}; {STAGED_HINT}")


def split_model(model: nn.Module, tap: int | str) -> StagedModel:
    """The one-tap case of :func:`stage_model`."""
    return stage_model(model, (tap,))
