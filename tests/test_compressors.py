"""Compressors on tiny models: int8 / bf16 / fp16, pruning, distillation, chains, configs, and a SideNet after each.

Every compressed model must stay splittable (``rest(head(x)) == model(x)``, max diff 0) so a SideNet can
attach after compression, and FLOPs are counted with ``sidenet_core.flops.count_flops`` (int8 = fp32 exactly).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from tiny_models import (
    agreement,
    cosine,
    flops,
    logits,
    make_tiny_resnet,
)
from torch import nn

import compressors
from compressors import (
    COMPRESSORS,
    Bf16Config,
    CompressorConfig,
    DistilConfig,
    Fp16Config,
    Int8Config,
    PruneConfig,
    compose_,
    compress_,
    compression_log,
    config_from_step,
)
from compressors.flops import register_quantized_formulas
from compressors.prune import shaped_like
from sidenet.engine.early_exit import EarlyExit
from sidenet.engine.fit import fit_sidenet
from sidenet.engine.sidenet import SideNetConfig
from sidenet.engine.split import Split, TextState, split_model
from sidenet_core.errors import UserError

needs_x86 = pytest.mark.skipif(
    "x86" not in torch.backends.quantized.supported_engines, reason="int8 tests need the x86 quantised engine"
)


# ---------------------------------------------------------------------------------------------------
# tiny models and data (module-scoped: the whole file must stay well under a minute on 2 busy cores)
# ---------------------------------------------------------------------------------------------------


def kl(teacher: torch.Tensor, student: torch.Tensor) -> float:
    return float(F.kl_div(student.log_softmax(-1), teacher.log_softmax(-1), log_target=True, reduction="batchmean"))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def assert_split_exact(model: nn.Module, tap: Any, inputs: Any) -> Split:
    split = split_model(model, tap)
    with torch.no_grad():
        diff = (split.rest(split.head(inputs)) - logits(model, inputs)).abs().max()
    assert float(diff) == 0.0
    return split


@pytest.fixture(scope="module")
def int8_resnet(trained_resnet: nn.Module, image_data: dict[str, Any]) -> nn.Module:
    if "x86" not in torch.backends.quantized.supported_engines:
        pytest.skip("needs the x86 quantised engine")
    return compress_(copy.deepcopy(trained_resnet), Int8Config(), calibration=image_data["calibration"])


@pytest.fixture(scope="module")
def int8_bert(trained_bert: nn.Module) -> nn.Module:
    if "x86" not in torch.backends.quantized.supported_engines:
        pytest.skip("needs the x86 quantised engine")
    return compress_(copy.deepcopy(trained_bert), Int8Config())


class Epochs:
    """A stand-in for the task's training loop: counts calls and checks it got the pruned model."""

    def __init__(self) -> None:
        self.models: list[nn.Module] = []

    def __call__(self, model: nn.Module) -> None:
        self.models.append(model)


@pytest.fixture(scope="module")
def pruned_resnet(trained_resnet: nn.Module, image_data: dict[str, Any]) -> tuple[nn.Module, Epochs]:
    epochs = Epochs()
    cfg = PruneConfig(ratio=0.5, round_to=2, steps=2, finetune_epochs=2)
    model = compress_(copy.deepcopy(trained_resnet), cfg, example_inputs=image_data["x"][:8], finetune=epochs)
    return model, epochs


@pytest.fixture(scope="module")
def pruned_bert(trained_bert: nn.Module, text_data: dict[str, Any]) -> nn.Module:
    cfg = PruneConfig(ratio=0.5, round_to=2, steps=2, finetune_epochs=0)
    return compress_(copy.deepcopy(trained_bert), cfg, example_inputs=text_data["x"])


RESNET_KD = DistilConfig(student_width=4, epochs=3, lr=3e-3, alpha=1.0, temperature=2.0)
BERT_KD = DistilConfig(student_layers=2, epochs=3, lr=1e-3, alpha=1.0, temperature=2.0)


@pytest.fixture(scope="module")
def distilled_resnet(trained_resnet: nn.Module, image_data: dict[str, Any]) -> nn.Module:
    return compress_(trained_resnet, RESNET_KD, train_batches=lambda: image_data["train"])


@pytest.fixture(scope="module")
def distilled_bert(trained_bert: nn.Module, text_data: dict[str, Any]) -> nn.Module:
    return compress_(trained_bert, BERT_KD, train_batches=lambda: text_data["train"])


