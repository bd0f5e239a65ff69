"""``Int8Config(backend="ort")``: ONNX Runtime dynamic int8 BERT (compressors/ort.py) on tiny models.

The wrapper must behave like the fp32 model (logits, padding, dynamic shapes), split into two separate
int8 sessions whose rest never runs for exited rows, count the fp32 FLOPs of what ran, and end a chain.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from tiny_models import agreement, cosine, logits, make_tiny_bert, make_tiny_resnet, tiny_bert_config
from torch import nn

from compressors import (
    Bf16Config,
    DistilConfig,
    Fp16Config,
    Int8Config,
    OrtBertClassifier,
    OrtBertSplit,
    PruneConfig,
    compose_,
    compress_,
    compression_log,
    config_from_step,
)
from compressors.base import is_quantized
from compressors.ort import WEIGHT_BITS
from sidenet.engine.early_exit import EarlyExit
from sidenet.engine.sidenet import SideNet
from sidenet.engine.split import BertSplit, TextState, split_model
from sidenet.models.mean_pool_bert import MeanPoolBertForSequenceClassification
from sidenet_core.errors import UserError
from sidenet_core.flops import count_flops
from sidenet_core.layouts import masked_mean

ORT = Int8Config(backend="ort")


def text_batch(lengths: list[int], seed: int = 0, vocab: int = 50) -> dict[str, torch.Tensor]:
    """Right-padded ids (pad id 0) with a matching attention mask; row i has ``lengths[i]`` real tokens."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (len(lengths), max(lengths)), generator=gen)
    mask = (torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


def flops_of(fn: Any, *args: Any) -> int:
    return count_flops(fn, *args)[0]


def make_mean_bert() -> nn.Module:
    torch.manual_seed(0)
    return MeanPoolBertForSequenceClassification(tiny_bert_config()).eval()


def spread_logits(model: nn.Module) -> nn.Module:
    """A random tiny BERT's logits are ~0.01 and nearly equal across rows; scale the classifier so that
    rows disagree in argmax and the comparisons below measure something."""
    with torch.no_grad():
        model.classifier.weight.mul_(200.0)
    return model


# 20 rows, lengths 3..24: about half padded, two sequence lengths longer than the export trace (8)
BATCH = text_batch([24, 3, 17, 9, 24, 5, 12, 20, 7, 24, 14, 4, 22, 10, 24, 6, 19, 11, 16, 8])


@pytest.fixture(scope="module")
def fp32_models() -> dict[str, nn.Module]:
    return {"cls": spread_logits(make_tiny_bert()), "mean": spread_logits(make_mean_bert())}


@pytest.fixture(scope="module")
def ort_models(fp32_models: dict[str, nn.Module]) -> dict[str, OrtBertClassifier]:
    out = {}
    for name, model in fp32_models.items():
        wrapper = compress_(copy.deepcopy(model), ORT)
        assert isinstance(wrapper, OrtBertClassifier)
        out[name] = wrapper
    return out


# ---------------------------------------------------------------------------------------------------
# the full model
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_logits_close_to_fp32_with_padding_and_dynamic_shapes(
    fp32_models: dict[str, nn.Module], ort_models: dict[str, OrtBertClassifier], pooling: str
) -> None:
    fp32, ort = fp32_models[pooling], ort_models[pooling]
    assert ort.pooling == pooling
    ref, got = logits(fp32, BATCH), logits(ort, BATCH)
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert ref.argmax(-1).unique().numel() == 2  # the check below can fail
    assert cosine(got, ref) >= 0.99
    assert agreement(got, ref) >= 0.9
    # padding really is masked: int8 error is far below what attending to the pads would change
    unmasked = logits(fp32, {"input_ids": BATCH["input_ids"]})
    assert (got - ref).abs().max() < 0.2 * (unmasked - ref).abs().max()
    # other batch sizes / lengths than the export trace, incl. batch 1 and no attention mask at all
    for inputs in (text_batch([1]), text_batch([30]), text_batch([5, 30, 2], seed=3)):
        assert cosine(logits(ort, inputs), logits(fp32, inputs)) >= 0.99
    single = {"input_ids": BATCH["input_ids"][:1]}
    assert cosine(logits(ort, single), logits(fp32, single)) >= 0.99
    # a padded row gives what the same row gives unpadded: the mask is honoured, pad tokens ignored
    row, n = 1, int(BATCH["attention_mask"][1].sum())
    alone = {k: v[row : row + 1, :n] for k, v in BATCH.items()}
    assert torch.allclose(logits(ort, alone)[0], got[row], atol=0.05 * float(got[row].abs().max()))


def test_compress_keeps_the_fp32_model_intact_and_in_eval_mode(fp32_models: dict[str, nn.Module]) -> None:
    # torch.onnx.export leaves a module in training mode when handed one in training mode: dropout
    # would then be traced into the graph and left on in the MainNet
    model = copy.deepcopy(fp32_models["cls"])
    before = logits(model, BATCH)
    ort = compress_(model, ORT)
    assert not any(m.training for m in ort.modules())
    assert torch.equal(logits(model, BATCH), before)
    assert torch.equal(logits(ort, BATCH), logits(ort, BATCH))  # no dropout in the graph


def test_is_int8_logged_and_threads_recorded(ort_models: dict[str, OrtBertClassifier]) -> None:
    ort = ort_models["cls"]
    assert is_quantized(ort)
    (entry,) = compression_log(ort)
    assert entry["compressor"] == "int8" and entry["config"]["backend"] == "ort"
    assert entry["method"] == "dynamic" and entry["backend"] == "ort"
    assert entry["threads"] == torch.get_num_threads() == ort.threads
    assert entry["int8_matmuls"]["full"] == 4 * 6  # 4 layers x (q, k, v, out, ffn in, ffn out)
    options = ort.full.session.get_session_options()
    assert options.intra_op_num_threads == torch.get_num_threads() and options.inter_op_num_threads == 1
    # spinning ORT threads would steal the cores from the torch SideNet between the head and rest sessions
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert config_from_step("int8", {"backend": "ort"}) == ORT


def test_flops_through_the_wrapper_equal_the_fp32_count(
    fp32_models: dict[str, nn.Module], ort_models: dict[str, OrtBertClassifier]
) -> None:
    fp32, ort = fp32_models["cls"], ort_models["cls"]
    for inputs in (BATCH, text_batch([4, 2])):
        expected = flops_of(lambda x: fp32(**x).logits, inputs)
        assert expected > 0
        assert flops_of(lambda x: ort(**x).logits, inputs) == expected
    # the count follows the shapes it ran on (memoised per shape, not once)
    assert flops_of(lambda x: ort(**x).logits, text_batch([4, 2])) < flops_of(lambda x: ort(**x).logits, BATCH)


# ---------------------------------------------------------------------------------------------------
# the split
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_split_runs_two_int8_graphs_that_compose_to_the_full_model(
    fp32_models: dict[str, nn.Module], ort_models: dict[str, OrtBertClassifier], pooling: str
) -> None:
    ort = ort_models[pooling]
    split = split_model(ort, 2)
    assert isinstance(split, OrtBertSplit) and split.tap == "2"
    assert split_model(ort, "2") is split  # exported once per tap
    assert split.head_part.session is not split.rest_part.session
    assert [i.name for i in split.rest_part.session.get_inputs()] == ["hidden", "attention_mask"]
    assert split.head_part.session.get_outputs()[0].name == "hidden"
    assert all(n > 0 for n in (ort.int8_matmuls["head2"], ort.int8_matmuls["rest2"]))

    with torch.no_grad():
        state = split.head(BATCH)
        out = split.rest(state)
    assert isinstance(state, TextState) and isinstance(state.hidden, torch.Tensor)
    assert state.hidden.shape == (*BATCH["input_ids"].shape, 32)
    assert torch.allclose(out, logits(ort, BATCH), atol=1e-4 * float(out.abs().max()))

    ref = BertSplit(fp32_models[pooling], 2)
    with torch.no_grad():
        ref_state = ref.head(BATCH)
    feats = split.features(state)
    assert torch.equal(feats, masked_mean(state.hidden, BATCH["attention_mask"]))
    assert cosine(feats, ref.features(ref_state)) >= 0.99
    picked = split.select(state, torch.tensor([3, 0]))
    assert torch.equal(picked.hidden, state.hidden[[3, 0]])
    assert torch.equal(picked.attention_mask, BATCH["attention_mask"][[3, 0]])


def test_split_flops_equal_the_fp32_split(
    fp32_models: dict[str, nn.Module], ort_models: dict[str, OrtBertClassifier]
) -> None:
    split, ref = split_model(ort_models["cls"], 1), BertSplit(fp32_models["cls"], 1)
    f_head, state = count_flops(split.head, BATCH)
    ref_head, ref_state = count_flops(ref.head, BATCH)
    assert f_head == ref_head > 0
    assert flops_of(split.rest, state) == flops_of(ref.rest, ref_state) > 0
    assert f_head + flops_of(split.rest, state) == flops_of(lambda x: fp32_models["cls"](**x).logits, BATCH)


class SessionCalls:
    """Counts the batch rows each ONNX Runtime session call receives (instruments ``session.run``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, session: Any) -> None:
        self.rows: list[int] = []
        real = session.run

        def run(output_names: Any, feeds: dict[str, Any], *args: Any) -> Any:
            self.rows.append(int(next(iter(feeds.values())).shape[0]))
            return real(output_names, feeds, *args)

        monkeypatch.setattr(session, "run", run)


def test_exited_rows_never_run_the_rest_graph(
    fp32_models: dict[str, nn.Module], ort_models: dict[str, OrtBertClassifier], monkeypatch: pytest.MonkeyPatch
) -> None:
    split = split_model(ort_models["mean"], 2)
    torch.manual_seed(1)
    side = SideNet(split.feature_dim(BATCH), 2, hidden=16).eval()
    with torch.no_grad():
        side.net[-1].weight.mul_(50.0)  # spread confidences so a threshold splits the batch
    head = SessionCalls(monkeypatch, split.head_part.session)
    rest = SessionCalls(monkeypatch, split.rest_part.session)
    full = SessionCalls(monkeypatch, ort_models["mean"].full.session)

    out = EarlyExit(split, side, 0.0).run(BATCH)  # everyone exits
    assert bool(out.exited.all())
    assert head.rows == [20] and rest.rows == [] and full.rows == []
    f_all_exit = flops_of(EarlyExit(split, side, 0.0).run, BATCH)
    assert f_all_exit == flops_of(lambda x: side(split.features(split.head(x))), BATCH) > flops_of(split.head, BATCH)
    assert rest.rows == []

    conf = out.confidence.sort(descending=True).values
    threshold = float((conf[6] + conf[7]) / 2)  # 7 rows exit
    out = EarlyExit(split, side, threshold).run(BATCH)
    assert int(out.exited.sum()) == 7 and rest.rows == [13]
    survivors = torch.nonzero(~out.exited).squeeze(1)
    with torch.no_grad():
        state = split.head(BATCH)
        alone = split.rest(split.select(state, survivors))  # the rest session on exactly the surviving rows
        full = split.rest(state)[survivors]  # ... and the same rows inside the full batch of 20
        fp32 = BertSplit(fp32_models["mean"], 2)
        ref = fp32.rest(fp32.head(BATCH))[survivors]
    # What the design guarantees, on any CPU: a survivor's logits are those of the rest session run on exactly
    # the rows that survived (ONNX Runtime is deterministic for equal inputs and threads).
    assert torch.equal(out.logits[~out.exited], alone)
    # What it does not: dynamic int8 quantises each activation tensor with a scale from its range over the batch,
    # so 13 survivors can get other scales than the full 20 (the batch-composition effect, measured per chain in
    # the report). A change of quantisation step moves the output by a fraction of the quantisation error itself,
    # so the shift stays within int8's own error against fp32 on these rows (tiny BERT: shift 1.4e-3, error
    # 8.6e-3); a wrong row, mask or order would move it by the size of the logits.
    shift = float((alone - full).abs().max())
    int8_error = float((full - ref).abs().max())
    assert shift <= int8_error, (shift, int8_error)


def test_bad_taps_are_one_line_errors(ort_models: dict[str, OrtBertClassifier]) -> None:
    for tap in (0, 4, "last"):
        with pytest.raises(UserError):
            split_model(ort_models["cls"], tap)


# ---------------------------------------------------------------------------------------------------
# chains and errors
# ---------------------------------------------------------------------------------------------------


def test_int8_ort_is_terminal_in_a_chain(ort_models: dict[str, OrtBertClassifier]) -> None:
    ort = ort_models["cls"]
    example = text_batch([6, 4])
    cases = [
        (PruneConfig(ratio=0.5, finetune_epochs=0), "put prune before int8"),
        (DistilConfig(student_layers=2), "put distil before int8"),
        (Int8Config(), "already int8"),
        (ORT, "already int8"),
        (Fp16Config(), "cannot cast an int8"),
        (Bf16Config(), "cannot cast an int8"),
    ]
    for config, message in cases:
        with pytest.raises(UserError, match=message) as err:
            compress_(ort, config, example_inputs=example, train_batches=lambda: [(example, torch.tensor([0, 1]))])
        assert "\n" not in str(err.value)


def test_resnets_and_bad_backends_are_one_line_errors() -> None:
    with pytest.raises(UserError, match="use backend x86 for ResNets"):
        compress_(make_tiny_resnet(), ORT, calibration=[torch.randn(2, 1, 16, 16)])
    with pytest.raises(UserError, match="not one of x86, fbgemm, onednn, qnnpack, ort"):
        Int8Config(backend="onnx")
    with pytest.raises(UserError, match="inference-only"):
        compress_(make_tiny_bert(), ORT)(**BATCH, labels=torch.zeros(20, dtype=torch.long))


def test_include_head_quantises_pooler_and_classifier(fp32_models: dict[str, nn.Module]) -> None:
    fp32 = fp32_models["cls"]
    ort = compress_(copy.deepcopy(fp32), Int8Config(backend="ort", include_head=True))
    assert ort.int8_matmuls["full"] == 4 * 6 + 2  # + pooler dense + classifier
    # a quality floor for int8 on this tiny model (0.9998 measured, with and without VNNI: see the next test)
    assert cosine(logits(ort, BATCH), logits(fp32, BATCH)) >= 0.99


def test_weights_are_seven_bit_so_no_cpu_saturates(ort_models: dict[str, OrtBertClassifier]) -> None:
    """Without VNNI, ONNX Runtime's int8 kernel sums pairs of u8·s8 products in a saturating int16: with weights in
    [-64, 64] no pair can exceed 255·64·2 = 32,640 < 32,767, so the logits are those of the int8 maths on any
    x86-64 CPU (with 8-bit weights an emulated AVX2-only Zen 3 gave cosine 0.987 where VNNI gave 0.9999)."""
    ort = ort_models["cls"]
    split = split_model(ort, 2)
    assert WEIGHT_BITS == 7 and compression_log(ort)[0]["weight_bits"] == 7
    for part in (ort.full, split.head_part, split.rest_part):
        lo, hi = part.weight_range
        assert -64 <= lo < 0 < hi <= 64, (part.name, lo, hi)  # symmetric: ORT uses ±64 for 7 bits
        assert max(-lo, hi) >= 32  # the 7 bits are used, not a degenerate scale


def test_pruned_then_ort(fp32_models: dict[str, nn.Module]) -> None:
    fp32 = copy.deepcopy(fp32_models["cls"])
    pruned = compose_(
        fp32, [PruneConfig(ratio=0.5, round_to=2, steps=2, finetune_epochs=0)], example_inputs=text_batch([8, 5])
    )
    heads = [layer.attention.self.num_attention_heads for layer in pruned.bert.encoder.layer]
    widths = [layer.intermediate.dense.out_features for layer in pruned.bert.encoder.layer]
    assert min(heads) < 2 or max(widths) < 64  # really pruned
    ref = logits(pruned, BATCH)
    ref_flops = flops_of(lambda x: pruned(**x).logits, BATCH)
    ort = compress_(pruned, ORT)
    assert [e["compressor"] for e in compression_log(ort)] == ["prune", "int8"]
    assert cosine(logits(ort, BATCH), ref) >= 0.99
    assert flops_of(lambda x: ort(**x).logits, BATCH) == ref_flops
    split = split_model(ort, 2)
    with torch.no_grad():
        assert torch.allclose(split.rest(split.head(BATCH)), logits(ort, BATCH), atol=1e-4 * float(ref.abs().max()))


def test_fewer_layer_student_then_ort(fp32_models: dict[str, nn.Module]) -> None:
    teacher = copy.deepcopy(fp32_models["mean"])
    data = [(text_batch([8, 5, 3, 8], seed=s), torch.tensor([0, 1, 1, 0])) for s in range(2)]
    student = compress_(teacher, DistilConfig(student_layers=2, epochs=1), train_batches=lambda: data)
    assert len(student.bert.encoder.layer) == 2
    ort = compress_(student, ORT)
    assert ort.int8_matmuls["full"] == 2 * 6
    assert cosine(logits(ort, BATCH), logits(student, BATCH)) >= 0.99
    split = split_model(ort, 1)
    assert flops_of(split.rest, split.head(BATCH)) == flops_of(
        BertSplit(student, 1).rest, BertSplit(student, 1).head(BATCH)
    )
