"""What happened to a set of transfers: outcomes, retries, transaction times, throughput.

Pure functions, no database: a load generator feeds :func:`summarize` the results of
just the transfers it sent, and ``producer stats`` has the database count the whole
table (or a window of it) chunk by chunk (:mod:`producer.summary`) and builds the same
:class:`TransferStats` with :func:`stats_from_counts`. A row is either a
:class:`~worker.outcomes.TransferResult` or a plain :data:`StatsRow` tuple, the only
columns the summary needs, so a million results never have to be built as objects.

Percentiles use the **nearest-rank** method: the p-th percentile of n sorted values is
the value at rank ``ceil(p / 100 * n)`` (1-based; rank 1 for p = 0). It always returns
a value that was observed, never an interpolation, which is what a latency report
should show.

A load run (:func:`summarize_load`, for ``producer load --wait``) adds what only the
sender knows: how many transfers it sent, so how many have no result ("failed"), and
when the first one left, so total time and throughput run from the first send to the
last result. Its end-to-end latency is ``completed_at - enqueued_at``, where
``enqueued_at`` is the SQS SentTimestamp the worker records.

"Retries" are ``attempts - 1`` per transfer. The results table does not record why an
attempt failed, so they count OCC conflicts and connection faults alike; on a healthy
database they are the conflicts.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from worker.outcomes import Status, TransferResult

StatsRow = tuple[str, str | None, int, float | None, datetime]
"""``(status, reason, attempts, transaction_ms, completed_at)``: the only columns a
summary needs."""


@dataclass(frozen=True)
class LatencySummary:
    """min / avg / p50 / p99 / max of a non-empty list of durations (same unit as input)."""

    count: int
    min: float
    avg: float
    p50: float
    p99: float
    max: float


@dataclass(frozen=True)
class RetrySummary:
    """Extra attempts per transfer (``attempts - 1``)."""

    total: int
    max: int
    per_transfer: float | None
    """Average retries per transfer; None when there were no transfers."""
    retried_transfers: int
    """Transfers that needed more than one attempt."""
    retried_pct: float | None
    """``retried_transfers`` as a percentage of all transfers; None without transfers."""


@dataclass(frozen=True)
class TransferStats:
    """The summary of a set of transfer results; build it with :func:`summarize`."""

    total: int
    committed: int
    rejected: int
    rejected_by_reason: dict[str, int]
    """Only reasons that occurred, most frequent first (ties by name)."""
    attempts: dict[int, int]
    """Histogram: number of attempts -> number of transfers, by ascending attempts."""
    retries: RetrySummary
    transaction_ms: LatencySummary | None
    """Over committed rows that recorded a transaction time; None when there are none."""
    first_completed_at: datetime | None
    last_completed_at: datetime | None
    window_s: float | None
    """Seconds between the first and the last completion; None without results."""
    throughput_per_s: float | None
    """``total / window_s``; None for an empty or zero-length window."""

    @property
    def committed_pct(self) -> float | None:
        """Committed transfers as a percentage of all; None without transfers."""
        return _pct(self.committed, self.total)

    @property
    def rejected_pct(self) -> float | None:
        """Rejected transfers as a percentage of all; None without transfers."""
        return _pct(self.rejected, self.total)


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


OutcomeKey = tuple[str, str | None, int]
"""``(status, reason, attempts)``: what :func:`stats_from_counts` counts by."""


def summarize(rows: Iterable[TransferResult | StatsRow]) -> TransferStats:
    """Summarize ``rows`` in one pass.

    ``rows`` may be a lazy iterator (a streamed query): only the committed rows'
    transaction times are kept, in a compact ``array('d')``, for the percentiles.
    (``producer stats`` does not stream: :mod:`producer.summary` has the database
    count, chunk by chunk, and builds the same :class:`TransferStats`.)
    """
    counts: Counter[OutcomeKey] = Counter()
    durations = array("d")
    first: datetime | None = None
    last: datetime | None = None
    for row in rows:
        status, reason, tries, ms, completed_at = _fields(row)
        counts[(status, reason, tries)] += 1
        if status == Status.COMMITTED and ms is not None:
            durations.append(ms)
        if first is None or completed_at < first:
            first = completed_at
        if last is None or completed_at > last:
            last = completed_at
    return stats_from_counts(counts, latency_summary(durations), first, last)


def stats_from_counts(
    counts: Counter[OutcomeKey],
    transaction_ms: LatencySummary | None,
    first: datetime | None,
    last: datetime | None,
) -> TransferStats:
    """The summary of results counted by ``(status, reason, attempts)``, with the
    committed transactions' latency summary and the first and last completion."""
    total = committed = 0
    reasons: Counter[str] = Counter()
    attempts: Counter[int] = Counter()
    for (status, reason, tries), count in counts.items():
        if not count:
            continue
        total += count
        attempts[tries] += count
        if status == Status.COMMITTED:
            committed += count
        else:
            reasons[reason or "unknown"] += count
    retries_total = sum((n - 1) * count for n, count in attempts.items())
    retried = sum(count for n, count in attempts.items() if n > 1)
    window_s = (last - first).total_seconds() if first is not None and last is not None else None
    return TransferStats(
        total=total,
        committed=committed,
        rejected=total - committed,
        rejected_by_reason=dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        attempts=dict(sorted(attempts.items())),
        retries=RetrySummary(
            total=retries_total,
            max=max((n - 1 for n in attempts), default=0),
            per_transfer=retries_total / total if total else None,
            retried_transfers=retried,
            retried_pct=_pct(retried, total),
        ),
        transaction_ms=transaction_ms,
        first_completed_at=first,
        last_completed_at=last,
        window_s=window_s,
        throughput_per_s=total / window_s if window_s else None,
    )


