"""The redelivery schedule and the maxReceiveCount it implies."""

from __future__ import annotations

import pytest

from worker.errors import ScheduleTooLong
from worker.redelivery import RedeliverySchedule
from worker.settings import Settings


def test_the_default_settings_cover_thirty_minutes_before_the_dlq() -> None:
    """2, 4, 8 ... 256, then 300 s: 13 failed receives add up to 2,010 s >= 1,800 s, and
    12 would not; the product's queues use 13."""
    schedule = RedeliverySchedule.from_settings(Settings())
    assert schedule.horizon_s == 1800
    assert [schedule.delay_s(n) for n in range(1, 11)] == [
        2, 4, 8, 16, 32, 64, 128, 256, 300, 300,
    ]  # fmt: skip
    assert schedule.max_receive_count == 13
    assert schedule.covered_s(13) == 2010 >= schedule.horizon_s
    assert schedule.covered_s(12) < schedule.horizon_s


@pytest.mark.parametrize(
    ("first", "growth", "cap", "horizon"),
    [(1, 2.0, 4, 15), (1, 1.0, 1, 3), (5, 3.0, 900, 3600), (3, 1.5, 60, 600), (2, 2.0, 300, 0)],
)
def test_max_receive_count_is_the_smallest_that_covers_the_horizon(
    first: int, growth: float, cap: int, horizon: int
) -> None:
    """For any schedule the count's delays reach the horizon and one fewer falls short."""
    schedule = RedeliverySchedule(first, growth, cap, horizon)
    count = schedule.max_receive_count
    assert schedule.covered_s(count) >= horizon
    assert count == 1 or schedule.covered_s(count - 1) < horizon


def test_huge_receive_counts_are_capped_not_overflowed() -> None:
    """ApproximateReceiveCount can be in the thousands; the delay stays at the cap."""
    assert RedeliverySchedule().delay_s(5000) == 300


def test_a_horizon_beyond_the_redrive_limit_is_refused() -> None:
    """SQS allows maxReceiveCount up to 1,000: a day at a 1 s cap cannot be covered."""
    with pytest.raises(ScheduleTooLong, match="raise the cap"):
        _ = RedeliverySchedule(1, 1.0, 1, 86_400).max_receive_count


def test_settings_refuse_a_first_delay_above_the_cap() -> None:
    """RETRY_VISIBILITY_S > RETRY_VISIBILITY_MAX_S is a configuration error, and a zero
    first delay cannot cover a horizon."""
    with pytest.raises(ValueError, match="RETRY_VISIBILITY_MAX_S"):
        Settings(retry_visibility_s=10, retry_visibility_max_s=5)
    with pytest.raises(ValueError, match="covers no horizon"):
        RedeliverySchedule(0, 2.0, 60, 600)
