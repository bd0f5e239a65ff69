"""The artifact cache never loads a corrupted, foreign or pre-checksum entry, and rejects a bad cache dir up front.

Every bad entry must give: None from the loader (a rebuild), both files deleted, exactly one one-line warning
naming the entry and the reason, no exception, and nothing of the bad weights in the module.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load, save_model

from sidenet.engine import cache
from sidenet.engine.sidenet import SideNet
from sidenet_core.errors import UserError

FIX = "set SIDENET_BENCH_CACHE to a writable directory"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(path))
    return path


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    caplog.set_level(logging.WARNING, logger="sidenet.engine.cache")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "sidenet.engine.cache"]


def side(seed: int, in_dim: int = 5) -> SideNet:
    torch.manual_seed(seed)
    net = SideNet(in_dim, 3, hidden=4)
    net.feature_mean.normal_()
    net.feature_std.uniform_(1, 2)
    return net


def tensors(seed: int, name: str = "val_logits") -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(8, 3, generator=gen), "val_labels": torch.arange(8)}


def files(root: Path, key: str) -> tuple[Path, Path]:
    return root / f"{key}.safetensors", root / f"{key}.json"


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same_state(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = module.state_dict()
    assert after.keys() == before.keys()
    for name, value in before.items():
        assert torch.equal(after[name], value), f"{name} changed although the entry was rejected"


def assert_rebuilt(root: Path, key: str, messages: list[str], reason: str) -> None:
    """Both files gone, one one-line warning naming the entry and ``reason``."""
    assert [p for p in files(root, key) if p.exists()] == []
    assert len(messages) == 1, messages
    (msg,) = messages
    assert "\n" not in msg
    assert msg.startswith(f"cache entry {key}: ") and msg.endswith("; deleted, will rebuild"), msg
    assert reason in msg, msg


# Two ways into the cache: a module's weights (store/load_into) and named tensors (store_tensors/load_tensors).
class ModuleEntry:
    kind = "sidenet"

    @staticmethod
    def store(key: str, seed: int) -> None:
        cache.store(side(seed), key, {"note": seed})

    @staticmethod
    def load(key: str) -> Any:
        target = side(99)
        before = snapshot(target)
        meta = cache.load_into(target, key)
        if meta is None:
            assert_same_state(target, before)  # nothing of a rejected entry reached the module
            return None
        return target.state_dict(), meta

    @staticmethod
    def expected(seed: int) -> dict[str, torch.Tensor]:
        return side(seed).state_dict()


class TensorEntry:
    kind = "evals"

    @staticmethod
    def store(key: str, seed: int) -> None:
        cache.store_tensors(key, tensors(seed, name=f"val_logits_{seed}"), {"note": seed})

    @staticmethod
    def load(key: str) -> Any:
        return cache.load_tensors(key)

    @staticmethod
    def expected(seed: int) -> dict[str, torch.Tensor]:
        return tensors(seed, name=f"val_logits_{seed}")


ENTRIES = pytest.mark.parametrize("entry", [ModuleEntry, TensorEntry], ids=["module", "tensors"])


def key_of(entry: Any, n: int) -> str:
    return cache.artifact_key(entry.kind, {"n": n})


def assert_loads(entry: Any, key: str, seed: int) -> None:
    hit = entry.load(key)
    assert hit is not None
    state, meta = hit
    assert meta["key"] == key and meta["note"] == seed
    expected = entry.expected(seed)
    assert state.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(state[name], value), name


def flip_byte_in_tensor_data(path: Path) -> None:
    """Flip one bit in the middle of the data section (after the 8-byte length and the JSON header)."""
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    data[start + (len(data) - start) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@ENTRIES
def test_store_records_the_checksum_of_the_bytes_written(root: Path, entry: Any) -> None:
    key = key_of(entry, 1)
    entry.store(key, 1)
    weights, meta_path = files(root, key)
    meta = json.loads(meta_path.read_text())
    blob = weights.read_bytes()
    assert meta["sha256"] == hashlib.sha256(blob).hexdigest() and meta["size"] == len(blob)
    assert meta["key"] == key and meta["kind"] == entry.kind and meta["format"] == cache.CACHE_FORMAT
    assert meta["content"] == ("module" if entry is ModuleEntry else "tensors")
    assert sorted(p.name for p in root.iterdir()) == sorted([weights.name, meta_path.name])  # no temp files left
    assert_loads(entry, key, 1)


@ENTRIES
def test_a_flipped_bit_in_tensor_data_is_never_loaded(root: Path, entry: Any, warnings: Any) -> None:
    key = key_of(entry, 1)
    entry.store(key, 1)
    weights, _ = files(root, key)
    flip_byte_in_tensor_data(weights)
    load(weights.read_bytes())  # still a well-formed safetensors file: only the checksum can tell
    assert entry.load(key) is None
    assert_rebuilt(root, key, warnings(), "checksum mismatch (weights changed on disk)")
    entry.store(key, 1)  # the rebuild
    assert_loads(entry, key, 1)


@ENTRIES
@pytest.mark.parametrize("swapped", ["weights", "metadata"])
def test_files_swapped_between_two_entries_are_rebuilt(root: Path, entry: Any, swapped: str, warnings: Any) -> None:
    """Entry A's weights next to entry B's metadata (and the other way round)."""
    a, b = key_of(entry, 1), key_of(entry, 2)
    entry.store(a, 1)
    entry.store(b, 2)
    index = 0 if swapped == "weights" else 1
    path_a, path_b = files(root, a)[index], files(root, b)[index]
    blob_a, blob_b = path_a.read_bytes(), path_b.read_bytes()
    path_a.write_bytes(blob_b)
    path_b.write_bytes(blob_a)
    assert entry.load(a) is None
    reason = "mismatch (weights" if swapped == "weights" else f"metadata belongs to another entry ('{b}')"
    assert_rebuilt(root, a, warnings(), reason)
    entry.store(a, 1)
    assert_loads(entry, a, 1)


def _drop(*names: str) -> Callable[[dict[str, Any], str], str]:
    return lambda meta, key: json.dumps({k: v for k, v in meta.items() if k not in names})


def _set(**fields: Any) -> Callable[[dict[str, Any], str], str]:
    return lambda meta, key: json.dumps({**meta, **fields})


BAD_METADATA = {
    "no key": (_drop("key"), "metadata has no key"),
    "wrong key": (_set(key="sidenet-0123456789abcdef"), "metadata belongs to another entry"),
    "a list": (lambda meta, key: json.dumps([meta]), "metadata is not a JSON object (a list)"),
    "a string": (lambda meta, key: json.dumps(key), "metadata is not a JSON object (a str)"),
    "null": (lambda meta, key: "null", "metadata is not a JSON object"),
    "truncated": (lambda meta, key: json.dumps(meta)[:40], "metadata is not valid JSON"),
    "empty": (lambda meta, key: "", "metadata is not valid JSON"),
    "old format, no checksum": (
        _drop("sha256", "size", "kind", "content", "format"),
        f"no checksum (written before cache format {cache.CACHE_FORMAT})",
    ),
    "other format": (_set(format=cache.CACHE_FORMAT + 1), "written by cache format"),
    "checksum not a string": (_set(sha256=12345), "metadata has no valid checksum"),
    "checksum of other bytes": (_set(sha256=hashlib.sha256(b"x").hexdigest()), "checksum mismatch"),
    "size a string": (_set(size="12"), "metadata has no valid weights size"),
    "other kind": (_set(kind="mainnet"), "metadata is for kind 'mainnet'"),
    "other content": (_set(content="tensors"), "entry holds 'tensors', not 'module'"),
}


@pytest.mark.parametrize("case", BAD_METADATA, ids=list(BAD_METADATA))
def test_bad_metadata_is_rebuilt(root: Path, case: str, warnings: Any) -> None:
    rewrite, reason = BAD_METADATA[case]
    key = key_of(ModuleEntry, 1)
    ModuleEntry.store(key, 1)
    meta_path = files(root, key)[1]
    meta_path.write_text(rewrite(json.loads(meta_path.read_text()), key))
    assert ModuleEntry.load(key) is None
    assert_rebuilt(root, key, warnings(), reason)
    ModuleEntry.store(key, 1)
    assert_loads(ModuleEntry, key, 1)


def test_an_entry_written_before_checksums_is_rebuilt(root: Path, warnings: Any) -> None:
    """Exactly what the previous format wrote: weights + metadata with only the key and versions added."""
    key = key_of(ModuleEntry, 1)
    weights, meta_path = files(root, key)
    root.mkdir()
    save_model(side(1), str(weights))
    meta_path.write_text(json.dumps({"note": 1, "key": key, "versions": cache.library_versions()}))
    assert ModuleEntry.load(key) is None
    assert_rebuilt(root, key, warnings(), "no checksum")


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("x")


BAD_WEIGHTS = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:-7]), "size mismatch (weights file has"),
    "empty": (lambda p: p.write_bytes(b""), "size mismatch (weights file has 0 bytes"),
    "missing": (lambda p: p.unlink(), "weights file missing"),
    "a directory": (_directory, "weights path is not a regular file"),
    "garbage of the same size": (lambda p: p.write_bytes(b"\0" * p.stat().st_size), "checksum mismatch"),
}


@pytest.mark.parametrize("case", BAD_WEIGHTS, ids=list(BAD_WEIGHTS))
def test_bad_weights_file_is_rebuilt(root: Path, case: str, warnings: Any) -> None:
    damage, reason = BAD_WEIGHTS[case]
    key = key_of(ModuleEntry, 1)
    ModuleEntry.store(key, 1)
    damage(files(root, key)[0])
    assert ModuleEntry.load(key) is None
    assert_rebuilt(root, key, warnings(), reason)
    ModuleEntry.store(key, 1)
    assert_loads(ModuleEntry, key, 1)


def test_a_directory_in_place_of_weights_without_metadata_does_not_block_a_store(root: Path) -> None:
    key = key_of(ModuleEntry, 1)
    (files(root, key)[0] / "inside").mkdir(parents=True)
    assert ModuleEntry.load(key) is None  # no metadata: simply absent
    ModuleEntry.store(key, 1)
    assert_loads(ModuleEntry, key, 1)


def test_weights_that_do_not_fit_leave_the_module_untouched(root: Path, warnings: Any) -> None:
    """A verified entry for another architecture: rejected before any parameter is copied."""
    key = key_of(ModuleEntry, 1)
    cache.store(side(1, in_dim=6), key, {})
    target = side(99)  # in_dim 5: the first layer and the feature statistics differ, the last layer matches
    before = snapshot(target)
    assert cache.load_into(target, key) is None
    assert_same_state(target, before)
    assert_rebuilt(root, key, warnings(), "weights do not fit the module (shape mismatch")


def test_a_module_entry_read_as_tensors_is_rebuilt(root: Path, warnings: Any) -> None:
    key = key_of(ModuleEntry, 1)
    ModuleEntry.store(key, 1)
    assert cache.load_tensors(key) is None
    assert_rebuilt(root, key, warnings(), "entry holds 'module', not 'tensors'")


# ---------------------------------------------------------------- check_cache_dir


def test_check_cache_dir_creates_a_fresh_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a" / "b" / "cache"
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(path))
    assert cache.check_cache_dir() == path
    assert path.is_dir() and list(path.iterdir()) == []  # the probe file is gone
    assert cache.check_cache_dir() == path  # an existing, writable directory is fine too


def _file(tmp_path: Path) -> str:
    (tmp_path / "plain").write_text("x")
    return str(tmp_path / "plain")


def _under_file(tmp_path: Path) -> str:
    (tmp_path / "plain").write_text("x")
    return str(tmp_path / "plain" / "sub" / "cache")


BAD_DIRS = {
    "a file": (_file, "exists and is not a directory"),
    "under a file": (_under_file, "cannot be created: '{tmp}/plain' is not a directory"),
    "unknown user": (lambda tmp_path: "~nosuchuser_xyz/cache", "'~nosuchuser_xyz/cache' cannot be resolved"),
}


@pytest.mark.parametrize("case", BAD_DIRS, ids=list(BAD_DIRS))
def test_check_cache_dir_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    make, fragment = BAD_DIRS[case]
    monkeypatch.setenv("SIDENET_BENCH_CACHE", make(tmp_path))
    with pytest.raises(UserError) as err:
        cache.check_cache_dir()
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("cache directory ") and msg.endswith(FIX), msg
    assert fragment.format(tmp=tmp_path) in msg, msg
    assert not (tmp_path / "plain" / "sub").exists()


def test_check_cache_dir_not_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe file cannot be created (as under a read-only dir for a non-root user): one line, nothing left."""
    path = tmp_path / "new" / "cache"
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(path))

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied")

    from sidenet_core import atomic

    monkeypatch.setattr(atomic.tempfile, "TemporaryFile", refuse)  # the probe file (atomic.ensure_writable_dir)
    with pytest.raises(UserError, match=r"^cache directory .* is not writable \(Permission denied\); set SIDENET"):
        cache.check_cache_dir()
    assert not (tmp_path / "new").exists()  # the directories it made are removed again


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_check_cache_dir_read_only_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ro"
    path.mkdir()
    path.chmod(0o555)
    monkeypatch.setenv("SIDENET_BENCH_CACHE", str(path))
    try:
        with pytest.raises(UserError, match=r"is not writable"):
            cache.check_cache_dir()
    finally:
        path.chmod(0o755)


def test_an_unknown_user_in_the_cache_path_is_a_user_error_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIDENET_BENCH_CACHE", "~nosuchuser_xyz/cache")
    with pytest.raises(UserError, match=FIX):
        cache.cache_dir()
    with pytest.raises(UserError, match=FIX):
        cache.load_tensors("evals-0123456789abcdef")


def test_a_failed_write_is_a_one_line_user_error(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.atomic, "write_with", full)
    key = key_of(TensorEntry, 1)
    with pytest.raises(UserError, match=rf"^cannot write cache entry {key} in .*\(No space left on device\); {FIX}$"):
        TensorEntry.store(key, 1)
    assert not files(root, key)[1].exists()
