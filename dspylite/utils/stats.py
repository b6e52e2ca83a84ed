"""Small statistics for reports: means with confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and a normal-approximation confidence interval (Wilson's for 0/1 data)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    mean = sum(values) / n
    z = _z(confidence)
    if all(v in (0, 1, 0.0, 1.0, True, False) for v in values):
        denom = 1 + z * z / n
        centre = (mean + z * z / (2 * n)) / denom
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / denom
        return mean, max(0.0, centre - half), min(1.0, centre + half)
    var = sum((v - mean) ** 2 for v in values) / max(1, n - 1)
    half = z * math.sqrt(var / n)
    return mean, mean - half, mean + half


def paired_diff_ci(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean of b - a over paired examples, with a normal-approximation interval."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    diffs = [float(y) - float(x) for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / max(1, n - 1)
    half = _z(confidence) * math.sqrt(var / n)
    return mean, mean - half, mean + half


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)
