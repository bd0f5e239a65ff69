"""One measuring path for every exit system (issue #22): the rows of ``none``, ``sidenet`` and ``sidenet-noexit``
keep every field and number the SideNet-only path gave them, and the cell keys of existing specs do not move.

Why: those three systems used to be measured by their own path (``pipeline.prepare``: per-row outputs, its own
sweep and selection); now they go through the generic one (staged model → exit system → trace → selection on
validation → real cascade on test). Stored results are found by cell key, so a moved key would re-measure them,
and a row whose numbers moved would change what a report says about the same experiment.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from tiny_models import bench_settings

import sidenet.bench.harness as harness
import sidenet.tasks.image as image_tasks
import sidenet.tasks.text as text_tasks
from sidenet.bench.evals import mainnet_forward, mainnet_params, run_eval
from sidenet.bench.harness import BenchContext, cell_key
from sidenet.bench.machine import MachineFingerprint
from sidenet.bench.rows import run_cell_info
from sidenet.engine.calibration import expected_calibration_error, reliability
from sidenet.engine.early_exit import EarlyExit
from sidenet.engine.trace import ExitTrace, oracle_summary
from sidenet.exits.heads import EVAL_BATCH, load_or_train_sidenet
from sidenet.tasks import TASKS
from sidenet.tasks.compressed import tap_for
from sidenet_core.flops import count_flops

# ---------------------------------------------------------------- cell keys, pinned

FIXED_MACHINE = MachineFingerprint("cpu", "amd", "X", 25, 97, "zen4", ("avx2",), "AVX2", None, 1)

# Computed at commit 0a25fac (before the SideNet left its own measuring path), with the library versions, the
# package version and the training precision fixed as in ``_pinned`` below. They must never change for these specs:
# a changed key re-measures every stored cell of that spec.
PINNED_KEYS: dict[tuple[float | None, str, str, str, int], str] = {
    (None, "tiny-resnet", "none", "none", 1): "d34f935a12ea50986851",
    (None, "tiny-resnet", "none", "sidenet", 1): "064bcf22b54705ba0c5d",
    (None, "tiny-resnet", "int8", "sidenet", 64): "044281095655965d32f0",
    (None, "tiny-resnet", "none", "sidenet-noexit", 1): "4f84acb85b82485bd72d",
    (None, "tiny-bert", "none", "sidenet", 64): "02ccdfe6520d5a4134b7",
    (None, "tiny-resnet", "none", "sidenet-multi", 1): "16b155cf5fa7c8781aca",
    (None, "tiny-bert", "int8", "none", 1): "95a5c2dd26e89e74fb17",
    (0.7, "tiny-resnet", "none", "none", 1): "d34f935a12ea50986851",
    (0.7, "tiny-resnet", "none", "sidenet", 1): "5210f384e6c3ab457723",
    (0.7, "tiny-resnet", "int8", "sidenet", 64): "eb5e0c53b70c9dbe42c4",
    (0.7, "tiny-resnet", "none", "sidenet-noexit", 1): "4f84acb85b82485bd72d",
    (0.7, "tiny-bert", "none", "sidenet", 64): "0e66b0b421dafbdefb9e",
    (0.7, "tiny-resnet", "none", "sidenet-multi", 1): "16b155cf5fa7c8781aca",
    (0.7, "tiny-bert", "int8", "none", 1): "95a5c2dd26e89e74fb17",
}


@pytest.fixture
def _pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a key hashes that differs between machines and releases, fixed: library versions, the package version,
    and the training precision ``auto`` resolves to on this CPU."""
    monkeypatch.setattr(harness, "library_versions", lambda: {"torch": "2.0"})
    monkeypatch.setattr(harness, "_version", lambda: "0.1.0")
    for module in (image_tasks, text_tasks):
        monkeypatch.setattr(module, "resolve", lambda p: "fp32" if p == "auto" else p)


