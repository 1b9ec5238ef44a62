"""A Python client for services that produce transfers: send them, read their outcomes.

    from decimal import Decimal
    from producer import Transfer, TransferClient

    with TransferClient.from_env() as client:  # QUEUE_URL, DATABASE_URL or DSQL_ENDPOINT
        transfer_id = client.send(payer=1, payee=2, amount=Decimal("10.50"))
        outcome = client.result(transfer_id, wait=30)  # None if none within 30 s
        print(outcome.status if outcome else "no outcome yet")
        report = client.send_many(Transfer(payer=3, payee=4, amount=Decimal(1)) for _ in range(100))
        outcomes = client.results(report.sent, wait=60)

What it does for you, so no producer copies the rules out of this repository:

- **The body is the contract's**: :func:`worker.contract.encode_body`, checked with the
  worker's own :func:`~worker.contract.parse_body` before it is sent, so nothing that a
  worker would dead-letter leaves the client (:class:`InvalidTransfer` instead).
- **A transfer id always**: the idempotency key, a new uuid4 unless you give one, and
  returned. Sending the same id again never moves the money twice.
- **Batches of 10** (SQS's limit) in :meth:`TransferClient.send_many`, and **partial
  failures retried**: SendMessageBatch can accept some entries and refuse others; the
  refused ones are resent a few times unless SQS says they are the sender's fault, and
  what is still refused is reported in :attr:`SendResult.not_sent`, never lost silently.
- **FIFO queues** (URL ending in ``.fifo``): the payer is the MessageGroupId, so one
  payer's transfers apply in order, and the transfer id the MessageDeduplicationId.
- **Outcomes** come from ``transfer_results``, the one row the workers record per
  transfer id; :meth:`~TransferClient.result` and :meth:`~TransferClient.results` can
  poll until it is there.

A whole SendMessageBatch call that fails (after botocore's own retries) raises
botocore's ``ClientError`` / ``BotoCoreError`` (:data:`producer.sqs.SQS_ERRORS`);
database errors are psycopg's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from producer.closing import Closing
from producer.results import connect_for_polling, fetch_results, wait_for_results
from producer.sqs import message_entry, send_entries, sqs_clients
from producer.transfer import InvalidTransfer, SendResult, Transfer, TransferNotSent, to_request
from worker.contract import TransferRequest
from worker.outcomes import TransferResult
from worker.settings import Settings
from worker.transport.sqs import BATCH, is_fifo, queue_url

if TYPE_CHECKING:
    import psycopg
    from mypy_boto3_sqs import SQSClient

POLL_S = 0.1
"""How often :meth:`TransferClient.result` asks the database while waiting."""


class TransferClient(Closing):
    """Sends transfer requests to the transfer queue and reads their outcomes.

    ``sqs`` is a boto3 SQS client (thread-safe: several threads may share one client),
    ``queue_url`` the transfer queue. ``settings`` is only needed to read outcomes
    (:meth:`result`, :meth:`results`): the database connection opens on first use and
    closes with :meth:`close` (or the ``with`` block).
    """

    def __init__(
        self,
        sqs: SQSClient,
        queue_url: str,
        *,
        settings: Settings | None = None,
        entry_retries: int | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.fifo = is_fifo(queue_url)
        self._settings = settings
        self._send_options: dict[str, Any] = {}
        if entry_retries is not None:
            self._send_options["retries"] = entry_retries
        if sleep is not None:
            self._send_options["sleep"] = sleep
        self._conn: psycopg.Connection[Any] | None = None
        self._conn_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **options: Any) -> TransferClient:
        """A client for the queue (``QUEUE_URL`` or ``QUEUE_NAME``) and database
        (``DATABASE_URL`` or ``DSQL_ENDPOINT``) of ``settings`` (default: read from the
        environment). Raises :class:`~worker.errors.QueueNotConfigured` without a queue."""
        settings = settings or Settings()
        sqs = sqs_clients(settings)[0]
        return cls(sqs, queue_url(settings, sqs), settings=settings, **options)

    from_env = from_settings
    """The same as :meth:`from_settings` with no argument: everything from the environment."""

    # --- sending ---------------------------------------------------------------------

    def send(
        self,
        payer: int,
        payee: int,
        amount: Decimal | int | str,
        *,
        transfer_id: UUID | None = None,
    ) -> UUID:
        """Enqueue one transfer; returns its transfer id (``transfer_id`` or a new uuid4).

        Raises :class:`InvalidTransfer` for what the contract refuses (nothing is sent)
        and :class:`TransferNotSent` when SQS refuses the message.
        """
        request = to_request(Transfer(payer, payee, amount, transfer_id))
        report = self.send_many([request])
        if report.not_sent:
            raise TransferNotSent(request.transfer_id, report.not_sent[request.transfer_id])
        return request.transfer_id

    def send_many(
        self,
        transfers: Iterable[Transfer | TransferRequest],
        *,
        on_sent: Callable[[int], None] | None = None,
    ) -> SendResult:
        """Enqueue ``transfers`` in SendMessageBatch calls of 10, lazily (a generator of
        a million transfers is never held in memory at once).

        Every transfer is checked against the contract before its batch goes out: one
        the contract refuses raises :class:`InvalidTransfer` and sends neither it nor
        the rest of its batch (earlier batches are on the queue: the exception's
        ``report`` lists them). ``on_sent(n)`` is called after each batch with the
        number of entries SQS accepted.
        """
        report = SendResult()
        batch: list[TransferRequest] = []
        for transfer in transfers:
            try:
                batch.append(to_request(transfer))
            except InvalidTransfer as exc:
                raise InvalidTransfer(str(exc), report) from None
            if len(batch) == BATCH:
                self._send_batch(batch, report, on_sent)
                batch = []
        if batch:
            self._send_batch(batch, report, on_sent)
        return report

    def send_batch(self, batch: Sequence[TransferRequest]) -> SendResult:
        """One SendMessageBatch of at most 10 already-validated requests, with the
        partial-failure retries; for callers that schedule batches themselves."""
        if len(batch) > BATCH:
            raise ValueError(f"at most {BATCH} transfers per batch")
        report = SendResult()
        self._send_batch(list(batch), report, None)
        return report

    def _send_batch(
        self,
        batch: list[TransferRequest],
        report: SendResult,
        on_sent: Callable[[int], None] | None,
    ) -> None:
        entries = [message_entry(t, fifo=self.fifo) for t in batch]
        outcome = send_entries(self.sqs, self.queue_url, entries, **self._send_options)
        report.sent.extend(UUID(hex=entry_id) for entry_id in outcome.sent)
        report.not_sent.update({UUID(hex=i): code for i, code in outcome.not_sent.items()})
        if on_sent is not None and outcome.sent:
            on_sent(len(outcome.sent))

    # --- outcomes ----------------------------------------------------------------------

    def result(self, transfer_id: UUID, *, wait: float = 0) -> TransferResult | None:
        """The recorded outcome of ``transfer_id``; with ``wait`` > 0, poll up to that
        many seconds for it. None when there is none (yet)."""
        return self.results([transfer_id], wait=wait).get(transfer_id)

    def results(
        self,
        transfer_ids: Iterable[UUID],
        *,
        wait: float = 0,
        on_found: Callable[[int], None] | None = None,
    ) -> dict[UUID, TransferResult]:
        """The recorded outcomes of ``transfer_ids``, by id; with ``wait`` > 0, poll up to
        that many seconds until every id has one. Ids without an outcome are absent."""
        ids = list(dict.fromkeys(transfer_ids))
        conn = self._connection()
        if wait <= 0:
            found = {r.transfer_id: r for r in fetch_results(conn, ids)}
            if on_found is not None and found:
                on_found(len(found))
            return found
        return wait_for_results(conn, ids, timeout_s=wait, poll_s=POLL_S, on_found=on_found)

    def connect(self) -> None:
        """Open the database connection now (commands do, so that an unreachable
        database stops them before anything is sent)."""
        self._connection()

    def _connection(self) -> psycopg.Connection[Any]:
        with self._conn_lock:
            if self._conn is None:
                if self._settings is None:
                    raise RuntimeError(
                        "reading outcomes needs database settings: TransferClient(..., settings=)"
                    )
                self._conn = connect_for_polling(self._settings)
            return self._conn

    def close(self) -> None:
        """Close the database connection, if one was opened."""
        with self._conn_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
