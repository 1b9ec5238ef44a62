"""``python -m worker explain``: the query plans of a transfer and of the history query.

Each statement of :mod:`worker.engine.sql` (the one-statement transfer, then the
pipelined variant's) runs under ``EXPLAIN ANALYZE`` with sample parameters (the two
lowest account ids, a small amount, a fresh ``transfer_id``), followed by the
account-history query. ANALYZE really
executes the statements, so the money moves and a result row is written, but all of
it happens in one transaction that is always rolled back: nothing changes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, LiteralString

import psycopg

from worker.contract import TransferRequest
from worker.engine.attempt import params
from worker.engine.sql import MOVE, RECORD, SELECT_RESULT, TRANSFER
from worker.errors import NotEnoughAccounts
from worker.results import HISTORY

SAMPLE_AMOUNT = Decimal("0.01")
HISTORY_LIMIT = 20


@dataclass(frozen=True)
class Plan:
    """One statement (named after its constant) and its ``EXPLAIN ANALYZE`` output."""

    name: str
    statement: str
    lines: tuple[str, ...]


STATEMENTS: tuple[tuple[str, LiteralString, str], ...] = (
    # (name, statement, which sample transfer it runs for)
    ("TRANSFER", TRANSFER, "single"),
    ("SELECT_RESULT", SELECT_RESULT, "pipelined"),
    ("RECORD", RECORD, "pipelined"),
    ("MOVE", MOVE, "pipelined"),
    ("HISTORY", HISTORY, "single"),
)
"""Both engine variants' statements in the order they run, then the history query."""


def explain_transfer(conn: psycopg.Connection[Any]) -> list[Plan]:
    """Plans of every statement in :data:`STATEMENTS`, all rolled back.

    ``conn`` must not be in autocommit mode (each statement would commit on its own).
    Raises :class:`NotEnoughAccounts` when ``accounts`` has fewer than two rows.
    """
    if conn.autocommit:
        raise ValueError("explain needs a transaction; pass a connection without autocommit")
    try:
        ids = [row[0] for row in conn.execute("SELECT id FROM accounts ORDER BY id LIMIT 2")]
        if len(ids) < 2:
            raise NotEnoughAccounts("explain needs at least two accounts; run producer setup")
        # Two sample transfers: the pipelined statements must not find the row the
        # single statement just wrote.
        samples = {
            variant: sample_parameters(payer_id=ids[0], payee_id=ids[1])
            for variant in ("single", "pipelined")
        }
        plans = []
        for name, statement, variant in STATEMENTS:
            cur = conn.execute("EXPLAIN ANALYZE " + statement, samples[variant])
            lines = tuple(str(row[0]) for row in cur)
            plans.append(Plan(name, " ".join(statement.split()), lines))
        return plans
    finally:
        conn.rollback()


def sample_parameters(*, payer_id: int, payee_id: int) -> dict[str, Any]:
    """Parameters for every statement: a committed transfer of :data:`SAMPLE_AMOUNT`,
    and the history of its payer."""
    request = TransferRequest(
        transfer_id=uuid.uuid4(), payer_id=payer_id, payee_id=payee_id, amount=SAMPLE_AMOUNT
    )
    return {
        **params(request, None, None, 1),
        "attempt_id": uuid.uuid4(),
        "account_id": payer_id,
        "limit": HISTORY_LIMIT,
    }
