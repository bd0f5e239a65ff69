"""Expected calibration error and reliability-diagram data (equal-width confidence bins)."""

from __future__ import annotations

import numpy as np


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> dict[str, list[float]]:
    """Per non-empty bin: mean confidence, accuracy and count (for a reliability diagram)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    out: dict[str, list[float]] = {"confidence": [], "accuracy": [], "count": []}
    for b in range(bins):
        mask = which == b
        if mask.any():
            out["confidence"].append(float(confidence[mask].mean()))
            out["accuracy"].append(float(correct[mask].mean()))
            out["count"].append(int(mask.sum()))
    return out


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE = Σ_bins (n_b / N) · |accuracy_b − confidence_b|."""
    rel = reliability(confidence, correct, bins)
    n = sum(rel["count"])
    if n == 0:
        return float("nan")
    return float(
        sum(c / n * abs(a - p) for p, a, c in zip(rel["confidence"], rel["accuracy"], rel["count"], strict=True))
    )
