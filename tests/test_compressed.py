"""A task's MainNet after a compressor chain: caching/rebuild of trained steps, the tap after distillation,
SideNet + real exits on every compressed tiny model, int8 FLOPs, cached evaluations."""

from __future__ import annotations

import pytest
import torch

from sidenet import pipeline
from sidenet.compressed import compress_mainnet, tap_for
from sidenet.early_exit import EarlyExit
from sidenet.errors import UserError
from sidenet.pipeline import load_or_train_mainnet, prepare, weights_digest
from sidenet.split import split_model
from sidenet.tasks import TASKS

CHAINS = {
    "tiny-resnet": ("int8", "prune:ratio=0.5", "distil:epochs=2,student_width=4", "prune:ratio=0.5+int8"),
    "tiny-bert": ("int8", "prune:ratio=0.5", "distil:epochs=2,student_layers=2", "prune:ratio=0.5+int8"),
}


def _task_and_mainnet(name: str):
    task = TASKS.get(name)
    splits = task.load_data()
    data = {n: task.encode(x, y) for n, (x, y) in splits.parts()}
    mainnet, meta = load_or_train_mainnet(task, data, splits.num_classes, progress=False)
    return task, data, mainnet, meta["key"]


@pytest.mark.parametrize("task_name", ["tiny-resnet", "tiny-bert"])
def test_trained_steps_are_cached_and_rebuilt_from_config(task_name, monkeypatch, tmp_path):
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path))
    task, data, mainnet, key = _task_and_mainnet(task_name)
    before = weights_digest(mainnet)
    first = compress_mainnet(task, mainnet, key, data, "prune:ratio=0.5", progress=False)
    assert weights_digest(mainnet) == before, "the cached MainNet must never be modified by a chain"
    calls = []
    original = type(task).train_mainnet
    monkeypatch.setattr(type(task), "train_mainnet", lambda *a, **k: calls.append(k) or original(*a, **k))
    second = compress_mainnet(task, mainnet, key, data, "prune:ratio=0.5", progress=False)
    assert calls == [], "a cached pruned model must be rebuilt, not fine-tuned again"
    assert second.key == first.key
    assert weights_digest(second.model) == weights_digest(first.model)
    assert second.steps[-1]["flops_ratio"] == first.steps[-1]["flops_ratio"] <= 0.5 + 0.02
    assert second.steps[-1]["config"]["finetune_epochs"] == 1  # the log of the run that trained it
    assert not any(p.requires_grad for p in second.model.parameters())


def test_a_different_parent_gives_a_different_step_key(monkeypatch, tmp_path):
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path))
    task, data, mainnet, key = _task_and_mainnet("tiny-resnet")
    a = compress_mainnet(task, mainnet, key, data, "distil:epochs=1,student_width=2", progress=False)
    b = compress_mainnet(task, mainnet, key, data, "prune:ratio=0.5+distil:epochs=1,student_width=2", progress=False)
    assert a.key != b.key
    assert [s["compressor"] for s in b.steps] == ["prune", "distil"]


def test_tap_moves_proportionally_for_a_distilled_bert():
    task, data, mainnet, key = _task_and_mainnet("tiny-bert")  # 4 layers, tap 2
    student = compress_mainnet(task, mainnet, key, data, "distil:epochs=1,student_layers=2", progress=False)
    assert len(student.model.bert.encoder.layer) == 2
    assert tap_for(task, mainnet, student.model) == "1"
    assert tap_for(task, mainnet, mainnet) == task.tap