# ---------------------------------------------------------------------------------------------------
# registry and configs
# ---------------------------------------------------------------------------------------------------


def test_registry_has_the_compressors_with_one_line_descriptions() -> None:
    assert {"int8", "fp16", "bf16", "prune", "distil"} <= set(COMPRESSORS.names())
    assert compressors.COMPRESSORS is COMPRESSORS
    for name in COMPRESSORS:
        entry = COMPRESSORS.get(name)
        assert entry.config_cls.name == name
        assert entry.description and "\n" not in entry.description


CONFIGS = [
    Int8Config(backend="onednn", calibration_batches=3, include_head=True),
    Fp16Config(include_head=True),
    Bf16Config(),
    PruneConfig(ratio=0.3, round_to=4, steps=5, finetune_epochs=0, tolerance=0.01),
    DistilConfig(student_arch="resnet18", student_width=16, student_layers=2, lr=None),
    DistilConfig(temperature=2.5, alpha=0.25, epochs=1, lr=1e-4, seed=3),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_configs_round_trip_through_dict_and_json(config: CompressorConfig) -> None:
    d = config.to_dict()
    assert d["name"] == config.name
    assert json.loads(json.dumps(d)) == d  # JSON-compatible values only
    assert CompressorConfig.from_dict(d) == config  # the base class dispatches on "name"
    assert type(config).from_dict(d) == config
    assert CompressorConfig.from_json(config.to_json()) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.include_head = True  # type: ignore[misc,attr-defined]


def test_defaults_are_sane() -> None:
    assert Int8Config().backend == "x86"  # never qnnpack by default (FINDINGS: 2.6x slower than fp32 here)
    assert PruneConfig().ratio == 0.5 and PruneConfig().round_to == 8


def test_config_from_step_converts_by_field_type() -> None:
    assert config_from_step("prune", {"ratio": "0.3", "round_to": "4"}) == PruneConfig(ratio=0.3, round_to=4)
    assert config_from_step("int8", {"include_head": "true"}) == Int8Config(include_head=True)
    assert config_from_step("distil", {"lr": "none", "student_layers": "2"}) == DistilConfig(student_layers=2)
    assert config_from_step("distil", {"lr": "1e-4"}).lr == 1e-4  # type: ignore[attr-defined]
    assert config_from_step("bf16", {}) == Bf16Config()


@pytest.mark.parametrize(
    ("name", "params", "fragment"),
    [
        ("prune", {"ratio": "2"}, "(0, 1)"),
        ("prune", {"ratio": "nan"}, "must be a finite number"),
        ("prune", {"ratio": "half"}, "must be a number"),
        ("prune", {"round_to": "2.5"}, "must be an integer"),
        ("prune", {"ratoi": "0.5"}, "unknown parameter(s) ratoi"),
        ("int8", {"include_head": "maybe"}, "true or false"),
        ("int8", {"backend": "arm"}, "not one of"),
        ("distil", {"alpha": "1.5"}, "alpha"),
        ("prnue", {}, "did you mean 'prune'"),
    ],
)
def test_config_from_step_errors_are_one_line(name: str, params: dict[str, str], fragment: str) -> None:
    with pytest.raises(UserError) as exc:
        config_from_step(name, params)
    assert fragment in str(exc.value)
    assert "\n" not in str(exc.value)


def test_from_dict_rejects_unknown_keys_and_names() -> None:
    with pytest.raises(UserError, match="unknown prune parameter"):
        CompressorConfig.from_dict({"name": "prune", "ratio": 0.5, "bogus": 1})
    with pytest.raises(UserError, match="unknown compressor"):
        CompressorConfig.from_dict({"name": "zip"})
    with pytest.raises(UserError, match="not 'prune'"):
        PruneConfig.from_dict({"name": "int8"})


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: PruneConfig(round_to=2.5), "round_to must be int"),  # type: ignore[arg-type]
        (lambda: PruneConfig.from_dict({"ratio": "0.5"}), "ratio must be float"),
        (lambda: Int8Config(include_head=1), "include_head must be bool"),  # type: ignore[arg-type]
        (lambda: DistilConfig(lr="fast"), "lr must be float or none"),  # type: ignore[arg-type]
    ],
)
def test_configs_check_field_types(make: Callable[[], Any], fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        make()


def test_compress_rejects_models_it_cannot_split() -> None:
    with pytest.raises(UserError, match="torchvision-layout ResNets and BERT"):
        compress_(nn.Sequential(nn.Linear(2, 2)), Bf16Config())


def test_quantized_flop_formulas_register_idempotently() -> None:
    from torch.utils.flop_counter import flop_registry

    register_quantized_formulas()
    register_quantized_formulas()
    for op in ("linear", "linear_dynamic", "conv2d", "conv2d_relu"):
        assert getattr(torch.ops.quantized, op) in flop_registry


# ---------------------------------------------------------------------------------------------------
# int8
# ---------------------------------------------------------------------------------------------------


@needs_x86
def test_int8_resnet_is_quantised_close_and_counts_fp32_flops(
    trained_resnet: nn.Module, int8_resnet: nn.Module, image_data: dict[str, Any]
) -> None:
    from torch.ao.nn.intrinsic.quantized import ConvReLU2d
    from torch.ao.nn.quantized import Conv2d as QConv2d

    types = {type(m) for m in int8_resnet.modules()}
    assert ConvReLU2d in types and QConv2d in types
    assert not any(type(m) is nn.Conv2d for m in int8_resnet.modules())  # every conv is int8
    assert type(int8_resnet.fc) is nn.Linear  # the classifier head stays fp32
    x = image_data["x"]
    assert cosine(logits(int8_resnet, x), logits(trained_resnet, x)) >= 0.99
    assert flops(int8_resnet, x) == flops(trained_resnet, x) > 0
    assert torch.backends.quantized.engine == "x86"
    log = compression_log(int8_resnet)
    assert [e["compressor"] for e in log] == ["int8"] and log[0]["calibration_batches"] == 4


@needs_x86
@pytest.mark.parametrize("tap", ["layer1", "layer2", "layer3"])
def test_int8_resnet_splits_exactly_at_every_tap(int8_resnet: nn.Module, image_data: dict[str, Any], tap: str) -> None:
    assert_split_exact(int8_resnet, tap, image_data["x"][:16])


@needs_x86
def test_int8_resnet_needs_calibration() -> None:
    with pytest.raises(UserError, match="calibration"):
        compress_(make_tiny_resnet(), Int8Config())


@needs_x86
def test_int8_bert_is_dynamic_on_the_encoder_only(
    trained_bert: nn.Module, int8_bert: nn.Module, text_data: dict[str, Any]
) -> None:
    from torch.ao.nn.quantized.dynamic import Linear as DynLinear

    for layer in int8_bert.bert.encoder.layer:
        for lin in (layer.attention.self.query, layer.attention.output.dense, layer.intermediate.dense):
            assert type(lin) is DynLinear
    assert type(int8_bert.classifier) is nn.Linear and type(int8_bert.bert.pooler.dense) is nn.Linear
    x = text_data["x"]  # 16 of 64 rows padded
    ref, out = logits(trained_bert, x), logits(int8_bert, x)
    assert agreement(out, ref) >= 0.9
    assert cosine(out, ref) >= 0.99
    assert flops(int8_bert, x) == flops(trained_bert, x) > 0
    assert_split_exact(int8_bert, 2, x)


@needs_x86
def test_int8_include_head_quantises_the_classifier_and_refuses_twice(
    trained_bert: nn.Module, text_data: dict[str, Any]
) -> None:
    from torch.ao.nn.quantized.dynamic import Linear as DynLinear

    model = compress_(copy.deepcopy(trained_bert), Int8Config(include_head=True))
    assert type(model.classifier) is DynLinear and type(model.bert.pooler.dense) is DynLinear
    assert flops(model, text_data["x"]) == flops(trained_bert, text_data["x"])
    with pytest.raises(UserError, match="already int8"):
        compress_(model, Int8Config())


# ---------------------------------------------------------------------------------------------------
# fp16 / bf16
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [Bf16Config(), Fp16Config()], ids=["bf16", "fp16"])
def test_low_precision_casts_keep_fp32_boundaries_and_split(
    config: CompressorConfig, trained_resnet: nn.Module, trained_bert: nn.Module, image_data, text_data
) -> None:
    low_dtype = torch.bfloat16 if config.name == "bf16" else torch.float16
    for teacher, x, tap in ((trained_resnet, image_data["x"][:16], "layer1"), (trained_bert, text_data["x"], 2)):
        model = compress_(copy.deepcopy(teacher), config)
        out = logits(model, x)
        assert out.dtype == torch.float32
        assert any(p.dtype == low_dtype for p in model.parameters())
        assert cosine(out, logits(teacher, x)) >= 0.99
        assert_split_exact(model, tap, x)


