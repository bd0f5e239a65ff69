"""EENets (Demir & Akbas 2024): the cost-aware loss, FLOP-rule placement, real exits on the confidence branch,
collapse detection, composition with compressor chains, and the system end to end on the tiny tasks."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from sidenet.bench.pipeline import load_or_train_mainnet, load_task_data, prepare, prepare_system
from sidenet.engine.cascade import Cascade
from sidenet.engine.policies import make_policy
from sidenet.engine.trace import ExitTrace
from sidenet.exits import parse_exit_system
from sidenet.exits.eenet import (
    ExitBlock,
    _check_casts,
    describe_traces,
    eenet_loss,
    flop_thresholds,
    place_exits,
    post_chain_for,
    split_chain,
)
from sidenet.tasks import TASKS
from sidenet_core.errors import UserError
from sidenet_core.layouts import build_resnet
from sidenet_core.staged import ResNetStaged


def test_the_loss_equals_a_hand_computed_value_on_a_two_exit_toy() -> None:
    probs = [torch.tensor([[0.7, 0.3]]), torch.tensor([[0.4, 0.6]]), torch.tensor([[0.2, 0.8]])]
    confs = [torch.tensor([0.6]), torch.tensor([0.5])]
    costs = [0.2, 0.5]
    label = torch.tensor([0])
    # by hand: P'2 = p2, C'2 = 1; P'1 = .5·p1 + .5·p2 = (.3, .7), C'1 = .5·.5 + .5·1 = .75;
    # P'0 = .6·p0 + .4·P'1 = (.54, .46), C'0 = .6·.2 + .4·.75 = .42
    v2 = (-math.log(0.2) + 1.0) + (-math.log(0.3) + 0.75) + (-math.log(0.54) + 0.42)
    v1 = -math.log(0.54) + 0.42
    assert eenet_loss(probs, confs, costs, label, 1.0, "v2").item() == pytest.approx(v2, rel=1e-6)
    assert eenet_loss(probs, confs, costs, label, 1.0, "v1").item() == pytest.approx(v1, rel=1e-6)
    # λ weighs the cost terms only
    lam2 = v2 + (1.0 + 0.75 + 0.42)
    assert eenet_loss(probs, confs, costs, label, 2.0, "v2").item() == pytest.approx(lam2, rel=1e-6)


def test_placement_picks_the_blocks_the_rule_says_on_a_toy_flop_profile() -> None:
    cumulative = [10.0, 25.0, 40.0, 60.0, 80.0, 95.0]  # after each block; the whole network: 100
    assert flop_thresholds("fine", 2, 100.0) == pytest.approx([5.0, 9.75])
    assert place_exits(cumulative, 100.0, 2, "fine") == [0, 1]  # both passed by block 0: the second one block later
    assert place_exits(cumulative, 100.0, 2, "pareto") == [1, 2]  # 20, 36
    assert place_exits(cumulative, 100.0, 2, "linear") == [2, 4]  # 33.3, 66.7
    assert place_exits(cumulative, 100.0, 2, "golden") == [2, 4]  # 38.2, 61.8
    assert place_exits(cumulative, 100.0, 3, "linear") == [1, 3, 4]  # 25, 50, 75
    with pytest.raises(UserError, match="places only"):
        place_exits(cumulative, 100.0, 7, "fine")
    with pytest.raises(UserError, match="rule"):
        flop_thresholds("cubic", 2, 100.0)


class _Counting:
    """Wraps a staged model's segments and records how many rows each one ran on."""

    def __init__(self, staged: ResNetStaged) -> None:
        self.staged, self.rows = staged, {i: 0 for i in range(staged.n_segments)}
        self.inner = staged.segment
        staged.segment = self  # type: ignore[method-assign]

    def __call__(self, i: int, x: Any) -> Any:
        self.rows[i] += int(x.shape[0])
        return self.inner(i, x)