@pytest.mark.usefixtures("_pinned")
@pytest.mark.parametrize(("threshold", "task", "chain", "exit_spec", "bs"), sorted(PINNED_KEYS, key=str))
def test_cell_keys_of_existing_specs_do_not_change(
    threshold: float | None, task: str, chain: str, exit_spec: str, bs: int
) -> None:
    settings = bench_settings(tasks=("tiny-resnet", "tiny-bert"), threshold=threshold)
    key = cell_key(settings, task, chain, exit_spec, bs, machine=FIXED_MACHINE)
    assert key == PINNED_KEYS[(threshold, task, chain, exit_spec, bs)]


# ---------------------------------------------------------------- rows: the SideNet-only path's meaning, kept
# The SideNet-only path as it was at 0a25fac (``pipeline.collect_rows`` / ``measure`` / ``prepare``,
# ``thresholds.sweep`` / ``select_threshold`` / ``outcome_at``, ``harness.run_cell_info``), kept here as the reference
# the one measuring path is held to: per-row outputs of head → SideNet and rest, its own threshold sweep, real
# EarlyExit runs on test.

NEVER_EXIT = 1.000001


def _sweep(conf: np.ndarray, side: np.ndarray, main: np.ndarray) -> dict[str, np.ndarray]:
    conf, side, main = (np.asarray(a, dtype=np.float64) for a in (conf, side, main))
    n = len(conf)
    order = np.argsort(-conf, kind="stable")
    c_sorted, d = conf[order], (main - side)[order]
    cum_d, cum_d2 = np.concatenate([[0.0], np.cumsum(d)]), np.concatenate([[0.0], np.cumsum(d * d)])
    ks = np.array([0] + [k for k in range(1, n + 1) if k == n or c_sorted[k] < c_sorted[k - 1]])
    loss = cum_d[ks] / n
    var = np.maximum(cum_d2[ks] / n - loss**2, 0.0) * n / max(n - 1, 1)
    thresholds = np.array([NEVER_EXIT] + [c_sorted[k - 1] for k in ks[1:]])
    return {"thresholds": thresholds, "exits": ks, "accuracy": main.mean() - loss, "loss": loss, "se": np.sqrt(var / n)}


def _outcome_at(t: float, conf: np.ndarray, rows: dict[str, Any]) -> dict[str, float]:
    exited = conf >= t
    correct = np.where(exited, rows["side_correct"], rows["main_correct"])
    flops = rows["head_flops"] + np.where(exited, 0.0, rows["rest_flops"])
    return {"threshold": float(t), "accuracy": float(correct.mean()), "exit_rate": float(exited.mean()),
            "flops_per_sample": float(flops.mean())}  # fmt: skip


@torch.inference_mode()
def _rows(task: Any, split: Any, side: Any, data: Any) -> dict[str, Any]:
    n, c = len(data), side.num_classes
    side_logits, main_logits, head_flops, rest_flops = torch.empty(n, c), torch.empty(n, c), np.zeros(n), np.zeros(n)
    for inputs, idx in task.batches(data, EVAL_BATCH, by_length=True):
        f_head, (state, s_logits) = count_flops(lambda x=inputs: _head_side(split, side, x))
        f_rest, m_logits = count_flops(split.rest, state)
        side_logits[idx], main_logits[idx] = s_logits.float(), m_logits.float()
        head_flops[idx.numpy()], rest_flops[idx.numpy()] = f_head / len(idx), f_rest / len(idx)
    labels = data.labels
    return {"side_logits": side_logits, "main_logits": main_logits, "labels": labels, "head_flops": head_flops,
            "rest_flops": rest_flops, "side_correct": (side_logits.argmax(-1) == labels).numpy(),
            "main_correct": (main_logits.argmax(-1) == labels).numpy(),
            "conf": side_logits.softmax(-1).amax(-1).numpy()}  # fmt: skip


def _head_side(split: Any, side: Any, inputs: Any) -> tuple[Any, torch.Tensor]:
    state = split.head(inputs)
    return state, side(split.features(state))


def _ece(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, Any]:
    conf, correct = logits.softmax(-1).amax(-1).numpy(), (logits.argmax(-1) == labels).numpy()
    return expected_calibration_error(conf, correct), reliability(conf, correct)