def stats_as_dict(stats: TransferStats) -> dict[str, Any]:
    """JSON-ready form of ``stats``; every key is always present.

    Keys: ``total``, ``committed``, ``committed_pct``, ``rejected``, ``rejected_pct``,
    ``rejected_by_reason`` ({reason: count}), ``attempts`` ({"1": count, ...}, keys are
    strings because JSON's are), ``retries`` ({``total``, ``max``, ``per_transfer``,
    ``retried_transfers``, ``retried_pct``}), ``transaction_ms`` ({``count``, ``min``,
    ``avg``, ``p50``, ``p99``, ``max``} or null), ``first_completed_at`` and
    ``last_completed_at`` (ISO 8601 or null), ``window_s`` and ``throughput_per_s``
    (floats or null). Percentages are 0-100 floats; null means "no data".
    """
    return {
        "total": stats.total,
        "committed": stats.committed,
        "committed_pct": stats.committed_pct,
        "rejected": stats.rejected,
        "rejected_pct": stats.rejected_pct,
        "rejected_by_reason": dict(stats.rejected_by_reason),
        "attempts": {str(n): count for n, count in stats.attempts.items()},
        "retries": _retries_dict(stats.retries),
        "transaction_ms": _latency_dict(stats.transaction_ms),
        "first_completed_at": _iso(stats.first_completed_at),
        "last_completed_at": _iso(stats.last_completed_at),
        "window_s": stats.window_s,
        "throughput_per_s": stats.throughput_per_s,
    }


def format_stats(stats: TransferStats, title: str = "STATS") -> str:
    """The human-readable block, one ``label  value`` line per figure, no trailing newline."""
    lines = [title, _line("total", str(stats.total))]
    if not stats.total:
        lines.append("  no transfer results")
        return "\n".join(lines)
    lines += [
        _line("committed", f"{stats.committed} ({_fmt_pct(stats.committed_pct)})"),
        _rejected_line(stats.rejected, stats.rejected_pct, stats.rejected_by_reason),
        _attempts_line(stats.attempts),
        _retries_line(stats.retries),
        _latency_line("transaction ms", stats.transaction_ms),
    ]
    lines.append(
        _line("window", f"{_iso(stats.first_completed_at)} .. {_iso(stats.last_completed_at)}")
    )
    lines.append(
        _line(
            "throughput",
            "-"
            if stats.throughput_per_s is None
            else f"{stats.throughput_per_s:,.1f} transfers/s over {stats.window_s:.3f} s",
        )
    )
    return "\n".join(lines)


# --- a load run: the transfers it sent, with or without a result ----------------------


@dataclass(frozen=True)
class LoadStats:
    """What became of the transfers a load run sent; build it with :func:`summarize_load`.

    Percentages are of ``sent``; ``results`` (and so retries and transaction times)
    covers only the transfers that have a result.
    """

    sent: int
    results: TransferStats
    failed: int
    """Sent, but without a result when the wait ended."""
    end_to_end_ms: LatencySummary | None
    """``completed_at - enqueued_at`` (SQS SentTimestamp) of every result that has both,
    committed or rejected: queue wait plus processing. None when there are none."""
    first_sent_at: datetime
    total_time_s: float | None
    """From the first send to the last result; None without results."""
    throughput_per_s: float | None
    """Results per second over ``total_time_s``; None without results or time."""

    @property
    def committed_pct(self) -> float | None:
        """Committed transfers as a percentage of those sent."""
        return _pct(self.results.committed, self.sent)

    @property
    def rejected_pct(self) -> float | None:
        """Rejected transfers as a percentage of those sent."""
        return _pct(self.results.rejected, self.sent)

    @property
    def failed_pct(self) -> float | None:
        """Transfers without a result as a percentage of those sent."""
        return _pct(self.failed, self.sent)


def end_to_end_ms(results: Iterable[TransferResult]) -> LatencySummary | None:
    """Milliseconds from enqueueing to the recorded outcome, over the results that know
    when they were enqueued; None when none does."""
    return latency_summary(
        (r.completed_at - r.enqueued_at).total_seconds() * 1000
        for r in results
        if r.enqueued_at is not None
    )


