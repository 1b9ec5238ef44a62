"""The workload and the sending behind ``producer load`` (:mod:`producer.commands.load`).

:func:`plan_transfers` draws transfers between two distinct random accounts lazily
from one random generator, so memory stays flat for large N; :func:`send_transfers`
sends them in batches of 10 from one thread per :class:`~producer.client.TransferClient`
(entries SQS refuses within a batch are resent a few times, then counted as not sent;
a batch call that fails outright stops the run, :class:`SendAborted`); a
:class:`BacklogGate` holds the senders while too many messages wait on the queue.
The fault suite and the benchmark use them too.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from producer.sqs import SQS_ERRORS
from worker.contract import TransferRequest
from worker.transport.sqs import BATCH, queue_depth

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

    from producer.client import TransferClient

MAX_CENTS = 1000
"""Amounts are 0.01 to 10.00: 1 to 1,000 cents."""


# --- the workload -----------------------------------------------------------------------


def plan_transfers(iters: int, accounts: int, rng: random.Random) -> Iterator[TransferRequest]:
    """``iters`` transfers between two distinct accounts in ``1..accounts``, for 0.01 to
    10.00 (two decimals), each with a new uuid4, drawn as they are consumed.

    ``rng`` draws only accounts and amounts: the ids are always new, because a
    repeated id is by design the same transfer again, applied once.
    """
    if accounts < 2:
        raise ValueError("transfers need at least two accounts")
    for _ in range(iters):
        payer = rng.randint(1, accounts)
        payee = rng.randint(1, accounts - 1)
        if payee >= payer:  # uniform over the other accounts
            payee += 1
        yield TransferRequest(
            transfer_id=uuid4(),
            payer_id=payer,
            payee_id=payee,
            amount=Decimal(rng.randint(1, MAX_CENTS)).scaleb(-2),
        )


# --- sending -----------------------------------------------------------------------------


class SendAborted(RuntimeError):
    """A SendMessageBatch call failed outright (after botocore's retries); sending
    stopped. ``sent`` transfers were on the queue by then."""

    def __init__(self, message: str, *, sent: int) -> None:
        super().__init__(message)
        self.sent = sent


@dataclass(frozen=True)
class SendReport:
    """What :func:`send_transfers` did."""

    requested: int
    sent: list[UUID]
    """Ids SQS accepted, in no particular order."""
    not_sent: dict[UUID, str]
    """Ids SQS refused even after resending, with its error code."""
    started_at: datetime
    """Wall-clock time just before the first send."""
    elapsed_s: float

    @property
    def rate_per_s(self) -> float | None:
        """Messages sent per second."""
        return len(self.sent) / self.elapsed_s if self.elapsed_s > 0 else None

    def not_sent_by_code(self) -> dict[str, int]:
        """Refused transfers per SQS error code, most frequent first."""
        return dict(Counter(self.not_sent.values()).most_common())

    def as_dict(self) -> dict[str, Any]:
        """Keys: ``requested``, ``sent``, ``not_sent``, ``not_sent_by_code``, ``send_s``,
        ``send_rate_per_s``, ``first_sent_at``."""
        return {
            "requested": self.requested,
            "sent": len(self.sent),
            "not_sent": len(self.not_sent),
            "not_sent_by_code": self.not_sent_by_code(),
            "send_s": self.elapsed_s,
            "send_rate_per_s": self.rate_per_s,
            "first_sent_at": self.started_at.isoformat(),
        }


def send_transfers(
    clients: Sequence[TransferClient],
    transfers: Iterable[TransferRequest],
    *,
    on_sent: Callable[[int], None] | None = None,
    gate: BacklogGate | None = None,
) -> SendReport:
    """Send ``transfers`` in batches of 10, one thread per client, until none are left.

    Threads take the next 10 transfers from the shared iterator, so the workload is
    drawn in one order whatever the thread count; each batch goes out through
    :meth:`TransferClient.send_batch` (the client's partial-failure retries).
    ``on_sent(n)`` is called from the sending threads after each batch (a progress
    bar's ``advance``). Raises :class:`SendAborted` when a batch call fails outright;
    the other threads finish the batch they are sending and stop.
    """
    source = iter(transfers)
    source_lock = threading.Lock()
    results_lock = threading.Lock()
    stop = threading.Event()
    requested = 0
    sent: list[UUID] = []
    not_sent: dict[UUID, str] = {}

    def take() -> list[TransferRequest]:
        nonlocal requested
        with source_lock:
            batch = list(islice(source, BATCH))
            requested += len(batch)
            return batch

    def run(client: TransferClient) -> None:
        while not stop.is_set():
            if gate is not None:
                gate.wait(stop)
            if not (batch := take()):
                break
            try:
                outcome = client.send_batch(batch)
            except BaseException:
                stop.set()
                raise
            with results_lock:
                sent.extend(outcome.sent)
                not_sent.update(outcome.not_sent)
            if on_sent is not None and outcome.sent:
                on_sent(len(outcome.sent))
            if gate is not None:
                gate.sent(len(outcome.sent))

    started_at = datetime.now(UTC)
    started = time.perf_counter()
    with ThreadPoolExecutor(len(clients), thread_name_prefix="send") as pool:
        futures = [pool.submit(run, client) for client in clients]
    for future in futures:
        error = future.exception()
        if isinstance(error, SQS_ERRORS):
            raise SendAborted(
                f"sending stopped, SQS: {error} ({len(sent)} transfers were sent before)",
                sent=len(sent),
            ) from error
        if error is not None:
            raise error
    return SendReport(
        requested=requested,
        sent=sent,
        not_sent=not_sent,
        started_at=started_at,
        elapsed_s=time.perf_counter() - started,
    )


class BacklogGate:
    """Flow control: hold senders while more than ``limit`` messages wait on the queue.

    Shared by the sending threads; the queue depth (ApproximateNumberOfMessages) is
    asked at most once per ``refresh_s`` whatever the thread count. Approximate by
    nature: SQS's count lags, and threads already past the gate still send.
    """

    def __init__(self, client: SQSClient, url: str, limit: int, refresh_s: float = 0.05) -> None:
        self._client = client
        self._url = url
        self.limit = limit
        self._refresh_s = refresh_s
        self._lock = threading.Lock()
        self._depth = 0
        self._asked_at = -math.inf

    def wait(self, stop: threading.Event) -> None:
        """Return once the backlog is below the limit (or ``stop`` is set)."""
        while not stop.is_set() and self.depth() >= self.limit:
            stop.wait(self._refresh_s)

    def sent(self, count: int) -> None:
        """Count messages sent since the queue was last asked (they are waiting too)."""
        with self._lock:
            self._depth += count

    def depth(self) -> int:
        """Messages waiting: the queue's count at most ``refresh_s`` old, plus what was
        sent since."""
        with self._lock:
            if time.monotonic() - self._asked_at >= self._refresh_s:
                self._depth = queue_depth(self._client, self._url).visible
                self._asked_at = time.monotonic()
            return self._depth
