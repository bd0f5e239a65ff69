"""A task's MainNet after a compressor chain: caching/rebuild of trained steps, the tap after distillation,
SideNet + real exits on every compressed tiny model, int8 FLOPs, cached evaluations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

import compressors.prune
from compressors import CompressorConfig
from sidenet.bench import systems
from sidenet.bench.pipeline import load_or_train_mainnet, prepare
from sidenet.engine.early_exit import EarlyExit
from sidenet.engine.split import split_model
from sidenet.exits import heads
from sidenet.exits.heads import weights_digest
from sidenet.tasks import TASKS
from sidenet.tasks.compressed import compress_mainnet, compute_dtype, tap_for
from sidenet_core.errors import UserError

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
@pytest.mark.e2e
def test_trained_steps_are_cached_and_rebuilt_from_config(task_name, monkeypatch, tmp_path):
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path))
    task, data, mainnet, key = _task_and_mainnet(task_name)
    before = weights_digest(mainnet)
    first = compress_mainnet(task, mainnet, key, data, "prune:ratio=0.5", progress=False)
    assert weights_digest(mainnet) == before, "the cached MainNet must never be modified by a chain"
    calls = []
    original = type(task).train_mainnet
    monkeypatch.setattr(type(task), "train_mainnet", lambda *a, **k: calls.append(k) or original(*a, **k))
    searched = []
    monkeypatch.setattr(compressors.prune, "_search_round", lambda *a, **k: searched.append(a) or 1 / 0)
    second = compress_mainnet(task, mainnet, key, data, "prune:ratio=0.5", progress=False)
    assert calls == [], "a cached pruned model must be rebuilt, not fine-tuned again"
    assert searched == [], "a cached pruned model is shaped like its weights, not pruned again"
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
@pytest.mark.e2e
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
    # the one measuring path traces through sidenet.bench.systems (a cached evaluation never traces again)
    monkeypatch.setattr(systems, "collect_trace", lambda *a, **k: calls.append(1))
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


# ---------------------------------------------------------------------------------------------------
# dtype of cast chains, and the device plumbing of prepare (CUDA-only steps see the model on the device)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task_name", ["tiny-resnet", "tiny-bert"])
@pytest.mark.parametrize(
    ("chain", "dtype"), [("fp16", "fp16"), ("bf16", "bf16"), ("bf16:include_head=true", "bf16"), ("none", "fp32")]
)
def test_dtype_of_a_cast_chain_is_the_dtype_of_its_cast_stages(task_name, chain, dtype):
    """A cast BERT keeps its embeddings (its first parameters) in fp32: the dtype is read from the cast stages."""
    task, data, mainnet, key = _task_and_mainnet(task_name)
    comp = compress_mainnet(task, mainnet, key, data, chain, progress=False)  # casting on CPU: fine for the dtype
    assert comp.dtype == dtype
    assert compute_dtype(comp.model) == dtype


def _recorded_keys(monkeypatch):
    """Every (kind, recipe) given to cache.artifact_key from now on."""
    from sidenet.engine import cache

    seen, original = [], cache.artifact_key
    monkeypatch.setattr(
        cache, "artifact_key", lambda kind, recipe, **kw: seen.append((kind, recipe)) or original(kind, recipe, **kw)
    )
    return seen


@pytest.mark.parametrize("chain", ["none", "int8"])
@pytest.mark.e2e
def test_prepare_on_the_cpu_device_is_prepare_as_before(chain, monkeypatch, tmp_path):
    """device="cpu" (the default) adds nothing to any cache key and changes no number: the second call finds
    the first one's SideNet in the cache, measures everything again (the evaluations' cache is bypassed) and
    gets the very same numbers."""
    from sidenet.engine import cache

    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path))
    keys = _recorded_keys(monkeypatch)
    default = prepare("tiny-bert", chain=chain, progress=False)
    default_keys = list(keys)
    keys.clear()
    monkeypatch.setattr(cache, "load_tensors", lambda key: None)
    on_cpu = prepare("tiny-bert", chain=chain, progress=False, device="cpu")
    assert keys == default_keys
    assert not any("device" in recipe for _, recipe in keys)
    assert not on_cpu.logs["evals_cached"] and on_cpu.logs["sidenet"]["key"] == default.logs["sidenet"]["key"]
    assert on_cpu.device == default.device == torch.device("cpu")
    assert on_cpu.threshold == default.threshold
    for name in ("mainnet_eval", "cascade_eval", "noexit_eval", "baseline_eval", "selection", "sweep", "params"):
        assert getattr(on_cpu, name) == getattr(default, name), name
    assert torch.equal(on_cpu.test.side_logits, default.test.side_logits)
    assert torch.equal(on_cpu.val.main_logits, default.val.main_logits)
    for model in (on_cpu.mainnet, on_cpu.baseline, on_cpu.side):
        assert all(p.device.type == "cpu" for p in model.parameters())


class _StopAfterCompressing(Exception):
    """Raised by the fake CUDA-only compressor: the test is about what it was given, not what follows."""


@dataclass(frozen=True)
class FakeCpuConfig(CompressorConfig):
    name: ClassVar[str] = "fakecpu"


@dataclass(frozen=True)
class FakeCudaConfig(CompressorConfig):
    name: ClassVar[str] = "fakecuda"
    requires_cuda: ClassVar[bool] = True


@pytest.fixture
def fake_compressors():
    """Two temporary compressors that record the device of the model they are given: ``fakecpu`` (an ordinary
    step) and ``fakecuda`` (``requires_cuda = True``; stops the run)."""
    from compressors import COMPRESSORS
    from compressors.base import record, register_compressor

    seen: list[tuple[str, torch.device, torch.device]] = []  # (step, model's device, example inputs' device)

    def apply(model, config, ctx):
        example = ctx.example_inputs["input_ids"] if isinstance(ctx.example_inputs, dict) else ctx.example_inputs
        seen.append((config.name, next(model.parameters()).device, example.device))
        if getattr(config, "requires_cuda", False):
            raise _StopAfterCompressing
        record(model)
        return model

    register_compressor("fakecpu", FakeCpuConfig, "test: records the device")(apply)
    register_compressor("fakecuda", FakeCudaConfig, "test: CUDA-only, records the device")(apply)
    try:
        yield seen
    finally:
        COMPRESSORS.remove("fakecpu")
        COMPRESSORS.remove("fakecuda")


def test_a_cuda_only_step_gets_the_model_on_the_device_the_steps_before_it_the_cpu(fake_compressors):
    """``meta`` stands in for CUDA (no GPU here): the copy moves right before the first CUDA-only step, with
    the example inputs; the steps before it run on the CPU, like the task's trainers."""
    with pytest.raises(_StopAfterCompressing):
        prepare("tiny-bert", chain="fakecpu+fakecuda", progress=False, device="meta")
    cpu, meta = torch.device("cpu"), torch.device("meta")
    assert fake_compressors == [("fakecpu", cpu, cpu), ("fakecuda", meta, meta)]


