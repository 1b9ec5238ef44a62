"""The redelivery schedule: how long a transiently failed message waits before it comes
back, and how many receives the queue must allow before its redrive policy gives up.

One rule, used everywhere a message is handed back after a failure (the container
worker, the Lambda handler) and everywhere the queue is declared (the CDK stack, the
ElasticMQ config for docker compose, the test and sandbox queues):

- the n-th receive that fails transiently makes the message visible again after
  ``delay_s(n) = min(first * growth ** (n - 1), cap)`` seconds;
- the queue's ``maxReceiveCount`` is the smallest k whose delays add up to at least the
  horizon, so a transfer that merely waited for the database keeps coming back for at
  least ``horizon_s`` before SQS moves it to the DLQ.

SQS moves a message to the DLQ on the receive *after* the k-th, so k failed receives
buy ``delay_s(1) + ... + delay_s(k)`` seconds. The time each attempt itself takes is
not counted: an attempt that fails fast (connection refused) must be covered too, so
the real horizon is only ever longer. Poison (an error no retry can fix) pays for this
with a slower trip to the DLQ: about ``horizon_s`` instead of seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.errors import ScheduleTooLong

if TYPE_CHECKING:
    from worker.settings import Settings

SQS_MAX_VISIBILITY_S = 43_200
"""ChangeMessageVisibility's ceiling (12 hours)."""
SQS_MAX_RECEIVE_COUNT = 1_000
"""The largest maxReceiveCount a redrive policy accepts."""


@dataclass(frozen=True, slots=True)
class RedeliverySchedule:
    """Exponential redelivery delays with a cap, and the receive count they need."""

    first_delay_s: int = 2
    growth: float = 2.0
    cap_s: int = 300
    horizon_s: int = 1800

    def __post_init__(self) -> None:
        if self.first_delay_s < 0 or self.cap_s < self.first_delay_s:
            raise ValueError("need 0 <= first delay <= cap")
        if self.cap_s > SQS_MAX_VISIBILITY_S:
            raise ValueError(f"the cap may not exceed SQS's {SQS_MAX_VISIBILITY_S} s")
        if self.growth < 1:
            raise ValueError("growth must be at least 1")
        if self.horizon_s < 0:
            raise ValueError("the horizon must not be negative")
        if self.horizon_s > 0 and self.first_delay_s == 0:
            raise ValueError("a zero first delay never grows: it covers no horizon")

    @classmethod
    def from_settings(cls, settings: Settings) -> RedeliverySchedule:
        """The schedule configured by RETRY_VISIBILITY_* and REDELIVERY_HORIZON_S."""
        return cls(
            first_delay_s=settings.retry_visibility_s,
            growth=settings.retry_visibility_growth,
            cap_s=settings.retry_visibility_max_s,
            horizon_s=settings.redelivery_horizon_s,
        )

    def as_settings(self) -> dict[str, int | float]:
        """The Settings fields that configure this schedule (for a child process or a
        deployment's environment): the inverse of :meth:`from_settings`."""
        return {
            "retry_visibility_s": self.first_delay_s,
            "retry_visibility_growth": self.growth,
            "retry_visibility_max_s": self.cap_s,
            "redelivery_horizon_s": self.horizon_s,
        }

    def delay_s(self, receive_count: int) -> int:
        """Seconds until a message that failed on its ``receive_count``-th receive returns."""
        try:
            delay = self.first_delay_s * self.growth ** (max(receive_count, 1) - 1)
        except OverflowError:  # a receive count in the thousands: long past the cap
            return self.cap_s
        return min(math.ceil(delay), self.cap_s)

    def covered_s(self, receives: int) -> int:
        """Seconds of redelivery that ``receives`` failed receives add up to."""
        return sum(self.delay_s(n) for n in range(1, receives + 1))

    @property
    def max_receive_count(self) -> int:
        """The smallest maxReceiveCount whose delays cover :attr:`horizon_s` (at least 1).

        Raises :class:`ScheduleTooLong` when that exceeds SQS's limit of 1,000.
        """
        total, receives = 0, 0
        while total < self.horizon_s:
            receives += 1
            if receives > SQS_MAX_RECEIVE_COUNT:
                raise ScheduleTooLong(
                    f"a {self.horizon_s} s horizon needs more than {SQS_MAX_RECEIVE_COUNT} "
                    f"receives with delays capped at {self.cap_s} s; raise the cap"
                )
            total += self.delay_s(receives)
        return max(receives, 1)