# ---------------------------------------------------------------------------------------------------
# pruning
# ---------------------------------------------------------------------------------------------------


def test_pruned_resnet_meets_the_flop_target_and_splits(
    trained_resnet: nn.Module, pruned_resnet: tuple[nn.Module, Epochs], image_data: dict[str, Any]
) -> None:
    model, epochs = pruned_resnet
    x = image_data["x"]
    ratio = flops(model, x) / flops(trained_resnet, x)
    assert ratio <= 0.5 + 0.05
    assert ratio > 0.2  # pruned to the target, not to nothing
    assert model.fc.out_features == 4  # the classifier keeps its classes
    assert n_params(model) < n_params(trained_resnet)
    assert logits(model, x).shape == (64, 4)
    assert epochs.models == [model, model]  # finetune_epochs calls of the caller's loop, on the pruned model
    assert compression_log(model)[0]["flops_ratio"] == pytest.approx(ratio, abs=1e-5)
    assert_split_exact(model, "layer1", x)


def test_pruned_bert_drops_heads_and_ffn_width_keeps_hidden_size(
    trained_bert: nn.Module, pruned_bert: nn.Module, text_data: dict[str, Any]
) -> None:
    x = text_data["x"]
    ratio = flops(pruned_bert, x) / flops(trained_bert, x)
    assert ratio <= 0.5 + 0.05
    for layer in pruned_bert.bert.encoder.layer:
        attn = layer.attention.self
        assert attn.num_attention_heads == 1  # of 2
        assert attn.all_head_size == attn.query.out_features == attn.attention_head_size
        assert attn.query.in_features == 32 and layer.output.dense.out_features == 32  # hidden size kept
        assert layer.intermediate.dense.out_features < 64
    assert pruned_bert.classifier.weight.shape == (2, 32)
    assert pruned_bert.bert.pooler.dense.weight.shape == (32, 32)
    assert agreement(logits(pruned_bert, x), logits(trained_bert, x)) > 0.5
    assert_split_exact(pruned_bert, 2, x)


