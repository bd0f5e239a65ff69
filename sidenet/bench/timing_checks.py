"""Whether a row's timing can be trusted, checked across the rows of one results file.

A speedup is a ratio of two timings, and either can be off for reasons the row's own spread does not show. So the
report and the end-of-run summary flag (never drop) a row when:

* **reference drift** — the fp32 MainNet timed beside it (its ``paired_mainnet_median_s``) ran more than the band
  away from the reference in the task/batch size's own MainNet cell. Under timing protocol 5 every cell of a task
  and batch size is paired with the same reference workers, so a drift means the machine changed, not the pairing.
  The band is the larger of :data:`REFERENCE_DRIFT_MIN` and the A/A's relative IQR.
* **A/A out of band** — the fp32 MainNet paired with itself (``aa_paired_ratios``) has a median outside
  :data:`AA_BAND`: every paired speedup of that task and batch size is then suspect.
* **busy machine** — other processes used more than :data:`BUSY_SHARE` of the cores while the cell was timed
  (``machine_load``, :mod:`sidenet.bench.cells`).
* **implausible** — a speedup with no exit and no compression beyond the band, or a speedup more than
  :data:`IMPLAUSIBLE_FACTOR` × what its FLOP reduction and its chain's own measured speedup together predict.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

AA_BAND = (0.97, 1.03)
REFERENCE_DRIFT_MIN = 0.05
BUSY_SHARE = 0.10
IMPLAUSIBLE_FACTOR = 1.5
QUIET_ADVICE = "re-run on a quiet machine (nothing else running; `uptime` load below the bench's threads)"


@dataclass(frozen=True)
class Flag:
    kind: str  # reference-drift | aa-out-of-band | busy | implausible
    text: str


@dataclass(frozen=True)
class Drift:
    """A row's reference median ÷ its reference cell's, and the band it was held to."""

    value: float
    band: float
    task: str
    batch_size: int
    chain: str
    exit: str


def _info(row: dict[str, Any]) -> dict[str, Any]:
    info = row.get("extra_info")
    return info if isinstance(info, dict) else {}


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _median(values: Any) -> float | None:
    nums = [v for v in (_num(x) for x in (values or [])) if v is not None]
    return statistics.median(nums) if nums else None


def _rel_iqr(values: Any) -> float | None:
    nums = [v for v in (_num(x) for x in (values or [])) if v is not None]
    if len(nums) < 2:
        return None
    q = statistics.quantiles(nums, n=4, method="inclusive")
    med = statistics.median(nums)
    return (q[2] - q[0]) / med if med > 0 else None


def _group(info: dict[str, Any]) -> tuple[Any, Any, Any]:
    return (info.get("task"), info.get("device"), info.get("batch_size"))


def reference_cells(rows: Iterable[dict[str, Any]]) -> dict[tuple[Any, Any, Any], dict[str, Any]]:
    """The fp32 MainNet's own row (chain none, exit none) of each task, device and batch size."""
    return {
        _group(_info(r)): _info(r) for r in rows if _info(r).get("chain") == "none" and _info(r).get("exit") == "none"
    }


def band_for(aa: dict[str, Any] | None) -> float:
    """How far a reference may drift: the larger of :data:`REFERENCE_DRIFT_MIN` and the A/A's relative IQR."""
    spread = _rel_iqr((aa or {}).get("aa_paired_ratios"))
    return max(REFERENCE_DRIFT_MIN, spread or 0.0)


def row_flags(rows: list[dict[str, Any]]) -> list[list[Flag]]:
    """One list of flags per row (same order)."""
    refs = reference_cells(rows)
    speedups = {
        (_group(_info(r)), _info(r).get("chain")): _median(_info(r).get("paired_speedup"))
        for r in rows
        if _info(r).get("exit") == "none"
    }
    out: list[list[Flag]] = []
    for row in rows:
        info = _info(row)
        flags: list[Flag] = []
        ref = refs.get(_group(info))
        band = band_for(ref)
        aa = _median((ref or {}).get("aa_paired_ratios"))
        if aa is not None and not AA_BAND[0] <= aa <= AA_BAND[1]:
            flags.append(
                Flag("aa-out-of-band", f"A/A of this task and batch size {aa:.3f}, outside {AA_BAND[0]}-{AA_BAND[1]}")
            )
        drift = reference_drift(info, ref)
        if drift is not None and abs(drift - 1) > band:
            flags.append(
                Flag(
                    "reference-drift", f"its fp32 reference ran at {drift:.3f}× the reference cell's (band ±{band:.0%})"
                )
            )
        share = _num((info.get("machine_load") or {}).get("other_cpu_share"))
        if share is not None and share > BUSY_SHARE:
            flags.append(Flag("busy", f"other processes used {share:.0%} of the cores while it was timed"))
        s = _median(info.get("paired_speedup"))
        if s is not None:
            if info.get("chain") == "none" and not _num(info.get("exit_rate")) and s > 1 + band:
                flags.append(Flag("implausible", f"{s:.2f}× with no exit and no compression"))
            chain_s = 1.0 if info.get("chain") == "none" else speedups.get((_group(info), info.get("chain")))
            flops, chain_flops = _num(info.get("flops_per_sample")), _num(info.get("chain_flops_per_sample"))
            if chain_s and flops and chain_flops and info.get("exit") != "none":
                predicted = chain_s * chain_flops / flops
                if s > IMPLAUSIBLE_FACTOR * predicted * (1 + band):
                    flags.append(
                        Flag(
                            "implausible", f"{s:.2f}× where its FLOPs and its chain's speedup predict {predicted:.2f}×"
                        )
                    )
        out.append(flags)
    return out


def reference_drift(info: dict[str, Any], ref: dict[str, Any] | None) -> float | None:
    """The row's reference median ÷ its reference cell's (None when either was not recorded)."""
    mine = _num(info.get("paired_mainnet_median_s"))
    base = _num((ref or {}).get("paired_mainnet_median_s"))
    if mine is None or base is None or base <= 0 or ref is info:
        return None
    return mine / base


def largest_drift(rows: list[dict[str, Any]]) -> Drift | None:
    """The row whose reference drifted most from its reference cell's."""
    refs = reference_cells(rows)
    worst: Drift | None = None
    for row in rows:
        info = _info(row)
        ref = refs.get(_group(info))
        d = reference_drift(info, ref)
        if d is None:
            continue
        if worst is None or abs(d - 1) > abs(worst.value - 1):
            worst = Drift(
                d,
                band_for(ref),
                str(info.get("task")),
                int(info.get("batch_size") or 0),
                str(info.get("chain")),
                str(info.get("exit")),
            )
    return worst


def summary_line(rows: list[dict[str, Any]]) -> str | None:
    """One line for the end of a run when any row is flagged (None when none is)."""
    flags = row_flags(rows)
    flagged = sum(1 for f in flags if f)
    if not flagged:
        return None
    kinds = sorted({f.kind for fs in flags for f in fs})
    advice = f"; {QUIET_ADVICE}" if {"busy", "aa-out-of-band", "reference-drift"} & set(kinds) else ""
    return f"sidenet-bench: {flagged} of {len(rows)} row(s) flagged ⚠ ({', '.join(kinds)}){advice}"


__all__ = [
    "AA_BAND",
    "BUSY_SHARE",
    "IMPLAUSIBLE_FACTOR",
    "QUIET_ADVICE",
    "REFERENCE_DRIFT_MIN",
    "Drift",
    "Flag",
    "band_for",
    "largest_drift",
    "reference_cells",
    "reference_drift",
    "row_flags",
    "summary_line",
]
