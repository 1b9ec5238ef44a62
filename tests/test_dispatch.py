"""The dispatch step shared by the consumer and the Lambda: any input, never a crash."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer.accounts import reset_accounts
from worker.contract import TransferRequest, encode_body
from worker.dispatch import Action, Dispatcher, Message, Metrics, Verdict
from worker.engine import TransferEngine
from worker.errors import DatabaseUnavailable
from worker.outcomes import TransferResult
from worker.redelivery import RedeliverySchedule
from worker.settings import Settings

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
near_miss = st.fixed_dictionaries(
    {"payer_id": json_values, "payee_id": json_values, "amount": json_values},
    optional={"transfer_id": json_values},
)


@pytest.fixture
def funded(settings: Settings) -> Settings:
    """Accounts 1..5 with 100 each."""
    reset_accounts(settings, 5, Decimal(100))
    return settings


def dispatcher(engine: TransferEngine) -> Dispatcher:
    return Dispatcher(engine, Metrics(emit=lambda _line: None), RedeliverySchedule())


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.text(max_size=200)
    | near_miss.map(str)
    | st.binary(max_size=100).map(lambda b: b.decode("latin-1"))
)
def test_any_body_gets_a_decision_and_never_raises(
    funded: Settings, engine: TransferEngine, body: str
) -> None:
    """Whatever the body, processing returns ack, retry or dead-letter; nothing escapes."""
    verdict = dispatcher(engine).process(Message(str(uuid.uuid4()), body, "receipt"))
    assert isinstance(verdict, Verdict)
    if verdict.action is Action.DEAD_LETTER:
        assert verdict.error
        assert "\n" not in verdict.error


def test_valid_body_is_applied_and_acknowledged(funded: Settings, engine: TransferEngine) -> None:
    """A well-formed transfer is applied once and acknowledged with its result."""
    body = encode_body(1, 2, Decimal("2.50"), uuid.uuid4())
    verdict = dispatcher(engine).process(Message("m-1", body, "r-1"))
    assert verdict.action is Action.ACK
    assert verdict.result is not None
    assert verdict.result.payer_balance == Decimal("97.5")


def test_unexpected_engine_error_leaves_the_message_for_retry(funded: Settings) -> None:
    """An exception nobody planned for becomes RETRY, not a dead worker thread."""

    class Broken(TransferEngine):
        def __init__(self) -> None:
            pass

        def apply(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
            raise ZeroDivisionError("surprise")

    body = encode_body(1, 2, Decimal(1), uuid.uuid4())
    verdict = dispatcher(Broken()).process(Message("m-2", body, "r-2"))
    assert verdict.action is Action.RETRY
    assert verdict.error is not None
    assert "ZeroDivisionError" in verdict.error


def test_each_transfer_logs_one_line_with_its_ids_bound(
    funded: Settings, engine: TransferEngine
) -> None:
    """The README's promise: one ``transfer`` line per transfer, carrying the transfer
    and message ids (bound once for the whole message) and what happened."""
    tid = uuid.uuid4()
    body = encode_body(1, 2, Decimal(1), tid)
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        dispatcher(engine).process(Message("m-9", body, "r-9"))
    lines = [line for line in logs if line["event"] == "transfer"]
    assert len(lines) == 1
    (line,) = lines
    assert line["transfer_id"] == str(tid)
    assert line["message_id"] == "m-9"
    assert line["outcome"] == "committed"
    assert line["log_level"] == "info"
    assert {"reason", "duplicate", "attempts", "receive_count", "transaction_ms"} <= set(line)
    assert structlog.contextvars.get_contextvars() == {}  # nothing leaks to the next message


def test_a_failed_message_comes_back_on_the_redelivery_schedule(funded: Settings) -> None:
    """RETRY carries the schedule's delay for the receive count it failed on."""

    class Unavailable(TransferEngine):
        def __init__(self) -> None:
            pass

        def apply(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
            raise DatabaseUnavailable("down", attempts=2, elapsed_s=1.0)

    body = encode_body(1, 2, Decimal(1), uuid.uuid4())
    third = Message("m-3", body, "r-3", receive_count=3)
    verdict = dispatcher(Unavailable()).process(third)
    assert verdict.action is Action.RETRY
    assert verdict.delay_s == RedeliverySchedule().delay_s(3) == 8


def test_fifo_rule_holds_back_the_rest_of_a_failed_group(
    funded: Settings, engine: TransferEngine
) -> None:
    """After a message of group g fails, later ones of g are handed back unapplied; a
    fresh receive of g restarts it; other groups are not affected."""
    applied: list[int] = []
    real_apply = engine.apply

    class FailFirst(TransferEngine):
        def __init__(self) -> None:
            pass

        def apply(self, request: TransferRequest, **kwargs: Any) -> TransferResult:
            applied.append(request.payer_id)
            if len(applied) == 1:
                raise DatabaseUnavailable("down", attempts=1, elapsed_s=0.1)
            return real_apply(request, **kwargs)

    step = dispatcher(FailFirst())

    def message(payer: int, group: str) -> Message:
        return Message(str(uuid.uuid4()), encode_body(payer, 9, Decimal(1), uuid.uuid4()),
                       "r", group_id=group)  # fmt: skip

    first, later, other = message(1, "g"), message(2, "g"), message(3, "h")
    jobs = [step.admit(m) for m in (first, later, other)]
    verdicts = []
    for _ in jobs:
        slot = step.take(timeout=1)
        assert slot is not None
        verdicts.append(step.run(slot))
    assert [v.action for v in verdicts] == [Action.RETRY, Action.RETRY, Action.ACK]
    assert verdicts[1].error == "FIFO group held back"
    assert applied == [1, 3]
    assert step.process(message(4, "g")).action is Action.ACK  # a fresh receive restarts g
    assert applied == [1, 3, 4]