def summarize_load(
    results: Collection[TransferResult], *, sent: int, first_sent_at: datetime
) -> LoadStats:
    """Summarize the results found for ``sent`` transfers, the first sent at
    ``first_sent_at`` (an aware datetime on the clock the workers' ``completed_at``
    uses: the wall clock)."""
    summary = summarize(results)
    last = summary.last_completed_at
    total_s = None if last is None else max((last - first_sent_at).total_seconds(), 0.0)
    return LoadStats(
        sent=sent,
        results=summary,
        failed=max(sent - summary.total, 0),
        end_to_end_ms=end_to_end_ms(results),
        first_sent_at=first_sent_at,
        total_time_s=total_s,
        throughput_per_s=summary.total / total_s if total_s else None,
    )


def load_stats_as_dict(stats: LoadStats) -> dict[str, Any]:
    """JSON-ready form of ``stats``; every key is always present.

    Keys: ``sent``, ``committed``, ``committed_pct``, ``rejected``, ``rejected_pct``,
    ``rejected_by_reason``, ``failed``, ``failed_pct``, ``attempts``, ``retries``,
    ``transaction_ms``, ``end_to_end_ms``, ``first_sent_at``, ``last_completed_at``,
    ``total_time_s``, ``throughput_per_s``; shapes as in :func:`stats_as_dict`.
    """
    results = stats.results
    return {
        "sent": stats.sent,
        "committed": results.committed,
        "committed_pct": stats.committed_pct,
        "rejected": results.rejected,
        "rejected_pct": stats.rejected_pct,
        "rejected_by_reason": dict(results.rejected_by_reason),
        "failed": stats.failed,
        "failed_pct": stats.failed_pct,
        "attempts": {str(n): count for n, count in results.attempts.items()},
        "retries": _retries_dict(results.retries),
        "transaction_ms": _latency_dict(results.transaction_ms),
        "end_to_end_ms": _latency_dict(stats.end_to_end_ms),
        "first_sent_at": _iso(stats.first_sent_at),
        "last_completed_at": _iso(results.last_completed_at),
        "total_time_s": stats.total_time_s,
        "throughput_per_s": stats.throughput_per_s,
    }


def format_load_stats(stats: LoadStats, title: str = "STATS") -> str:
    """The load run's block, in the same ``label  value`` lines as :func:`format_stats`."""
    results = stats.results
    rate = stats.throughput_per_s
    return "\n".join(
        [
            title,
            _line("sent", str(stats.sent)),
            _line("committed", f"{results.committed} ({_fmt_pct(stats.committed_pct)})"),
            _rejected_line(results.rejected, stats.rejected_pct, results.rejected_by_reason),
            _line("failed", f"{stats.failed} ({_fmt_pct(stats.failed_pct)})  no result"),
            _attempts_line(results.attempts),
            _retries_line(results.retries),
            _latency_line("transaction ms", results.transaction_ms),
            _latency_line("end-to-end ms", stats.end_to_end_ms),
            _line(
                "total time",
                "-"
                if stats.total_time_s is None
                else f"{stats.total_time_s:.3f} s (first send .. last result)",
            ),
            _line("throughput", "-" if rate is None else f"{rate:,.1f} results/s"),
        ]
    )


# --- shared pieces ---------------------------------------------------------------------


def _rejected_line(rejected: int, pct: float | None, by_reason: dict[str, int]) -> str:
    reasons = "  ".join(f"{reason}={count}" for reason, count in by_reason.items())
    return _line("rejected", f"{rejected} ({_fmt_pct(pct)})  {reasons}".rstrip())


def _attempts_line(attempts: dict[int, int]) -> str:
    return _line("attempts", "  ".join(f"{n}={count}" for n, count in attempts.items()) or "-")


def _retries_line(retries: RetrySummary) -> str:
    return _line(
        "retries",
        f"total={retries.total}  max={retries.max}  "
        f"per_transfer={retries.per_transfer or 0:.4f}  "
        f"retried={retries.retried_transfers} ({_fmt_pct(retries.retried_pct)})",
    )


def _latency_line(label: str, latency: LatencySummary | None) -> str:
    if latency is None:
        return _line(label, "-")
    figures = (
        ("min", latency.min),
        ("avg", latency.avg),
        ("p50", latency.p50),
        ("p99", latency.p99),
        ("max", latency.max),
    )
    return _line(label, "  ".join(f"{name}={value:.3f}" for name, value in figures))


def _retries_dict(retries: RetrySummary) -> dict[str, Any]:
    return {
        "total": retries.total,
        "max": retries.max,
        "per_transfer": retries.per_transfer,
        "retried_transfers": retries.retried_transfers,
        "retried_pct": retries.retried_pct,
    }


def _latency_dict(latency: LatencySummary | None) -> dict[str, Any] | None:
    if latency is None:
        return None
    return {
        "count": latency.count,
        "min": latency.min,
        "avg": latency.avg,
        "p50": latency.p50,
        "p99": latency.p99,
        "max": latency.max,
    }


def _fields(row: TransferResult | StatsRow) -> StatsRow:
    if isinstance(row, TransferResult):
        reason = row.reason.value if row.reason is not None else None
        return row.status.value, reason, row.attempts, row.transaction_ms, row.completed_at
    return row


def _pct(part: int, whole: int) -> float | None:
    return 100 * part / whole if whole else None


def _fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} %"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _line(label: str, value: str) -> str:
    return f"  {label:<15} {value}"
