"""Bolukbasi et al. 2017: the learned policy's targets, that it learns what is learnable, and network selection
that runs the big network only for the rows it forwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sidenet.engine.cascade import Cascade
from sidenet.engine.policies import ExitView, make_policy
from sidenet.engine.trace import ExitTrace, collect_trace, outcome
from sidenet.exits import bolukbasi, parse_exit_system
from sidenet.exits.bolukbasi import LearnedPolicy, TwoNetworks, _Logits, policy_targets, softmax_stats
from sidenet_core.errors import UserError
from sidenet_core.flops import count_flops


def test_targets_and_weights_on_a_two_exit_toy() -> None:
    # rows: right at the exit / wrong; going on is right / wrong; costs in units of the whole network
    exit_err = np.array([0.0, 1.0, 0.0, 1.0])
    exit_cost = np.array([0.3, 0.3, 0.3, 0.3])
    down_err = np.array([0.0, 0.0, 1.0, 1.0])
    down_cost = np.array([1.0, 1.0, 1.0, 1.0])
    y, w = policy_targets(exit_err, exit_cost, down_err, down_cost, tradeoff=0.5)
    # leave = err + 0.15; stay = down_err + 0.5
    assert y.tolist() == [1.0, 0.0, 1.0, 1.0]
    np.testing.assert_allclose(w, [0.35, 0.65, 1.35, 0.35])
    y0, w0 = policy_targets(exit_err, exit_cost, down_err, down_cost, tradeoff=0.0)
    assert y0.tolist() == [1.0, 0.0, 1.0, 1.0] and w0.tolist() == [0.0, 1.0, 1.0, 0.0]  # ties weigh nothing


def test_fit_trains_from_the_last_exit_backwards_against_what_the_later_policies_do(monkeypatch) -> None:
    """Exit 1 is trained against the MainNet; exit 0 against exit 1's decisions, not against the MainNet."""
    # 3 rows, classes 0; exit 0 wrong on row 1; exit 1 right everywhere; the MainNet wrong on row 2
    one_hot = torch.eye(2) * 4
    exit_logits = torch.stack(
        [
            torch.stack([one_hot[0], one_hot[0]]),
            torch.stack([one_hot[1], one_hot[0]]),
            torch.stack([one_hot[0], one_hot[0]]),
        ]
    )
    final = torch.stack([one_hot[0], one_hot[0], one_hot[1]])
    cost = np.array([[1.0, 2.0, 4.0]] * 3)
    trace = ExitTrace(exit_logits, final, torch.zeros(3, dtype=torch.long), cost, ("a", "b"))
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def always_leave(x, y, w, seed=0):  # exit 1's policy leaves everywhere
        seen.append((y.copy(), w.copy()))
        return torch.tensor([0.0, 0.0, 0.0, 20.0], dtype=torch.float64)

    monkeypatch.setattr(bolukbasi, "fit_logistic", always_leave)
    LearnedPolicy(0.5).fit(trace)
    (y1, w1), (y0, w0) = seen  # exit 1 first
    # exit 1 vs the MainNet, costs /4: leave = 0 + 0.5·0.5 = 0.25; stay = err_main + 0.5·1
    assert y1.tolist() == [1.0, 1.0, 1.0]
    np.testing.assert_allclose(w1, [0.25, 0.25, 1.25])
    # exit 0 vs exit 1 (which leaves everywhere): leave = err0 + 0.125; stay = 0 + 0.25
    assert y0.tolist() == [1.0, 0.0, 1.0]
    np.testing.assert_allclose(w0, [0.125, 0.875, 0.125])


