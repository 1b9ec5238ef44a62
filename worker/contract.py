"""The message contract: what a transfer request is, and the one parser for it.

The producer builds bodies with :func:`encode_body`, the worker and the Lambda handler
read them with :func:`parse_body`; nobody else declares the shape.

Two layers of checking, on purpose:

* **Malformed** (:class:`~worker.errors.MalformedRequest`, dead-lettered): the body is
  not a JSON object, a field is missing or has the wrong JSON type, an id is not a
  positive int32 (it could not even be stored), the amount is not a finite plain
  decimal, or ``transfer_id`` is not a UUID.
* **Rejected** (:func:`rejection_reason`, recorded in ``transfer_results``): the request
  is well-formed but breaks a business rule (``same_account``, ``invalid_amount``).
  Recording these keeps one answer per ``transfer_id`` in one place, where the
  producer looks for it.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from worker.errors import MalformedRequest, describe_validation
from worker.outcomes import Reason

INT32_MAX = 2**31 - 1
AMOUNT_SCALE = 6
"""Decimal places kept by ``numeric(18,6)``, the DSQL default numeric type."""
AMOUNT_LIMIT = Decimal(10) ** (18 - AMOUNT_SCALE)
"""Amounts must be strictly below this to fit ``numeric(18,6)``."""
AMOUNT_QUANTUM = Decimal(1).scaleb(-AMOUNT_SCALE)
MAX_ENCODED_DIGITS = 10_000
"""Digits before or after the point that :func:`encode_body` writes out at most."""

_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def _amount_from_json(value: Any) -> Any:
    """Accept a JSON number or a plain decimal string ("10.50"); refuse the rest.

    Python's ``Decimal()`` would also take "1_000", " 5 ", "1e3" and "NaN"; a money
    field should not, so strings must be plain decimals.
    """
    if isinstance(value, bool):
        raise ValueError("amount must be a number or a decimal string, not a boolean")
    if isinstance(value, str):
        if not _PLAIN_DECIMAL.fullmatch(value):
            raise ValueError("amount string must be a plain decimal such as '10.50'")
        return Decimal(value)
    if isinstance(value, int | Decimal):
        return Decimal(value)
    raise ValueError("amount must be a number or a decimal string")


AccountId = Annotated[int, Field(strict=True, gt=0, le=INT32_MAX)]
Amount = Annotated[Decimal, BeforeValidator(_amount_from_json), Field(allow_inf_nan=False)]


class TransferRequest(BaseModel):
    """One transfer, as the SQS body carries it and the engine applies it.

    ``transfer_id`` is the idempotency key; a body may omit it, and :func:`parse_body`
    then uses the SQS message id. Unknown fields are ignored so producers can add
    tracing or metadata fields.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    transfer_id: UUID
    payer_id: AccountId
    payee_id: AccountId
    amount: Amount


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_body(body: str | bytes, message_id: str) -> TransferRequest:
    """Parse an SQS message body into a request, or raise :class:`MalformedRequest`.

    Without ``transfer_id`` the SQS ``message_id`` is the idempotency key, so a
    redelivery of the same message is still applied once. JSON numbers are parsed as
    ``Decimal`` (never through ``float``) so ``10.1`` stays exactly 10.1.
    """
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        data = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
        if isinstance(data, dict) and data.get("transfer_id") is None:
            data = {**data, "transfer_id": UUID(message_id)}
        return TransferRequest.model_validate(data)
    except (ValueError, ValidationError, RecursionError, ArithmeticError) as exc:
        # ValidationError, JSONDecodeError and UnicodeDecodeError are ValueErrors;
        # RecursionError comes from absurdly nested JSON, ArithmeticError from decimal
        # exponents beyond the decimal context (1e999999999999999999999).
        raise MalformedRequest(_describe(exc)) from None


def encode_body(
    payer_id: int, payee_id: int, amount: Decimal, transfer_id: UUID | None = None
) -> str:
    """The JSON body a producer sends; the amount travels as a decimal string.

    Raises :class:`ValueError` for an amount that is not finite or needs more than
    :data:`MAX_ENCODED_DIGITS` digits written out (``1E+999999999999`` would be a
    terabyte of zeros): no body could carry it.
    """
    if not amount.is_finite() or max(amount.adjusted(), -amount.as_tuple().exponent) > (  # type: ignore[operator]
        MAX_ENCODED_DIGITS
    ):
        raise ValueError(f"amount {amount} cannot be written as a plain decimal")
    # format "f", not str(): str(Decimal("1E+3")) is "1E+3", which parse_body refuses.
    body: dict[str, Any] = {
        "payer_id": payer_id,
        "payee_id": payee_id,
        "amount": format(amount, "f"),
    }
    if transfer_id is not None:
        body["transfer_id"] = str(transfer_id)
    return json.dumps(body, separators=(",", ":"))


def rejection_reason(request: TransferRequest) -> Reason | None:
    """Business-rule check done before the database is touched; None when valid."""
    if request.payer_id == request.payee_id:
        return Reason.SAME_ACCOUNT
    if not (request.amount > 0 and fits_numeric(request.amount)):
        return Reason.INVALID_AMOUNT
    return None


def fits_numeric(amount: Decimal) -> bool:
    """True when ``amount`` is stored exactly by ``numeric(18,6)``.

    The range check comes first: ``quantize`` is then bounded to 18 digits and cannot
    raise on absurd exponents such as ``1E+999999999``.
    """
    if not amount.is_finite() or amount.copy_abs() >= AMOUNT_LIMIT:
        return False
    return amount == amount.quantize(AMOUNT_QUANTUM)


def _describe(exc: BaseException) -> str:
    """A short, single-line reason fit for a DLQ message attribute (no input echo)."""
    return " ".join(_explain(exc).split())[:512]


def _explain(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return describe_validation(exc)[:512]
    if isinstance(exc, UnicodeDecodeError):
        return "body is not valid UTF-8"
    if isinstance(exc, json.JSONDecodeError):
        return f"body is not valid JSON ({exc.msg} at position {exc.pos})"
    if isinstance(exc, RecursionError):
        return "body is nested too deeply"
    return str(exc)[:512]