@pytest.mark.parametrize("family", ["resnet", "bert"])
def test_a_pruned_model_loads_into_its_parent_shaped_like_its_weights(
    family: str,
    trained_resnet: nn.Module,
    pruned_resnet: tuple[nn.Module, Epochs],
    trained_bert: nn.Module,
    pruned_bert: nn.Module,
    image_data: dict[str, Any],
    text_data: dict[str, Any],
) -> None:
    parent, pruned, x = (
        (trained_resnet, pruned_resnet[0], image_data["x"])
        if family == "resnet"
        else (trained_bert, pruned_bert, text_data["x"])
    )
    parent_shapes = {n: t.shape for n, t in parent.state_dict().items()}
    state = pruned.state_dict()
    rebuilt = shaped_like(parent, {n: tuple(t.shape) for n, t in state.items()})
    rebuilt.load_state_dict(state, strict=True)
    assert {n: t.shape for n, t in parent.state_dict().items()} == parent_shapes  # the parent is untouched
    assert any(parent_shapes[n] != t.shape for n, t in state.items())  # it was pruned: the test is not vacuous
    pruned.eval(), rebuilt.eval()
    assert torch.equal(logits(rebuilt, x), logits(pruned, x))
    if family == "bert":
        for a, b in zip(_attentions(rebuilt), _attentions(pruned), strict=True):
            assert (a.num_attention_heads, a.all_head_size) == (b.num_attention_heads, b.all_head_size)


def _attentions(model: nn.Module) -> list[nn.Module]:
    return [layer.attention.self for layer in model.bert.encoder.layer]


def test_shaped_like_refuses_layers_prune_does_not_make() -> None:
    grouped = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4))
    with pytest.raises(ValueError, match="Conv2d"):
        shaped_like(grouped, {"0.weight": (2, 1, 3, 3), "0.bias": (2,)})