def _steered_block(dim: int, classes: int, cut: float) -> ExitBlock:
    """An exit block whose confidence is ~1 for rows with feature 0 above ``cut`` and ~0 below."""
    block = ExitBlock(dim, classes, batch_norm=False).eval()
    with torch.no_grad():
        block.confidence.weight.zero_()
        block.confidence.weight[0, 0] = 200.0
        block.confidence.bias.fill_(-200.0 * cut)
    return block


def test_rows_whose_confidence_passes_never_run_later_segments() -> None:
    torch.manual_seed(0)
    model = build_resnet("resnet18", 8, 1, 10).eval()
    staged = ResNetStaged(model, ("layer1.0", "layer2.1"))
    x = torch.randn(24, 1, 32, 32)
    with torch.no_grad():
        f0 = staged.features(staged.segment(0, x))[:, 0]
    cut = float(f0.median())
    heads = [_steered_block(8, 10, cut), _steered_block(16, 10, 1e9)]  # the second never exits
    leave = int((f0 >= cut).sum())
    counter = _Counting(staged)
    out = Cascade(staged, heads, make_policy("branch"), [0.5, 0.5]).run(x)
    assert 0 < leave < 24
    assert counter.rows == {0: 24, 1: 24 - leave, 2: 24 - leave}
    assert out.exit_index.tolist() == [0 if v >= cut else 2 for v in f0.tolist()]
    with torch.no_grad():
        full = model(x)
    stayed = out.exit_index == 2
    torch.testing.assert_close(out.logits[stayed], full[stayed])


def test_the_branch_policy_refuses_heads_without_a_confidence_branch() -> None:
    model = build_resnet("resnet18", 8, 1, 10).eval()
    staged = ResNetStaged(model, ("layer1",))
    cascade = Cascade(staged, [nn.Linear(8, 10)], make_policy("branch"), [0.5])
    with pytest.raises(UserError, match="confidence branch"):
        cascade.run(torch.randn(2, 1, 32, 32))


def _trace(conf: np.ndarray) -> ExitTrace:
    n, e = conf.shape
    logits = torch.zeros(n, e, 3)
    cost = np.tile(np.arange(1, e + 2, dtype=float), (n, 1))
    return ExitTrace(
        logits,
        torch.zeros(n, 3),
        torch.zeros(n, dtype=torch.long),
        cost,
        ("a", "b")[:e],
        torch.tensor(conf, dtype=torch.float32),
    )


def test_a_collapsed_configuration_is_flagged() -> None:
    collapsed = _trace(np.column_stack([np.full(200, 0.9), np.full(200, 0.2)]))
    mixed = _trace(np.column_stack([np.linspace(0, 1, 200), np.full(200, 0.7)]))
    assert describe_traces(collapsed, collapsed)["collapse"] == {
        "collapsed": True,
        "exit": 0,
        "share": 1.0,
        "split": "val",
    }
    d = describe_traces(mixed, mixed)
    assert d["collapse"]["collapsed"] is False
    assert d["paper_rule_exit_rates"]["val"] == pytest.approx([0.5, 0.5])
    # nobody confident anywhere: every row runs to the end — a collapse onto the MainNet's own output
    to_end = describe_traces(_trace(np.full((50, 2), 0.1)), _trace(np.full((50, 2), 0.1)))["collapse"]
    assert to_end["collapsed"] is True and to_end["exit"] == 2


def test_chains_split_into_training_and_post_training_steps() -> None:
    assert split_chain("none") == ("none", "none")
    assert split_chain("int8") == ("none", "int8")
    assert split_chain("prune:ratio=0.5+int8") == ("prune:ratio=0.5", "int8")
    assert split_chain("distil+fp16") == ("distil", "fp16")
    with pytest.raises(UserError, match="before a step that trains"):
        split_chain("int8+distil")
    resnet = build_resnet("resnet18", 8, 1, 10)
    assert post_chain_for(resnet, "int8") == "int8:granularity=block"
    assert post_chain_for(resnet, "int8:granularity=stage") == "int8:granularity=stage"
    assert post_chain_for(resnet, "none") == "none"
    # casts wrap whole ResNet stages: an exit inside one cannot be composed with them (one-line error, up front)
    with pytest.raises(UserError, match="wraps whole stages"):
        _check_casts(resnet, "bf16", ("layer1.0", "layer2"))
    _check_casts(resnet, "bf16", ("layer1", "layer2"))