def test_a_cuda_only_step_on_the_cpu_is_refused_before_any_step_runs(fake_compressors):
    with pytest.raises(UserError, match=r"chain 'fakecpu\+fakecuda' needs CUDA \(fakecuda runs on CUDA only\)") as exc:
        prepare("tiny-bert", chain="fakecpu+fakecuda", progress=False)
    assert "\n" not in str(exc.value) and "--bench-device cuda" in str(exc.value)
    assert fake_compressors == []


@pytest.mark.parametrize("chain", ["int8", "prune:ratio=0.5+int8:backend=ort"])
def test_an_int8_chain_off_the_cpu_is_refused_before_any_step_runs(chain, monkeypatch):
    import compressors

    calls = []
    monkeypatch.setattr(compressors, "compress_", lambda *a, **k: calls.append(1))
    with pytest.raises(UserError, match=r"is int8 \(torch.ao / ONNX Runtime: CPU only\); use --device cpu") as exc:
        prepare("tiny-bert", chain=chain, progress=False, device="meta")
    assert "\n" not in str(exc.value) and calls == []


@dataclass(frozen=True)
class FakeCpuOnlyConfig(CompressorConfig):
    name: ClassVar[str] = "fakecpuonly"
    cpu_only: ClassVar[str] = "fakelib"


def test_a_cpu_only_step_is_refused_off_the_cpu_by_its_declared_trait_not_its_name(monkeypatch):
    """The device check asks the config (``cpu_only``), so a new CPU-only compressor is refused like int8."""
    from compressors import COMPRESSORS
    from compressors.base import register_compressor

    calls = []
    register_compressor("fakecpuonly", FakeCpuOnlyConfig, "test: CPU only")(lambda m, c, ctx: calls.append(1) or m)
    try:
        with pytest.raises(UserError, match=r"is fakecpuonly \(fakelib: CPU only\); use --device cpu") as exc:
            prepare("tiny-bert", chain="fakecpuonly", progress=False, device="meta")
    finally:
        COMPRESSORS.remove("fakecpuonly")
    assert "\n" not in str(exc.value) and calls == []


def test_the_chain_is_parsed_once_per_compress_mainnet_call(monkeypatch, tmp_path):
    import sidenet.tasks.compressed as compressed

    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path))
    task = TASKS.get("tiny-resnet")
    splits = task.load_data()
    data = {n: task.encode(x, y) for n, (x, y) in splits.parts()}
    mainnet = task.build_mainnet(splits.num_classes).eval().requires_grad_(False)
    parsed = []
    parse = compressed.parse_chain
    monkeypatch.setattr(compressed, "parse_chain", lambda *a, **k: parsed.append(a) or parse(*a, **k))
    comp = compress_mainnet(task, mainnet, "mainnet-x", data, "prune:ratio=0.5,finetune_epochs=0+int8", False)
    assert comp.chain == "prune:finetune_epochs=0,ratio=0.5+int8"
    assert len(parsed) == 1


def test_off_the_cpu_the_sidenet_and_evaluation_keys_carry_the_device_type():
    """GPU kernels round differently: a CUDA run must not share a CPU run's SideNet or per-row outputs."""
    assert heads.device_fields(None) == heads.device_fields("cpu") == {}
    assert heads.device_fields("cuda") == heads.device_fields(torch.device("cuda", 0)) == {"device": "cuda"}
