"""A BERT sequence classifier on the masked mean of the last hidden states instead of the [CLS] pooler.

Why: sentence-transformers checkpoints such as all-MiniLM-L6-v2 were trained to produce *mean-pooled*
sentence embeddings; their [CLS] state and pooler were never trained for that. Classifying the mean
embedding starts fine-tuning from the representation the checkpoint is good at (on Rotten Tomatoes the
[CLS] head reached 83.0–83.9% test here; see the README for the mean-pooled number).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import BertForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutput

from sidenet_core.layouts import masked_mean


class MeanPoolBertForSequenceClassification(BertForSequenceClassification):
    pooling = "mean"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.bert.pooler = None  # unused: keep it out of parameters, FLOPs and the cache

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
        logits = self.classifier(self.dropout(masked_mean(hidden, attention_mask)))
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)
