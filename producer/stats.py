"""What happened to a set of transfers: outcomes, retries, transaction times, throughput.

Pure functions, no database: a load generator feeds :func:`summarize` the results of
just the transfers it sent, and ``producer stats`` has the database count the whole
table (or a window of it) chunk by chunk (:mod:`producer.summary`) and builds the same
:class:`TransferStats` with :func:`stats_from_counts`. A row is either a
:class:`~worker.outcomes.TransferResult` or a plain :data:`StatsRow` tuple, the only
columns the summary needs, so a million results never have to be built as objects.
Transaction times are summarized by nearest rank (:mod:`producer.percentiles`); the text
and JSON forms are :mod:`producer.stats_format`'s.

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

from array import array
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime

from producer.percentiles import LatencySummary, latency_summary
from worker.outcomes import Status, TransferResult

StatsRow = tuple[str, str | None, int, float | None, datetime]
"""``(status, reason, attempts, transaction_ms, completed_at)``: the only columns a
summary needs."""


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


def _fields(row: TransferResult | StatsRow) -> StatsRow:
    if isinstance(row, TransferResult):
        reason = row.reason.value if row.reason is not None else None
        return row.status.value, reason, row.attempts, row.transaction_ms, row.completed_at
    return row


def _pct(part: int, whole: int) -> float | None:
    return 100 * part / whole if whole else None