def test_prune_needs_finetune_or_zero_epochs(image_data: dict[str, Any]) -> None:
    with pytest.raises(UserError, match="finetune"):
        compress_(make_tiny_resnet(), PruneConfig(round_to=2), example_inputs=image_data["x"][:4])


def test_prune_kd_finetune_distils_from_the_unpruned_model(
    trained_resnet: nn.Module,
    trained_bert: nn.Module,
    pruned_bert: nn.Module,
    image_data: dict[str, Any],
    text_data: dict[str, Any],
) -> None:
    never = Epochs()  # finetune=kd must not call the task's label fine-tuning
    for teacher, data, tap, unfinetuned in (
        (trained_resnet, image_data, "layer1", None),
        (trained_bert, text_data, 2, pruned_bert),
    ):
        x = data["x"]
        same_pruning = dict(ratio=0.5, round_to=2, steps=2)
        if unfinetuned is None:
            unfinetuned = compress_(teacher, PruneConfig(**same_pruning, finetune_epochs=0), example_inputs=x[:8])
        kd = compress_(
            teacher,
            PruneConfig(**same_pruning, finetune_epochs=3, finetune="kd"),
            example_inputs=x if isinstance(x, dict) else x[:8],
            finetune=never,
            train_batches=lambda d=data: d["train"],
        )
        assert never.models == []
        (entry,) = compression_log(kd)
        assert entry["config"]["finetune"] == "kd" and entry["last_epoch_kd_loss"] < entry["first_epoch_kd_loss"]
        assert flops(kd, x) == flops(unfinetuned, x)  # the same structure, other weights
        target = logits(teacher, x)
        assert kl(target, logits(kd, x)) < kl(target, logits(unfinetuned, x))
        assert_split_exact(kd, tap, x)
    with pytest.raises(UserError, match="train_batches"):
        compress_(make_tiny_resnet(), PruneConfig(round_to=2, finetune="kd"), example_inputs=image_data["x"][:4])
    with pytest.raises(UserError, match="finetune must be one of"):
        PruneConfig(finetune="labels")


def test_prune_refuses_an_unreachable_target(image_data: dict[str, Any]) -> None:
    # width-8 stem with round_to=8 leaves nothing to remove in layer1: the FLOP target cannot be met
    with pytest.raises(UserError, match="round_to"):
        compress_(
            make_tiny_resnet(),
            PruneConfig(ratio=0.2, round_to=8, steps=1, finetune_epochs=0),
            example_inputs=image_data["x"][:4],
        )


# ---------------------------------------------------------------------------------------------------
# distillation
# ---------------------------------------------------------------------------------------------------


def test_distilled_resnet_is_smaller_splits_and_learns_from_the_teacher(
    trained_resnet: nn.Module, distilled_resnet: nn.Module, image_data: dict[str, Any]
) -> None:
    from compressors.distill import _resnet_student

    x = image_data["x"]
    assert n_params(distilled_resnet) < n_params(trained_resnet)
    assert flops(distilled_resnet, x) < flops(trained_resnet, x)
    assert_split_exact(distilled_resnet, "layer1", x)
    at_init = _resnet_student(trained_resnet, RESNET_KD, x).eval()  # same seed: the student before training
    teacher = logits(trained_resnet, x)
    assert kl(teacher, logits(distilled_resnet, x)) < kl(teacher, logits(at_init, x))
    assert agreement(logits(distilled_resnet, x), teacher) > agreement(logits(at_init, x), teacher) + 0.1


def test_distilled_bert_keeps_every_kth_layer_and_learns_from_the_teacher(
    trained_bert: nn.Module, distilled_bert: nn.Module, text_data: dict[str, Any]
) -> None:
    from compressors.distill import _bert_student

    x = text_data["x"]
    assert len(distilled_bert.bert.encoder.layer) == 2
    assert compression_log(distilled_bert)[0]["student"] == [1, 3]
    assert n_params(distilled_bert) < n_params(trained_bert)
    assert flops(distilled_bert, x) < flops(trained_bert, x)
    assert_split_exact(distilled_bert, 1, x)
    at_init = _bert_student(trained_bert, BERT_KD).eval()
    teacher = logits(trained_bert, x)
    assert kl(teacher, logits(distilled_bert, x)) < kl(teacher, logits(at_init, x))
    assert agreement(logits(distilled_bert, x), teacher) >= agreement(logits(at_init, x), teacher)


