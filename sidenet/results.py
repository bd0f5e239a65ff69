"""The results contract: what each benchmark row carries in ``benchmark.extra_info``.

The harness (``bench/``) writes rows; the report (``sidenet.report``) and other tools read them from a
pytest-benchmark JSON file (``--benchmark-json`` or the file the bench session writes itself). Keep the
required key names stable: other tools read them.

Units: accuracies and rates are fractions in [0, 1]; FLOPs are true FLOPs (2 per multiply-add) per
sample; latencies are seconds. Timing: one timed round runs ``timing_samples`` inputs at
``batch_size``, so latency per sample = round time / ``timing_samples``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sidenet.errors import UserError

REQUIRED_KEYS: tuple[str, ...] = (
    "task",
    "chain",
    "exit",
    "threshold",
    "device",
    "threads",
    "batch_size",
    "test_accuracy",
    "exit_rate",
    "flops_per_sample",
    "params",
)

# Keys the harness also writes (optional for readers; the report degrades gracefully without them):
#   timing_samples: int              inputs per timed round (latency per sample = round time / this)
#   mainnet_test_accuracy: float     the task's fp32, uncompressed MainNet: the reference of every Δ and speedup
#   mainnet_flops_per_sample: float  the same fp32 MainNet's FLOPs per sample
#   chain_test_accuracy: float       the MainNet after this row's chain, alone (no exit)
#   chain_flops_per_sample: float    its FLOPs per sample (int8 counted like fp32: see dtype)
#   dtype: str                       compute precision of the chain's compressed stages: fp32 | int8 | fp16 | bf16
#                                    | int8wo | int4wo (GPU weight-only; sidenet.compressed.compute_dtype)
#   compression: [{"compressor", "config", <measured facts>, ...}]   one entry per chain step
#   target_loss_pt: float            accuracy-loss target the threshold was chosen for, on validation
#   tap: str                         where the SideNet is attached ("layer1", "3", ...)
#   val_accuracy, val_exit_rate      the cascade on validation at the chosen threshold
#   main_ece, side_ece: float        expected calibration error (15 bins) on test
#   reliability: {"main"|"side": {"confidence": [...], "accuracy": [...], "count": [...]}}
#   sweep: {"threshold": [...], "test_accuracy": [...], "exit_rate": [...], "flops_per_sample": [...]}
#   component_latency_s: {"head_side": s, "rest": s}     per sample, measured at this batch size
#   flops_breakdown: {"head_side": f, "rest": f}   per sample, each part on all rows (head + SideNet; the rest)
#   batch_composition: {"survivors", "changed", "correct_delta", "eval_batch"}   sidenet rows at the selected
#                                    threshold: test rows that did not exit, and how many of them change prediction
#                                    because the rest ran on the survivors only (dynamic int8 re-quantises them)
#   machine_id: str                  fingerprint id of the machine that measured the row (sidenet.machine); a
#                                    results file and a report hold rows of one machine_id only
#   machine: {...}                   that fingerprint: CPU vendor/family/model/microarch, ISA, torch dispatch, threads
#   timing_protocol: int             sidenet.harness.TIMING_PROTOCOL when the row was timed
#   train_precision: str             precision the task's MainNet was trained in here (fp32 | bf16)
#   cell_key: str                    resume identity (sidenet.harness.cell_key)
#   run: {"when", "commit", "dirty", "command"}   the run that measured the row
#   paired_speedup: [...]            per-round fp32-MainNet time / this row's time, timed interleaved (every row
#                                    except the fp32 MainNet's own); its median is the row's speedup
#   pairing: "balanced"              the MainNet round ran before this row's round in even rounds, after it in
#                                    odd ones (rows without it: always before)
#   aa_paired_ratios: [...]          the fp32 MainNet's own row only: the same pairing with itself (A/A); ratios
#                                    that should be 1, their spread the noise floor of paired speedups
#   versions: {"torch": ..., "torchvision": ..., "transformers": ..., "onnxruntime": ..., ... "sidenet-bench": ...}
#                                    every library on the measured path (sidenet.cache.MEASURED_LIBRARIES)


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a pytest-benchmark JSON and check it holds sidenet-bench rows; one-line error otherwise."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"results file {str(path)!r} does not exist; pass a JSON written by the bench") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read results file {str(path)!r}: {exc}") from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"{str(path)!r} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise UserError(f"{str(path)!r} is not a pytest-benchmark JSON (no 'benchmarks' list)")
    rows = [b for b in data["benchmarks"] if isinstance(b, dict)]
    ours = [b for b in rows if isinstance(b.get("extra_info"), dict) and "task" in b["extra_info"]]
    if not ours:
        raise UserError(f"{str(path)!r} holds no sidenet-bench rows; run `pytest bench/ --benchmark-only` first")
    for b in ours:
        missing = [k for k in REQUIRED_KEYS if k not in b["extra_info"]]
        if missing:
            raise UserError(f"{str(path)!r}: benchmark {b.get('name')!r} lacks keys {missing}; re-run the bench")
        if "stats" not in b or "median" not in b["stats"]:
            raise UserError(f"{str(path)!r}: benchmark {b.get('name')!r} has no timing stats")
    data["benchmarks"] = ours
    return data
