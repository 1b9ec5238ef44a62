"""The summaries behind ``producer stats``: percentiles, latency, outcome counts, and the
same summary counted by the database in chunks."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from producer.percentiles import LatencySummary, latency_summary, percentile
from producer.stats import StatsRow, TransferStats, summarize
from producer.stats_format import format_stats, stats_as_dict
from producer.summary import Window, summarize_table
from tests.test_send_load import result
from worker.outcomes import Reason, Status, TransferResult
from worker.settings import Settings

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def _row(
    status: str = "committed",
    reason: str | None = None,
    attempts: int = 1,
    ms: float | None = 1.0,
    at_s: float = 0.0,
) -> StatsRow:
    return (status, reason, attempts, ms, T0 + timedelta(seconds=at_s))


def _result(row: StatsRow) -> TransferResult:
    """The same row as a TransferResult."""
    status, reason, attempts, ms, completed_at = row
    return result(
        Status(status),
        attempts=attempts,
        ms=ms,
        reason=Reason(reason) if reason else None,
        completed_s=(completed_at - T0).total_seconds(),
    )


# --- percentile ---------------------------------------------------------------------


def test_percentile_of_an_empty_sequence_raises() -> None:
    """There is no percentile of nothing: a ValueError, not an IndexError or a zero."""
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)


@pytest.mark.parametrize("p", [-1, 100.5])
def test_percentile_outside_0_to_100_raises(p: float) -> None:
    """A percentile outside [0, 100] is refused instead of clamped."""
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0, 2.0], p)


@pytest.mark.parametrize("p", [0, 1, 50, 99, 100])
def test_percentile_of_one_value_is_that_value(p: float) -> None:
    """With a single observation every percentile is that observation."""
    assert percentile([7.5], p) == 7.5


@pytest.mark.parametrize(
    ("p", "expected"), [(0, 1), (1, 1), (1.5, 2), (50, 50), (99, 99), (100, 100)]
)
def test_percentile_is_nearest_rank_on_1_to_100(p: float, expected: float) -> None:
    """On 1..100 the p-th percentile is ceil(p) (rank 1 for p = 0): no interpolation."""
    assert percentile([float(v) for v in range(1, 101)], p) == expected


@pytest.mark.parametrize(("p", "expected"), [(25, 10), (50, 20), (51, 30), (75, 30), (76, 40)])
def test_percentile_rounds_the_rank_up_to_an_observed_value(p: float, expected: float) -> None:
    """Between ranks the nearest-rank percentile takes the next observed value."""
    assert percentile([10.0, 20.0, 30.0, 40.0], p) == expected


def test_percentile_rank_has_no_float_rounding_error() -> None:
    """p99.9 of 1..1000 is 999; float arithmetic would compute rank 1000."""
    assert percentile([float(v) for v in range(1, 1001)], 99.9) == 999


# --- latency_summary ----------------------------------------------------------------


def test_latency_summary_of_nothing_is_none() -> None:
    """No durations, no summary (rather than zeros that look like measurements)."""
    assert latency_summary([]) is None


def test_latency_summary_of_one_value() -> None:
    """A single duration is its own min, average, percentiles and max."""
    assert latency_summary([3.25]) == LatencySummary(1, 3.25, 3.25, 3.25, 3.25, 3.25)


def test_latency_summary_sorts_its_input() -> None:
    """Shuffled 1..100 gives min 1, avg 50.5, p50 50, p99 99, max 100."""
    values = [float(v) for v in range(1, 101)]
    random.Random(7).shuffle(values)
    assert latency_summary(iter(values)) == LatencySummary(100, 1.0, 50.5, 50.0, 99.0, 100.0)


# --- summarize ----------------------------------------------------------------------


ROWS: list[StatsRow] = [
    _row(attempts=1, ms=2.0, at_s=0),
    _row(attempts=3, ms=4.0, at_s=1),
    _row(attempts=2, ms=6.0, at_s=2),
    _row(attempts=1, ms=8.0, at_s=3),
    _row("rejected", "insufficient_funds", attempts=1, ms=None, at_s=1.5),
    _row("rejected", "insufficient_funds", attempts=2, ms=None, at_s=2.5),
    _row("rejected", "same_account", attempts=1, ms=None, at_s=4),
    _row(attempts=1, ms=None, at_s=0.5),  # committed, no time recorded
]


def test_summarize_counts_outcomes_reasons_and_attempts() -> None:
    """Committed and rejected counts, reasons most frequent first, attempts histogram."""
    stats = summarize(ROWS)
    assert (stats.total, stats.committed, stats.rejected) == (8, 5, 3)
    assert list(stats.rejected_by_reason.items()) == [
        ("insufficient_funds", 2),
        ("same_account", 1),
    ]
    assert stats.attempts == {1: 5, 2: 2, 3: 1}
    assert stats.committed_pct == 62.5
    assert stats.rejected_pct == 37.5


def test_summarize_counts_retries_as_attempts_minus_one() -> None:
    """Retries: total, max, average per transfer and share of transfers retried."""
    retries = summarize(ROWS).retries
    assert (retries.total, retries.max, retries.retried_transfers) == (4, 2, 3)
    assert retries.per_transfer == 0.5
    assert retries.retried_pct == 37.5


def test_summarize_times_only_committed_rows_that_recorded_one() -> None:
    """transaction_ms summarizes committed rows with a time; rejections carry none."""
    assert summarize(ROWS).transaction_ms == LatencySummary(4, 2.0, 5.0, 4.0, 8.0, 8.0)


def test_summarize_throughput_is_count_over_the_completed_window() -> None:
    """8 results completed between t and t + 4 s: 2 per second."""
    stats = summarize(ROWS)
    assert stats.first_completed_at == T0
    assert stats.last_completed_at == T0 + timedelta(seconds=4)
    assert stats.window_s == 4.0
    assert stats.throughput_per_s == 2.0


def test_summarize_has_no_throughput_for_a_zero_length_window() -> None:
    """One result (or all at the same instant) has no rate rather than a division error."""
    stats = summarize([_row(at_s=1)])
    assert stats.window_s == 0.0
    assert stats.throughput_per_s is None


def test_summarize_reads_transfer_results_and_tuples_alike() -> None:
    """TransferResult objects and plain StatsRow tuples give the same summary."""
    assert summarize(_result(r) for r in ROWS) == summarize(iter(ROWS))


def test_summarize_of_nothing() -> None:
    """No results: zero counts and None wherever a ratio or a time would be."""
    stats = summarize([])
    assert (stats.total, stats.committed, stats.rejected) == (0, 0, 0)
    assert stats.attempts == {}
    assert stats.retries.per_transfer is None
    assert stats.retries.retried_pct is None
    assert stats.committed_pct is None
    assert stats.transaction_ms is None
    assert stats.throughput_per_s is None
    assert stats.first_completed_at is None


# --- output -------------------------------------------------------------------------


def test_stats_as_dict_has_the_same_keys_with_and_without_results() -> None:
    """--json consumers can rely on every key being present, null meaning no data."""
    full, empty = stats_as_dict(summarize(ROWS)), stats_as_dict(summarize([]))
    assert full.keys() == empty.keys()
    assert full["retries"].keys() == empty["retries"].keys()
    assert empty["transaction_ms"] is None
    assert empty["throughput_per_s"] is None


def test_stats_as_dict_round_trips_through_json() -> None:
    """The dict is plain JSON: attempts keyed by strings, times in ISO 8601."""
    data = json.loads(json.dumps(stats_as_dict(summarize(ROWS))))
    assert data["attempts"] == {"1": 5, "2": 2, "3": 1}
    assert data["rejected_by_reason"] == {"insufficient_funds": 2, "same_account": 1}
    assert data["retries"] == {
        "total": 4,
        "max": 2,
        "per_transfer": 0.5,
        "retried_transfers": 3,
        "retried_pct": 37.5,
    }
    assert data["transaction_ms"] == {
        "count": 4,
        "min": 2.0,
        "avg": 5.0,
        "p50": 4.0,
        "p99": 8.0,
        "max": 8.0,
    }
    assert data["first_completed_at"] == "2025-01-01T12:00:00+00:00"
    assert data["throughput_per_s"] == 2.0


def test_format_stats_prints_one_labelled_line_per_figure() -> None:
    """The STATS block: counts with percentages, reasons, attempts, retries, times, rate."""
    lines = format_stats(summarize(ROWS)).splitlines()
    assert lines[0] == "STATS"
    assert lines[1].split() == ["total", "8"]
    assert lines[2].split() == ["committed", "5", "(62.50", "%)"]
    assert lines[3].split() == [
        "rejected",
        "3",
        "(37.50",
        "%)",
        "insufficient_funds=2",
        "same_account=1",
    ]
    assert lines[4].split() == ["attempts", "1=5", "2=2", "3=1"]
    assert "total=4" in lines[5]
    assert "max=2" in lines[5]
    assert "retried=3 (37.50 %)" in lines[5]
    assert "p50=4.000" in lines[6]
    assert "2.0 transfers/s" in lines[8]


def test_format_stats_of_nothing_says_so() -> None:
    """An empty table prints a total of 0 and no made-up figures."""
    assert format_stats(summarize([])) == "STATS\n  total           0\n  no transfer results"


# --- the same summary, counted by the database chunk by chunk -----------------------


def _fill(database_url: str, rows: list[StatsRow]) -> None:
    with psycopg.connect(database_url) as conn:
        conn.cursor().executemany(
            "INSERT INTO transfer_results (transfer_id, payer_id, payee_id, amount, status,"
            " reason, attempts, transaction_ms, completed_at)"
            " VALUES (gen_random_uuid(), 1, 2, 1, %s, %s, %s, %s, %s)",
            rows,
        )


def _random_rows(count: int, seed: int) -> list[StatsRow]:
    rng = random.Random(seed)
    rows: list[StatsRow] = []
    for _ in range(count):
        committed = rng.random() < 0.8
        ms = rng.choice([None, 0.0, round(rng.lognormvariate(0, 1), 3), rng.uniform(0, 50)])
        rows.append(
            _row(
                "committed" if committed else "rejected",
                None if committed else rng.choice(["insufficient_funds", "same_account"]),
                attempts=rng.choice([1, 1, 1, 2, 3]),
                ms=ms if committed else None,
                at_s=rng.uniform(0, 100),
            )
        )
    return rows


def _assert_same(got: TransferStats, expected: TransferStats) -> None:
    assert got.transaction_ms is not None
    assert expected.transaction_ms is not None
    assert got.transaction_ms.avg == pytest.approx(expected.transaction_ms.avg)
    # Everything else is exact: counts, percentiles (nearest rank), times.
    assert replace(got, transaction_ms=None) == replace(expected, transaction_ms=None)
    assert replace(got.transaction_ms, avg=0) == replace(expected.transaction_ms, avg=0)


def test_summarize_table_in_chunks_equals_summarizing_every_row(
    settings: Settings, database_url: str
) -> None:
    """The database's chunked counts and two-pass percentiles give exactly the summary
    of every row (the average up to float summation order), ranges of 37 rows."""
    rows = _random_rows(600, seed=3)
    _fill(database_url, rows)
    with psycopg.connect(database_url, autocommit=True) as conn:
        _assert_same(summarize_table(conn, chunk=37), summarize(rows))


def test_summarize_table_counts_only_the_window(settings: Settings, database_url: str) -> None:
    """A [since, until) window of completion times summarizes exactly those rows."""
    rows = _random_rows(300, seed=4)
    _fill(database_url, rows)
    since, until = T0 + timedelta(seconds=20), T0 + timedelta(seconds=60)
    inside = [r for r in rows if since <= r[4] < until]
    with psycopg.connect(database_url, autocommit=True) as conn:
        got = summarize_table(conn, Window(since, until), chunk=50)
    _assert_same(got, summarize(inside))


def test_summarize_table_of_an_empty_table(settings: Settings, database_url: str) -> None:
    """No results: the same empty summary as summarize([])."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert summarize_table(conn) == summarize([])
