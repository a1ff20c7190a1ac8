"""Small statistics for timings: percentiles without NumPy ceremony."""

from __future__ import annotations

import math
import statistics


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if not ours or not theirs or math.isnan(ours) or math.isnan(theirs):
        return None
    return ours / theirs