def learnable_trace(n: int, seed: int) -> ExitTrace:
    """Exit 0 is right exactly when it is confident (a margin the softmax statistics show), the MainNet is always
    right: the right exit is learnable from the exit's own outputs."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=gen)
    confident = torch.rand(n, generator=gen) < 0.5
    logits0 = torch.randn(n, 4, generator=gen) * 0.3
    wrong = (labels + 1) % 4
    logits0[torch.arange(n), torch.where(confident, labels, wrong)] += torch.where(confident, 4.0, 0.4)
    final = torch.zeros(n, 4)
    final[torch.arange(n), labels] = 5.0
    cost = np.tile([1.0, 4.0], (n, 1))
    return ExitTrace(logits0[:, None], final, labels, cost, ("a",))


def test_the_learned_policy_beats_a_random_policy_of_the_same_exit_rate() -> None:
    train, test = learnable_trace(2000, 0), learnable_trace(2000, 1)
    policy = LearnedPolicy(0.2)
    policy.fit(train)
    learned = outcome(test, test.scores(policy), [0.5])
    rate = float((learned.exit_index == 0).mean())
    assert 0.3 < rate < 0.7, rate
    rng = np.random.default_rng(0)
    random_acc = np.mean([outcome(test, rng.random((test.n_rows, 1)), [1.0 - rate]).accuracy for _ in range(20)])
    assert learned.accuracy > random_acc + 0.2, (learned.accuracy, random_acc)
    assert learned.accuracy > 0.97  # it leaves almost only where exit 0 is right


def test_learned_scores_are_probabilities_and_the_identity_follows_the_weights() -> None:
    policy = LearnedPolicy(0.1)
    policy.fit(learnable_trace(500, 2))
    logits = torch.randn(7, 4)
    score = policy.score(ExitView(logits, None, 0))
    assert score.shape == (7,) and bool(((score >= 0) & (score <= 1)).all())
    other = LearnedPolicy(0.1)
    other.fit(learnable_trace(500, 3))
    assert policy.identity()["weights"] != other.identity()["weights"]
    assert softmax_stats(logits).shape == (7, 3)


class RowCounter(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.rows: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows.append(x)
        return self.inner(x)


def small_and_big() -> tuple[nn.Module, RowCounter]:
    torch.manual_seed(0)
    small = nn.Sequential(nn.Flatten(1), nn.Linear(16, 3)).eval()
    big = RowCounter(nn.Sequential(nn.Flatten(1), nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 3))).eval()
    with torch.no_grad():
        small[1].weight.mul_(3)
    return small, big


@pytest.mark.parametrize("batch", [1, 5, 16])
def test_network_selection_runs_the_big_network_only_for_forwarded_rows(batch: int) -> None:
    small, big = small_and_big()
    staged = TwoNetworks(small, big)
    x = torch.randn(batch, 1, 4, 4)
    with torch.no_grad():
        conf = make_policy("softmax").confidence(small(x))
    threshold = float(conf.median()) + (1e-6 if batch == 1 else 0.0)  # bs 1: the row goes on to the big network
    out = Cascade(staged, [_Logits()], make_policy("softmax"), [threshold]).run(x)
    forwarded = conf < threshold
    assert torch.equal(~out.exited, forwarded)
    seen = torch.cat(big.rows) if big.rows else torch.empty(0, 1, 4, 4)
    assert seen.shape[0] == int(forwarded.sum())
    assert torch.equal(seen, x[forwarded])
    with torch.no_grad():
        expected = torch.where(forwarded[:, None], big.inner(x), small(x))
    torch.testing.assert_close(out.logits, expected)


def test_network_selection_flops_are_small_plus_forward_rate_times_big() -> None:
    small, big = small_and_big()
    x = torch.randn(16, 1, 4, 4)
    small_flops, _ = count_flops(small, x[:1])
    big_flops, _ = count_flops(big, x[:1])
    staged = TwoNetworks(small, big)
    with torch.no_grad():
        conf = make_policy("softmax").confidence(small(x))
    threshold = float(conf.sort().values[5])  # rows below it (5 of 16) are forwarded
    cascade = Cascade(staged, [_Logits()], make_policy("softmax"), [threshold])
    flops, out = count_flops(cascade.run, x)
    k = int((~out.exited).sum())
    assert k == 5
    assert flops == 16 * small_flops + k * big_flops
    trace = collect_trace([(x, torch.arange(16))], 16, torch.zeros(16, dtype=torch.long), staged, [_Logits()])
    np.testing.assert_allclose(trace.cost[:, 0], small_flops)
    np.testing.assert_allclose(trace.cost[:, 1], small_flops + big_flops)


def test_configs_parse_and_refuse_bad_parameters() -> None:
    assert parse_exit_system("learned:tradeoff=0.1").label() == "learned:tradeoff=0.1"
    assert parse_exit_system("cascade:small=distil").to_dict()["small"] == "distil"
    for spec, message in [
        ("learned:tradeoff=-1", "tradeoff"),
        ("learned:tradeoff=fast", "tradeoff"),
        ("cascade:fit_rows=5", "fit_rows"),
        ("learned:taps=layer1/layer1", "distinct tap names"),
    ]:
        with pytest.raises(UserError, match=message):
            parse_exit_system(spec)