@pytest.mark.parametrize(("task_name", "chain"), [(t, c) for t, cs in CHAINS.items() for c in cs])
def test_sidenet_attaches_to_every_compressed_model_and_exits_skip_the_rest(task_name, chain):
    p = prepare(task_name, chain=chain, progress=False)
    assert p.chain == chain
    assert p.dtype == ("int8" if "int8" in chain else "fp32")
    assert p.baseline is not p.mainnet
    assert 0.0 <= p.cascade_eval["exit_rate"] <= 1.0
    # exited rows never reach rest: with threshold 0 every row exits and rest is never called
    calls = []
    split = split_model(p.mainnet, p.split.tap)
    original_rest = split.rest
    split.rest = lambda state: calls.append(1) or original_rest(state)
    batch = p.task.batches(p.data["test"], 16)[0][0]
    out = EarlyExit(split, p.side, 0.0, p.policy).run(batch)
    assert bool(out.exited.all()) and calls == []
    out = EarlyExit(split, p.side, 1.000001, p.policy).run(batch)
    assert not bool(out.exited.any()) and calls == [1]


@pytest.mark.parametrize("task_name", ["tiny-resnet", "tiny-bert"])
def test_int8_flops_equal_the_fp32_count(task_name):
    p = prepare(task_name, chain="int8", progress=False)
    assert p.dtype == "int8"
    assert p.mainnet_eval["flops_per_sample"] == pytest.approx(p.baseline_eval["flops_per_sample"], rel=1e-6)
    assert p.params["mainnet"] > 0.9 * sum(q.numel() for q in p.baseline.parameters())


def test_pruned_flops_come_from_what_executes():
    p = prepare("tiny-resnet", chain="prune:ratio=0.5", progress=False)
    ratio = p.mainnet_eval["flops_per_sample"] / p.baseline_eval["flops_per_sample"]
    assert ratio <= 0.5 + 0.02
    assert ratio == pytest.approx(p.compression[-1]["flops_ratio"], abs=0.02)


def test_evaluations_are_cached_and_reused(monkeypatch):
    first = prepare("tiny-resnet", chain="int8", progress=False)
    calls = []
    monkeypatch.setattr(pipeline, "collect_rows", lambda *a, **k: calls.append(1))
    second = prepare("tiny-resnet", chain="int8", progress=False)
    assert calls == [] and second.logs["evals_cached"]
    assert second.threshold == first.threshold
    assert second.cascade_eval == first.cascade_eval
    assert torch.equal(second.test.side_logits, first.test.side_logits)


def test_weights_digest_reads_quantised_state_dicts_and_sees_changes():
    p = prepare("tiny-bert", chain="int8", progress=False)
    d = weights_digest(p.mainnet)
    layer = p.mainnet.bert.encoder.layer[0].intermediate.dense
    w, b = layer._packed_params._weight_bias()
    layer.set_weight_bias(w, b + 1.0)
    assert weights_digest(p.mainnet) != d


def test_bad_chain_parameters_are_one_line_errors():
    with pytest.raises(UserError, match="prune ratio is the FLOP fraction to keep") as exc:
        prepare("tiny-resnet", chain="prune:ratio=1.5", progress=False)
    assert "\n" not in str(exc.value)


def test_the_fine_tuning_recipe_is_part_of_a_pruned_step_key(monkeypatch, tmp_path):
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path))
    task, data, mainnet, key = _task_and_mainnet("tiny-resnet")
    a = compress_mainnet(task, mainnet, key, data, "prune:ratio=0.5", progress=False)
    monkeypatch.setattr(type(task), "finetune_overrides", lambda self: {"epochs": 1, "lr": 1e-4})
    b = compress_mainnet(task, mainnet, key, data, "prune:ratio=0.5", progress=False)
    c = compress_mainnet(task, mainnet, key, data, "prune:ratio=0.5,finetune_epochs=0", progress=False)
    assert len({a.key, b.key, c.key}) == 3


def test_weights_digest_reads_torchao_tensor_subclasses(tiny_bert):
    from compressors.torchao_int8 import quantize_bert_torchao

    before = weights_digest(tiny_bert)
    quantize_bert_torchao(tiny_bert, compile=False)
    after = weights_digest(tiny_bert)  # int8 weights are wrapper tensors: digested through their components
    assert after != before and weights_digest(tiny_bert) == after
