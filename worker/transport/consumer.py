"""The long-running SQS consumer: ``python -m worker run``.

Threads, each with one job:

- **pollers** long-poll the queue (20 s, 10 messages) whenever there is room, so the
  executors never wait for a whole batch to finish before the next receive (the
  classic 10-in-flight stall of simple consumers);
- **executors** (``concurrency`` of them, one per pooled connection by default) take
  the oldest job whose accounts are free (with up to TRANSFER_BATCH - 1 more that may
  share its statement, :mod:`worker.dispatch.batching`) and run it through the shared
  dispatch step (:mod:`worker.dispatch`), then acknowledge each verdict;
- the **heartbeat** extends the visibility of any message still held at half its
  visibility timeout and writes the health file (liveness, and readiness);
- the **prober** (:mod:`worker.engine.availability`) asks a database found unreachable,
  every few seconds, whether it is back.

Holding back: while the database is unreachable the pollers stop receiving and the
executors stop starting transfers; messages not started yet are handed back at once
(visibility 0, as in a drain) and a transfer that failed goes back on the redelivery
schedule, so no message is received again and again only to fail. The worker stays
alive (liveness) but not ready (``health --ready``) and reports ``HoldingBack``.
- the **acknowledger** batches deletes and visibility changes (:mod:`worker.transport.sqs`).

Shutdown (SIGTERM/SIGINT): stop receiving, hand not-yet-started messages back to the
queue (visibility 0), let running transfers finish within the drain deadline, send the
pending acknowledgements, and return. A transfer still running at the deadline is not
lost: its message reappears after the visibility timeout and the engine's idempotency
turns the redelivery into a duplicate.

Burst mode (``run(burst=True)``, arq's name for it) consumes until a receive comes back
empty with nothing left in hand, then drains and returns: what a test, a backfill or a
one-off catch-up wants instead of a thread to stop.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from worker.dispatch import Action, Batching, Dispatcher, Message, Metrics, Verdict
from worker.engine import Availability
from worker.redelivery import RedeliverySchedule
from worker.settings import Settings
from worker.transport.health import write_health
from worker.transport.sqs import BATCH, Acknowledger, DeadLetters, dead_letter

log = structlog.get_logger(__name__)

PREFETCH = 2
"""Batches held per executor: one running, one ready to start (a batch is one
message unless TRANSFER_BATCH allows more)."""


@dataclass(eq=False)
class _Held:
    """A received message this process is responsible for until it is acknowledged."""

    message: Message
    extended_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class ConsumerConfig:
    """The consumer's knobs, resolved from Settings and the queue's attributes."""

    queue_url: str
    visibility_timeout_s: int
    concurrency: int
    receive_wait_s: int
    redelivery: RedeliverySchedule
    drain_timeout_s: float
    health_file: Path | None = None
    batch_size: int = 1

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        queue_url: str,
        visibility_timeout_s: int,
        health_file: Path | None = None,
    ) -> ConsumerConfig:
        """Every knob from ``settings``; the queue's URL and visibility as resolved."""
        return cls(
            queue_url=queue_url,
            visibility_timeout_s=visibility_timeout_s,
            concurrency=settings.concurrency,
            receive_wait_s=settings.receive_wait_s,
            redelivery=RedeliverySchedule.from_settings(settings),
            drain_timeout_s=settings.drain_timeout_s,
            health_file=health_file,
            batch_size=Batching.from_settings(settings).size,
        )


