"""Nearest-rank percentiles and the latency summary every report of the producer shows.

The p-th percentile of n sorted values is the value at rank ``ceil(p / 100 * n)``
(1-based; rank 1 for p = 0). It always returns a value that was observed, never an
interpolation, which is what a latency report should show. ``stats``, ``load
--wait``, ``watch``, ``report`` and ``smoke`` all summarize durations with
:func:`latency_summary`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class LatencySummary:
    """min / avg / p50 / p99 / max of a non-empty list of durations (same unit as input)."""

    count: int
    min: float
    avg: float
    p50: float
    p99: float
    max: float


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 <= p <= 100) of already sorted values.

    Raises ``ValueError`` for an empty sequence or ``p`` outside [0, 100]. The rank is
    computed in decimal arithmetic so that, e.g., p99.9 of 1,000 values is rank 999
    and not 1,000 through a float rounding error.
    """
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    return sorted_values[nearest_rank(p, len(sorted_values)) - 1]


def nearest_rank(p: float, count: int) -> int:
    """The 1-based rank of the nearest-rank ``p``-th percentile of ``count`` values:
    ``ceil(p / 100 * count)``, at least 1. Raises ``ValueError`` for ``p`` outside
    [0, 100] or no values."""
    if count < 1:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {p}")
    return max(math.ceil(Decimal(str(p)) * count / 100), 1)


def latency_summary(values: Iterable[float]) -> LatencySummary | None:
    """min / avg / p50 / p99 / max (nearest rank) of ``values``; None when empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    return LatencySummary(
        count=len(ordered),
        min=ordered[0],
        avg=math.fsum(ordered) / len(ordered),
        p50=percentile(ordered, 50),
        p99=percentile(ordered, 99),
        max=ordered[-1],
    )
