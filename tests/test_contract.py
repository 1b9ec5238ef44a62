"""The message contract: parse_body never lets bad input through or crash, and the
business-rule check agrees with what numeric(18,6) can store."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from worker.contract import (
    AMOUNT_SCALE,
    INT32_MAX,
    TransferRequest,
    encode_body,
    fits_numeric,
    parse_body,
    rejection_reason,
)
from worker.errors import MalformedRequest
from worker.outcomes import Reason

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MESSAGE_ID = "5b0f3b4e-9d0c-4d7e-9a43-0d3c1f6f2a10"

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
valid_ids = st.integers(1, INT32_MAX)
number_literals = st.builds(
    lambda sign, digits, fraction, exponent: f"{sign}{digits}{fraction}{exponent}",
    st.sampled_from(["", "-"]),
    st.from_regex(r"(0|[1-9][0-9]{0,30})", fullmatch=True),
    st.sampled_from(["", ".5", ".000001", ".0000001", ".1234567890123456789"]),
    st.one_of(st.just(""), st.integers().map(lambda e: f"e{e}")),
)
"""JSON number literals, including exponents far outside any decimal context."""


def body_of(**fields: Any) -> str:
    """A JSON body with exactly these fields."""
    return json.dumps(fields)


def outcome(body: str | bytes, message_id: str = MESSAGE_ID) -> TransferRequest | str:
    """The parsed request, or the MalformedRequest message; any other exception escapes."""
    try:
        return parse_body(body, message_id)
    except MalformedRequest as exc:
        return str(exc)


def assert_contract_holds(body: str | bytes, message_id: str = MESSAGE_ID) -> None:
    """parse_body returns a valid request or raises MalformedRequest with a short line."""
    result = outcome(body, message_id)
    if isinstance(result, str):
        assert result
        assert "\n" not in result
        assert "\r" not in result
        assert len(result) <= 512
    else:
        assert isinstance(result, TransferRequest)
        assert 0 < result.payer_id <= INT32_MAX
        assert 0 < result.payee_id <= INT32_MAX
        assert result.amount.is_finite()


# --- nothing but a request or MalformedRequest -----------------------------------------


@FAST
@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_are_malformed(body: bytes) -> None:
    """Any bytes yield a TransferRequest or a one-line MalformedRequest, nothing else."""
    assert_contract_holds(body)


@FAST
@given(json_values, st.one_of(st.just(MESSAGE_ID), st.text(max_size=40)))
def test_arbitrary_json_parses_or_is_malformed(value: Any, message_id: str) -> None:
    """Any JSON document (and any message id) yields a request or MalformedRequest."""
    assert_contract_holds(json.dumps(value), message_id)


@FAST
@given(
    st.fixed_dictionaries(
        {
            "payer_id": json_values | valid_ids,
            "payee_id": json_values | valid_ids,
            "amount": json_values | st.decimals(allow_nan=False).map(str),
        },
        optional={"transfer_id": json_values | st.uuids().map(str), "trace": json_values},
    )
)
@example({"payer_id": 1, "payee_id": 2, "amount": "1", "transfer_id": "\n"})
def test_bodies_with_the_right_keys_and_random_values_parse_or_are_malformed(
    fields: dict[str, Any],
) -> None:
    """Right field names with values of any JSON type yield a request or MalformedRequest."""
    assert_contract_holds(json.dumps(fields))


@FAST
@given(number_literals)
@example("1e999999999999999999999")
@example("1e-999999999999999999999")
def test_any_json_number_as_amount_parses_or_is_malformed(literal: str) -> None:
    """A JSON number of any size or exponent as the amount is a request or malformed; the
    Decimal conversion never raises its own ArithmeticError out of parse_body."""
    assert_contract_holds(f'{{"payer_id":1,"payee_id":2,"amount":{literal}}}')


@pytest.mark.parametrize("depth", [10_000, 100_000])
def test_absurdly_nested_json_is_malformed(depth: int) -> None:
    """Deeply nested JSON is reported as malformed, not a RecursionError."""
    with pytest.raises(MalformedRequest):
        parse_body("[" * depth + "]" * depth, MESSAGE_ID)


# --- valid bodies ------------------------------------------------------------------------


@FAST
@given(
    valid_ids,
    valid_ids,
    st.decimals(allow_nan=False, allow_infinity=False),
    st.one_of(st.none(), st.uuids()),
)
@example(1, 2, Decimal("1E+3"), None)
def test_encoded_bodies_round_trip(
    payer_id: int, payee_id: int, amount: Decimal, transfer_id: uuid.UUID | None
) -> None:
    """parse_body(encode_body(...)) gives back exactly the request that was encoded."""
    request = parse_body(encode_body(payer_id, payee_id, amount, transfer_id), MESSAGE_ID)
    assert request.transfer_id == (transfer_id or uuid.UUID(MESSAGE_ID))
    assert (request.payer_id, request.payee_id) == (payer_id, payee_id)
    assert request.amount == amount


def test_the_message_id_is_the_transfer_id_when_none_is_given() -> None:
    """Without transfer_id the SQS message id becomes the idempotency key."""
    request = parse_body(body_of(payer_id=1, payee_id=2, amount="5"), MESSAGE_ID)
    assert request.transfer_id == uuid.UUID(MESSAGE_ID)


def test_transfer_id_wins_over_the_message_id() -> None:
    """An explicit transfer_id is used even when the message id is not a UUID."""
    transfer_id = uuid.uuid4()
    body = body_of(payer_id=1, payee_id=2, amount="5", transfer_id=str(transfer_id))
    assert parse_body(body, "not-a-uuid").transfer_id == transfer_id


def test_a_non_uuid_message_id_without_transfer_id_is_malformed() -> None:
    """No transfer_id and a message id that is not a UUID leaves no idempotency key."""
    with pytest.raises(MalformedRequest):
        parse_body(body_of(payer_id=1, payee_id=2, amount="5"), "msg-0001")


@pytest.mark.parametrize(
    ("literal", "expected"),
    [
        ("0.1", Decimal("0.1")),
        ("10.10", Decimal("10.10")),
        ("1.0000000000000000001", Decimal("1.0000000000000000001")),
        ("123456789012.123456", Decimal("123456789012.123456")),
        ("1e3", Decimal(1000)),
    ],
)
def test_json_number_amounts_keep_their_exact_decimal_value(
    literal: str, expected: Decimal
) -> None:
    """A JSON number amount is read as an exact Decimal, never rounded through float."""
    request = parse_body(f'{{"payer_id":1,"payee_id":2,"amount":{literal}}}', MESSAGE_ID)
    assert request.amount == expected
    assert request.amount.as_tuple() == Decimal(literal).as_tuple()


def test_an_unrepresentable_amount_is_parsed_and_then_rejected() -> None:
    """1.0000000000000000001 is kept as is and rejected as invalid_amount, not rounded to 1."""
    request = parse_body('{"payer_id":1,"payee_id":2,"amount":1.0000000000000000001}', MESSAGE_ID)
    assert request.amount != 1
    assert rejection_reason(request) is Reason.INVALID_AMOUNT


def test_unknown_fields_are_ignored() -> None:
    """Extra fields (tracing, metadata) do not make a body malformed."""
    body = body_of(payer_id=1, payee_id=2, amount="5", trace={"id": "x"}, note=None)
    request = parse_body(body, MESSAGE_ID)
    assert (request.payer_id, request.payee_id, request.amount) == (1, 2, Decimal(5))


@pytest.mark.parametrize(
    "value", ["1", "7", 1.0, 1.5, True, False, None, [1], {"id": 1}, 0, -1, 2**31, 2**63]
)
@pytest.mark.parametrize("field", ["payer_id", "payee_id"])
def test_account_ids_must_be_positive_int32_json_integers(field: str, value: Any) -> None:
    """Ids that are strings, floats, booleans, null, containers, <= 0 or > 2**31-1 are
    malformed."""
    fields: dict[str, Any] = {"payer_id": 1, "payee_id": 2, "amount": "5", field: value}
    with pytest.raises(MalformedRequest, match=field):
        parse_body(body_of(**fields), MESSAGE_ID)


def test_the_largest_int32_id_is_accepted() -> None:
    """2**31-1 is a valid account id (the boundary of the integer column)."""
    request = parse_body(body_of(payer_id=INT32_MAX, payee_id=1, amount="5"), MESSAGE_ID)
    assert request.payer_id == INT32_MAX


@pytest.mark.parametrize(
    "body",
    [
        '{"payer_id":1,"payee_id":2,"amount":"1e3"}',
        '{"payer_id":1,"payee_id":2,"amount":"NaN"}',
        '{"payer_id":1,"payee_id":2,"amount":"Infinity"}',
        '{"payer_id":1,"payee_id":2,"amount":" 5 "}',
        '{"payer_id":1,"payee_id":2,"amount":"1_000"}',
        '{"payer_id":1,"payee_id":2,"amount":"5."}',
        '{"payer_id":1,"payee_id":2,"amount":""}',
        '{"payer_id":1,"payee_id":2,"amount":true}',
        '{"payer_id":1,"payee_id":2,"amount":null}',
        '{"payer_id":1,"payee_id":2,"amount":[5]}',
        '{"payer_id":1,"payee_id":2}',
    ],
)
def test_amounts_that_are_not_plain_decimals_are_malformed(body: str) -> None:
    """Strings other than plain decimals, booleans, null, NaN/Infinity and a missing
    amount are malformed."""
    with pytest.raises(MalformedRequest, match="amount"):
        parse_body(body, MESSAGE_ID)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b"5",
        b'"text"',
        b"null",
        b"{",
        b'{"payer_id":1,"payee_id":2',
        b'{"payer_id":1,"payee_id":2,"amount":NaN}',
        b'{"payer_id":1,"payee_id":2,"amount":-Infinity}',
    ],
)
def test_bodies_that_are_not_json_objects_are_malformed(body: bytes) -> None:
    """Empty, non-UTF-8, non-object, truncated bodies and bodies using JSON's non-standard
    NaN/Infinity constants are malformed."""
    with pytest.raises(MalformedRequest):
        parse_body(body, MESSAGE_ID)


# --- business rules ------------------------------------------------------------------------


def request_for(payer_id: int, payee_id: int, amount: str) -> TransferRequest:
    """A request as parse_body would build it."""
    return TransferRequest(
        transfer_id=uuid.uuid4(), payer_id=payer_id, payee_id=payee_id, amount=Decimal(amount)
    )


@pytest.mark.parametrize("amount", ["5", "-5", "0", "1.0000001"])
def test_paying_yourself_is_rejected_as_same_account(amount: str) -> None:
    """payer_id == payee_id is same_account, whatever the amount."""
    assert rejection_reason(request_for(3, 3, amount)) is Reason.SAME_ACCOUNT


@pytest.mark.parametrize(
    "amount",
    [
        "0",
        "-0",
        "-0.000001",
        "-5",
        "0.0000001",
        "1.1234567",
        "1E+12",
        "1000000000000",
    ],
)
def test_amounts_numeric_18_6_cannot_hold_or_not_positive_are_invalid(amount: str) -> None:
    """Amounts <= 0, with more than 6 decimal places, or >= 10**12 are invalid_amount."""
    assert rejection_reason(request_for(1, 2, amount)) is Reason.INVALID_AMOUNT


@pytest.mark.parametrize(
    "amount", ["0.000001", "1", "10.50", "1.100000000", "999999999999.999999", "1E+3"]
)
def test_positive_amounts_numeric_18_6_holds_are_valid(amount: str) -> None:
    """Positive amounts with at most 6 significant decimal places below 10**12 are valid."""
    assert rejection_reason(request_for(1, 2, amount)) is None


def stored_exactly(x: Decimal) -> bool:
    """The oracle, computed differently from fits_numeric: digits and exponent only."""
    if not x.is_finite():
        return False
    _sign, digits, exponent = x.as_tuple()
    assert isinstance(exponent, int)
    significant = list(digits)
    while len(significant) > 1 and significant[-1] == 0:
        significant.pop()
        exponent += 1
    if significant == [0]:
        return True
    if exponent < -AMOUNT_SCALE:
        return False
    integer_digits = len(significant) + exponent
    return integer_digits <= 12


decimals_near_the_limits = st.builds(
    lambda sign, coefficient, exponent: Decimal(
        (sign, tuple(map(int, str(coefficient))), exponent)
    ),
    st.sampled_from([0, 1]),
    st.integers(0, 10**20),
    st.integers(-12, 14),
)


@FAST
@given(st.decimals() | decimals_near_the_limits)
@example(Decimal("999999999999.999999"))
@example(Decimal("1000000000000"))
@example(Decimal("0.0000001"))
@example(Decimal("-999999999999.9999990"))
@example(Decimal("1E+999999999"))
def test_fits_numeric_iff_six_places_and_below_10_to_the_12(x: Decimal) -> None:
    """fits_numeric(x) holds exactly when x has at most 6 decimal places and |x| < 10**12."""
    assert fits_numeric(x) is stored_exactly(x)


@pytest.mark.parametrize("amount", ["1E+999999999999", "1E-20000", "NaN", "Infinity"])
def test_encode_body_refuses_amounts_no_body_could_carry(amount: str) -> None:
    """A non-finite amount, or one whose plain decimal form would run to gigabytes, is a
    ValueError at once (not a MemoryError, not a body the worker would dead-letter)."""
    with pytest.raises(ValueError, match="cannot be written as a plain decimal"):
        encode_body(1, 2, Decimal(amount))