class Consumer:
    """Receives, dispatches and acknowledges transfer messages."""

    def __init__(
        self,
        config: ConsumerConfig,
        client: Any,
        dispatcher: Dispatcher,
        dead_letters: DeadLetters | None,
        *,
        availability: Availability | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self._client = client
        self._dispatcher = dispatcher
        self._dead_letters = dead_letters
        self._availability = availability
        self._metrics = metrics
        self._holding_back = False
        self._acks = Acknowledger(client, config.queue_url)
        self._held: dict[str, _Held] = {}
        self._held_lock = threading.Lock()
        self._room = threading.Condition()
        self._stopping = threading.Event()
        self._capacity = config.concurrency * config.batch_size * PREFETCH
        self._threads: list[threading.Thread] = []
        self._pollers: list[threading.Thread] = []
        self._last_poll = time.monotonic()
        self._burst = False
        self._empty_receives = 0

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start every thread; returns at once."""
        # Enough receives in flight to keep one batch ready per executor on a deep
        # queue; no more: on a shallow queue every extra long poll only splits the
        # arrivals into smaller receives (more SQS calls per message).
        # (Measured through moto at 10 executors: 16 pollers, one per 10 messages held,
        # cost 0.70x raw moto; 2 cost 0.84x but doubled the p50 latency; 4 gave 0.86x
        # at the same latency. So: two receives' worth of each executor's prefetch.)
        pollers = max(1, math.ceil(2 * self.config.concurrency * PREFETCH / BATCH))
        for i in range(pollers):
            self._pollers.append(self._spawn(self._poll, f"poller-{i}"))
        for i in range(self.config.concurrency):
            self._threads.append(self._spawn(self._execute, f"executor-{i}"))
        self._spawn(self._heartbeat, "heartbeat")
        if self._availability is not None:
            self._spawn(self._availability.run_prober, "prober", self._stopping)
        log.info(
            "worker started",
            queue_url=self.config.queue_url,
            concurrency=self.config.concurrency,
            pollers=pollers,
            visibility_timeout_s=self.config.visibility_timeout_s,
        )

    def _spawn(self, target: Any, name: str, *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, args=args, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Ask the consumer to drain and stop; safe from a signal handler."""
        self._stopping.set()
        with self._room:
            self._room.notify_all()

    def run(self, *, burst: bool = False) -> None:
        """Start, wait for :meth:`stop` (or, in burst mode, for an empty queue), drain."""
        self._burst = burst
        self.start()
        self._stopping.wait()
        self.drain()

    def drain(self) -> None:
        """Release unstarted messages, finish running ones within the deadline."""
        self._stopping.set()
        deadline = time.monotonic() + self.config.drain_timeout_s
        released = self._release(self._dispatcher.drain())
        log.info("draining", released=released, running=self._dispatcher.size)
        finished = self._dispatcher.wait_idle(max(deadline - time.monotonic(), 0))
        for thread in self._threads + self._pollers:
            # Pollers may sit in a 20 s long poll; what they bring back is released.
            thread.join(max(deadline - time.monotonic(), 0))
        late = self._release(self._dispatcher.drain())
        self._acks.close()
        log.info("worker stopped", drained=finished, released_late=late, unfinished=len(self._held))

    @property
    def dispatcher(self) -> Dispatcher:
        """The dispatch step this consumer feeds."""
        return self._dispatcher

    @property
    def holding_back(self) -> bool:
        """True while the database is unreachable and nothing is received."""
        return self._availability is not None and self._availability.down

    @property
    def healthy(self) -> bool:
        """Pollers alive, and one came back from SQS recently or they are holding back
        on purpose (a worker waiting out a database outage must not be restarted)."""
        recent = time.monotonic() - self._last_poll < 3 * max(self.config.receive_wait_s, 1) + 30
        return all(t.is_alive() for t in self._pollers) and (recent or self.holding_back)

    # --- pollers --------------------------------------------------------------------------

    def _poll(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            if self._availability is not None and self.holding_back:
                self._availability.wait_up(1.0)
                self._last_poll = time.monotonic()  # alive, deliberately idle
                continue
            room = self._wait_for_room()
            if room <= 0:
                continue
            try:
                response = self._client.receive_message(
                    QueueUrl=self.config.queue_url,
                    MaxNumberOfMessages=min(BATCH, room),
                    WaitTimeSeconds=self.config.receive_wait_s,
                    MessageSystemAttributeNames=[
                        "SentTimestamp",
                        "ApproximateReceiveCount",
                        "MessageGroupId",
                    ],
                )
                failures = 0
            except Exception as exc:  # noqa: BLE001 - any SQS/network error: back off, retry
                failures += 1
                log.warning("receive failed", error=str(exc), consecutive=failures)
                self._stopping.wait(min(0.5 * 2**failures, 10))
                continue
            self._last_poll = time.monotonic()
            messages = response.get("Messages", [])
            for raw in messages:
                self._accept(Message.from_sqs(raw))
            if self._burst:
                self._check_burst_over(empty=not messages)

    def _check_burst_over(self, *, empty: bool) -> None:
        with self._held_lock:
            self._empty_receives = self._empty_receives + 1 if empty else 0
            # Every poller came back empty, nothing is in hand or waiting to be sent.
            over = self._empty_receives >= len(self._pollers) and not self._held
        if over and not self._acks.pending:
            log.info("burst over: the queue is empty")
            self.stop()

    def _wait_for_room(self) -> int:
        with self._room:
            while not self._stopping.is_set():
                # Applied-but-unacknowledged messages count too: receiving faster than
                # we can delete only grows SQS's in-flight set (and moto's scans).
                room = self._capacity - len(self._held) - self._acks.pending
                if room > 0:
                    return room
                # Woken by finished transfers; acknowledgements draining do not notify.
                self._room.wait(0.05 if self._acks.pending else 1.0)
        return 0

    def _accept(self, message: Message) -> None:
        if self._stopping.is_set():
            # Arrived after shutdown began: give it straight back.
            self._acks.change_visibility(message, 0)
            return
        with self._held_lock:
            self._held[message.receipt_handle] = _Held(message)
        admitted = self._dispatcher.admit(message)
        if isinstance(admitted, Verdict):
            self._settle(message, admitted)

    # --- executors ------------------------------------------------------------------------

    def _execute(self) -> None:
        while True:
            slots = self._dispatcher.take_batch(timeout=0.2)
            if not slots:
                if self._stopping.is_set():
                    return
                continue
            if self.holding_back:
                # Taken just as the database went away: hand them back untouched.
                for slot in slots:
                    self._settle(slot.job.message, self._dispatcher.hand_back(slot))
                continue
            verdicts = self._dispatcher.run_all(slots)
            for slot, verdict in zip(slots, verdicts, strict=True):
                self._settle(slot.job.message, verdict)

    def _settle(self, message: Message, verdict: Verdict) -> None:
        """Acknowledge according to the verdict, then let go of the message; never raises."""
        if verdict.action is Action.ACK:
            self._acks.delete(message)
        elif verdict.action is Action.RETRY:
            self._acks.change_visibility(message, verdict.delay_s)
        elif dead_letter(self._dead_letters, message, verdict.error or "malformed"):
            self._acks.delete(message)
        self._forget(message)

    def _forget(self, message: Message) -> None:
        with self._held_lock:
            self._held.pop(message.receipt_handle, None)
        with self._room:
            self._room.notify_all()

    def _release(self, messages: list[Message]) -> int:
        for message in messages:
            self._acks.change_visibility(message, 0)
            self._forget(message)
        return len(messages)

    # --- heartbeat ------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        half = self.config.visibility_timeout_s / 2
        while not self._stopping.wait(min(1.0, half / 2)):
            self._follow_availability()
            now = time.monotonic()
            with self._held_lock:
                due = [h for h in self._held.values() if now - h.extended_at >= half]
                for held in due:
                    held.extended_at = now
            for held in due:
                self._acks.change_visibility(held.message, self.config.visibility_timeout_s)
            if due:
                log.info("visibility extended", messages=len(due))
            if self.config.health_file is not None and self.healthy:
                write_health(self.config.health_file, ready=not self.holding_back)

    def _follow_availability(self) -> None:
        """On entering hold-back, hand back what has not started; report the state."""
        holding = self.holding_back
        if holding and not self._holding_back:
            released = self._release(self._dispatcher.drain())
            log.info("holding back: unstarted messages handed back", released=released)
        self._holding_back = holding
        if self._metrics is not None:
            self._metrics.holding_back(holding)
