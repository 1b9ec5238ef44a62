"""The long-running SQS consumer: ``python -m worker run``.

Threads, each with one job:

- **pollers** long-poll the queue (20 s, 10 messages) whenever there is room, so the
  executors never wait for a whole batch to finish before the next receive (the
  classic 10-in-flight stall of simple consumers);
- **executors** (``concurrency`` of them, one per pooled connection by default) take
  the oldest job whose accounts are free (:mod:`worker.scheduler`) and apply it;
- the **heartbeat** extends the visibility of any message still held at half its
  visibility timeout and touches the liveness file;
- the **acknowledger** batches deletes and visibility changes (:mod:`worker.sqs`).

Shutdown (SIGTERM/SIGINT): stop receiving, hand not-yet-started messages back to the
queue (visibility 0), let running transfers finish within the drain deadline, send the
pending acknowledgements, and return. A transfer still running at the deadline is not
lost: its message reappears after the visibility timeout and the engine's idempotency
turns the redelivery into a duplicate.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from worker.contract import TransferRequest
from worker.processing import Disposition, Handled, Message, Processor, exclusive_keys
from worker.scheduler import AccountScheduler
from worker.sqs import BATCH, Acknowledger, DeadLetters

log = structlog.get_logger(__name__)

MAX_RETRY_VISIBILITY_S = 300
PREFETCH = 2
"""Messages held per executor: one running, one ready to start."""


@dataclass(eq=False)
class _Held:
    """A received message this process is responsible for until it is acknowledged."""

    message: Message
    request: TransferRequest
    extended_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class ConsumerConfig:
    """The consumer's knobs, resolved from Settings and the queue's attributes."""

    queue_url: str
    visibility_timeout_s: int
    concurrency: int
    receive_wait_s: int = 20
    retry_visibility_s: int = 2
    drain_timeout_s: float = 25.0
    health_file: Path | None = None


class Consumer:
    """Receives, schedules, applies and acknowledges transfer messages."""

    def __init__(
        self,
        config: ConsumerConfig,
        client: Any,
        processor: Processor,
        dead_letters: DeadLetters | None,
    ) -> None:
        self.config = config
        self._client = client
        self._processor = processor
        self._dead_letters = dead_letters
        self._acks = Acknowledger(client, config.queue_url)
        self._scheduler: AccountScheduler[_Held] = AccountScheduler()
        self._held: dict[str, _Held] = {}
        self._held_lock = threading.Lock()
        self._failed_groups: set[str | None] = set()
        self._room = threading.Condition()
        self._stopping = threading.Event()
        self._capacity = config.concurrency * PREFETCH
        self._threads: list[threading.Thread] = []
        self._pollers: list[threading.Thread] = []
        self._last_poll = time.monotonic()

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start every thread; returns at once."""
        pollers = max(1, math.ceil(self._capacity / BATCH))
        for i in range(pollers):
            self._pollers.append(self._spawn(self._poll, f"poller-{i}"))
        for i in range(self.config.concurrency):
            self._threads.append(self._spawn(self._execute, f"executor-{i}"))
        self._spawn(self._heartbeat, "heartbeat")
        log.info(
            "worker started",
            queue_url=self.config.queue_url,
            concurrency=self.config.concurrency,
            pollers=pollers,
            visibility_timeout_s=self.config.visibility_timeout_s,
        )

    def _spawn(self, target: Any, name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Ask the consumer to drain and stop; safe from a signal handler."""
        self._stopping.set()
        with self._room:
            self._room.notify_all()

    def run(self) -> None:
        """Start, wait for :meth:`stop`, drain; returns when the drain is over."""
        self.start()
        self._stopping.wait()
        self.drain()

    def drain(self) -> None:
        """Release unstarted messages, finish running ones within the deadline."""
        self._stopping.set()
        deadline = time.monotonic() + self.config.drain_timeout_s
        released = self._release(self._scheduler.drain())
        log.info("draining", released=released, running=self._scheduler.size)
        finished = self._scheduler.wait_idle(max(deadline - time.monotonic(), 0))
        for thread in self._threads + self._pollers:
            # Pollers may sit in a 20 s long poll; what they bring back is released.
            thread.join(max(deadline - time.monotonic(), 0))
        late = self._release(self._scheduler.drain())
        self._acks.close()
        still_held = len(self._held)
        log.info(
            "worker stopped",
            drained=finished,
            released_late=late,
            unfinished=still_held,
        )

    @property
    def healthy(self) -> bool:
        """Pollers alive and one of them came back from SQS recently."""
        return all(t.is_alive() for t in self._pollers) and (
            time.monotonic() - self._last_poll < 3 * max(self.config.receive_wait_s, 1) + 30
        )

    # --- pollers --------------------------------------------------------------------------

    def _poll(self) -> None:
        failures = 0
        while not self._stopping.is_set():
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
            for raw in response.get("Messages", []):
                self._accept(Message.from_sqs(raw))

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
        parsed = self._processor.parse(message)
        if isinstance(parsed, Handled):
            self._settle(message, parsed)
            return
        held = _Held(message, parsed)
        with self._held_lock:
            self._held[message.receipt_handle] = held
            # SQS hands out a FIFO group again only once nothing of it is in flight,
            # so a fresh receive restarts the group after an earlier failure.
            self._failed_groups.discard(message.group_id)
        self._scheduler.put(held, exclusive_keys(message, parsed))

    # --- executors ------------------------------------------------------------------------

    def _execute(self) -> None:
        while True:
            slot = self._scheduler.take(timeout=0.2)
            if slot is None:
                if self._stopping.is_set():
                    return
                continue
            held = slot.job
            group = held.message.group_id
            try:
                if group is not None and group in self._failed_groups:
                    # An earlier message of this FIFO group failed: applying this one
                    # now would reorder the group. Hand it back untouched.
                    self._acks.change_visibility(held.message, 0)
                    continue
                handled = self._processor.apply(held.message, held.request)
                if group is not None and handled.disposition is Disposition.RETRY:
                    self._failed_groups.add(group)
                self._settle(held.message, handled)
            finally:
                self._forget(held)
                self._scheduler.done(slot)

    def _settle(self, message: Message, handled: Handled) -> None:
        """Acknowledge according to the disposition; never raises."""
        if handled.disposition is Disposition.ACK:
            self._acks.delete(message)
        elif handled.disposition is Disposition.RETRY:
            backoff = self.config.retry_visibility_s * 2 ** min(message.receive_count - 1, 16)
            self._acks.change_visibility(message, min(backoff, MAX_RETRY_VISIBILITY_S))
        elif self._dead_letters is None:
            log.error(
                "malformed message kept: no DLQ_URL; the queue's redrive policy will move it",
                message_id=message.message_id,
            )
        else:
            try:
                self._dead_letters.send(message, handled.error or "malformed")
            except Exception as exc:  # noqa: BLE001 - keep the message, log, carry on
                # Not deleted: it comes back and we try again, or redrive moves it.
                log.error("dead-lettering failed", message_id=message.message_id, error=str(exc))
                return
            self._acks.delete(message)

    def _forget(self, held: _Held) -> None:
        with self._held_lock:
            self._held.pop(held.message.receipt_handle, None)
        with self._room:
            self._room.notify_all()

    def _release(self, jobs: list[_Held]) -> int:
        for held in jobs:
            self._acks.change_visibility(held.message, 0)
            self._forget(held)
        return len(jobs)

    # --- heartbeat ------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        half = self.config.visibility_timeout_s / 2
        while not self._stopping.wait(min(1.0, half / 2)):
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
                self.config.health_file.touch()
