"""Pure helpers: message bodies of a fixed size, timestamps, percentiles and CDFs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

CDF_POINTS = 201
"""Quantiles kept per latency run for the chart (0, 0.5, ..., 100 %)."""


def make_body(seq: int, size: int, ts: float) -> bytes:
    """A JSON object of exactly ``size`` bytes: ``{"seq": seq, "ts": ts, "pad": "xx..."}``.

    ``ts`` is the publish time (``time.time()``, microsecond precision) from which end-to-end
    latency is measured. Raises ValueError if ``size`` cannot hold the fields.
    """
    head = b'{"seq":%d,"ts":%.6f,"pad":"' % (seq, ts)
    pad = size - len(head) - 2
    if pad < 0:
        raise ValueError(f"message size {size} is too small (at least {len(head) + 2} bytes)")
    return head + b"x" * pad + b'"}'


def parse_rfc3339(text: str) -> float:
    """Epoch seconds of an RFC 3339 time such as ``2024-01-01T00:00:00.000001Z``."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile (0-100) of already sorted values, linear interpolation.

    Raises ValueError for an empty sequence.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = (len(sorted_values) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def latency_summary(
    latencies_ms: Sequence[float], per_second: int = 0
) -> dict[str, float | int | list[float]]:
    """``count``, ``p50_ms``, ``p90_ms``, ``p99_ms``, ``max_ms``, ``mean_ms`` and ``cdf_ms``
    (:data:`CDF_POINTS` evenly spaced quantiles) of a latency sample. With ``per_second`` (the
    offered rate) and the sample in publish order, also ``p99_per_second_ms``: the p99 of each
    second of the run, which tells a warm-up or a periodic stall from steady noise."""
    values = sorted(latencies_ms)
    if not values:
        return {"count": 0}
    step = 100 / (CDF_POINTS - 1)
    out: dict[str, float | int | list[float]] = {
        "count": len(values),
        "p50_ms": round(percentile(values, 50), 3),
        "p90_ms": round(percentile(values, 90), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "max_ms": round(values[-1], 3),
        "mean_ms": round(sum(values) / len(values), 3),
        "cdf_ms": [round(percentile(values, i * step), 3) for i in range(CDF_POINTS)],
    }
    if per_second > 0:
        out["p99_per_second_ms"] = [
            round(percentile(sorted(latencies_ms[i : i + per_second]), 99), 1)
            for i in range(0, len(latencies_ms), per_second)
        ]
    return out


def rate(count: int, first: float, last: float) -> float | None:
    """Messages per second over ``[first, last]``, None when the span is empty."""
    span = last - first
    return count / span if count > 1 and span > 0 else None


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` rounded to 3 places, None when either is missing or ``b`` is 0."""
    return round(a / b, 3) if a is not None and b else None