def test_bad_eenet_parameters_are_one_line_errors() -> None:
    for spec, match in [
        ("eenet:rule=cubic", "rule"),
        ("eenet:exits=0", "exits"),
        ("eenet:lam=-1", "lam"),
        ("eenet:loss=v9", "loss"),
        ("eenet:threshold=high", "threshold"),
        ("eenet:lr=0", "lr"),
    ]:
        with pytest.raises(UserError, match=match):
            parse_exit_system(spec)
    assert parse_exit_system("eenet:lam=0.5").label() == "eenet:lam=0.5"
    # one spelling per value: these are the default cell, not new ones
    assert parse_exit_system("eenet:lam=1,lr=1e-4,threshold=.5,exits=02").label() == "eenet"
    assert parse_exit_system("eenet:lam=0.50").label() == "eenet:lam=0.5"


@pytest.mark.parametrize("task_name", ["tiny-resnet", "tiny-bert"])
def test_eenet_end_to_end_on_a_tiny_task(task_name: str) -> None:
    """Trained once (cached), placed by the rule, traced; what the cascade executes is what the trace predicts,
    and the backbone is really retrained (its weights differ from the MainNet's)."""
    task = TASKS.get(task_name)
    data = load_task_data(task)
    trained = load_or_train_mainnet(task, data.data, data.num_classes, progress=False)
    p = prepare(task_name, task_data=data, trained_mainnet=trained, progress=False)
    system = parse_exit_system("eenet:epochs=1")
    first = prepare_system(task, data.data, data.num_classes, system, p.compressed, p.baseline, progress=False)
    d = first.details
    assert d is not None and d["kind"] == "eenet" and len(d["taps"]) == 2
    assert 0 < d["exit_costs"][0] < d["exit_costs"][1] < 1
    assert first.thresholds == [0.5, 0.5]
    # validation losses are against the original MainNet, at the paper's rule too
    assert first.selection["val_mainnet_accuracy"] == pytest.approx(float(first.built.reference_val.mean()))
    ev = first.test_eval
    assert ev["accuracy"] == pytest.approx(ev["predicted_accuracy"])
    assert ev["flops_per_sample"] == pytest.approx(ev["predicted_flops_per_sample"], rel=1e-6)
    assert sum(d["paper_rule_exit_rates"]["test"]) == pytest.approx(ev["exit_rate"])

    def signature(m: nn.Module) -> list[tuple[tuple[int, ...], float]]:
        return sorted((tuple(q.shape), round(float(q.double().sum()), 6)) for q in m.parameters())

    assert signature(first.built.staged) != signature(p.baseline), "the backbone was not retrained"
    again = prepare_system(task, data.data, data.num_classes, system, p.compressed, p.baseline, progress=False)
    assert again.built.identity == first.built.identity and again.logs["evals_cached"]
    val = prepare_system(
        task,
        data.data,
        data.num_classes,
        parse_exit_system("eenet:epochs=1,threshold=val"),
        p.compressed,
        p.baseline,
        progress=False,
    )
    assert val.built.identity["eenet"] == first.built.identity["eenet"]  # one trained network, two operating rules
    # selected against the original MainNet's validation accuracy, not the retrained network's
    assert val.selection["val_mainnet_accuracy"] == pytest.approx(float(val.built.reference_val.mean()))


