"""One message in, one verdict out: the dispatch step the consumer and the Lambda share.

``contract -> engine -> results`` for each message, scheduled so that no two
transfers on one account (or one FIFO group) run at once, plus the one answer a
transport needs: what to do with the message.

- :attr:`Action.ACK`: an outcome is recorded (committed, rejected, or an earlier
  delivery recorded it): delete the message.
- :attr:`Action.RETRY`: nothing was applied (conflicts or the database outlasted the
  retry budget, something unexpected broke, or the FIFO rule held it back): make it
  visible again after :attr:`Verdict.delay_s`, its place on the redelivery schedule.
- :attr:`Action.DEAD_LETTER`: the body breaks the contract and never will parse: move
  it to the DLQ with the error attached, then delete it.

Nothing here raises: an unexpected exception becomes ``RETRY`` and is logged with its
traceback, so a poison message cannot kill the worker (the queue's redrive policy
eventually moves it to the DLQ). Every log line of a message carries its
``message_id`` and ``transfer_id`` (bound once, with structlog's contextvars), and
each transfer ends in exactly one ``transfer`` line.

The transports differ only in how messages arrive and are acknowledged: the consumer
(:mod:`worker.transport.consumer`) keeps one dispatcher for its whole life and feeds
it from its pollers; the Lambda (:mod:`worker.transport.lambda_handler`) makes one per
batch.
"""

from __future__ import annotations

from collections.abc import Hashable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from enum import StrEnum

import structlog

from worker.contract import TransferRequest, parse_body
from worker.dispatch.batching import Batching, HotAccounts
from worker.dispatch.fifo import FifoGroups
from worker.dispatch.message import Message
from worker.dispatch.metrics import Metrics
from worker.dispatch.scheduler import AccountScheduler, Slot
from worker.engine import TransferEngine
from worker.errors import ConflictRetriesExhausted, Fault, MalformedRequest, RetryableTransferError
from worker.outcomes import TransferResult
from worker.redelivery import RedeliverySchedule

log = structlog.get_logger("worker.transfer")


