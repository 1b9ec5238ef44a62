"""The producer's side of SQS: transfers as batch entries whose body is the contract's
:func:`~worker.contract.encode_body`, sent with retries of what SQS refused.

Clients, queue URLs, the batch calls and the batch size are
:mod:`worker.transport.sqs`'s. The endpoint is the AWS SDK's own business: boto3
reads ``AWS_ENDPOINT_URL_SQS`` (or ``AWS_ENDPOINT_URL``) itself, which is how moto or
ElasticMQ stand in locally. The region is ``AWS_REGION`` from the settings, or else
whatever the SDK's default chain finds (``AWS_DEFAULT_REGION``, the profile's config
file).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from worker.contract import TransferRequest, encode_body
from worker.settings import Settings
from worker.transport.sqs import send_messages, sqs_client

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

ENTRY_RETRIES = 3
"""Resends of batch entries that SQS refused for its own reasons (not ``SenderFault``)."""
RETRY_BACKOFF_S = 0.05
SQS_ERRORS = (BotoCoreError, ClientError)
"""What a failed SQS call raises: no credentials or endpoint, or an error answer."""


def sqs_clients(settings: Settings, count: int = 1) -> list[SQSClient]:
    """``count`` SQS clients, e.g. one per sending thread (built here, used there).

    Raises :class:`~worker.errors.QueueNotConfigured` when no region can be found.
    """
    return [sqs_client(settings) for _ in range(count)]


def message_entry(request: TransferRequest, *, fifo: bool) -> SendMessageBatchRequestEntryTypeDef:
    """The batch entry for ``request``: the contract's body, keyed by the transfer id.

    On a FIFO queue the payer is the message group, so a payer's transfers are applied
    in order, one at a time (which also spares the workers OCC conflicts on the payer's
    row), and the transfer id is the deduplication id, so a resend within SQS's
    5-minute window is dropped.
    """
    entry: SendMessageBatchRequestEntryTypeDef = {
        "Id": request.transfer_id.hex,
        "MessageBody": encode_body(
            request.payer_id, request.payee_id, request.amount, request.transfer_id
        ),
    }
    if fifo:
        entry["MessageGroupId"] = str(request.payer_id)
        entry["MessageDeduplicationId"] = str(request.transfer_id)
    return entry


@dataclass(frozen=True)
class BatchOutcome:
    """What became of a batch's entries, by entry ``Id``."""

    sent: list[str]
    not_sent: dict[str, str]
    """Entry id -> SQS error code, for entries still refused after the retries."""


def send_entries(
    client: SQSClient,
    url: str,
    entries: Sequence[SendMessageBatchRequestEntryTypeDef],
    *,
    retries: int = ENTRY_RETRIES,
    sleep: Callable[[float], None] = time.sleep,
) -> BatchOutcome:
    """Send up to 10 entries in one SendMessageBatch call, then resend refused ones.

    SendMessageBatch can succeed for some entries and fail others (``Failed``). Those
    the sender caused (``SenderFault``: a malformed entry) are final; the others are
    sent again up to ``retries`` times with a short backoff, then reported as not
    sent. A resend may duplicate a message SQS did take: harmless, the workers apply
    a transfer id once. A failure of the whole call (after botocore's own retries)
    raises botocore's error.
    """
    pending = {entry["Id"]: entry for entry in entries}
    sent: list[str] = []
    refused: dict[str, str] = {}
    last_error: dict[str, str] = {}
    for attempt in range(retries + 1):
        if attempt:
            sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
        answer = send_messages(client, url, list(pending.values()))
        for entry_id in answer.message_ids:
            if pending.pop(entry_id, None) is not None:
                sent.append(entry_id)
        for entry_id, failed in answer.failed.items():
            if entry_id not in pending:
                continue
            if failed["SenderFault"]:
                del pending[entry_id]
                refused[entry_id] = failed["Code"]
            else:
                last_error[entry_id] = failed["Code"]
        if not pending:
            break
    # An entry missing from both lists of every answer is resent too, and then given up.
    refused.update({entry_id: last_error.get(entry_id, "NoAnswer") for entry_id in pending})
    return BatchOutcome(sent=sent, not_sent=refused)
