"""``producer.TransferClient``: the Python API for producers, on moto's SQS over HTTP
and a real PostgreSQL (botocore's Stubber where an exact SQS answer is needed)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, cast

import boto3
import pytest
from botocore.stub import Stubber

from producer import InvalidTransfer, Transfer, TransferClient, TransferNotSent
from sandbox.sqs import LocalSqs, Queues
from tests.support import running_worker
from tests.test_send_load import RefusingClient, drain, open_accounts
from worker.contract import encode_body, parse_body
from worker.settings import Settings


def test_send_returns_a_new_id_and_queues_exactly_the_contract_body(
    local_sqs: LocalSqs, queues: Queues
) -> None:
    """Without a transfer id the client makes a uuid4, returns it, and the body is
    encode_body(...) with that id."""
    client = TransferClient(local_sqs.client(), queues.queue_url)
    transfer_id = client.send(3, 4, "2.50")
    assert transfer_id.version == 4
    (message,) = drain(local_sqs.client(), queues.queue_url)
    assert message["Body"] == encode_body(3, 4, Decimal("2.50"), transfer_id)


@pytest.mark.parametrize(
    ("payer", "payee", "amount"),
    [(0, 2, "1"), (1, 2**31, "1"), (1, 2, "ten"), (1, 2, "NaN"), (1, 2, "1e999999999999")],
)
def test_what_the_worker_would_dead_letter_is_refused_and_not_sent(
    local_sqs: LocalSqs, queues: Queues, payer: int, payee: int, amount: str
) -> None:
    """Ids out of int32 range and non-decimal amounts raise InvalidTransfer; the queue
    stays empty."""
    client = TransferClient(local_sqs.client(), queues.queue_url)
    with pytest.raises(InvalidTransfer, match="not a valid transfer"):
        client.send(payer, payee, amount)
    assert drain(local_sqs.client(), queues.queue_url) == []


def test_send_many_sends_batches_of_ten_and_retries_refused_entries(
    local_sqs: LocalSqs, queues: Queues
) -> None:
    """25 transfers go out in 3 calls; an entry SQS fails once (not the sender's fault)
    is resent and arrives; one failed by the sender's fault is reported, never queued."""
    transfers = [Transfer(1, 2, Decimal(i + 1), uuid.uuid4()) for i in range(25)]
    flaky, malformed = transfers[3].transfer_id, transfers[17].transfer_id
    assert flaky is not None
    assert malformed is not None

    def refuse(entry_id: str, attempt: int) -> bool | None:
        if entry_id == malformed.hex:
            return True
        return False if entry_id == flaky.hex and attempt == 1 else None

    sqs = RefusingClient(local_sqs.client(), refuse)
    calls: list[int] = []
    client = TransferClient(cast(Any, sqs), queues.queue_url, sleep=lambda _s: None)
    report = client.send_many(iter(transfers), on_sent=calls.append)
    assert report.not_sent == {malformed: "InvalidParameterValue"}
    assert len(report.sent) == 24
    assert report.requested == 25
    assert sqs.attempts[flaky.hex] == 2
    assert sum(calls) == 24
    queued = {
        parse_body(m["Body"], "").transfer_id for m in drain(local_sqs.client(), queues.queue_url)
    }
    assert queued == {t.transfer_id for t in transfers} - {malformed}


def test_a_partial_failure_answer_exactly_as_sqs_words_it() -> None:
    """SQS's own SendMessageBatch answer with one Successful and one Failed
    (SenderFault false) entry: the failed one is resent alone, then given up with its
    code after the retries, and send() raises TransferNotSent for it."""
    sqs = boto3.client(
        "sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/transfers"
    a, b = uuid.uuid4(), uuid.uuid4()
    with Stubber(sqs) as stub:
        stub.add_response(
            "send_message_batch",
            {
                "Successful": [{"Id": a.hex, "MessageId": "m1", "MD5OfMessageBody": "x" * 32}],
                "Failed": [{"Id": b.hex, "SenderFault": False, "Code": "InternalError"}],
            },
        )
        for _ in range(2):  # the retries: only b, each time refused again
            stub.add_response(
                "send_message_batch",
                {
                    "Successful": [],
                    "Failed": [{"Id": b.hex, "SenderFault": False, "Code": "ServiceUnavailable"}],
                },
                {"QueueUrl": url, "Entries": [stub_entry(b)]},
            )
        client = TransferClient(sqs, url, entry_retries=2, sleep=lambda _s: None)
        report = client.send_many([Transfer(1, 2, 1, a), Transfer(1, 2, 1, b)])
        stub.assert_no_pending_responses()
    assert report.sent == [a]
    assert report.not_sent == {b: "ServiceUnavailable"}

    with Stubber(sqs) as stub:
        stub.add_response(
            "send_message_batch",
            {
                "Successful": [],
                "Failed": [{"Id": b.hex, "SenderFault": True, "Code": "InvalidParameterValue"}],
            },
        )
        client = TransferClient(sqs, url, sleep=lambda _s: None)
        with pytest.raises(TransferNotSent, match="InvalidParameterValue") as refused:
            client.send(1, 2, 1, transfer_id=b)
    assert refused.value.transfer_id == b


def stub_entry(transfer_id: uuid.UUID) -> dict[str, str]:
    """The batch entry the client sends for Transfer(1, 2, 1, transfer_id)."""
    return {"Id": transfer_id.hex, "MessageBody": encode_body(1, 2, Decimal(1), transfer_id)}


def test_on_a_fifo_queue_the_payer_is_the_group_and_the_id_the_dedup_id(
    local_sqs: LocalSqs,
) -> None:
    """send and send_many set MessageGroupId = payer and MessageDeduplicationId =
    transfer id; resending an id within SQS's window is dropped by the queue."""
    fifo = local_sqs.create_queues(f"c-{uuid.uuid4().hex[:12]}", fifo=True)
    client = TransferClient(local_sqs.client(), fifo.queue_url)
    first = client.send(7, 8, 1)
    again = client.send(7, 8, 1, transfer_id=first)
    assert again == first
    client.send_many(Transfer(payer, 9, 1) for payer in (1, 2, 3))
    messages = drain(local_sqs.client(), fifo.queue_url)
    assert len(messages) == 4  # the resend of `first` was deduplicated
    for message in messages:
        request = parse_body(message["Body"], "")
        assert message["Attributes"]["MessageGroupId"] == str(request.payer_id)
        assert message["Attributes"]["MessageDeduplicationId"] == str(request.transfer_id)


def test_result_and_results_read_the_outcomes_a_worker_recorded(
    local_sqs: LocalSqs, queues: Queues, settings: Settings, database_url: str
) -> None:
    """result(id, wait=...) polls until the worker recorded the outcome; results(ids)
    returns every id that has one; an unknown id has none."""
    open_accounts(database_url, 3, "10")
    worker = settings.model_copy(update={"queue_url": queues.queue_url, "receive_wait_s": 1})
    with TransferClient(local_sqs.client(), queues.queue_url, settings=settings) as client:
        assert client.result(uuid.uuid4()) is None
        with running_worker(worker):
            committed = client.send(1, 2, "4")
            outcome = client.result(committed, wait=20)
            rejected = client.send_many([Transfer(2, 3, "1000"), Transfer(3, 1, "1")]).sent
            found = client.results(rejected, wait=20)
        unknown = uuid.uuid4()
        assert client.results([*rejected, unknown]).keys() == set(rejected)  # no wait
    assert outcome is not None
    assert (outcome.committed, outcome.payer_balance) == (True, Decimal(6))
    assert set(found) == set(rejected)
    assert sorted(r.status.value for r in found.values()) == ["committed", "rejected"]


def test_reading_outcomes_without_database_settings_says_so(
    local_sqs: LocalSqs, queues: Queues
) -> None:
    """A send-only client asked for an outcome raises a clear error."""
    with pytest.raises(RuntimeError, match="needs database settings"):
        TransferClient(local_sqs.client(), queues.queue_url).result(uuid.uuid4())
