"""``producer stats`` at any size: the database counts, chunk by chunk; Python merges.

Streaming every result to Python (what ``stats`` used to do) is a million rows over
the wire and a million transaction times in memory; one ``GROUP BY`` over the whole
table is one long query, which DSQL may not finish inside its 5-minute transaction
limit. So the results table is walked by primary key in ranges of :data:`CHUNK` rows
(:mod:`producer.keyranges`), and each range is aggregated by one bounded statement:

1. **Counts.** ``GROUP BY status, reason, attempts`` with the first and last
   ``completed_at`` and, for the transaction times, count / sum / min / max: a few
   dozen rows per range, added up in Python (:func:`producer.stats.stats_from_counts`).
2. **A histogram of transaction times**, in bins 1 % wide on a log scale
   (:data:`BIN`), a few hundred rows per range. The merged histogram says which bin
   holds the p50 and the p99 and at which rank inside it.
3. **The two bins' values**, grouped by value with their counts, read in a second walk
   over the same ranges; sorted, they give the exact nearest-rank percentiles,
   the same numbers :func:`producer.percentiles.latency_summary` computes from every value.

Memory is bounded by the number of ranges (one per :data:`CHUNK` results) plus the
distinct transaction times inside the two bins, not by the table. Each statement is
its own transaction (autocommit): rows committed while the command runs may be
counted or not, as with any moving table; the percentile read clamps its rank to what
the second walk found, so a result committed in between cannot make it fail.

A :class:`Window` (``--since`` / ``--until``) limits everything to results completed
in ``[since, until)``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from producer.keyranges import KeyRange, walk
from producer.percentiles import LatencySummary, nearest_rank
from producer.stats import OutcomeKey, TransferStats, stats_from_counts

CHUNK = 100_000
"""Results per statement."""
BIN: LiteralString = (
    "CASE WHEN transaction_ms > 0 THEN floor(ln(transaction_ms) * 100)::int ELSE -100000 END"
)
"""The histogram bin of a transaction time: 1 % wide on a log scale (zero and below
share one bin)."""
PERCENTILES = (50, 99)

_COUNTS: LiteralString = """
    SELECT status, reason, attempts, count(*), min(completed_at), max(completed_at),
           count(transaction_ms) FILTER (WHERE status = 'committed'),
           sum(transaction_ms) FILTER (WHERE status = 'committed'),
           min(transaction_ms) FILTER (WHERE status = 'committed'),
           max(transaction_ms) FILTER (WHERE status = 'committed')
    FROM transfer_results WHERE {range} AND {window}
    GROUP BY status, reason, attempts
