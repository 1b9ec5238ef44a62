"""What ``producer balance`` and ``producer history`` read: one account's balance and
its latest results.

The history statement and the row mapping are :mod:`worker.results`'s (where
``python -m worker explain`` also finds the history query to show its plan); the
balance statement is here. Parameters use the ``%(name)s`` style.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, LiteralString

import psycopg

from worker.outcomes import TransferResult
from worker.results import HISTORY, result_from_row

BALANCE: LiteralString = "SELECT balance FROM accounts WHERE id = %(account_id)s"


def account_balance(conn: psycopg.Connection[Any], account_id: int) -> Decimal | None:
    """The balance of ``account_id``, or None when there is no such account."""
    row = conn.execute(BALANCE, {"account_id": account_id}).fetchone()
    return None if row is None else Decimal(row[0])


def account_history(
    conn: psycopg.Connection[Any], account_id: int, limit: int
) -> list[TransferResult]:
    """The latest ``limit`` results with ``account_id`` as payer or payee, newest first."""
    rows = conn.execute(HISTORY, {"account_id": account_id, "limit": limit}).fetchall()
    return [result_from_row(row) for row in rows]