def legacy_row(ctx: BenchContext, task_name: str, chain: str, exit_system: str, fixed: float | None) -> dict[str, Any]:
    """The exit fields of a row as the SideNet-only path wrote them (``harness.run_cell_info`` from ``prepare``)."""
    task, loaded = TASKS.get(task_name), ctx.task_data(task_name)
    data, test = loaded.data, loaded.data["test"]
    mainnet, _ = ctx.mainnet(task_name)
    comp = ctx.compressed(task_name, chain)
    tap = tap_for(task, mainnet, comp.model)
    split = task.staged_model(comp.model, (tap,))
    side, side_meta = load_or_train_sidenet(task, split, data, loaded.num_classes, comp.key, False, "cpu")
    val, tst = _rows(task, split, side, data["val"]), _rows(task, split, side, test)
    target, margin = task.default_target_loss_pt, task.selection_margin_se
    sw = _sweep(val["conf"], val["side_correct"], val["main_correct"])
    ok = sw["loss"] + margin * sw["se"] <= target / 100.0 + 1e-12
    ok[0] = True
    i_sel = int(np.flatnonzero(ok)[-1])
    threshold = float(sw["thresholds"][i_sel])
    mainnet_eval = run_eval(task, lambda x: mainnet_forward(comp.model, x), test)
    baseline_eval = mainnet_eval if chain == "none" else run_eval(task, lambda x: mainnet_forward(mainnet, x), test)
    main_ece, main_rel = _ece(tst["main_logits"], tst["labels"])
    side_ece, side_rel = _ece(tst["side_logits"], tst["labels"])
    params = mainnet_params(comp)
    common = {
        "tap": tap,
        "policy": "softmax",
        "mainnet_test_accuracy": baseline_eval["accuracy"],
        "mainnet_flops_per_sample": baseline_eval["flops_per_sample"],
        "chain_test_accuracy": mainnet_eval["accuracy"],
        "chain_flops_per_sample": mainnet_eval["flops_per_sample"],
        "dtype": comp.dtype,
        "compression": comp.steps,
        "data_source": loaded.source,
        "main_ece": main_ece,
    }
    if exit_system == "none":
        return {**common, "threshold": None, "test_accuracy": mainnet_eval["accuracy"], "exit_rate": 0.0,
                "flops_per_sample": mainnet_eval["flops_per_sample"], "params": params}  # fmt: skip
    selection = {
        "val_accuracy": float(sw["accuracy"][i_sel]),
        "val_mainnet_accuracy": float(val["main_correct"].mean()),
        "val_exit_rate": float(sw["exits"][i_sel] / len(val["labels"])),
        "val_loss_pt": float(100 * sw["loss"][i_sel]),
        "val_loss_se_pt": float(100 * sw["se"][i_sel]),
        "margin_se": margin,
    }
    grid = sorted({*np.quantile(sw["thresholds"][1:], np.linspace(0, 1, 41)).tolist(), threshold, 0.0})
    points = [_outcome_at(t, tst["conf"], tst) for t in grid]
    sweep = {k: [p[k] for p in points] for k in ("threshold", "accuracy", "exit_rate", "flops_per_sample")}
    sweep["test_accuracy"] = sweep.pop("accuracy")
    source = "fixed" if fixed is not None else "validation" if exit_system == "sidenet" else "never-exit"
    at = {"fixed": fixed, "validation": threshold, "never-exit": NEVER_EXIT}[source]
    per_row: dict[str, torch.Tensor] = {}
    ev = run_eval(task, EarlyExit(split, side, at).run, test, per_row=per_row)
    predicted = _outcome_at(at, tst["conf"], tst)
    cost = np.stack([tst["head_flops"], tst["head_flops"] + tst["rest_flops"]], 1)
    trace = ExitTrace(tst["side_logits"][:, None], tst["main_logits"], tst["labels"], cost, (tap,))
    survived = ~per_row["exited"]
    full = tst["main_logits"].argmax(-1)[survived]
    labels = tst["labels"][survived]
    if source == "fixed":
        on_val = _outcome_at(fixed, val["conf"], val)
        main_val = float(val["main_correct"].mean())
        selection = {
            "val_accuracy": on_val["accuracy"],
            "val_mainnet_accuracy": main_val,
            "val_exit_rate": on_val["exit_rate"],
            "val_loss_pt": 100 * (main_val - on_val["accuracy"]),
        }
    return {
        **common,
        "threshold": at,
        "threshold_source": source,
        "test_accuracy": ev["accuracy"],
        "exit_rate": ev["exit_rate"],
        "flops_per_sample": ev["flops_per_sample"],
        "params": params + sum(p.numel() for p in side.parameters()),
        "side_ece": side_ece,
        "reliability": {"main": main_rel, "side": side_rel},
        "sweep": sweep,
        **selection,
        "predicted_flops_per_sample": None if source == "never-exit" else predicted["flops_per_sample"],
        "flops_breakdown": {"head_side": float(tst["head_flops"].mean()), "rest": float(tst["rest_flops"].mean())},
        "batch_composition": {
            "survivors": int(survived.sum()),
            "changed": int((per_row["prediction"][survived] != full).sum()),
            "correct_delta": int((per_row["prediction"][survived] == labels).sum()) - int((full == labels).sum()),
            "test_rows": len(survived),
            "eval_batch": EVAL_BATCH,
        }
        if source == "validation"
        else None,
        "taps": [tap],
        "exit_rates": [ev["exit_rate"]],
        "oracle": oracle_summary(trace, predicted["accuracy"], predicted["flops_per_sample"])
        if source == "validation"
        else None,
        "training_seconds": side_meta.get("seconds"),
    }


