"""Batched acknowledgements and dead-lettering against moto in-process (mock_aws)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from worker.dispatch import Message
from worker.transport.sqs import Acknowledger, DeadLetters, queue_depth


@pytest.fixture
def sqs() -> Iterator[Any]:
    """An in-process mocked SQS client, with every API call counted in ``calls``."""
    with mock_aws():
        client = boto3.client(
            "sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        client.calls = Counter()

        def count(event_name: str, **_: Any) -> None:
            client.calls[event_name.rsplit(".", 1)[-1]] += 1

        client.meta.events.register("before-call.sqs", count)
        yield client


def received(client: Any, url: str, n: int) -> list[Message]:
    client.send_message_batch(
        QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(n)]
    )
    messages: list[Message] = []
    while len(messages) < n:
        raw = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        messages.extend(Message.from_sqs(m) for m in raw)
    return messages


def test_deletes_go_out_in_batches_of_ten(sqs: Any) -> None:
    """25 deletes from the acknowledger cost 3 DeleteMessageBatch calls, none single."""
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    messages = [m for _ in range(3) for m in received(sqs, url, 10)][:25]
    acks = Acknowledger(sqs, url, linger_s=0.2, senders=1)
    for message in messages:
        acks.delete(message)
    acks.close()
    assert sqs.calls["DeleteMessageBatch"] == 3
    assert sqs.calls["DeleteMessage"] == 0
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    # 30 received, 25 deleted: the 5 others are still in flight.
    assert attrs["ApproximateNumberOfMessages"] == "0"
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "5"


def test_visibility_zero_makes_messages_receivable_again(sqs: Any) -> None:
    """Released messages come back at once (shutdown hands unstarted work back)."""
    url = sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    messages = received(sqs, url, 4)
    acks = Acknowledger(sqs, url)
    for message in messages:
        acks.change_visibility(message, 0)
    acks.close()
    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert sorted(m["Body"] for m in again) == ["m0", "m1", "m2", "m3"]
    assert sqs.calls["ChangeMessageVisibilityBatch"] == 1


def test_dead_letter_keeps_the_body_and_attaches_the_error(sqs: Any) -> None:
    """The DLQ copy has the original body and error/source attributes; FIFO DLQs get
    a group and a dedup id."""
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    for name in ("dlq", "dlq.fifo"):
        attrs = {"FifoQueue": "true"} if name.endswith(".fifo") else {}
        dlq = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
        message = received(sqs, url, 1)[0]
        DeadLetters(sqs, dlq, url).send(message, "amount: bad\\nthing")
        dead = sqs.receive_message(
            QueueUrl=dlq, MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"]
        )["Messages"][0]
        assert dead["Body"] == message.body
        assert dead["MessageAttributes"]["error"]["StringValue"] == "amount: bad\\nthing"
        assert dead["MessageAttributes"]["source_message_id"]["StringValue"] == message.message_id
        assert dead["MessageAttributes"]["source_queue"]["StringValue"] == url
        if name.endswith(".fifo"):
            assert dead["Attributes"]["MessageDeduplicationId"] == message.message_id


def test_failed_batch_call_is_logged_not_raised(sqs: Any) -> None:
    """A delete batch against a missing queue does not kill the acknowledger thread."""
    acks = Acknowledger(sqs, "https://sqs.us-east-1.amazonaws.com/123456789012/missing")
    acks.delete(Message(message_id="m", body="", receipt_handle="r"))
    time.sleep(0.1)
    acks.delete(Message(message_id="n", body="", receipt_handle="s"))
    acks.close()
    assert sqs.calls["DeleteMessageBatch"] == 2


def test_several_senders_deliver_every_acknowledgement(sqs: Any) -> None:
    """With four sender threads every delete still happens, in full batches under load."""
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    messages = [m for _ in range(10) for m in received(sqs, url, 10)]
    acks = Acknowledger(sqs, url, senders=4)
    for message in messages:
        acks.delete(message)
    acks.close()
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    assert attrs["ApproximateNumberOfMessages"] == "0"
    assert acks.pending == 0
    assert sqs.calls["DeleteMessage"] == 0


class Flaky:
    """An SQS client whose batch calls fail while ``down`` (as during an outage), and
    whose entries named in ``entry_faults`` fail once with the given SenderFault."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.down = True
        self.refused = 0
        self.entry_faults: dict[str, bool] = {}

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.client, name)
        if not name.endswith("_batch"):
            return real

        def call(**kwargs: Any) -> Any:
            if self.down:
                self.refused += 1
                raise ConnectionError("sqs unreachable")
            entries = kwargs["Entries"]
            failed = [
                {"Id": e["Id"], "SenderFault": self.entry_faults.pop(e["ReceiptHandle"]),
                 "Code": "X", "Message": "injected"}
                for e in entries if e["ReceiptHandle"] in self.entry_faults
            ]  # fmt: skip
            ok = [e for e in entries if e["Id"] not in {f["Id"] for f in failed}]
            response = real(QueueUrl=kwargs["QueueUrl"], Entries=ok) if ok else {}
            return {**response, "Failed": failed}

        return call


def in_flight(client: Any, url: str) -> int:
    return queue_depth(client, url).in_flight


def test_acknowledgements_that_could_not_be_sent_are_retried_not_dropped(sqs: Any) -> None:
    """While SQS refuses every call the deletes wait and count as pending; once it
    answers again every one of them gets through."""
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    messages = received(sqs, url, 10) + received(sqs, url, 5)
    flaky = Flaky(sqs)
    acks = Acknowledger(flaky, url, linger_s=0.01, senders=2, backoff_cap_s=0.2)
    for message in messages:
        acks.delete(message)
    deadline = time.monotonic() + 5
    while flaky.refused < 4:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert acks.pending == 15
    assert in_flight(sqs, url) == 15
    flaky.down = False
    while acks.pending:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    acks.close()
    assert in_flight(sqs, url) == 0


def test_server_faults_on_an_entry_are_retried_sender_faults_are_not(sqs: Any) -> None:
    """An entry failed by SQS itself (SenderFault false) is sent again; one refused as
    the sender's fault (an invalid receipt handle) can never succeed and is dropped."""
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    first, second = received(sqs, url, 2)
    flaky = Flaky(sqs)
    flaky.down = False
    flaky.entry_faults = {first.receipt_handle: False, second.receipt_handle: True}
    acks = Acknowledger(flaky, url, linger_s=0.01, senders=1, backoff_cap_s=0.1)
    acks.delete(first)
    acks.delete(second)
    deadline = time.monotonic() + 5
    while acks.pending or in_flight(sqs, url) > 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    acks.close()
    left = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0, WaitTimeSeconds=0)
    assert in_flight(sqs, url) == 1  # the sender-fault one was never deleted
    assert "Messages" not in left or len(left["Messages"]) <= 1