@pytest.mark.parametrize(("task_name", "post"), [("tiny-resnet", "int8:granularity=block"), ("tiny-bert", "int8")])
def test_post_training_steps_apply_to_the_eenet_trained_network(task_name: str, post: str) -> None:
    """On chain int8 the EENet is the one trained on chain none (one cache entry), then quantised: per block on a
    ResNet (its exits sit inside stages), as the chain says on BERT."""
    task = TASKS.get(task_name)
    data = load_task_data(task)
    trained = load_or_train_mainnet(task, data.data, data.num_classes, progress=False)
    plain = prepare(task_name, task_data=data, trained_mainnet=trained, progress=False)
    p = prepare(task_name, chain="int8", task_data=data, trained_mainnet=trained, progress=False)
    system = parse_exit_system("eenet:epochs=1")
    kw: dict[str, Any] = {"progress": False, "baseline_key": trained[1]["key"]}
    fp32 = prepare_system(task, data.data, data.num_classes, system, plain.compressed, plain.baseline, **kw)
    q = prepare_system(task, data.data, data.num_classes, system, p.compressed, p.baseline, **kw)
    assert q.built.identity["eenet"] == fp32.built.identity["eenet"]
    assert q.details is not None and q.details["post_chain"] == post and q.details["trained_from"] == "none"
    assert q.built.identity["model"] != fp32.built.identity["model"]
    assert q.test_eval["flops_per_sample"] == pytest.approx(q.test_eval["predicted_flops_per_sample"], rel=1e-6)
    assert abs(q.test_eval["accuracy"] - fp32.test_eval["accuracy"]) < 0.2  # int8 changes a little, not all


def test_steps_that_train_feed_eenet_training_their_output() -> None:
    """``prune`` (with fine-tuning) runs first and EENet training starts from the pruned network; ``int8`` after it
    is applied to the EENet-trained one."""
    from sidenet.tasks.compressed import compress_mainnet

    task = TASKS.get("tiny-resnet")
    data = load_task_data(task)
    trained = load_or_train_mainnet(task, data.data, data.num_classes, progress=False)
    chain = "prune:ratio=0.5+int8"
    p = prepare("tiny-resnet", chain=chain, task_data=data, trained_mainnet=trained, progress=False)
    asked: list[str] = []

    def mainnet_for(other: str) -> tuple[nn.Module, str]:
        asked.append(other)
        comp = compress_mainnet(task, trained[0], trained[1]["key"], data.data, other, False)
        return comp.model, comp.key

    s = prepare_system(
        task, data.data, data.num_classes, parse_exit_system("eenet"), p.compressed, p.baseline,
        progress=False, mainnet_for=mainnet_for, baseline_key=trained[1]["key"],
    )  # fmt: skip
    assert asked == ["prune:ratio=0.5"]
    assert s.details is not None and s.details["trained_from"] == "prune:ratio=0.5"
    assert s.details["post_chain"] == "int8:granularity=block"
    pruned_width = sum(q.numel() for q in mainnet_for("prune:ratio=0.5")[0].parameters())
    assert pruned_width < sum(q.numel() for q in trained[0].parameters())
    assert s.test_eval["flops_per_sample"] < p.baseline_eval["flops_per_sample"]


def test_the_reference_pass_runs_once_per_mainnet_and_split() -> None:
    """Every EENet config of a task is selected against the fp32 MainNet's right/wrong on validation: one pass."""
    from types import SimpleNamespace

    from sidenet.bench.pipeline import load_task_data
    from sidenet.exits.eenet import _reference_correct
    from sidenet.tasks import TASKS

    task = TASKS.get("tiny-resnet")
    data = load_task_data(task)
    baseline = task.build_mainnet(data.num_classes).eval()
    calls: list[int] = []
    baseline.register_forward_hook(lambda *_: calls.append(1))
    ctx = SimpleNamespace(task=task, data=data.data, device=torch.device("cpu"), baseline=baseline)
    first = _reference_correct(ctx)
    passes = len(calls)
    assert passes >= 1 and first.shape == (len(data.data["val"].labels),)
    assert _reference_correct(ctx) is first and len(calls) == passes  # reused, not recomputed
    other = SimpleNamespace(
        task=task, data={**data.data, "val": data.data["train"]}, device=ctx.device, baseline=baseline
    )
    assert _reference_correct(other).shape == (len(data.data["train"].labels),) and len(calls) > passes
