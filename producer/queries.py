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
from worker.engine import RESULT_COLUMNS, result_from_row
from worker.outcomes import TransferResult

BALANCE: LiteralString = "SELECT balance FROM accounts WHERE id = %(account_id)s"

HISTORY: LiteralString = (
    # Each branch is a backward scan of one history index, (payer_id, completed_at)
    # or (payee_id, completed_at), stopping after %(limit)s rows; the outer query merges
    # at most 2 x limit rows. An OR over both columns would scan instead.
    "(SELECT " + RESULT_COLUMNS + " FROM transfer_results"
    " WHERE payer_id = %(account_id)s"
    " ORDER BY completed_at DESC LIMIT %(limit)s)"
    " UNION ALL"
    # A same_account rejection names the account on both sides: list it once.
    " (SELECT " + RESULT_COLUMNS + " FROM transfer_results"
    " WHERE payee_id = %(account_id)s AND payer_id <> %(account_id)s"
    " ORDER BY completed_at DESC LIMIT %(limit)s)"
    " ORDER BY completed_at DESC, transfer_id LIMIT %(limit)s"
)
"""The latest ``%(limit)s`` results paid by or to ``%(account_id)s``, newest first."""

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
