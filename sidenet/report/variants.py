"""Rows grouped into variants: one (task, chain, exit system, device) with its rows per batch size.

Why a module of its own: every table, reading and figure starts from this grouping, and it knows nothing of
formatting or of any exit system by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

NONE = "none"  # the empty chain / the exit system "MainNet alone"


@dataclass(frozen=True)
class Variant:
    """One (task, chain, exit, device) configuration; its benchmark rows keyed by batch size."""

    task: str
    chain: str
    exit: str
    device: str
    rows: dict[int, dict[str, Any]]

    @property
    def info(self) -> dict[str, Any]:
        """Batch-size-independent facts (accuracy, FLOPs, sweep ...) from the smallest batch size."""
        return self.rows[min(self.rows)]["extra_info"]

    @property
    def is_mainnet(self) -> bool:
        return self.exit == "none"

    def get(self, key: str) -> Any:
        return self.info.get(key)


def variant_order(v: Variant) -> tuple[bool, str, bool, str, str]:
    # Uncompressed chain first, the MainNet row first within each chain: baselines read before variants.
    return (v.chain != "none", v.chain, v.exit != "none", v.exit, v.device)


def group_by_task(results: dict[str, Any]) -> dict[str, list[Variant]]:
    """Group rows by task (first-seen order), then by (chain, exit, device) with one row per batch size."""
    grouped: dict[str, dict[tuple[str, str, str], dict[int, dict[str, Any]]]] = {}
    for row in results.get("benchmarks", []):
        info = row["extra_info"]
        key = (str(info["chain"]), str(info["exit"]), str(info["device"]))
        grouped.setdefault(str(info["task"]), {}).setdefault(key, {})[int(info["batch_size"])] = row
    return {
        task: sorted(
            (Variant(task, c, e, d, dict(sorted(rows.items()))) for (c, e, d), rows in by_key.items()),
            key=variant_order,
        )
        for task, by_key in grouped.items()
    }


def batch_sizes(variants: Sequence[Variant]) -> list[int]:
    return sorted({bs for v in variants for bs in v.rows})


def find_variant(variants: Sequence[Variant], chain: str, exit_: str, device: str) -> Variant | None:
    for v in variants:
        if v.chain == chain and v.exit == exit_ and v.device == device:
            return v
    return None


def baseline_for(variant: Variant, variants: Sequence[Variant]) -> Variant | None:
    """The fp32 uncompressed MainNet (chain "none", exit "none") on the same device: what Δ and speedup compare to.

    Every row of every chain compares to this one row, as the harness's paired timings do (each round
    of a row is paired with a round of the fp32 MainNet), so a compressed chain's MainNet shows its own
    speedup and accuracy cost instead of being a reference itself.
    """
    return find_variant(variants, NONE, NONE, variant.device)


def devices(variants: Sequence[Variant]) -> list[str]:
    return list(dict.fromkeys(v.device for v in variants))


def compressed_chains(variants: Sequence[Variant]) -> list[str]:
    """Chains other than "none", in report order."""
    return list(dict.fromkeys(v.chain for v in sorted(variants, key=variant_order) if v.chain != NONE))


def dtype_of(variant: Variant | None) -> str | None:
    """Compute precision of the row's MainNet; chain "none" is fp32 when the row predates the ``dtype`` key."""
    if variant is None:
        return None
    dtype = variant.get("dtype")
    if isinstance(dtype, str) and dtype:
        return dtype
    return "fp32" if variant.chain == NONE else None


def best_batch_size(sizes: Sequence[int]) -> int | None:
    """The batch size the headline speedup is quoted at: 1 when measured, else the smallest."""
    return 1 if 1 in sizes else (min(sizes) if sizes else None)
