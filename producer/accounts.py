"""``producer setup``: (re)create accounts 1..N with the same balance, DSQL-style.

DSQL caps a transaction at 3,000 mutated rows and has no TRUNCATE, so old rows are
deleted and new ones inserted in batches, several connections at a time (rows in
disjoint key ranges never conflict). Old transfer results are deleted too: they
describe money movements between accounts that no longer exist, and the audit would
rightly flag them. The baseline (account count, initial balance, expected total) is
written last, in its own transaction, for ``producer audit``.

Run it on a quiet system (workers stopped): rows written while it runs may escape the
key ranges it deletes. It reads every existing id first (about 40 MB per million).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, LiteralString

from worker.contract import fits_numeric
from worker.db import connect, create_pool
from worker.settings import Settings

MAX_ACCOUNTS = 1_000_000
ACCOUNT_BATCH = 3_000
"""DSQL's per-transaction row limit; accounts have no secondary index."""
RESULT_BATCH = 1_000
"""Deleting a result also deletes its two history-index entries: stay well inside the
3,000-row limit even if index entries count towards it."""

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Baseline:
    """What setup created; the audit's reference point."""

    accounts: int
    initial_balance: Decimal
    expected_total: Decimal


def reset_accounts(
    settings: Settings,
    accounts: int,
    balance: Decimal,
    *,
    parallelism: int = 4,
    on_progress: Progress | None = None,
) -> Baseline:
    """Delete every account and result, create ``accounts`` accounts, record the baseline.

    ``on_progress`` is called with the number of rows handled by each finished batch
    (deleted results, deleted accounts, then inserted accounts).
    """
    if not 1 <= accounts <= MAX_ACCOUNTS:
        raise ValueError(f"accounts must be between 1 and {MAX_ACCOUNTS:,}")
    if balance < 0 or not fits_numeric(balance):
        raise ValueError("balance must be >= 0 and fit numeric(18,6)")
    if parallelism < 1:
        raise ValueError("parallelism must be at least 1")
    report = on_progress or (lambda _rows: None)

    with connect(settings) as conn:
        result_ids = [
            r[0] for r in conn.execute("SELECT transfer_id FROM transfer_results ORDER BY 1")
        ]
        account_ids = [r[0] for r in conn.execute("SELECT id FROM accounts ORDER BY 1")]
        conn.execute("DELETE FROM ledger_baseline")
        conn.commit()

    with create_pool(settings, min_size=parallelism, max_size=parallelism, name="setup") as pool:

        def run(query: LiteralString, params: Sequence[Any], rows: int) -> None:
            with pool.connection() as conn:
                conn.execute(query, params)
            report(rows)

        with ThreadPoolExecutor(parallelism, thread_name_prefix="setup") as executor:
            # Deletes go by key range over the ids just read: each range holds at most
            # one batch of rows, and ranges never overlap, so batches never conflict.
            jobs = [
                ("DELETE FROM transfer_results WHERE transfer_id BETWEEN %s AND %s", (lo, hi), n)
                for lo, hi, n in _ranges(result_ids, RESULT_BATCH)
            ] + [
                ("DELETE FROM accounts WHERE id BETWEEN %s AND %s", (lo, hi), n)
                for lo, hi, n in _ranges(account_ids, ACCOUNT_BATCH)
            ]
            list(executor.map(lambda job: run(*job), jobs))
            inserts = [
                (
                    "INSERT INTO accounts (id, balance) "
                    "SELECT g, %s FROM generate_series(%s::int, %s::int) AS g",
                    (balance, lo, hi),
                    hi - lo + 1,
                )
                for lo in range(1, accounts + 1, ACCOUNT_BATCH)
                for hi in [min(lo + ACCOUNT_BATCH - 1, accounts)]
            ]
            list(executor.map(lambda job: run(*job), inserts))

    baseline = Baseline(accounts, balance, balance * accounts)
    with connect(settings) as conn:
        conn.execute(
            "INSERT INTO ledger_baseline"
            " (id, accounts, initial_balance, expected_total, created_at)"
            " VALUES (1, %s, %s, %s, %s)",
            (accounts, balance, baseline.expected_total, datetime.now(UTC)),
        )
        conn.commit()
    return baseline


def rows_to_reset(settings: Settings, accounts: int) -> int:
    """How many rows :func:`reset_accounts` will touch, to size a progress bar."""
    with connect(settings) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM transfer_results) + (SELECT count(*) FROM accounts)"
        ).fetchone()
        conn.rollback()
    return int(row[0] if row else 0) + accounts


def _ranges(ids: list[Any], size: int) -> Iterator[tuple[Any, Any, int]]:
    """(first, last, count) of consecutive slices of the sorted ``ids``."""
    for start in range(0, len(ids), size):
        chunk = ids[start : start + size]
        yield chunk[0], chunk[-1], len(chunk)