class Action(StrEnum):
    """What the transport should do with the message."""

    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision for one message, with what led to it."""

    action: Action
    delay_s: int = 0
    """RETRY: seconds until the message should be visible again."""
    result: TransferResult | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """A parsed message waiting for (or holding) its accounts."""

    message: Message
    request: TransferRequest


class Dispatcher:
    """Parses, schedules and applies messages through one engine; thread-safe."""

    def __init__(
        self,
        engine: TransferEngine,
        metrics: Metrics,
        redelivery: RedeliverySchedule,
        batching: Batching | None = None,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._redelivery = redelivery
        self._batching = batching or Batching()
        self._hot = HotAccounts(self._batching.hot_window_s)
        self._scheduler: AccountScheduler[Job] = AccountScheduler()
        self._fifo = FifoGroups()

    # --- in --------------------------------------------------------------------------

    def admit(self, message: Message) -> Job | Verdict:
        """Parse and queue ``message``; a DEAD_LETTER verdict now when it is malformed."""
        with structlog.contextvars.bound_contextvars(message_id=message.message_id):
            try:
                request = parse_body(message.body, message.message_id)
            except MalformedRequest as exc:
                log.warning("malformed message", error=str(exc))
                self._metrics.malformed()
                return Verdict(Action.DEAD_LETTER, error=str(exc))
        job = Job(message, request)
        self._fifo.received(message)
        self._scheduler.put(job, _exclusive_keys(message, request))
        return job

    def take(self, timeout: float) -> Slot[Job] | None:
        """The oldest job whose accounts are free, now holding them; None on timeout."""
        return self._scheduler.take(timeout=timeout)

    def take_batch(self, timeout: float) -> list[Slot[Job]]:
        """The oldest runnable job and, when it may batch, up to ``Batching.size - 1``
        more runnable jobs that may join it (:mod:`.batching`); empty on timeout."""
        first = self.take(timeout)
        if first is None:
            return []
        if self._batching.size == 1 or not self._batchable(first.job):
            return [first]
        ids = {first.job.request.transfer_id}

        def joins(job: Job) -> bool:
            # Called only for a job the scheduler would hand out: accepting takes it.
            if not self._batchable(job) or job.request.transfer_id in ids:
                return False
            ids.add(job.request.transfer_id)
            return True

        return [first, *self._scheduler.take_more(self._batching.size - 1, joins)]

    def _batchable(self, job: Job) -> bool:
        request = job.request
        return job.message.group_id is None and not self._hot.any_hot(
            request.payer_id, request.payee_id
        )

    # --- the step ----------------------------------------------------------------------

    def run_all(self, slots: list[Slot[Job]], *, budget_s: float | None = None) -> list[Verdict]:
        """:meth:`run` for what :meth:`take_batch` returned: one statement for a batch."""
        if len(slots) == 1:
            return [self.run(slots[0], budget_s=budget_s)]
        try:
            return self._apply_batch([slot.job for slot in slots])
        finally:
            for slot in slots:
                self._scheduler.done(slot)

    def run(self, slot: Slot[Job], *, budget_s: float | None = None) -> Verdict:
        """Apply the job (unless its FIFO group is held back) and release its accounts.

        ``budget_s`` can only shorten the retry budget (a Lambda's remaining time).
        """
        job = slot.job
        try:
            if self._fifo.held_back(job.message):
                # An earlier message of this FIFO group failed: applying this one now
                # would reorder the group. Hand it back untouched.
                return Verdict(Action.RETRY, delay_s=0, error="FIFO group held back")
            verdict = self._apply(job, budget_s)
            if verdict.action is Action.RETRY:
                self._fifo.failed(job.message)
            return verdict
        finally:
            self._scheduler.done(slot)

    def hand_back(self, slot: Slot[Job]) -> Verdict:
        """Give a taken job back unapplied (no time left, holding back, shutting down)."""
        self._scheduler.done(slot)
        self._fifo.failed(slot.job.message)
        return Verdict(Action.RETRY, delay_s=0, error="not started")

    def _apply(self, job: Job, budget_s: float | None) -> Verdict:
        with _bound(job):
            try:
                result = self._engine.apply(
                    job.request, enqueued_at=job.message.sent_at, budget_s=budget_s
                )
            except Exception as exc:  # noqa: BLE001 - every failure becomes a verdict
                return self._failed(job, exc)
            return self._applied(job, result, batch=1)

    def _apply_batch(self, jobs: list[Job]) -> list[Verdict]:
        try:
            batched = self._engine.apply_batch([(job.request, job.message.sent_at) for job in jobs])
        except Exception as exc:  # noqa: BLE001 - every failure becomes a verdict
            verdicts = []
            for job in jobs:
                with _bound(job):
                    verdicts.append(self._failed(job, exc))
            return verdicts
        if batched.refused:
            # The server refused the statement itself: it will again. Stop batching.
            log.warning("the database refused the batch statement: batching is off")
            self._batching = replace(self._batching, size=1)
        if batched.fault is Fault.CONFLICT:
            # Which account conflicted is unknown: keep all of them out for the window.
            self._hot.mark(a for job in jobs for a in (job.request.payer_id, job.request.payee_id))
        verdicts = []
        for job, outcome in zip(jobs, batched.outcomes, strict=True):
            with _bound(job):
                if isinstance(outcome, Exception):
                    verdicts.append(self._failed(job, outcome))
                else:
                    verdicts.append(self._applied(job, outcome, batch=len(jobs)))
        return verdicts

    def _applied(self, job: Job, result: TransferResult, *, batch: int) -> Verdict:
        """An outcome is recorded: the one ``transfer`` log line, metrics, ACK."""
        if batch == 1 and result.attempts > 1:
            # A lone transfer that retried conflicted (a batch's own failure is marked
            # once, by its fault: after one, every transfer counts it as attempt 1).
            self._hot.mark((job.request.payer_id, job.request.payee_id))
        log.info(
            "transfer",
            outcome=result.status.value,
            reason=result.reason.value if result.reason else None,
            duplicate=result.duplicate,
            attempts=result.attempts,
            receive_count=job.message.receive_count,
            batch=batch,
            transaction_ms=None
            if result.transaction_ms is None
            else round(result.transaction_ms, 3),
        )
        self._metrics.outcome(result, end_to_end_ms=job.message.end_to_end_ms())
        return Verdict(Action.ACK, result=result)

    def _failed(self, job: Job, exc: Exception) -> Verdict:
        """Nothing applied: log why, count it, RETRY on the redelivery schedule."""
        message = job.message
        if isinstance(exc, ConflictRetriesExhausted):
            self._hot.mark((job.request.payer_id, job.request.payee_id))
        if isinstance(exc, RetryableTransferError):
            log.warning(
                "transfer failed, will be redelivered",
                outcome="failed",
                attempts=exc.attempts,
                receive_count=message.receive_count,
                error=str(exc),
            )
            self._metrics.failed(exc.attempts)
            return self._retry(message, str(exc))
        log.error("unexpected error, message left for redelivery", exc_info=exc)
        self._metrics.failed(1)
        return self._retry(message, f"{type(exc).__name__}: {exc}")

    def _retry(self, message: Message, error: str) -> Verdict:
        return Verdict(
            Action.RETRY, delay_s=self._redelivery.delay_s(message.receive_count), error=error
        )

    def process(self, message: Message) -> Verdict:
        """Admit, then run, one message on its own (a caller with nothing to schedule)."""
        admitted = self.admit(message)
        if isinstance(admitted, Verdict):
            return admitted
        slot = self.take(timeout=60)
        assert slot is not None, "a lone job is always runnable"
        return self.run(slot)

    # --- the queue of jobs -----------------------------------------------------------

    def drain(self) -> list[Message]:
        """Remove every job that has not started (shutdown, holding back)."""
        return [job.message for job in self._scheduler.drain()]

    def wait_idle(self, timeout: float) -> bool:
        """Block until no job waits or runs; False if ``timeout`` passed first."""
        return self._scheduler.wait_idle(timeout)

    @property
    def size(self) -> int:
        """Jobs waiting plus jobs running."""
        return self._scheduler.size


def _bound(job: Job) -> AbstractContextManager[None]:
    """Every log line inside names the message and the transfer."""
    return structlog.contextvars.bound_contextvars(
        message_id=job.message.message_id, transfer_id=str(job.request.transfer_id)
    )


def _exclusive_keys(message: Message, request: TransferRequest) -> set[Hashable]:
    """What a transfer must hold alone while it runs: both accounts, and on a FIFO
    queue its message group, so a group is applied in order."""
    keys: set[Hashable] = {request.payer_id, request.payee_id}
    if message.group_id is not None:
        keys.add(("group", message.group_id))
    return keys
