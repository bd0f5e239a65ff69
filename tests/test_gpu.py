"""GPU path (CUDA): the split and the real exit on the device, and ``prepare(device="cuda")`` end to end (a
CUDA-only weight-only chain compressed and measured on the GPU; GPU and CPU caches kept apart). Skipped cleanly
without CUDA."""

from __future__ import annotations

import pytest
import torch

from sidenet.engine.early_exit import EarlyExit
from sidenet.engine.sidenet import SideNet
from sidenet.engine.split import split_model
from sidenet_core.layouts import build_resnet

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available (torch.cuda.is_available() is False)"),
]


def test_resnet_split_and_exit_on_cuda():
    model = build_resnet("resnet10", 8, 1, 4).eval().cuda()
    split = split_model(model, "layer1")
    x = torch.randn(16, 1, 16, 16, device="cuda")
    with torch.no_grad():
        assert torch.equal(split(x), model(x))
        side = SideNet(split.feature_dim(x), 4).cuda().eval()
        seen = []
        rest = split.rest
        split.rest = lambda s: (seen.append(s.shape[0]), rest(s))[1]
        out = EarlyExit(split, side, threshold=0.3).run(x)
    assert out.logits.device.type == "cuda"
    assert (seen or [0])[0] == int((~out.exited).sum())


@pytest.mark.parametrize(("chain", "dtype"), [("int8wo", "int8wo"), ("int4wo:group_size=32", "int4wo")])
def test_prepare_a_cuda_only_chain_end_to_end(chain, dtype):
    """``prepare(device="cuda")``: the weight-only step sees the MainNet on the GPU; tap features, SideNet rows,
    the test runs and their FLOPs are measured there. tiny-bert has hidden size 32, hence int4wo group_size=32."""
    pytest.importorskip("torchao")
    from sidenet.bench.pipeline import prepare

    p = prepare("tiny-bert", chain=chain, progress=False, device="cuda")
    assert p.chain == chain and p.dtype == dtype and p.device.type == "cuda"
    assert [s["compressor"] for s in p.compression] == [chain.split(":")[0]]
    for model in (p.mainnet, p.baseline, p.side):
        assert all(t.is_cuda for t in model.parameters())
    for rows, split in ((p.val, "val"), (p.test, "test")):
        n = len(p.data[split])
        assert rows.side_logits.shape == rows.main_logits.shape == (n, 2)
        assert rows.side_logits.device.type == rows.main_logits.device.type == "cpu"
        assert torch.isfinite(rows.side_logits).all() and torch.isfinite(rows.main_logits).all()
        assert torch.equal(rows.labels, p.data[split].labels)
        assert (rows.head_flops > 0).all() and (rows.rest_flops > 0).all()
    # weight-only quantisation counts the fp32 FLOPs, and stays close to the fp32 MainNet (measured on the GPU too)
    assert p.mainnet_eval["flops_per_sample"] == pytest.approx(p.baseline_eval["flops_per_sample"], rel=1e-6)
    assert abs(p.mainnet_eval["accuracy"] - p.baseline_eval["accuracy"]) <= 0.1
    assert p.mainnet_eval["accuracy"] == pytest.approx(float(p.test.main_correct.mean()), abs=0.02)
    assert 0.0 <= p.cascade_eval["exit_rate"] <= 1.0 and p.noexit_eval["exit_rate"] == 0.0
    assert p.cascade_eval["accuracy"] == pytest.approx(p.cascade_eval["predicted_accuracy"], abs=0.02)
    assert p.cascade_eval["flops_per_sample"] == pytest.approx(p.cascade_eval["predicted_flops_per_sample"], rel=0.02)
    # the real exit on the device: threshold 0 exits every row without running rest
    batch = {k: v.cuda() for k, v in p.task.batches(p.data["test"], 16)[0][0].items()}
    out = p.cascade(0.0).run(batch)
    assert bool(out.exited.all()) and out.logits.device.type == "cuda"
    # a second run reuses the GPU evaluations; a CPU run of the same task never does (device in the keys)
    again = prepare("tiny-bert", chain=chain, progress=False, device="cuda")
    assert again.logs["evals_cached"] and again.threshold == p.threshold


def test_prepare_on_cuda_keeps_gpu_and_cpu_caches_apart():
    from sidenet.bench.pipeline import prepare

    on_gpu = prepare("tiny-bert", progress=False, device="cuda")
    on_cpu = prepare("tiny-bert", progress=False)
    assert on_gpu.logs["mainnet"]["key"] == on_cpu.logs["mainnet"]["key"]  # MainNets are trained on the CPU
    assert on_gpu.logs["sidenet"]["key"] != on_cpu.logs["sidenet"]["key"]
    assert on_gpu.baseline_eval["accuracy"] == pytest.approx(on_cpu.baseline_eval["accuracy"], abs=0.02)
    assert on_gpu.baseline_eval["flops_per_sample"] == pytest.approx(on_cpu.baseline_eval["flops_per_sample"], rel=0.01)
    assert next(on_gpu.baseline.parameters()).is_cuda and not next(on_cpu.baseline.parameters()).is_cuda
