"""Tasks from outside the package, the registries, and text tasks built from a local HF model folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import tiny_bert_config

from sidenet.bench.pipeline import Prepared, prepare
from sidenet.data import TINY_TEXT_VOCAB, tiny_image_splits
from sidenet.engine.sidenet import SideNetConfig
from sidenet.engine.split import BertSplit, ResNetSplit, split_model
from sidenet.tasks import DATASETS, TASKS, ImageTask, ImageTaskConfig, TextTask, TextTaskConfig, register_task
from sidenet_core.errors import UserError
from sidenet_core.registry import Registry

# ---------------------------------------------------------------- a task registered from outside


@pytest.fixture
def outside_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ImageTask]:
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path / "cache"))
    task = ImageTask(
        ImageTaskConfig(
            name="outside-task",
            dataset="outside-data",
            arch="resnet10",
            width=8,
            pad_to=16,
            epochs=2,
            batch_size=64,
            lr=0.05,
            description="a task defined in a test, outside the package",
            sidenet=SideNetConfig(hidden=16, epochs=10, batch_size=64),
        )
    )
    DATASETS.add("outside-data", lambda: tiny_image_splits(n_train=256, n_val=128, n_test=128, seed=1))
    try:
        register_task(task)
        yield task
    finally:
        TASKS.remove("outside-task")
        DATASETS.remove("outside-data")


def test_outside_task_end_to_end(outside_task: ImageTask, tmp_path: Path) -> None:
    assert TASKS.get("outside-task") is outside_task
    p = prepare("outside-task", progress=False)
    assert isinstance(p, Prepared) and p.task is outside_task
    assert {k: len(v) for k, v in p.data.items()} == {"train": 256, "val": 128, "test": 128}
    assert "seed=1" in p.source
    assert p.data["test"].rows.shape == (128, 1, 16, 16)
    assert p.mainnet.fc.out_features == 4
    assert isinstance(p.split, ResNetSplit) and p.split.tap == "layer1"
    assert p.side.in_dim == 8 and p.side.hidden == 16 and p.side.num_classes == 4
    assert p.logs["mainnet"]["train"]["epochs"] == 2
    assert p.logs["mainnet"]["train"]["steps"] == 2 * 4  # 256 rows / 64 per batch, 2 epochs
    # artifacts went to this test's cache
    cache = tmp_path / "cache"
    assert (cache / f"{p.logs['mainnet']['key']}.safetensors").is_file()
    assert (cache / f"{p.logs['sidenet']['key']}.safetensors").is_file()

    # sane numbers
    for ev in (p.mainnet_eval, p.cascade_eval, p.noexit_eval):
        assert 0.0 <= ev["accuracy"] <= 1.0 and 0.0 <= ev["exit_rate"] <= 1.0
        assert ev["flops_per_sample"] > 0
    bad = [n for n, v in p.mainnet.state_dict().items() if v.is_floating_point() and not v.isfinite().all()]
    assert not bad, f"non-finite MainNet weights after training: {bad}"
    assert bool(p.test.main_logits.isfinite().all()) and bool(p.test.side_logits.isfinite().all())
    assert p.mainnet_eval["accuracy"] == pytest.approx(float(p.test.main_correct.mean()))
    assert p.noexit_eval["exit_rate"] == 0.0
    assert p.cascade_eval["accuracy"] == pytest.approx(p.cascade_eval["predicted_accuracy"], abs=1e-12)
    assert p.cascade_eval["flops_per_sample"] == pytest.approx(p.cascade_eval["predicted_flops_per_sample"], rel=1e-9)
    # an exiting row saves the rest; the cascade never costs more than head + SideNet + rest for every row
    assert p.cascade_eval["flops_per_sample"] <= p.noexit_eval["flops_per_sample"]
    head, rest = float(p.test.head_flops.mean()), float(p.test.rest_flops.mean())
    assert p.cascade_eval["flops_per_sample"] == pytest.approx(head + (1 - p.cascade_eval["exit_rate"]) * rest)
    assert p.threshold > 0.0
    assert set(p.sweep) == {"threshold", "test_accuracy", "exit_rate", "flops_per_sample"}
    assert p.sweep["exit_rate"][0] == 1.0  # threshold 0 exits everything
    assert np.all(np.diff(p.sweep["threshold"]) > 0)


def test_outside_task_is_unregistered_afterwards() -> None:
    assert "outside-task" not in TASKS
    assert "outside-data" not in DATASETS


def test_task_recipe_excludes_sidenet_settings(outside_task: ImageTask) -> None:
    recipe = outside_task.recipe()
    assert recipe["type"] == "image" and recipe["width"] == 8 and recipe["epochs"] == 2
    for key in ("description", "tap", "sidenet", "target_loss_pt"):
        assert key not in recipe


# ---------------------------------------------------------------- registries


def test_duplicate_task_name() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_task(TASKS.get("tiny-resnet"))
    with pytest.raises(ValueError, match="already registered"):
        DATASETS.add("tiny-images", lambda: None)  # type: ignore[arg-type,return-value]


def test_unknown_task_suggests_closest() -> None:
    with pytest.raises(UserError) as info:
        TASKS.get("tiny-resnt")
    msg = str(info.value)
    assert "did you mean 'tiny-resnet'?" in msg
    assert "\n" not in msg
    assert "tiny-bert" in msg  # valid names are listed
    with pytest.raises(UserError, match="did you mean 'tiny-resnet'"):
        prepare("tiny-resnt", progress=False)


def test_unknown_name_without_close_match() -> None:
    with pytest.raises(UserError) as info:
        TASKS.get("zzzzzzzzzzzz")
    assert "did you mean" not in str(info.value)


def test_registry_basics() -> None:
    reg: Registry[int] = Registry("widget")
    assert len(reg) == 0
    with pytest.raises(UserError, match=r"\(none registered\)"):
        reg.get("a")
    reg.add("beta", 2)
    assert reg.register("alpha")(1) == 1
    assert reg.names() == ["alpha", "beta"] and list(reg) == ["alpha", "beta"]
    assert "alpha" in reg and "gamma" not in reg and len(reg) == 2
    for bad in ("", " alpha", "alpha "):
        with pytest.raises(ValueError, match="name"):
            reg.add(bad, 3)
    with pytest.raises(ValueError, match="widget 'alpha' is already registered"):
        reg.add("alpha", 3)
    reg.remove("alpha")
    reg.remove("never-there")  # no error
    assert reg.names() == ["beta"]
    assert reg.get("beta") == 2


def test_builtin_tiny_tasks_registered() -> None:
    assert {"tiny-resnet", "tiny-bert"} <= set(TASKS.names())
    assert TASKS.get("tiny-bert").modality == "text"
    assert TASKS.get("tiny-resnet").modality == "image"


def test_image_task_config_validation() -> None:
    with pytest.raises(UserError, match="arch"):
        ImageTaskConfig(name="x", dataset="d", description="d", arch="resnet99")
    with pytest.raises(UserError, match="layer4"):
        ImageTaskConfig(name="x", dataset="d", description="d", tap="layer4")
    with pytest.raises(UserError, match="width"):
        ImageTaskConfig(name="x", dataset="d", description="d", width=4)


# ---------------------------------------------------------------- text: a local Hugging Face model folder

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture
def hf_folder(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    """A tiny random BERT classifier + WordPiece tokenizer saved with ``save_pretrained``."""
    from transformers import BertForSequenceClassification, BertTokenizerFast

    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("\n".join([*SPECIALS, *TINY_TEXT_VOCAB]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file))
    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_bert_config(len(SPECIALS) + len(TINY_TEXT_VOCAB))).eval()
    folder = tmp_path / "my-hf-bert"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model


def folder_task(model: str, name: str = "folder-bert") -> TextTask:
    return TextTask(
        TextTaskConfig(
            name=name,
            dataset="tiny-texts",
            description="tiny BERT from a local save_pretrained folder",
            model=model,
            epochs=1,
            batch_size=32,
            lr=2e-3,
            tap="2",
            max_length=32,
            sidenet=SideNetConfig(hidden=16, epochs=5, batch_size=64),
        )
    )


def test_text_task_loads_local_folder(hf_folder, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import BertForSequenceClassification

    folder, saved = hf_folder
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # restored after the test
    calls: list[dict] = []
    real = BertForSequenceClassification.from_pretrained.__func__

    def spy(cls, *args, **kwargs):
        calls.append(kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(BertForSequenceClassification, "from_pretrained", classmethod(spy))
    task = folder_task(str(folder))
    model = task.build_mainnet(2)
    assert isinstance(model, BertForSequenceClassification)
    # a local folder never goes online: asked per call (the env var is read once, at import, so it cannot be set late)
    assert calls and all(c.get("local_files_only") is True and c.get("trust_remote_code") is False for c in calls)
    saved_sd = saved.state_dict()
    loaded_sd = model.state_dict()
    assert set(saved_sd) == set(loaded_sd)
    for k, v in saved_sd.items():
        assert torch.equal(loaded_sd[k], v), k
    split = split_model(model.eval(), task.tap)
    assert isinstance(split, BertSplit) and split.tap == "2"


def test_text_task_tokenizer_and_batches(hf_folder) -> None:
    folder, saved = hf_folder
    task = folder_task(str(folder))
    tok = task.tokenizer()
    assert task.tokenizer() is tok  # built once
    vocab = [*SPECIALS, *TINY_TEXT_VOCAB]
    ids = tok("good film")["input_ids"]
    assert ids == [vocab.index("[CLS]"), vocab.index("good"), vocab.index("film"), vocab.index("[SEP]")]

    texts = ("good film", "the plot was dull and the acting was weak", "great", " ".join(["movie"] * 60))
    enc = task.encode(texts, torch.tensor([1, 0, 1, 0]))
    assert [len(r) for r in enc.rows] == [4, 11, 3, 32]  # truncated at max_length
    assert all(int(r[0]) == vocab.index("[CLS]") and int(r[-1]) == vocab.index("[SEP]") for r in enc.rows)

    (inputs, idx), *more = task.batches(enc, 8)
    assert not more and idx.tolist() == [0, 1, 2, 3]
    assert inputs["input_ids"].shape == (4, 32)
    assert inputs["attention_mask"].sum(1).tolist() == [4, 11, 3, 32]
    # a padded batch through the split equals the model's own forward
    split = split_model(saved, task.tap)
    with torch.no_grad():
        assert torch.equal(split(inputs), saved(**inputs).logits)
    by_len = task.batches(enc, 8, by_length=True)
    assert [b[1].tolist() for b in by_len] == [[2], [0], [1], [3]]
    assert all(int(b[0]["attention_mask"].min()) == 1 for b in by_len)  # no padding at all


def test_text_task_from_folder_end_to_end(hf_folder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = hf_folder
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task = register_task(folder_task(str(folder), name="folder-bert-e2e"))
    try:
        p = prepare("folder-bert-e2e", progress=False)
    finally:
        TASKS.remove("folder-bert-e2e")
    assert isinstance(p.split, BertSplit) and p.split.tap == "2"
    assert p.task is task
    assert p.side.in_dim == 32 and p.side.num_classes == 2
    assert p.logs["mainnet"]["train"]["epochs"] == 1
    for ev in (p.mainnet_eval, p.cascade_eval, p.noexit_eval):
        assert 0.0 <= ev["accuracy"] <= 1.0 and ev["flops_per_sample"] > 0
    assert p.cascade_eval["accuracy"] == pytest.approx(p.cascade_eval["predicted_accuracy"], abs=1e-12)
    assert p.cascade_eval["flops_per_sample"] == pytest.approx(p.cascade_eval["predicted_flops_per_sample"], rel=1e-9)
    assert p.noexit_eval["flops_per_sample"] > p.mainnet_eval["flops_per_sample"]


def test_missing_model_folder_is_a_user_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    task = folder_task(str(missing))
    with pytest.raises(UserError) as info:
        task.build_mainnet(2)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(missing) in msg
    with pytest.raises(UserError):
        task.tokenizer()


def test_text_task_config_validation() -> None:
    with pytest.raises(UserError, match="layer index"):
        TextTaskConfig(name="x", dataset="d", description="d", tap="layer2")
    with pytest.raises(UserError, match="max_length"):
        TextTaskConfig(name="x", dataset="d", description="d", max_length=4)
