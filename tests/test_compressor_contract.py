"""The contract every registered compressor keeps (issue #22), parametrised over the registry as it stands when the
tests are collected: a new compressor is tested here without an edit.

* its default config's chain label parses back to an equal config (and the config round-trips through JSON);
* on the tiny ResNet and the tiny BERT it either compresses, and the compressed model runs and gives logits of the
  same shape, or refuses with a one-line :class:`UserError`;
* the traits it declares on its config (``compressors.base.CompressorConfig``: ``trains``, ``rebuild``, ``dtype``,
  ``requires_cuda``, ``whole_stages``, ``with_exits_inside_stages``) agree with what it does, both when applied
  directly and inside ``compress_mainnet`` (a step that says it does not train leaves no trained-weights cache entry
  and never calls the training loop; one that trains is cached and rebuilt without training on a warm run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from tiny_models import logits, make_tiny_bert, make_tiny_resnet, tiny_image_data, tiny_text_data
from torch import nn

from compressors import COMPRESSORS, CompressorConfig, compress_
from compressors.base import rebuild_
from sidenet.tasks import TASKS
from sidenet.tasks.compressed import _TaskData, chain_configs, compress_mainnet, compute_dtype, normalize_chain
from sidenet_core.errors import UserError
from sidenet_core.staged import resnet_block_taps, stage_model

NAMES = COMPRESSORS.names()  # read at collection time: every registered compressor gets every test below
FAMILIES = ("resnet", "bert")


def _default(name: str) -> CompressorConfig:
    return COMPRESSORS.get(name).config_cls()


class _Trainers:
    """The data keywords compressors take, with the training callables counting their calls."""

    def __init__(self, family: str) -> None:
        self.family = family
        data = tiny_image_data() if family == "resnet" else tiny_text_data()
        self.train = data["train"][:2]  # two batches: enough to train one step, fast
        self.x = data["x"][:8] if family == "resnet" else {k: v[:8] for k, v in data["x"].items()}
        self.calibration = [b for b, _ in self.train]
        self.finetune_calls = 0
        self.train_batches_calls = 0

    def finetune(self, model: nn.Module) -> None:
        self.finetune_calls += 1
        model.train()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        for x, y in self.train:
            out = logits_with_grad(model, x)
            opt.zero_grad()
            F.cross_entropy(out, y).backward()
            opt.step()
        model.eval()

    def train_batches(self) -> list[tuple[Any, torch.Tensor]]:
        self.train_batches_calls += 1
        return list(self.train)

    @property
    def calls(self) -> int:
        return self.finetune_calls + self.train_batches_calls

    def kwargs(self) -> dict[str, Any]:
        return {
            "example_inputs": self.x,
            "calibration": self.calibration,
            "finetune": self.finetune,
            "train_batches": self.train_batches,
        }


def logits_with_grad(model: nn.Module, x: Any) -> torch.Tensor:
    out = model(**x) if isinstance(x, dict) else model(x)
    return out.logits if hasattr(out, "logits") else out


def _model(family: str) -> nn.Module:
    return make_tiny_resnet() if family == "resnet" else make_tiny_bert()


def _one_line(exc: UserError) -> str:
    text = str(exc)
    assert text and "\n" not in text, f"not a one-line UserError: {text!r}"
    return text


def _compress_or_refuse(model: nn.Module, config: CompressorConfig, trainers: _Trainers) -> nn.Module | None:
    try:
        return compress_(model, config, **trainers.kwargs())
    except UserError as exc:
        _one_line(exc)
        return None


@pytest.mark.parametrize("name", NAMES)
def test_the_default_label_parses_back_to_an_equal_config(name: str) -> None:
    config = _default(name)
    label = normalize_chain(name)
    assert chain_configs(label) == [config]
    assert normalize_chain(label) == label  # one spelling per experiment
    assert CompressorConfig.from_json(config.to_json()) == config
    assert type(config).name == name == config.name


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", NAMES)
def test_it_compresses_and_runs_or_refuses_in_one_line_and_its_traits_hold(name: str, family: str) -> None:
    config, trainers, model = _default(name), _Trainers(family), _model(family)
    reference = logits(model, trainers.x)
    out = _compress_or_refuse(model, config, trainers)
    if config.requires_cuda and not torch.cuda.is_available():
        assert out is None, f"{name} says it runs on CUDA only but compressed a CPU model"
    if out is None:
        assert trainers.calls == 0 or config.trains(), f"{name} refused after calling the training loop"
        return
    got = logits(out, trainers.x)
    assert got.shape == reference.shape
    assert torch.isfinite(got.float()).all()
    assert compute_dtype(out) == (type(config).dtype or "fp32"), f"{name} declares dtype {type(config).dtype!r}"
    if not config.trains():
        assert trainers.calls == 0, f"{name} says it does not train but called the training loop"
        with pytest.raises(UserError):
            rebuild_(model, config, {}, **trainers.kwargs())
        return
    assert trainers.calls > 0, f"{name} says it trains but never called finetune / train_batches"
    # what the cache does on a warm run: the config rebuilds the architecture from the weights' shapes alone
    state = out.state_dict()
    before = trainers.calls
    rebuilt = rebuild_(model, config, {k: tuple(v.shape) for k, v in state.items()}, **trainers.kwargs())
    assert trainers.calls == before, f"{name}'s rebuild trained"
    rebuilt.load_state_dict(state, strict=True)
    torch.testing.assert_close(logits(rebuilt.eval(), trainers.x), got)


@pytest.mark.parametrize("name", NAMES)
def test_steps_that_do_not_wrap_whole_stages_keep_block_taps_on_a_resnet(name: str) -> None:
    """``whole_stages`` is what EENet's composition check asks; ``with_exits_inside_stages`` how it applies a step to
    a ResNet whose exits sit inside stages: such a model must still be staged at a block boundary."""
    cls = COMPRESSORS.get(name).config_cls
    params = cls.with_exits_inside_stages({})
    from compressors import config_from_step

    config, trainers, model = config_from_step(name, params), _Trainers("resnet"), _model("resnet")
    taps = resnet_block_taps(model)
    inner = next(t for t in taps if "." in t)
    out = _compress_or_refuse(model, config, trainers)
    if out is None:
        return
    if cls.whole_stages:
        with pytest.raises(UserError):  # the block sits inside one wrapped stage: no cut point between blocks
            stage_model(out, (inner,))
        return
    staged = stage_model(out, (inner,))
    state = trainers.x
    with torch.no_grad():
        for i in range(staged.n_segments):
            state = staged.segment(i, state)
    torch.testing.assert_close(state, logits(out, trainers.x))


@pytest.mark.parametrize("task_name", ["tiny-resnet", "tiny-bert"])
@pytest.mark.parametrize("name", NAMES)
def test_in_a_chain_only_steps_that_train_are_cached_and_trained(name, task_name, monkeypatch, tmp_path) -> None:
    """Through ``compress_mainnet``: a step that says it does not train leaves no cache entry and never calls the
    task's trainers; one that trains leaves one entry, and a warm run loads it without training."""
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path))
    task = TASKS.get(task_name)
    calls: list[str] = []
    train_mainnet, train_batches = type(task).train_mainnet, _TaskData.train_batches
    monkeypatch.setattr(type(task), "train_mainnet", lambda *a, **k: calls.append("finetune") or train_mainnet(*a, **k))
    monkeypatch.setattr(_TaskData, "train_batches", lambda self: calls.append("batches") or train_batches(self))
    splits = task.load_data()
    data = {n: task.encode(x, y) for n, (x, y) in splits.parts()}
    torch.manual_seed(0)
    mainnet = task.build_mainnet(splits.num_classes).eval().requires_grad_(False)
    config = _default(name)

    def run() -> Any:
        try:
            return compress_mainnet(task, mainnet, "mainnet-contract", data, name, progress=False)
        except UserError as exc:
            _one_line(exc)
            return None

    def entries() -> list[Path]:
        return sorted(tmp_path.glob("compressed-*.json"))

    cold = run()
    if cold is None:
        assert entries() == []
        return
    assert cold.dtype == (type(config).dtype or "fp32")
    if not config.trains():
        assert entries() == [] and calls == [], f"{name} says it does not train: no cache entry, no training"
        return
    assert [p.stem for p in entries()] == [cold.key] and calls, f"{name} says it trains: one entry, trained"
    calls.clear()
    warm = run()
    assert calls == [], f"{name}: a cached trained step is rebuilt, not trained again"
    assert warm.key == cold.key
    torch.testing.assert_close(warm.model.state_dict(), cold.model.state_dict())