def test_distil_needs_training_data_and_a_smaller_student() -> None:
    with pytest.raises(UserError, match="train_batches"):
        compress_(make_tiny_resnet(), DistilConfig(student_width=4))
    x = torch.randn(2, 1, 16, 16)
    with pytest.raises(UserError, match="not fewer"):
        compress_(make_tiny_resnet(), DistilConfig(student_width=8), train_batches=lambda: [(x, torch.zeros(2).long())])


# ---------------------------------------------------------------------------------------------------
# chains
# ---------------------------------------------------------------------------------------------------


@needs_x86
def test_compose_prunes_then_quantises(trained_resnet: nn.Module, image_data: dict[str, Any]) -> None:
    from torch.ao.nn.intrinsic.quantized import ConvReLU2d

    x = image_data["x"]
    chain = [PruneConfig(ratio=0.5, round_to=2, steps=1, finetune_epochs=0), Int8Config()]
    model = compose_(copy.deepcopy(trained_resnet), chain, example_inputs=x[:8], calibration=image_data["calibration"])
    assert [e["compressor"] for e in compression_log(model)] == ["prune", "int8"]
    assert any(type(m) is ConvReLU2d for m in model.modules())  # quantised ...
    ratio = flops(model, x) / flops(trained_resnet, x)
    assert ratio <= 0.5 + 0.05  # ... after pruning
    assert ratio == pytest.approx(compression_log(model)[0]["flops_ratio"], abs=1e-5)  # int8 counts as fp32
    widths = [m.out_channels for m in model.modules() if isinstance(m, ConvReLU2d)]
    assert max(widths) < 64  # pruned channels survive quantisation (layer4 had 64)
    assert_split_exact(model, "layer1", x)


@needs_x86
def test_compose_refuses_pruning_after_int8(image_data: dict[str, Any]) -> None:
    chain = [Int8Config(), PruneConfig(round_to=2, finetune_epochs=0)]
    with pytest.raises(UserError, match="before int8"):
        compose_(make_tiny_resnet(), chain, calibration=image_data["calibration"])


# ---------------------------------------------------------------------------------------------------
# a SideNet attaches after every compressor, and exits really skip `rest`
# ---------------------------------------------------------------------------------------------------


class RestRecorder:
    def __init__(self, real: Callable[[Any], torch.Tensor]) -> None:
        self.real, self.rows = real, 0

    def __call__(self, state: Any) -> torch.Tensor:
        self.rows += int((state.hidden if isinstance(state, TextState) else state).shape[0])
        return self.real(state)


COMPRESSED = [
    ("int8_resnet", "layer1", "image"),
    ("pruned_resnet", "layer1", "image"),
    ("distilled_resnet", "layer2", "image"),
    ("int8_bert", 2, "text"),
    ("pruned_bert", 2, "text"),
    ("distilled_bert", 1, "text"),
]


@pytest.mark.parametrize(("fixture", "tap", "kind"), COMPRESSED, ids=[c[0] for c in COMPRESSED])
def test_sidenet_attaches_after_compression_and_exits_skip_rest(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, fixture: str, tap: Any, kind: str
) -> None:
    model = request.getfixturevalue(fixture)
    model = model[0] if isinstance(model, tuple) else model
    data = request.getfixturevalue(f"{kind}_data")
    x, y = data["x"], data["y"]
    split = split_model(model, tap)
    with torch.no_grad():
        state = split.head(x)
        feats, main = split.features(state), split.rest(state)
    side = fit_sidenet(feats, y, main, int(main.shape[-1]), SideNetConfig(epochs=2, batch_size=32), progress=False)
    rec = RestRecorder(split.rest)
    monkeypatch.setattr(split, "rest", rec)

    out = EarlyExit(split, side, threshold=0.0).run(x)  # everyone exits: rest never runs
    assert bool(out.exited.all()) and rec.rows == 0
    out = EarlyExit(split, side, threshold=2.0).run(x)  # nobody exits: the compressed MainNet's own output
    assert not bool(out.exited.any()) and rec.rows == len(y)
    assert float((out.logits - logits(model, x)).abs().max()) == 0.0
    rec.rows = 0
    mid = float(out.confidence.median())
    out = EarlyExit(split, side, threshold=mid).run(x)  # a mix: rest sees exactly the survivors
    assert rec.rows == int((~out.exited).sum())