def assert_same(got: Any, want: Any, where: str) -> None:
    """Equal, floats to 1e-9 relative (selection statistics are summed in another order now)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) >= set(want), where
        for k, v in want.items():
            assert_same(got[k], v, f"{where}.{k}")
    elif isinstance(want, list | tuple | np.ndarray):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), where
    else:
        assert got == want, where


@pytest.mark.parametrize(
    ("task", "chain", "fixed"),
    [
        ("tiny-resnet", "none", None),
        ("tiny-resnet", "int8", None),
        ("tiny-bert", "none", None),
        ("tiny-resnet", "none", 0.6),
    ],
)
def test_rows_of_the_sidenet_systems_keep_every_field_of_the_sidenet_only_path(
    task: str, chain: str, fixed: float | None
) -> None:
    settings = bench_settings(tasks=(task,), exits=("none", "sidenet", "sidenet-noexit"), threshold=fixed)
    ctx = BenchContext(settings)
    exits = ("none", "sidenet", "sidenet-noexit") if chain == "none" else ("none", "sidenet")
    for exit_system in exits:
        info: dict[str, Any] = {}
        run_cell_info(info, task, exit_system, 1, ctx, chain)
        want = legacy_row(ctx, task, chain, exit_system, fixed if exit_system == "sidenet" else None)
        assert_same(info, want, f"{task} {chain} {exit_system}")


def test_the_sidenets_parts_are_timed_from_the_cascade_the_worker_serves(tiny_resnet) -> None:
    """The SideNet's component latencies come from its one-exit Cascade (no EarlyExit needed); a cascade where
    nothing can exit, or with several exits, has no such parts to time."""
    from sidenet.bench.cells import component_latency, measures_components
    from sidenet.engine.cascade import Cascade
    from sidenet.engine.policies import make_policy
    from sidenet.engine.sidenet import SideNet
    from sidenet_core.staged import stage_model

    x = torch.randn(4, 1, 16, 16)
    one = stage_model(tiny_resnet, ("layer1",))
    side = SideNet(one.feature_dim(x[:2], 0), 4, hidden=8).eval()
    policy = make_policy("softmax")
    assert measures_components(Cascade(one, [side], policy, [0.5]))
    assert not measures_components(Cascade(one, [side], policy, [NEVER_EXIT]))
    two = stage_model(tiny_resnet, ("layer1", "layer2"))
    assert not measures_components(Cascade(two, [side, SideNet(two.feature_dim(x[:2], 1), 4)], policy, [0.5, 0.5]))
    parts = component_latency(Cascade(one, [side], policy, [0.5]), [x, x], lambda: None, rounds=1)
    assert set(parts) == {"head_side", "rest"} and all(v > 0 for v in parts.values())
