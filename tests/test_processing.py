"""The per-message step shared by the worker and the Lambda: any input, never a crash."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer.accounts import reset_accounts
from worker.contract import encode_body
from worker.engine import TransferEngine
from worker.metrics import Metrics
from worker.processing import Disposition, Handled, Message, Processor
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


def processor(engine: TransferEngine) -> Processor:
    return Processor(engine, Metrics(emit=lambda _line: None))


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
    handled = processor(engine).process(Message(str(uuid.uuid4()), body, "receipt"))
    assert isinstance(handled, Handled)
    if handled.disposition is Disposition.DEAD_LETTER:
        assert handled.error
        assert "\n" not in handled.error


def test_valid_body_is_applied_and_acknowledged(funded: Settings, engine: TransferEngine) -> None:
    """A well-formed transfer is applied once and acknowledged with its result."""
    body = encode_body(1, 2, Decimal("2.50"), uuid.uuid4())
    handled = processor(engine).process(Message("m-1", body, "r-1"))
    assert handled.disposition is Disposition.ACK
    assert handled.result is not None
    assert handled.result.payer_balance == Decimal("97.5")


def test_unexpected_engine_error_leaves_the_message_for_retry(funded: Settings) -> None:
    """An exception nobody planned for becomes RETRY, not a dead worker thread."""

    class Broken(TransferEngine):
        def __init__(self) -> None:
            pass

        def apply(self, *args: object, **kwargs: object) -> None:  # type: ignore[override]
            raise ZeroDivisionError("surprise")

    body = encode_body(1, 2, Decimal(1), uuid.uuid4())
    handled = processor(Broken()).process(Message("m-2", body, "r-2"))
    assert handled.disposition is Disposition.RETRY
    assert handled.error is not None
    assert "ZeroDivisionError" in handled.error
