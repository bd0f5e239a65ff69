"""``Cascade``: a staged MainNet with exit heads at some taps; each row leaves at the first exit whose policy
score reaches that exit's threshold, and only the rows still inside run the next segment.

The exits are real: at every exit the leaving rows are compacted out of the batch (``select``), so they never
touch a later segment, at any batch size (tests instrument the segments to prove it). ``EarlyExit``
(:mod:`sidenet.engine.early_exit`) is the one-exit case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sidenet.engine.policies import ExitView, Policy, head_output
from sidenet_core.layouts import Inputs, batch_size_of
from sidenet_core.staged import StagedModel


@dataclass
class ExitOutput:
    logits: torch.Tensor  # [B, C]: each row's from the exit it left at (the MainNet's own for rows that stayed)
    exited: torch.Tensor  # [B] bool: left at an exit head
    confidence: torch.Tensor  # [B]: the policy score at the last exit the row reached
    exit_index: torch.Tensor | None = None  # [B] long: the exit each row left at; len(exits) = ran to the end


class Cascade(nn.Module):
    """``heads[i]`` reads tap ``i`` of ``staged`` (None: no exit there); ``thresholds[i]`` is its exit threshold.

    A threshold of 0 exits every row that reaches the exit; any value above 1 exits none (scores lie in [0, 1]).
    """

    def __init__(
        self,
        staged: StagedModel,
        heads: Sequence[nn.Module | None],
        policy: Policy,
        thresholds: Sequence[float],
    ) -> None:
        super().__init__()
        n_taps = len(staged.taps)
        if len(heads) > n_taps:
            raise ValueError(f"{len(heads)} exit heads for {n_taps} taps")
        if len(thresholds) != len(heads):
            raise ValueError(f"{len(thresholds)} thresholds for {len(heads)} exit heads")
        for t in thresholds:
            if not t >= 0.0:  # also rejects NaN
                raise ValueError(f"threshold must be >= 0, got {t}")
        self.staged = staged
        self.heads = nn.ModuleList([h if h is not None else nn.Identity() for h in heads])
        self._has_head = [h is not None for h in heads]
        self.policy = policy
        self.thresholds = [float(t) for t in thresholds]

    @property
    def n_exits(self) -> int:
        return len(self.heads)

    @torch.no_grad()
    def run(self, inputs: Inputs) -> ExitOutput:
        """One host sync per exit reached (how many rows leave): the shapes after it depend on that number.

        Segments run as ``head`` (segment 0), the segments between exits, and finally ``rest`` when the last exit
        sits at the first tap (the one-exit case), so a split's ``head``/``rest`` see exactly what they did."""
        staged = self.staged
        n = batch_size_of(inputs)
        exits = [i for i in range(self.n_exits) if self._has_head[i]]
        live: torch.Tensor | None = None  # rows of the batch still inside (None: all, in order: no copies yet)
        pieces: list[tuple[torch.Tensor | None, torch.Tensor]] = []  # (rows, logits) of rows that left
        exit_index: torch.Tensor | None = None
        confidence: torch.Tensor | None = None
        state = staged.head(inputs)
        at = 0  # the tap ``state`` is at
        for i in exits:
            for j in range(at + 1, i + 1):
                state = staged.segment(j, state)
            at = i
            features = staged.features(state)
            logits, own = head_output(self.heads[i](features))
            score = self.policy.score(ExitView(logits, features, i, own))
            if exit_index is None:
                exit_index = torch.full((n,), self.n_exits, dtype=torch.long, device=score.device)
                confidence = torch.zeros(n, dtype=torch.float32, device=score.device)
            leave = score >= self.thresholds[i]
            leaving = int(leave.sum())  # the sync
            if live is None:
                confidence.copy_(score.float())
            else:
                confidence.index_copy_(0, live, score.float())
            if leaving == 0:  # nobody leaves (always so at bs 1 when the row stays): no row copies
                continue
            if leaving == leave.numel():
                exit_index[live if live is not None else slice(None)] = i
                pieces.append((live, logits))
                return self._output(pieces, n, exit_index, confidence)
            go = leave.nonzero().squeeze(1)
            stay = (~leave).nonzero().squeeze(1)
            rows_here = live if live is not None else torch.arange(n, device=score.device)
            exit_index[rows_here[go]] = i
            pieces.append((rows_here[go], logits.index_select(0, go)))
            state = staged.select(state, stay)
            live = rows_here[stay]
        final = staged.rest(state) if at == 0 else staged.run_from(at + 1, state)
        pieces.append((live, final))
        return self._output(pieces, n, exit_index, confidence)

    def _output(
        self,
        pieces: list[tuple[torch.Tensor | None, torch.Tensor]],
        n: int,
        exit_index: torch.Tensor | None,
        confidence: torch.Tensor | None,
    ) -> ExitOutput:
        out = _assemble(pieces, n)
        if exit_index is None or confidence is None:  # no exit head at all: the MainNet
            exit_index = torch.full((n,), self.n_exits, dtype=torch.long, device=out.device)
            confidence = torch.zeros(n, dtype=torch.float32, device=out.device)
        return ExitOutput(out, exit_index < self.n_exits, confidence, exit_index)

    def forward(self, inputs: Inputs) -> torch.Tensor:
        return self.run(inputs).logits


def _assemble(pieces: list[tuple[torch.Tensor | None, torch.Tensor]], n: int) -> torch.Tensor:
    """One [B, C] tensor from the logits of the rows that left at each exit (in the final segment's dtype)."""
    if len(pieces) == 1 and pieces[0][0] is None:
        return pieces[0][1]
    dtype = pieces[-1][1].dtype
    first = pieces[0][1]
    out = torch.empty((n, first.shape[-1]), dtype=dtype, device=first.device)
    for rows, logits in pieces:
        if rows is None:
            out.copy_(logits.to(dtype))
        else:
            out.index_copy_(0, rows, logits.to(dtype))
    return out
