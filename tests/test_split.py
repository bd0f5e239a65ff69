"""Splits: ``rest(head(x))`` reproduces the MainNet's own forward bit for bit; bad taps fail clearly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sidenet.engine.split import (
    BertSplit,
    CallableSplit,
    ResNetSplit,
    TextState,
    batch_size_of,
    select_rows,
    split_model,
)
from sidenet_core.errors import UserError


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).detach().abs().max())


# ---------------------------------------------------------------- ResNet


@pytest.mark.parametrize("tap", ["layer1", "layer2", "layer3"])
def test_resnet_split_equals_forward_exactly(tiny_resnet: nn.Module, tap: str) -> None:
    x = torch.randn(5, 1, 16, 16)
    split = split_model(tiny_resnet, tap)
    assert isinstance(split, ResNetSplit)
    assert split.tap == tap
    with torch.no_grad():
        expected = tiny_resnet(x)
        state = split.head(x)
        got = split.rest(state)
        feats = split.features(state)
    assert got.shape == (5, 4)
    assert max_abs_diff(got, expected) == 0.0
    assert max_abs_diff(split(x), expected) == 0.0
    # pooled tap feature: channel means of the stage output (width·2^k channels)
    k = int(tap[-1])
    assert feats.shape == (5, 8 * 2 ** (k - 1))
    assert torch.equal(feats, state.mean(dim=(2, 3)))
    assert split.feature_dim(x) == 8 * 2 ** (k - 1)


def test_resnet_split_shares_modules(tiny_resnet: nn.Module) -> None:
    split = split_model(tiny_resnet, "layer2")
    assert split.head_net[0] is tiny_resnet.conv1
    assert split.head_net[-1] is tiny_resnet.layer2
    assert split.rest_net[0] is tiny_resnet.layer3
    assert split.rest_net[-1] is tiny_resnet.fc
    # changing the MainNet changes the split (no copies)
    with torch.no_grad():
        tiny_resnet.fc.bias.add_(1.0)
        x = torch.randn(2, 1, 16, 16)
        assert max_abs_diff(split(x), tiny_resnet(x)) == 0.0


@pytest.mark.parametrize("tap", ["layer4", "layer9", "layer0", 1, "conv1"])
def test_resnet_bad_tap(tiny_resnet: nn.Module, tap: object) -> None:
    with pytest.raises(UserError, match="tap") as info:
        split_model(tiny_resnet, tap)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    with pytest.raises(UserError):
        ResNetSplit(tiny_resnet, tap)  # type: ignore[arg-type]


def test_resnet_layer4_message_names_valid_taps(tiny_resnet: nn.Module) -> None:
    with pytest.raises(UserError) as info:
        split_model(tiny_resnet, "layer4")
    msg = str(info.value)
    assert "layer1" in msg and "layer3" in msg and "layer4" in msg


def test_resnet_split_rejects_non_resnet() -> None:
    with pytest.raises(UserError, match="CallableSplit"):
        ResNetSplit(nn.Sequential(nn.Linear(2, 2)), "layer1")


# ---------------------------------------------------------------- BERT


@pytest.mark.parametrize("tap", [1, 2, 3])
def test_bert_split_equals_forward_padded(tiny_bert: nn.Module, text_batch: dict[str, torch.Tensor], tap: int) -> None:
    split = split_model(tiny_bert, tap)
    assert isinstance(split, BertSplit)
    assert split.tap == str(tap)
    with torch.no_grad():
        expected = tiny_bert(input_ids=text_batch["input_ids"], attention_mask=text_batch["attention_mask"]).logits
        state = split.head(text_batch)
        got = split.rest(state)
    assert isinstance(state, TextState)
    assert got.shape == (6, 2)
    assert max_abs_diff(got, expected) == 0.0


@pytest.mark.parametrize("tap", ["1", "3"])
def test_bert_split_equals_forward_unpadded(tiny_bert: nn.Module, make_text_batch, tap: str) -> None:
    batch = make_text_batch([10, 10, 10, 10])
    assert bool((batch["attention_mask"] == 1).all())
    split = split_model(tiny_bert, tap)
    with torch.no_grad():
        expected = tiny_bert(**batch).logits
        without_mask = split({"input_ids": batch["input_ids"]})  # missing mask = all ones
        with_mask = split(batch)
    assert max_abs_diff(with_mask, expected) == 0.0
    assert max_abs_diff(without_mask, expected) == 0.0


def test_bert_padding_does_not_change_a_row(tiny_bert: nn.Module, make_text_batch) -> None:
    """A row's logits do not depend on its padding (the mask reaches every layer of head and rest)."""
    padded = make_text_batch([4, 12])
    alone = {k: v[:1, :4] for k, v in padded.items()}
    split = split_model(tiny_bert, 2)
    with torch.no_grad():
        a = split(padded)[0]
        b = split(alone)[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_bert_features_are_masked_means(tiny_bert: nn.Module, text_batch: dict[str, torch.Tensor]) -> None:
    split = split_model(tiny_bert, 2)
    with torch.no_grad():
        state = split.head(text_batch)
        feats = split.features(state)
    assert feats.shape == (6, 32)
    for i, n in enumerate(text_batch["attention_mask"].sum(1).tolist()):
        torch.testing.assert_close(feats[i], state.hidden[i, :n].mean(0), atol=1e-6, rtol=1e-5)
    # the padded positions' hidden states are not in the feature
    row = 3  # length 3 of 12
    assert not torch.allclose(feats[row], state.hidden[row].mean(0), atol=1e-4)


def test_bert_select_keeps_mask_rows(tiny_bert: nn.Module, text_batch: dict[str, torch.Tensor]) -> None:
    split = split_model(tiny_bert, 1)
    with torch.no_grad():
        state = split.head(text_batch)
    idx = torch.tensor([3, 0])
    sub = split.select(state, idx)
    assert torch.equal(sub.hidden, state.hidden[[3, 0]])
    assert torch.equal(sub.attention_mask, text_batch["attention_mask"][[3, 0]])


@pytest.mark.parametrize("tap", [0, 4, "0", "4", -1, "two", 1.5j, None])
def test_bert_bad_tap(tiny_bert: nn.Module, tap: object) -> None:
    with pytest.raises(UserError) as info:
        split_model(tiny_bert, tap)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)
    assert "tap" in str(info.value)


