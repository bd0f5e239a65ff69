"""EarlyExit: exited rows never reach ``rest``; outputs and FLOPs are exactly those of what ran."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from sidenet.engine.early_exit import EarlyExit, ExitOutput
from sidenet.engine.policies import POLICIES, ConfidencePolicy, register_policy
from sidenet.engine.sidenet import SideNet
from sidenet.engine.split import Split, TextState, split_model
from sidenet_core.errors import UserError
from sidenet_core.flops import count_flops

# ``@register_policy`` turns the module-level functions into ConfidencePolicy objects.
softmax_confidence = POLICIES.get("softmax").confidence
entropy_confidence = POLICIES.get("entropy").confidence


def make_side(split: Split, example: Any, num_classes: int, scale: float = 3.0) -> SideNet:
    """A random SideNet whose confidences are spread out over the batch (seeded)."""
    torch.manual_seed(123)
    side = SideNet(split.feature_dim(example), num_classes, hidden=16).eval()
    with torch.no_grad():
        side.net[-1].weight.mul_(scale)
    return side


def confidences(split: Split, side: SideNet, inputs: Any) -> torch.Tensor:
    with torch.no_grad():
        return softmax_confidence(side(split.features(split.head(inputs))))


def threshold_exiting(conf: torch.Tensor, k: int) -> float:
    """A threshold strictly between the k-th and (k+1)-th largest confidence: exactly k rows exit."""
    c = conf.sort(descending=True).values
    assert c[k - 1] > c[k], "confidences must be distinct around the cut"
    return float((c[k - 1] + c[k]) / 2)


class RestRecorder:
    """Stands in for ``split.rest``: records what it receives, then runs the real one."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: list[Any] = []

    def __call__(self, state: Any) -> torch.Tensor:
        self.calls.append(state)
        return self.real(state)

    @property
    def rows_seen(self) -> int:
        return sum(int((s.hidden if isinstance(s, TextState) else s).shape[0]) for s in self.calls)


def rest_must_not_run(state: Any) -> torch.Tensor:
    raise AssertionError("rest ran although every row exited")


@pytest.fixture
def resnet_case(tiny_resnet: nn.Module) -> tuple[Split, SideNet, torch.Tensor]:
    split = split_model(tiny_resnet, "layer1")
    x = torch.randn(8, 1, 16, 16)
    return split, make_side(split, x, 4, scale=20.0), x


@pytest.fixture
def bert_case(tiny_bert: nn.Module, make_text_batch) -> tuple[Split, SideNet, dict[str, torch.Tensor]]:
    split = split_model(tiny_bert, 2)
    batch = make_text_batch([12, 5, 9, 3, 12, 7, 4, 10])
    return split, make_side(split, batch, 2, scale=20.0), batch


def main_logits(split: Split, inputs: Any) -> torch.Tensor:
    with torch.no_grad():
        return split(inputs)


# ---------------------------------------------------------------- (a) exited rows never reach rest


@pytest.mark.parametrize("k_exit", [1, 3, 6])
def test_resnet_rest_sees_only_survivors(resnet_case, monkeypatch: pytest.MonkeyPatch, k_exit: int) -> None:
    split, side, x = resnet_case
    conf = confidences(split, side, x)
    t = threshold_exiting(conf, k_exit)
    rec = RestRecorder(split.rest)
    monkeypatch.setattr(split, "rest", rec)
    out = EarlyExit(split, side, t).run(x)

    assert isinstance(out, ExitOutput)
    assert int(out.exited.sum()) == k_exit
    assert torch.equal(out.exited, conf >= t)
    assert len(rec.calls) == 1
    assert rec.rows_seen == 8 - k_exit
    with torch.no_grad():
        expected_state = split.head(x)[~out.exited]
    assert torch.equal(rec.calls[0], expected_state)


@pytest.mark.parametrize("k_exit", [2, 5])
def test_bert_rest_sees_only_survivors_padded(bert_case, monkeypatch: pytest.MonkeyPatch, k_exit: int) -> None:
    split, side, batch = bert_case
    conf = confidences(split, side, batch)
    t = threshold_exiting(conf, k_exit)
    rec = RestRecorder(split.rest)
    monkeypatch.setattr(split, "rest", rec)
    out = EarlyExit(split, side, t).run(batch)

    assert int(out.exited.sum()) == k_exit
    assert torch.equal(out.exited, conf >= t)
    assert len(rec.calls) == 1 and rec.rows_seen == 8 - k_exit
    seen = rec.calls[0]
    assert isinstance(seen, TextState)
    stay = ~out.exited
    with torch.no_grad():
        full = split.head(batch)
    assert torch.equal(seen.hidden, full.hidden[stay])
    assert torch.equal(seen.attention_mask, batch["attention_mask"][stay])