"""
_TIMED: LiteralString = "status = 'committed' AND transaction_ms IS NOT NULL"
_HISTOGRAM: LiteralString = (
    "SELECT " + BIN + ", count(*) FROM transfer_results"
    " WHERE {range} AND {window} AND " + _TIMED + " GROUP BY 1"
)
_VALUES: LiteralString = (
    "SELECT " + BIN + ", transaction_ms, count(*) FROM transfer_results"
    " WHERE {range} AND {window} AND " + _TIMED + " AND " + BIN + " IN (%(bin_a)s, %(bin_b)s)"
    " GROUP BY 1, 2"
)


@dataclass(frozen=True)
class Window:
    """Results completed at or after ``since`` and before ``until`` (None: unbounded)."""

    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> tuple[sql.Composable, dict[str, Any]]:
        """The condition on ``completed_at`` and its parameters (``since``, ``until``)."""
        parts: list[sql.Composable] = []
        params: dict[str, Any] = {}
        if self.since is not None:
            parts.append(sql.SQL("completed_at >= %(since)s"))
            params["since"] = self.since
        if self.until is not None:
            parts.append(sql.SQL("completed_at < %(until)s"))
            params["until"] = self.until
        return (sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE")), params


def summarize_table(
    conn: psycopg.Connection[Any], window: Window | None = None, *, chunk: int = CHUNK
) -> TransferStats:
    """:class:`TransferStats` of the results in ``window`` (default: all), computed as
    the module docstring says. ``conn`` must be in autocommit mode."""
    if not conn.autocommit:
        raise ValueError("stats runs one statement per transaction (an autocommit connection)")
    window = window or Window()
    within, window_params = window.where()
    ranges: list[KeyRange] = []
    counts: Counter[OutcomeKey] = Counter()
    histogram: Counter[int] = Counter()
    first: datetime | None = None
    last: datetime | None = None
    timed = _Moments()
    for current in walk(conn, "transfer_results", "transfer_id", chunk):
        ranges.append(current)
        condition, params = current.where("transfer_id")
        params.update(window_params)
        for row in conn.execute(sql.SQL(_COUNTS).format(range=condition, window=within), params):
            status, reason, attempts, count, lo, hi, n_ms, sum_ms, min_ms, max_ms = row
            counts[(status, reason, attempts)] += count
            first = lo if first is None or lo < first else first
            last = hi if last is None or hi > last else last
            timed.add(n_ms, sum_ms, min_ms, max_ms)
        for bin_, count in conn.execute(
            sql.SQL(_HISTOGRAM).format(range=condition, window=within), params
        ):
            histogram[bin_] += count
    latency = _latency(
        conn,
        ranges=ranges,
        within=within,
        window_params=window_params,
        histogram=histogram,
        timed=timed,
    )
    return stats_from_counts(counts, latency, first, last)


@dataclass
class _Moments:
    count: int = 0
    total: float = 0.0
    min: float | None = None
    max: float | None = None

    def add(self, count: int, total: float | None, lo: float | None, hi: float | None) -> None:
        if not count:
            return
        self.count += count
        self.total += total or 0.0
        self.min = lo if self.min is None or (lo is not None and lo < self.min) else self.min
        self.max = hi if self.max is None or (hi is not None and hi > self.max) else self.max


def _latency(
    conn: psycopg.Connection[Any],
    *,
    ranges: list[KeyRange],
    within: sql.Composable,
    window_params: dict[str, Any],
    histogram: Counter[int],
    timed: _Moments,
) -> LatencySummary | None:
    """Exact nearest-rank p50 and p99 from the histogram and the two bins' values."""
    n = sum(histogram.values())
    if not n or timed.min is None or timed.max is None:
        return None
    # (bin, rank inside the bin) of each percentile.
    targets: dict[int, tuple[int, int]] = {}
    for p in PERCENTILES:
        rank, before = nearest_rank(p, n), 0
        for bin_ in sorted(histogram):
            if before + histogram[bin_] >= rank:
                targets[p] = (bin_, rank - before)
                break
            before += histogram[bin_]
    bins = sorted({bin_ for bin_, _ in targets.values()})
    values: dict[int, Counter[float]] = {bin_: Counter() for bin_ in bins}
    for current in ranges:
        condition, params = current.where("transfer_id")
        params.update(window_params, bin_a=bins[0], bin_b=bins[-1])
        for bin_, value, count in conn.execute(
            sql.SQL(_VALUES).format(range=condition, window=within), params
        ):
            values[bin_][value] += count
    picked = {p: _kth(values[bin_], k, fallback=timed.max) for p, (bin_, k) in targets.items()}
    return LatencySummary(
        count=n,
        min=timed.min,
        avg=timed.total / timed.count if timed.count else timed.min,
        p50=picked[50],
        p99=picked[99],
        max=timed.max,
    )


def _kth(values: Counter[float], k: int, *, fallback: float) -> float:
    """The ``k``-th smallest (1-based) of ``values`` counted with multiplicity; the
    largest (or ``fallback``) if there are fewer."""
    seen = 0
    largest = fallback
    for value in sorted(values):
        seen += values[value]
        largest = value
        if seen >= k:
            return value
    return largest
