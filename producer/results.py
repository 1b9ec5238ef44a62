"""Waiting for what became of sent transfers: their ``transfer_results`` rows, by id.

The workers record exactly one row per ``transfer_id``, committed or rejected, so the
producer learns a transfer's outcome by polling for the ids it sent until each has a
row or the time is up. A transfer without a row by then is not necessarily lost: it
may still be queued, in flight, or on its way to the dead-letter queue.

Ids are looked up with plain ``IN (%s, ...)`` lists of at most :data:`CHUNK`
placeholders, which DSQL plans as primary-key lookups (it prefers them to
``= ANY(array)``); full chunks reuse one statement, so psycopg prepares it. The
columns and the row mapping are :mod:`worker.results`'s, the one place readers of
results import them from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from worker.db import connect
from worker.outcomes import TransferResult
from worker.results import RESULT_COLUMNS, result_from_row
from worker.settings import Settings

CHUNK = 500
"""Most ids per query."""


@lru_cache(maxsize=8)
def results_by_ids(count: int) -> sql.Composed:
    """``SELECT <RESULT_COLUMNS> FROM transfer_results WHERE transfer_id IN (...)``
    with ``count`` placeholders."""
    return sql.SQL(
        "SELECT " + RESULT_COLUMNS + " FROM transfer_results WHERE transfer_id IN ({})"
    ).format(sql.SQL(", ").join(sql.Placeholder() * count))


def fetch_results(
    conn: psycopg.Connection[Any], transfer_ids: Sequence[UUID]
) -> list[TransferResult]:
    """The recorded results of those of ``transfer_ids`` that have one, in no order."""
    results: list[TransferResult] = []
    for start in range(0, len(transfer_ids), CHUNK):
        chunk = transfer_ids[start : start + CHUNK]
        rows = conn.execute(results_by_ids(len(chunk)), chunk).fetchall()
        results.extend(result_from_row(row) for row in rows)
    return results


def wait_for_results(
    conn: psycopg.Connection[Any],
    transfer_ids: Iterable[UUID],
    *,
    timeout_s: float,
    poll_s: float = 0.1,
    on_found: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[UUID, TransferResult]:
    """Poll every ``poll_s`` until each id has a result or ``timeout_s`` has passed.

    Returns the results found, by transfer id; ids missing from it had none in time.
    ``on_found(n)`` is called with the number of new results after each poll that
    found some (a progress bar's ``advance``). Only the still-missing ids are queried
    again. Database errors propagate.

    ``conn`` must be in autocommit mode (see :func:`connect_for_polling`): then every
    poll is its own transaction and sees the rows committed since the last one, where
    one REPEATABLE READ transaction would see its first snapshot forever.
    """
    if not conn.autocommit:
        raise ValueError("polling needs an autocommit connection (see connect_for_polling)")
    pending = dict.fromkeys(transfer_ids)  # an ordered set: chunks stay the same
    found: dict[UUID, TransferResult] = {}
    deadline = clock() + timeout_s
    while pending:
        new = fetch_results(conn, list(pending))
        for result in new:
            del pending[result.transfer_id]
            found[result.transfer_id] = result
        if new and on_found is not None:
            on_found(len(new))
        remaining = deadline - clock()
        if not pending or remaining <= 0:
            break
        sleep(min(poll_s, remaining))
    return found


def connect_for_polling(settings: Settings) -> psycopg.Connection[Any]:
    """An autocommit connection for :func:`wait_for_results`.

    Commands open it *before* they send anything, so that a database they cannot
    reach stops them before there are messages whose results nobody will look for.
    """
    return connect(settings, autocommit=True)