def test_threshold_is_inclusive(resnet_case) -> None:
    split, side, x = resnet_case
    conf = confidences(split, side, x)
    top = float(conf.max())
    out = EarlyExit(split, side, top).run(x)
    assert int(out.exited.sum()) == 1
    assert bool(out.exited[conf.argmax()])


# ---------------------------------------------------------------- (b) extreme thresholds


def test_threshold_zero_exits_everything(resnet_case, bert_case, monkeypatch: pytest.MonkeyPatch) -> None:
    for split, side, inputs in (resnet_case, bert_case):
        monkeypatch.setattr(split, "rest", rest_must_not_run)
        out = EarlyExit(split, side, 0.0).run(inputs)
        assert bool(out.exited.all())
        with torch.no_grad():
            side_logits = side(split.features(split.head(inputs)))
        assert torch.equal(out.logits, side_logits)


def test_threshold_above_one_exits_nothing(resnet_case, bert_case, tiny_resnet: nn.Module) -> None:
    for split, side, inputs in (resnet_case, bert_case):
        # a SideNet that is (numerically) certain on every row still cannot exit above 1
        with torch.no_grad():
            side.net[-1].bias.copy_(torch.tensor([1e4] + [0.0] * (side.num_classes - 1)))
        assert bool((confidences(split, side, inputs) == 1.0).all())
        out = EarlyExit(split, side, 1.5).run(inputs)
        assert not bool(out.exited.any())
        assert float((out.logits - main_logits(split, inputs)).abs().max()) == 0.0
    _, _, x = resnet_case
    with torch.no_grad():
        assert torch.equal(EarlyExit(resnet_case[0], resnet_case[1], 1.5)(x), tiny_resnet(x))


# ---------------------------------------------------------------- (c) which logits each row gets


@pytest.mark.parametrize("case", ["resnet_case", "bert_case"])
def test_logits_come_from_the_right_network(request: pytest.FixtureRequest, case: str) -> None:
    split, side, inputs = request.getfixturevalue(case)
    conf = confidences(split, side, inputs)
    out = EarlyExit(split, side, threshold_exiting(conf, 3)).run(inputs)
    exited = out.exited
    assert 0 < int(exited.sum()) < len(exited)
    main = main_logits(split, inputs)
    with torch.no_grad():
        side_logits = side(split.features(split.head(inputs)))
    torch.testing.assert_close(out.logits[~exited], main[~exited], atol=1e-5, rtol=0)
    assert torch.equal(out.logits[exited], side_logits[exited])
    # and they really differ: a mix-up of the two sources would be caught
    assert not torch.allclose(main[exited], side_logits[exited], atol=1e-3)
    assert torch.equal(out.confidence, conf)


# ---------------------------------------------------------------- (d) FLOPs of what executed


def flops_parts(split: Split, side: SideNet, inputs: Any) -> tuple[int, int]:
    f_head_side, state = count_flops(lambda: (s := split.head(inputs), side(split.features(s)))[0])
    f_rest, _ = count_flops(split.rest, state)
    return f_head_side, f_rest


@pytest.mark.parametrize("case", ["resnet_case", "bert_same_length"])
def test_cascade_flops_exact(request: pytest.FixtureRequest, case: str, tiny_bert: nn.Module, make_text_batch) -> None:
    if case == "resnet_case":
        split, side, inputs = request.getfixturevalue(case)
    else:
        split = split_model(tiny_bert, 2)
        inputs = make_text_batch([9] * 8)
        side = make_side(split, inputs, 2, scale=20.0)
    b = 8
    head_side, rest_all = flops_parts(split, side, inputs)
    assert head_side > 0 and rest_all > 0
    assert rest_all % b == 0  # per-row FLOPs are constant here
    conf = confidences(split, side, inputs)
    for k in (0, 3, 8):
        t = 1.5 if k == 0 else (0.0 if k == b else threshold_exiting(conf, k))
        f_cascade, out = count_flops(EarlyExit(split, side, t).run, inputs)
        assert int(out.exited.sum()) == k
        assert f_cascade == head_side + (b - k) * rest_all // b


