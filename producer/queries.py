"""The producer's read-only SQL, and the small functions that run it.

The statements are named constants so that ``python -m worker explain`` can show their
plans and a reader finds every query the command line sends in one place. Parameters
use the ``%(name)s`` style throughout.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any, LiteralString

import psycopg

from producer.stats import StatsRow
from worker.engine import result_from_row
from worker.history import HISTORY
from worker.outcomes import TransferResult

BALANCE: LiteralString = "SELECT balance FROM accounts WHERE id = %(account_id)s"

STATS_COLUMNS: LiteralString = "status, reason, attempts, transaction_ms, completed_at"
"""The columns of a :data:`producer.stats.StatsRow`, in its order."""

STATS_ROWS: LiteralString = "SELECT " + STATS_COLUMNS + " FROM transfer_results"

STREAM_CHUNK = 10_000
"""Rows per network fetch when streaming (needs libpq 17; row by row before that)."""


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


def stats_rows(conn: psycopg.Connection[Any]) -> Iterator[StatsRow]:
    """Every result as a :data:`~producer.stats.StatsRow`, streamed from the server.

    Streaming keeps memory flat on a million results: rows arrive in chunks and are
    dropped once summarized, instead of the whole result set sitting in libpq first.
    """
    size = STREAM_CHUNK if psycopg.pq.version() >= 170000 else 1
    with conn.cursor() as cur:
        yield from cur.stream(STATS_ROWS, size=size)