def test_bert_tap_out_of_range_message(tiny_bert: nn.Module) -> None:
    with pytest.raises(UserError, match=r"1\.\.3"):
        split_model(tiny_bert, 4)


def test_bert_split_rejects_non_bert() -> None:
    with pytest.raises(UserError, match="not a BERT"):
        BertSplit(nn.Linear(2, 2), 1)


# ---------------------------------------------------------------- unknown models / bring your own


class NotAResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer1(x)


@pytest.mark.parametrize("model", [nn.Sequential(nn.Linear(3, 2)), NotAResNet()])
def test_unknown_model_type(model: nn.Module) -> None:
    with pytest.raises(UserError, match="CallableSplit") as info:
        split_model(model, "layer1")
    assert type(model).__name__ in str(info.value)
    assert "\n" not in str(info.value)


def test_callable_split_on_sequential() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(54, 3),
    )
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        expected = model(x)
    split = CallableSplit(model[:2], model[2:], tap="conv1")
    assert split.tap == "conv1"
    assert split.head_net[0] is model[0] and split.rest_net[-1] is model[-1]
    with torch.no_grad():
        state = split.head(x)
        got = split.rest(state)
        feats = split.features(state)
    assert max_abs_diff(got, expected) == 0.0
    assert max_abs_diff(split(x), expected) == 0.0
    # default pooling: spatial mean of a 4-D map
    assert feats.shape == (4, 4)
    assert torch.equal(feats, state.mean(dim=(2, 3)))
    sub = split.select(state, torch.tensor([2]))
    assert max_abs_diff(split.rest(sub), expected[2:3]) < 1e-6


def test_callable_split_pool_and_flatten() -> None:
    head, rest = nn.Linear(3, 5), nn.Linear(5, 2)
    x = torch.randn(2, 3)
    flat = CallableSplit(head, rest)
    with torch.no_grad():
        assert torch.equal(flat.features(head(x)), head(x))
        pooled = CallableSplit(head, rest, pool=lambda s: s[:, :2])
        assert pooled.feature_dim(x) == 2
    assert flat.tap == "custom"


# ---------------------------------------------------------------- select_rows


def test_select_rows_tensor() -> None:
    t = torch.arange(12).reshape(4, 3)
    out = select_rows(t, torch.tensor([3, 1]))
    assert torch.equal(out, torch.tensor([[9, 10, 11], [3, 4, 5]]))


def test_select_rows_dict_tuple_list_none() -> None:
    idx = torch.tensor([2, 0])
    d = {"a": torch.arange(4), "b": torch.arange(8).reshape(4, 2)}
    out = select_rows(d, idx)
    assert set(out) == {"a", "b"}
    assert torch.equal(out["a"], torch.tensor([2, 0]))
    assert torch.equal(out["b"], torch.tensor([[4, 5], [0, 1]]))

    tup = (torch.arange(4), (torch.arange(4) * 10, None))
    out_t = select_rows(tup, idx)
    assert isinstance(out_t, tuple) and isinstance(out_t[1], tuple)
    assert torch.equal(out_t[0], torch.tensor([2, 0]))
    assert torch.equal(out_t[1][0], torch.tensor([20, 0]))
    assert out_t[1][1] is None

    out_l = select_rows([torch.arange(4)], idx)
    assert isinstance(out_l, list) and torch.equal(out_l[0], torch.tensor([2, 0]))


def test_select_rows_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="str"):
        select_rows("abc", torch.tensor([0]))


def test_batch_size_of() -> None:
    assert batch_size_of(torch.zeros(7, 2)) == 7
    assert batch_size_of({"input_ids": torch.zeros(3, 5)}) == 3
    assert batch_size_of((torch.zeros(4),)) == 4
    with pytest.raises(TypeError):
        batch_size_of(3)


@pytest.mark.parametrize("tap", [1, 3])
def test_mean_pool_bert_split_equals_forward_padded(
    tiny_bert: nn.Module, text_batch: dict[str, torch.Tensor], tap: int
):
    """The mean-pooled classifier (Rotten Tomatoes' MainNet) splits exactly too, padding included."""
    from sidenet.models.mean_pool_bert import MeanPoolBertForSequenceClassification
    from sidenet_core.layouts import masked_mean

    model = MeanPoolBertForSequenceClassification(tiny_bert.config).eval()
    assert model.bert.pooler is None
    split = split_model(model, tap)
    with torch.no_grad():
        expected = model(**text_batch).logits
        got = split.rest(split.head(text_batch))
        hidden = model.bert(**text_batch)[0]
        by_hand = model.classifier(masked_mean(hidden, text_batch["attention_mask"]))
    assert max_abs_diff(got, expected) == 0.0
    assert max_abs_diff(expected, by_hand) == 0.0
    # padding must not leak into the pooled feature: a row alone equals the row inside the padded batch
    row = {k: v[1:2, : int(text_batch["attention_mask"][1].sum())] for k, v in text_batch.items()}
    with torch.no_grad():
        alone = model(**row).logits
    assert torch.allclose(alone, expected[1:2], atol=1e-5)
