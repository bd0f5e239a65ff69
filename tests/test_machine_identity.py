"""Results keyed by the machine that measured them, and resume keys that cannot lie (issue: same suite, any CPU).

Two CPUs of this project's machine kind both read "AMD EPYC": Zen 4 (AVX-512, VNNI, native bf16) and Zen 3 (AVX2
only). Each test here fails on the code before fingerprints: one report name for both, cell keys blind to the
CPU, to compressor defaults and to most library versions, merges that mix two machines' rows.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from tiny_models import bench_settings

from compressors import PruneConfig
from sidenet.bench.harness import (
    TIMING_PROTOCOL,
    BenchContext,
    BenchSettings,
    cell_key,
    invocation,
)
from sidenet.bench.machine import MachineFingerprint, cpu_fingerprint, from_machine_info
from sidenet.bench.store import merge_results, set_aside_foreign_results, stored_cell_keys
from sidenet.engine import cache
from sidenet.report.render import render_markdown
from sidenet.report.tables import fmt_threshold
from sidenet_core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "reports" / "samples"

ZEN4_FLAGS = "fpu sse2 avx avx2 fma f16c avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni avx512vbmi"
ZEN3_FLAGS = "fpu sse2 avx avx2 fma f16c"


def _cpuinfo(model: int, flags: str) -> dict[str, str]:
    return {
        "vendor_id": "AuthenticAMD",
        "model name": "AMD EPYC",
        "cpu family": "25",
        "model": str(model),
        "flags": flags,
    }


# torch's dispatch and the oneDNN cap are given, not read: the suite also runs with the ISA capped (README)
ZEN4 = cpu_fingerprint(2, _cpuinfo(17, ZEN4_FLAGS), torch_capability="AVX512", onednn_max_isa=None)
ZEN3 = cpu_fingerprint(2, _cpuinfo(1, ZEN3_FLAGS), torch_capability="AVX2", onednn_max_isa=None)


def _settings(**kw: object) -> BenchSettings:
    return bench_settings(**{"threads": 2, "rounds": 2, **kw})


# ---------------------------------------------------------------------------------------------------
# the fingerprint
# ---------------------------------------------------------------------------------------------------


def test_the_two_epycs_of_this_machine_kind_get_different_readable_names_and_ids() -> None:
    assert (ZEN4.microarch, ZEN3.microarch) == ("zen4", "zen3")
    assert ZEN4.slug.startswith("cpu-amd-epyc-zen4-avx512-") and ZEN4.slug.endswith("-2t")
    assert ZEN3.slug.startswith("cpu-amd-epyc-zen3-avx2-") and ZEN3.slug.endswith("-2t")
    assert ZEN4.id != ZEN3.id
    assert "avx512_vnni" in ZEN4.isa and "avx512_bf16" in ZEN4.isa
    assert not any(f.startswith("avx512") for f in ZEN3.isa)
    assert "AVX-512 VNNI" in ZEN4.describe() and "family 25 model 1," in ZEN3.describe()
    # threads are part of the identity too
    assert cpu_fingerprint(1, _cpuinfo(17, ZEN4_FLAGS), "AVX512", None).id != ZEN4.id


def test_an_isa_cap_is_part_of_the_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = cpu_fingerprint(2, _cpuinfo(17, ZEN4_FLAGS), torch_capability="AVX512")  # the cap read from the env
    assert capped.id != ZEN4.id and "-cap-avx2-" in capped.slug
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in capped.describe()
    aten_capped = cpu_fingerprint(2, _cpuinfo(17, ZEN4_FLAGS), torch_capability="AVX2", onednn_max_isa=None)
    assert aten_capped.id != ZEN4.id and "-cap-avx2-" in aten_capped.slug
    # an AVX2-only CPU dispatching to AVX2 is not "capped"
    assert "-cap-" not in ZEN3.slug


def test_fingerprint_round_trips_and_is_rebuilt_for_legacy_results() -> None:
    assert MachineFingerprint.from_dict(json.loads(json.dumps(ZEN4.to_dict()))) == ZEN4
    recorded = {"sidenet": {"machine": ZEN3.to_dict(), "device": "cpu", "threads": 2}}
    assert from_machine_info(recorded) == ZEN3
    # a results file from before fingerprints: pytest-benchmark's py-cpuinfo record identifies its CPU
    legacy = {
        "cpu": {"vendor_id_raw": "AuthenticAMD", "brand_raw": "AMD EPYC", "family": 25, "model": 17,
                "flags": ZEN4_FLAGS.replace("avx512_vnni", "avx512vnni").split()},
        "sidenet": {"device": "cpu", "threads": 2},
    }  # fmt: skip
    rebuilt = from_machine_info(legacy)
    assert rebuilt is not None and rebuilt.slug == ZEN4.slug and "avx512_vnni" in rebuilt.isa
    assert from_machine_info({}) is None


# ---------------------------------------------------------------------------------------------------
# cell keys and artifact keys
# ---------------------------------------------------------------------------------------------------


def test_another_cpu_changes_every_cell_key() -> None:
    s = _settings(exits=("none", "sidenet"), chains=("none", "int8", "prune:ratio=0.5"))
    for cell in s.cells():
        assert cell_key(s, *cell, machine=ZEN4) != cell_key(s, *cell, machine=ZEN3)
        assert cell_key(s, *cell, machine=ZEN4) == cell_key(s, *cell, machine=ZEN4)


def test_one_experiment_one_key_and_one_label() -> None:
    for spellings in (("prune:ratio=0.5", "prune:ratio=.5", "prune:ratio=5e-1", "prune"), ("int8", "int8:backend=x86")):
        s = _settings(chains=spellings)
        assert len(s.chains) == 1, s.chains  # one cell, not one per spelling
        keys = {cell_key(s, "tiny-resnet", c, "none", 1, machine=ZEN4) for c in spellings}
        assert len(keys) == 1
    assert _settings(chains=("prune:ratio=.5",)).chains == ("prune:ratio=0.5",)  # the label says the ratio
    assert _settings(chains=("int8:backend=x86",)).chains == ("int8",)
    assert _settings(chains=("prune:ratio=0.25+int8:backend=ort",)).chains == ("prune:ratio=0.25+int8:backend=ort",)
    # 7 rounds run as 8 (rounded up to even): the same experiment
    seven, eight = _settings(rounds=7), _settings(rounds=8)
    assert cell_key(seven, "tiny-resnet", "none", "none", 1, ZEN4) == cell_key(
        eight, "tiny-resnet", "none", "none", 1, ZEN4
    )


def test_a_changed_compressor_default_changes_the_cell_key(monkeypatch: pytest.MonkeyPatch) -> None:
    s = _settings(chains=("prune:ratio=0.5",))
    before = cell_key(s, "tiny-resnet", "prune:ratio=0.5", "none", 1, machine=ZEN4)
    # finetune_epochs is not in the chain spec: only its default decides it
    defaults = list(PruneConfig.__init__.__defaults__)
    names = [f.name for f in dataclasses.fields(PruneConfig) if f.init]
    defaults[names.index("finetune_epochs") - (len(names) - len(defaults))] = 2
    monkeypatch.setattr(PruneConfig.__init__, "__defaults__", tuple(defaults))
    assert PruneConfig().finetune_epochs == 2
    assert cell_key(s, "tiny-resnet", "prune:ratio=0.5", "none", 1, machine=ZEN4) != before


@pytest.mark.parametrize("library", ["onnxruntime", "torchao", "torch-pruning", "optimum", "onnx"])
def test_a_changed_library_version_changes_cell_and_artifact_keys(
    monkeypatch: pytest.MonkeyPatch, library: str
) -> None:
    s = _settings()
    cell_before = cell_key(s, "tiny-resnet", "none", "none", 1, machine=ZEN4)
    artifact_before = cache.artifact_key("compressed", {"step": "x"})
    mainnet_before = cache.artifact_key("mainnet", {"r": 1}, libraries=cache.TRAINING_LIBRARIES)
    real = cache.importlib.metadata.version
    monkeypatch.setattr(cache.importlib.metadata, "version", lambda n: "99.0" if n == library else real(n))
    assert cell_key(s, "tiny-resnet", "none", "none", 1, machine=ZEN4) != cell_before
    assert cache.artifact_key("compressed", {"step": "x"}) != artifact_before
    # a trained fp32 MainNet does not depend on these: an upgrade does not retrain it
    assert cache.artifact_key("mainnet", {"r": 1}, libraries=cache.TRAINING_LIBRARIES) == mainnet_before


def test_the_timing_protocol_is_in_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import sidenet.bench.harness as harness

    s = _settings()
    before = cell_key(s, "tiny-resnet", "none", "none", 1, machine=ZEN4)
    monkeypatch.setattr(harness, "TIMING_PROTOCOL", TIMING_PROTOCOL + 1)
    assert cell_key(s, "tiny-resnet", "none", "none", 1, machine=ZEN4) != before


# ---------------------------------------------------------------------------------------------------
# results files: one machine each
# ---------------------------------------------------------------------------------------------------


def _row(exit_system: str, machine: MachineFingerprint | None, median: float = 1.0, chain: str = "none") -> dict:
    info = {"task": "a", "chain": chain, "exit": exit_system, "device": "cpu", "batch_size": 1}
    if machine is not None:
        info["machine_id"] = machine.id
    return {"name": f"a-{chain}-{exit_system}", "stats": {"median": median}, "extra_info": info}


def test_a_merge_never_mixes_two_machines_and_sets_the_other_aside(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    stored = [_row("none", ZEN4, 5.0), _row("none", ZEN4, 6.0, chain="int8"), _row("sidenet", ZEN4, 3.0)]
    path.write_text(json.dumps({"benchmarks": stored, "machine_info": {}}))
    new = {"benchmarks": [_row("none", ZEN3, 2.0)]}
    aside = set_aside_foreign_results(path, ZEN3)
    merged = merge_results(path, new)
    assert [b["extra_info"]["machine_id"] for b in merged["benchmarks"]] == [ZEN3.id]  # the int8 row is not kept
    assert aside is not None and aside != path and ZEN4.id in aside.name
    assert json.loads(aside.read_text())["benchmarks"] == stored  # kept, not lost
    assert set_aside_foreign_results(path, ZEN3) == aside  # the same rows are not copied twice
    assert len(list(tmp_path.glob("r.*.json"))) == 1
    # the same machine: merged as before, nothing set aside
    path.write_text(json.dumps({"benchmarks": stored}))
    assert set_aside_foreign_results(path, ZEN4) is None
    merged = merge_results(path, {"benchmarks": [_row("sidenet", ZEN4, 2.0)]})
    assert len(merged["benchmarks"]) == 3


def test_legacy_rows_are_no_resume_source_and_are_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    legacy = _row("none", None)
    legacy["extra_info"]["cell_key"] = "k"
    path.write_text(json.dumps({"benchmarks": [legacy], "machine_info": {}}))
    assert stored_cell_keys(path) == {"k"}
    assert stored_cell_keys(path, ZEN4) == set()
    aside = set_aside_foreign_results(path, ZEN4)
    assert aside is not None and aside.name == "r.legacy.json"
    assert merge_results(path, {"benchmarks": [_row("none", ZEN4)]})["benchmarks"][0]["extra_info"]["machine_id"]


def test_a_report_refuses_rows_of_two_machines() -> None:
    with pytest.raises(UserError, match="mix rows measured on 2 machines"):
        render_markdown({"benchmarks": [_row("none", ZEN4), _row("sidenet", ZEN3)], "machine_info": {}}, None)


def test_a_fresh_run_next_to_the_committed_sample_measures(tmp_path: Path) -> None:
    """The sample is kept apart (reports/samples/), and even copied to where this machine's results go, its rows
    are no resume source: other cell keys, and a fingerprint recorded by another run."""
    samples = sorted((SAMPLES / "results").glob("*.json"))
    assert samples, "the committed sample's results are under reports/samples/results/"
    s = _settings(out=ROOT / "reports", tasks=("fashion-mnist", "rotten-tomatoes"), threads=2, rounds=8)
    ctx = BenchContext(s)
    results_path, report_path = ctx.output_paths()
    assert SAMPLES not in results_path.parents and SAMPLES not in report_path.parents
    assert results_path.name == f"{ctx.machine.slug}.json"
    out = tmp_path / "reports"
    for sample in samples:
        ctx = BenchContext(dataclasses.replace(s, out=out, name=sample.stem))
        target, _ = ctx.output_paths()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample, target)
        assert all(ctx.stored_result(*cell) is None for cell in s.cells())


# ---------------------------------------------------------------------------------------------------
# what is printed keeps what distinguishes it
# ---------------------------------------------------------------------------------------------------


def test_thresholds_near_one_stay_distinct() -> None:
    printed = [fmt_threshold(t) for t in (0.9995, 0.99995, 0.9999999)]
    assert printed == ["0.9995", "0.99995", "0.9999999"]
    assert fmt_threshold(0.8734523) == "0.873" and fmt_threshold(1.0) == "1"
    assert "no exit" in fmt_threshold(1.5)


def test_the_run_record_names_python_m_pytest() -> None:
    argv = ["/venv/lib/python3.11/site-packages/pytest/__main__.py", "bench/", "--bench-task", "a b"]
    assert invocation(argv) == "python -m pytest bench/ --bench-task 'a b'"
    assert invocation(["/venv/bin/pytest", "bench/"]) == "pytest bench/"


# ---------------------------------------------------------------------------------------------------
# the batch-composition effect of dynamic int8 on a cascade
# ---------------------------------------------------------------------------------------------------


def test_batch_composition_counts_survivors_whose_prediction_changed() -> None:
    import torch

    from sidenet.bench.pipeline import RowOutputs, batch_composition

    labels = torch.tensor([0, 1, 1, 0, 1])
    main_logits = torch.tensor([[2.0, 0], [0, 2.0], [2.0, 0], [2.0, 0], [0, 2.0]])  # full-batch predictions 0 1 0 0 1
    full = RowOutputs(torch.zeros(5, 2), main_logits, labels, torch.zeros(5).numpy(), torch.zeros(5).numpy())
    cascade = {"exited": torch.tensor([True, False, False, False, True]), "prediction": torch.tensor([0, 1, 1, 1, 1])}
    bc = batch_composition(cascade, full)
    # survivors: rows 1, 2, 3; row 2 changed 0 -> 1 (now right), row 3 changed 0 -> 1 (now wrong)
    assert (bc["survivors"], bc["changed"], bc["correct_delta"], bc["test_rows"]) == (3, 2, 0, 5)


def test_batch_composition_is_zero_for_an_fp32_cascade() -> None:
    from sidenet.bench.pipeline import prepare

    p = prepare("tiny-bert", progress=False)
    n = len(p.data["test"])
    bc = p.batch_composition
    assert bc["changed"] == 0 and bc["test_rows"] == n
    assert bc["survivors"] == round((1 - p.cascade_eval["exit_rate"]) * n)
