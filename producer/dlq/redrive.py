"""``dlq redrive``: move dead letters back to the transfer queue, the best way there is.

Everything (no ``limit``) goes by an SQS message move task (:mod:`.by_task`); where the
endpoint has none, or with a ``limit`` (a task always moves everything), by copy
(:mod:`.by_copy`), and the report says why a copy was made.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from producer.dlq.by_copy import move_by_copy
from producer.dlq.by_task import MoveTaskUnsupported, move_by_task
from producer.dlq.report import RedriveReport

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


def redrive(
    client: SQSClient,
    dlq_url: str,
    queue_url: str,
    *,
    limit: int | None = None,
    rate: int | None = None,
) -> RedriveReport:
    """Move up to ``limit`` (None: all) DLQ messages to ``queue_url``, at most ``rate``
    per second: with a move task when moving all and the endpoint has one, else by
    copy.

    Raises botocore's error when SQS refuses the move task for another reason than not
    having it (no permission, for one), or an ARN cannot be read.
    """
    reason = None
    if limit is None:
        try:
            return move_by_task(client, dlq_url, queue_url, rate=rate)
        except MoveTaskUnsupported as exc:
            reason = str(exc)
    report = move_by_copy(client, dlq_url, queue_url, limit=limit, rate=rate)
    return replace(report, fallback_reason=reason)
