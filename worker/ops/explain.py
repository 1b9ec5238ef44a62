"""``python -m worker explain``: the query plans of a transfer and of the history query.

Each statement of :mod:`worker.engine` runs under ``EXPLAIN ANALYZE`` with sample
parameters (the two lowest account ids, a small amount, a fresh ``transfer_id``), in
the engine's order, followed by the producer's account-history query. ANALYZE really
executes the statements, so the money moves and a result row is written, but all of
it happens in one transaction that is always rolled back: nothing changes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, LiteralString

import psycopg

from worker.engine.sql import CREDIT, DEBIT, INSERT_RESULT, SELECT_RESULT
from worker.errors import NotEnoughAccounts
from worker.outcomes import Status
from worker.results import HISTORY

SAMPLE_AMOUNT = Decimal("0.01")
HISTORY_LIMIT = 20


@dataclass(frozen=True)
class Plan:
    """One statement (named after its constant) and its ``EXPLAIN ANALYZE`` output."""

    name: str
    statement: str
    lines: tuple[str, ...]


def explain_transfer(conn: psycopg.Connection[Any]) -> list[Plan]:
    """Plans of SELECT_RESULT, DEBIT, CREDIT, INSERT_RESULT and HISTORY, rolled back.

    ``conn`` must not be in autocommit mode (each statement would commit on its own).
    Raises :class:`NotEnoughAccounts` when ``accounts`` has fewer than two rows.
    """

    if conn.autocommit:
        raise ValueError("explain needs a transaction; pass a connection without autocommit")
    statements: list[tuple[str, LiteralString]] = [
        ("SELECT_RESULT", SELECT_RESULT),
        ("DEBIT", DEBIT),
        ("CREDIT", CREDIT),
        ("INSERT_RESULT", INSERT_RESULT),
        ("HISTORY", HISTORY),
    ]
    try:
        ids = [row[0] for row in conn.execute("SELECT id FROM accounts ORDER BY id LIMIT 2")]
        if len(ids) < 2:
            raise NotEnoughAccounts("explain needs at least two accounts; run producer setup")
        params = sample_parameters(payer_id=ids[0], payee_id=ids[1])
        plans = []
        for name, statement in statements:
            cur = conn.execute("EXPLAIN ANALYZE " + statement, params)
            lines = tuple(str(row[0]) for row in cur)
            plans.append(Plan(name, " ".join(statement.split()), lines))
        return plans
    finally:
        conn.rollback()


def sample_parameters(*, payer_id: int, payee_id: int) -> dict[str, Any]:
    """Parameters for every statement: a committed transfer of :data:`SAMPLE_AMOUNT`.

    ``payer_id`` is the lower id, so DEBIT runs before CREDIT as in the engine.
    """
    return {
        "transfer_id": uuid.uuid4(),
        "payer_id": payer_id,
        "payee_id": payee_id,
        "amount": SAMPLE_AMOUNT,
        "status": Status.COMMITTED.value,
        "reason": None,
        "payer_balance": None,
        "attempts": 1,
        "transaction_ms": 0.0,
        "enqueued_at": None,
        "completed_at": datetime.now(UTC),
        "account_id": payer_id,
        "limit": HISTORY_LIMIT,
    }
