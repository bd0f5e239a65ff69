"""SideNet fitting, the end-to-end pipeline on ``tiny-resnet``, and the artifact cache."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sidenet.bench.pipeline import Prepared, prepare
from sidenet.engine import cache
from sidenet.engine.fit import fit_sidenet, sidenet_loss
from sidenet.engine.sidenet import SideNet, SideNetConfig
from sidenet.engine.trace import NEVER_EXIT
from sidenet.tasks import TASKS

TASK = "tiny-resnet"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prepared]:
    """One full ``prepare`` of the tiny image task in a cache of its own (trains MainNet + SideNet)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIDENET_BENCH_CACHE", str(tmp_path_factory.mktemp("prepared-cache")))
        yield prepare(TASK, progress=False)


def forbid(what: str):
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{what} ran although its cached artifact should have been used")

    return fail


def weight_files(root: Path, kind: str) -> list[Path]:
    return sorted(root.glob(f"{kind}-*.safetensors"))


# ---------------------------------------------------------------- fit_sidenet


def blobs(n: int, d: int, num_classes: int, noise_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian blobs around fixed class centres (fresh noise per ``noise_seed``)."""
    centers = torch.randn(num_classes, d, generator=torch.Generator().manual_seed(0)) * 3
    labels = torch.arange(n) % num_classes
    feats = centers[labels] + torch.randn(n, d, generator=torch.Generator().manual_seed(noise_seed))
    return feats * 50 + 7, labels  # large offset/scale: the SideNet's standardisation must handle it


@pytest.mark.parametrize("targets", ["labels", "soft", "both"])
def test_fit_sidenet_learns_separable_features(targets: str) -> None:
    feats, labels = blobs(600, 12, 3, noise_seed=1)
    teacher = torch.nn.functional.one_hot(labels, 3).float() * 6.0  # a confident, correct "MainNet"
    cfg = SideNetConfig(hidden=16, epochs=15, batch_size=64, targets=targets)  # type: ignore[arg-type]
    side = fit_sidenet(feats, labels, teacher, 3, cfg, progress=False)
    assert isinstance(side, SideNet) and not side.training
    assert all(not p.requires_grad or p.grad is not None for p in side.parameters())
    torch.testing.assert_close(side.feature_mean, feats.mean(0))
    torch.testing.assert_close(side.feature_std, feats.std(0))
    test_x, test_y = blobs(300, 12, 3, noise_seed=2)
    with torch.no_grad():
        acc = float((side(test_x).argmax(-1) == test_y).float().mean())
        untrained = SideNet(12, 3, hidden=16)
        untrained.feature_mean.copy_(side.feature_mean)
        untrained.feature_std.copy_(side.feature_std)
        chance_like = float((untrained(test_x).argmax(-1) == test_y).float().mean())
    assert acc > 0.9, (acc, chance_like)
    assert acc > chance_like + 0.2


def test_fit_sidenet_same_seed_same_weights() -> None:
    feats, labels = blobs(256, 8, 4, noise_seed=3)
    teacher = torch.randn(256, 4)
    cfg = SideNetConfig(hidden=8, epochs=3, batch_size=32, seed=5)
    torch.manual_seed(1)
    a = fit_sidenet(feats, labels, teacher, 4, cfg, progress=False)
    torch.manual_seed(999)  # the global RNG state must not matter
    b = fit_sidenet(feats, labels, teacher, 4, cfg, progress=False)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb), na
    c = fit_sidenet(feats, labels, teacher, 4, SideNetConfig(hidden=8, epochs=3, batch_size=32, seed=6), False)
    assert not torch.equal(a.net[0].weight, c.net[0].weight)


def test_sidenet_loss_values() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    cfg_l = SideNetConfig(targets="labels")
    hard = torch.nn.functional.cross_entropy(logits, labels)
    torch.testing.assert_close(sidenet_loss(logits, labels, logits * 5, cfg_l), hard)
    # soft: KL to itself is zero; "both" is then half the cross-entropy
    torch.testing.assert_close(sidenet_loss(logits, labels, logits, SideNetConfig(targets="soft")), torch.tensor(0.0))
    torch.testing.assert_close(sidenet_loss(logits, labels, logits, SideNetConfig(targets="both")), hard / 2)
    # soft loss is KL(teacher || student) at temperature T, times T²
    t = 2.0
    teacher = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    p = (teacher / t).softmax(-1)
    q = (logits / t).log_softmax(-1)
    kl = (p * (p.log() - q)).sum(-1).mean() * t * t
    torch.testing.assert_close(sidenet_loss(logits, labels, teacher, SideNetConfig(targets="soft", temperature=t)), kl)


# ---------------------------------------------------------------- the pipeline on tiny-resnet


def test_sidenet_beats_chance(prepared: Prepared) -> None:
    num_classes = prepared.side.num_classes
    assert num_classes == 4
    side_acc = float(prepared.test.side_correct.mean())
    main_acc = float(prepared.test.main_correct.mean())
    assert side_acc > 1 / num_classes + 0.15, f"SideNet test accuracy {side_acc:.3f} (MainNet {main_acc:.3f})"


def test_trained_weights_and_outputs_are_finite(prepared: Prepared) -> None:
    bad = [n for n, v in prepared.mainnet.state_dict().items() if v.is_floating_point() and not v.isfinite().all()]
    assert not bad, f"non-finite MainNet weights after training: {bad}"
    assert bool(prepared.test.main_logits.isfinite().all())
    assert bool(prepared.test.side_logits.isfinite().all())


def test_mainnet_eval_matches_split_rows(prepared: Prepared) -> None:
    """The honest baseline (the MainNet's own forward) agrees with the split's per-row outputs."""
    assert prepared.mainnet_eval["accuracy"] == pytest.approx(float(prepared.test.main_correct.mean()), abs=1e-12)
    assert prepared.mainnet_eval["exit_rate"] == 0.0
    assert prepared.mainnet_eval["flops_per_sample"] == pytest.approx(
        float(np.mean(prepared.test.rest_flops + prepared.test.head_flops)) - _side_flops_per_row(prepared),
        rel=1e-9,
    )


def _side_flops_per_row(p: Prepared) -> float:
    s = p.side
    return 2.0 * (s.in_dim * s.hidden + s.hidden * s.num_classes)


def test_cascade_matches_prediction(prepared: Prepared) -> None:
    ce = prepared.cascade_eval
    assert ce["accuracy"] == pytest.approx(ce["predicted_accuracy"], abs=1e-12)
    assert ce["flops_per_sample"] == pytest.approx(ce["predicted_flops_per_sample"], rel=1e-9)
    conf = prepared.test.confidence(prepared.policy)
    assert ce["exit_rate"] == pytest.approx(float(np.mean(conf >= prepared.threshold)), abs=1e-12)
    assert 0.0 <= ce["exit_rate"] <= 1.0


def test_cascade_run_by_hand(prepared: Prepared) -> None:
    """Run the cascade ourselves on the test split: exits and logits agree with the stored rows."""
    data = prepared.data["test"]
    out = prepared.cascade().run(data.rows)
    conf = prepared.test.confidence(prepared.policy)
    np.testing.assert_array_equal(out.exited.numpy(), conf >= prepared.threshold)
    ex = out.exited
    torch.testing.assert_close(out.logits[ex], prepared.test.side_logits[ex], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logits[~ex], prepared.test.main_logits[~ex], atol=1e-5, rtol=0)


def test_noexit_overhead(prepared: Prepared) -> None:
    ne, me = prepared.noexit_eval, prepared.mainnet_eval
    assert ne["exit_rate"] == 0.0
    assert ne["accuracy"] == me["accuracy"]
    assert ne["flops_per_sample"] > me["flops_per_sample"]
    assert ne["flops_per_sample"] < 1.05 * me["flops_per_sample"]
    assert ne["flops_per_sample"] - me["flops_per_sample"] == pytest.approx(_side_flops_per_row(prepared))


def test_selection_consistent(prepared: Prepared) -> None:
    sel = prepared.selection
    val_conf = prepared.val.confidence(prepared.policy)
    assert sel["val_exit_rate"] == pytest.approx(float(np.mean(val_conf >= prepared.threshold)))
    assert sel["val_mainnet_accuracy"] == pytest.approx(float(prepared.val.main_correct.mean()))
    assert sel["val_loss_pt"] + sel["margin_se"] * sel["val_loss_se_pt"] <= prepared.target_loss_pt + 1e-9
    assert prepared.threshold == NEVER_EXIT or 0.0 <= prepared.threshold <= 1.0
    assert prepared.params["sidenet"] == sum(p.numel() for p in prepared.side.parameters())
    assert 0.0 <= prepared.calibration["side_ece"] <= 1.0


# ---------------------------------------------------------------- cache


def test_second_prepare_reuses_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path))
    assert cache.cache_dir() == tmp_path
    first = prepare(TASK, progress=False)
    assert len(weight_files(tmp_path, "mainnet")) == 1 and len(weight_files(tmp_path, "sidenet")) == 1
    task = TASKS.get(TASK)
    monkeypatch.setattr(task, "train_mainnet", forbid("MainNet training"))
    monkeypatch.setattr("sidenet.exits.heads.fit_sidenet", forbid("SideNet training"))
    second = prepare(TASK, progress=False)
    assert second.logs["mainnet"]["key"] == first.logs["mainnet"]["key"]
    assert second.logs["sidenet"]["key"] == first.logs["sidenet"]["key"]
    assert second.cascade_eval == first.cascade_eval
    assert torch.equal(second.test.side_logits, first.test.side_logits)
    for (name, a), b in zip(first.mainnet.state_dict().items(), second.mainnet.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0, equal_nan=True, msg=f"{name} differs after a cache load")


def test_corrupted_cache_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path))
    first = prepare(TASK, progress=False)
    (weights,) = weight_files(tmp_path, "mainnet")
    assert weights.stem == first.logs["mainnet"]["key"]
    garbage = b"\x00garbage, not a safetensors file" * 10
    weights.write_bytes(garbage)

    task = TASKS.get(TASK)
    calls: list[int] = []
    real_train = task.train_mainnet

    def counting_train(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(task, "train_mainnet", counting_train)
    with caplog.at_level(logging.WARNING, logger="sidenet.engine.cache"):
        second = prepare(TASK, progress=False)
    assert calls == [1]
    warned = [r.getMessage() for r in caplog.records if r.name == "sidenet.engine.cache"]
    assert len(warned) == 1, warned  # one line per bad entry, naming it and why
    assert warned[0].startswith(f"cache entry {weights.stem}: size mismatch (weights file has {len(garbage)} bytes")
    assert warned[0].endswith("; deleted, will rebuild")
    # rebuilt in place: a loadable file under the same key, and the same (deterministic) results
    assert weight_files(tmp_path, "mainnet") == [weights]
    assert cache.load_into(TASKS.get(TASK).build_mainnet(4), weights.stem) is not None
    assert second.logs["mainnet"]["key"] == first.logs["mainnet"]["key"]
    assert 0.0 <= second.mainnet_eval["accuracy"] <= 1.0


def test_cache_store_load_roundtrip_and_bad_metadata(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path / "sub"))
    side = SideNet(5, 3, hidden=4)
    key = cache.artifact_key("sidenet", {"x": 1})
    assert key.startswith("sidenet-") and key != cache.artifact_key("sidenet", {"x": 2})
    assert cache.load_into(SideNet(5, 3, hidden=4), key) is None  # absent
    cache.store(side, key, {"note": "hi"})
    fresh = SideNet(5, 3, hidden=4)
    meta = cache.load_into(fresh, key)
    assert meta is not None and meta["note"] == "hi" and meta["key"] == key
    assert meta["format"] == cache.CACHE_FORMAT and len(meta["sha256"]) == 64  # what _load verified
    assert torch.equal(fresh.net[0].weight, side.net[0].weight)
    # metadata from another key: rejected and deleted
    meta_path = tmp_path / "sub" / f"{key}.json"
    meta_path.write_text(json.dumps({"key": "other"}))
    assert cache.load_into(SideNet(5, 3, hidden=4), key) is None
    assert not meta_path.exists() and not (tmp_path / "sub" / f"{key}.safetensors").exists()
    # a shape mismatch (foreign weights) is also unusable, not an exception
    cache.store(side, key, {})
    assert cache.load_into(SideNet(6, 3, hidden=4), key) is None


def test_same_seed_same_numbers_in_fresh_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prepared) -> None:
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path))
    again = prepare(TASK, progress=False)
    assert again.mainnet_eval == prepared.mainnet_eval
    assert again.cascade_eval == prepared.cascade_eval
    assert again.threshold == prepared.threshold
    assert torch.equal(again.test.side_logits, prepared.test.side_logits)
    assert torch.equal(again.test.main_logits, prepared.test.main_logits)