def test_bert_attention_flops_are_counted(tiny_bert: nn.Module, make_text_batch) -> None:
    """Attention (SDPA, CPU kernel) counts: FlopCounterMode has no formula for it unless registered."""
    split = split_model(tiny_bert, 2)
    short, long = make_text_batch([8]), make_text_batch([16])
    with torch.no_grad():
        f_short, _ = count_flops(split.rest, split.head(short))
        f_long, _ = count_flops(split.rest, split.head(long))
    pooler_classifier = 2 * 32 * 32 + 2 * 32 * 2  # on [CLS] only: independent of the length
    # Linear layers scale with L; attention (QK^T and AV: 2 · 2·L²·hidden per layer, 2 layers) with L².
    quadratic = f_long - pooler_classifier - 2 * (f_short - pooler_classifier)
    assert quadratic == 2 * 4 * 32 * (16**2 - 2 * 8**2)


# ---------------------------------------------------------------- (e) bad arguments


@pytest.mark.parametrize("bad", [-0.1, -1e-9, float("nan"), float("-inf")])
def test_rejects_bad_threshold(resnet_case, bad: float) -> None:
    split, side, _ = resnet_case
    with pytest.raises(ValueError, match="threshold"):
        EarlyExit(split, side, bad)


def test_unknown_policy(resnet_case) -> None:
    split, side, _ = resnet_case
    with pytest.raises(UserError, match="entropy") as info:
        EarlyExit(split, side, 0.5, policy="entropyy")
    assert "\n" not in str(info.value)


def test_entropy_policy_in_cascade(resnet_case) -> None:
    split, side, x = resnet_case
    out = EarlyExit(split, side, 0.0, policy="entropy").run(x)
    with torch.no_grad():
        expected = entropy_confidence(side(split.features(split.head(x))))
    assert torch.equal(out.confidence, expected)


def test_custom_policy(resnet_case) -> None:
    split, side, x = resnet_case
    register_policy("test-first-row-only", "row 0 is certain, others not")(
        lambda logits: (torch.arange(len(logits)) == 0).float()
    )
    try:
        out = EarlyExit(split, side, 0.5, policy="test-first-row-only").run(x)
        assert out.exited.tolist() == [True] + [False] * 7
    finally:
        POLICIES.remove("test-first-row-only")
    assert "test-first-row-only" not in POLICIES


# ---------------------------------------------------------------- (f) policies


def test_softmax_confidence_range_and_value() -> None:
    logits = torch.randn(200, 5) * 10
    c = softmax_confidence(logits)
    assert c.shape == (200,)
    assert bool((c >= 1 / 5 - 1e-6).all()) and bool((c <= 1).all())
    torch.testing.assert_close(softmax_confidence(torch.tensor([[0.0, math.log(3.0)]])), torch.tensor([0.75]))
    torch.testing.assert_close(softmax_confidence(torch.zeros(1, 4)), torch.tensor([0.25]))


def test_entropy_confidence_values() -> None:
    sharp = entropy_confidence(torch.tensor([[50.0, 0.0, 0.0, 0.0]]))
    uniform = entropy_confidence(torch.zeros(3, 4))
    assert float(sharp) == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(uniform, torch.zeros(3), atol=1e-6)
    # p = (0.25, 0.75): entropy H = -(0.25 ln 0.25 + 0.75 ln 0.75), confidence 1 - H / ln 2
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    got = entropy_confidence(torch.tensor([[0.0, math.log(3.0)]]))
    assert float(got) == pytest.approx(1 - h / math.log(2), abs=1e-6)
    rand = entropy_confidence(torch.randn(100, 3) * 5)
    assert bool((rand >= 0).all()) and bool((rand <= 1).all())


def test_policy_registry_contents() -> None:
    assert {"softmax", "entropy"} <= set(POLICIES.names())
    policy = POLICIES.get("softmax")
    assert isinstance(policy, ConfidencePolicy) and policy.name == "softmax"
    with pytest.raises(ValueError, match="already registered"):
        register_policy("softmax", "dup")(lambda logits: logits[:, 0])
    assert POLICIES.get("softmax").confidence is softmax_confidence
