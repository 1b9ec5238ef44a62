"""``producer setup``: (re)create accounts 1..N with the same balance, DSQL-style.

DSQL caps a transaction at 3,000 mutated rows and has no TRUNCATE, so old rows are
deleted and new ones inserted in batches, several connections at a time (rows in
disjoint key ranges never conflict). Old transfer results are deleted too: they
describe money movements between accounts that no longer exist, and the audit would
rightly flag them. The baseline (account count, initial balance, expected total) is
written last, in its own transaction, for ``producer audit``; the old one is removed
first, so an interrupted setup leaves no baseline behind and the audit says so.

**Batches, with a margin.** At most :data:`ACCOUNT_BATCH` (1,000) accounts or
:data:`RESULT_BATCH` (500) results per transaction: a third of DSQL's 3,000 rows, and
half of it even if each result's two history-index entries count as rows. Should the
server still refuse a batch as too large (SQLSTATE ``54000``, DSQL's limit class), the
batch is split at its middle key and each half retried, recursively, down to a single
row (:class:`BatchRefused` if even that is refused: then the limit is not the row
count). Once a size has been refused, later batches that large are split before they
are tried.

**Bounded reads.** Nothing reads every existing id: the old rows are found by walking
each table's primary key in ranges of one batch (:mod:`producer.keyranges`), one
bounded statement per range, which also counts them for the progress bar. The plan
holds one ``(after, upto, rows)`` triple per batch (about 3,000 for a million
accounts and a million results).

Run it on a quiet system (workers stopped): rows written while it runs may escape the
key ranges it deletes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, LiteralString, Protocol

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from producer.keyranges import KeyRange, split, walk
from worker.contract import fits_numeric
from worker.db import connect, create_pool
from worker.settings import Settings

MAX_ACCOUNTS = 1_000_000
ACCOUNT_BATCH = 1_000
"""Accounts per transaction: a third of DSQL's 3,000-row limit (no secondary index)."""
RESULT_BATCH = 500
"""Results per transaction: deleting one also deletes its two history-index entries,
so even counting those this is half the 3,000-row limit."""
TOO_LARGE = "54000"
"""SQLSTATE of DSQL's per-transaction limits (rows, bytes, duration, memory)."""

Progress = Callable[[int], None]


class BatchRefused(RuntimeError):
    """A batch of one row was still refused with SQLSTATE 54000."""


@dataclass(frozen=True)
class Baseline:
    """What setup created; the audit's reference point."""

    accounts: int
    initial_balance: Decimal
    expected_total: Decimal


@dataclass(frozen=True)
class ResetPlan:
    """The batches a reset will run: old rows by key range, then the new accounts."""

    accounts: int
    old_results: list[KeyRange]
    old_accounts: list[KeyRange]

    @property
    def rows(self) -> int:
        """Rows the reset will delete and insert (for a progress bar)."""
        old = sum(r.rows for r in self.old_results) + sum(r.rows for r in self.old_accounts)
        return old + self.accounts


def plan_reset(settings: Settings, accounts: int) -> ResetPlan:
    """Walk both tables' keys in batch-sized ranges (bounded statements, each its own
    transaction); deletes nothing."""
    with connect(settings, autocommit=True) as conn:
        results = list(walk(conn, "transfer_results", "transfer_id", RESULT_BATCH))
        old = list(walk(conn, "accounts", "id", ACCOUNT_BATCH))
    return ResetPlan(
        accounts=accounts,
        old_results=[r for r in results if r.rows],
        old_accounts=[r for r in old if r.rows],
    )


def rows_to_reset(settings: Settings, accounts: int) -> int:
    """How many rows :func:`reset_accounts` will touch, to size a progress bar."""
    return plan_reset(settings, accounts).rows


def reset_accounts(
    settings: Settings,
    accounts: int,
    balance: Decimal,
    *,
    parallelism: int = 4,
    on_progress: Progress | None = None,
    on_split: Progress | None = None,
    plan: ResetPlan | None = None,
) -> Baseline:
    """Delete every account and result, create ``accounts`` accounts, record the baseline.

    ``on_progress`` is called with the number of rows handled by each finished batch
    (deleted results and accounts, then inserted accounts); ``on_split`` with the size
    of each batch the server refused as too large (it is then split and retried).
    ``plan`` (from :func:`plan_reset`) saves walking the tables again.
    """
    check_arguments(accounts, balance, parallelism)
    plan = plan or plan_reset(settings, accounts)

    with connect(settings) as conn:
        conn.execute("DELETE FROM ledger_baseline")
        conn.commit()

    runner = _Batches(on_progress, on_split)
    deletes: list[_Batch] = [
        *(_Delete("transfer_results", "transfer_id", r) for r in plan.old_results),
        *(_Delete("accounts", "id", r) for r in plan.old_accounts),
    ]
    inserts: list[_Batch] = [
        _Insert(lo, min(lo + ACCOUNT_BATCH - 1, accounts), balance)
        for lo in range(1, accounts + 1, ACCOUNT_BATCH)
    ]
    with (
        create_pool(settings, min_size=parallelism, max_size=parallelism, name="setup") as pool,
        ThreadPoolExecutor(parallelism, thread_name_prefix="setup") as executor,
    ):
        # Ranges never overlap, so batches never conflict; inserts wait for every
        # delete, so they cannot meet an old row.
        for phase in (deletes, inserts):
            list(executor.map(lambda batch: runner.apply(pool, batch), phase))

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


def check_arguments(accounts: int, balance: Decimal, parallelism: int) -> None:
    """Raise ``ValueError`` naming the first argument :func:`reset_accounts` refuses."""
    if not 1 <= accounts <= MAX_ACCOUNTS:
        raise ValueError(f"accounts must be between 1 and {MAX_ACCOUNTS:,}")
    if balance < 0 or not fits_numeric(balance):
        raise ValueError("balance must be >= 0 and fit numeric(18,6)")
    if parallelism < 1:
        raise ValueError("parallelism must be at least 1")


# --- batches that halve when the server says they are too large ------------------------


class _Batch(Protocol):
    @property
    def rows(self) -> int: ...

    def run(self, conn: psycopg.Connection[Any]) -> None: ...

    def halves(self, conn: psycopg.Connection[Any]) -> Sequence[_Batch] | None: ...


@dataclass(frozen=True)
class _Delete:
    table: LiteralString
    key: LiteralString
    range: KeyRange

    @property
    def rows(self) -> int:
        return self.range.rows

    def run(self, conn: psycopg.Connection[Any]) -> None:
        condition, params = self.range.where(self.key)
        query = sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(self.table), condition)
        conn.execute(query, params)

    def halves(self, conn: psycopg.Connection[Any]) -> Sequence[_Batch] | None:
        parts = split(conn, self.table, self.key, self.range)
        return None if parts is None else [_Delete(self.table, self.key, p) for p in parts]


@dataclass(frozen=True)
class _Insert:
    first: int
    last: int
    balance: Decimal

    @property
    def rows(self) -> int:
        return self.last - self.first + 1

    def run(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            "INSERT INTO accounts (id, balance) "
            "SELECT g, %s FROM generate_series(%s::int, %s::int) AS g",
            (self.balance, self.first, self.last),
        )

    def halves(self, conn: psycopg.Connection[Any]) -> Sequence[_Batch] | None:
        if self.rows < 2:
            return None
        middle = self.first + self.rows // 2 - 1
        return [
            _Insert(self.first, middle, self.balance),
            _Insert(middle + 1, self.last, self.balance),
        ]


class _Batches:
    """Runs batches on a pool; halves the ones the server refuses as too large."""

    def __init__(self, on_progress: Progress | None, on_split: Progress | None) -> None:
        self._progress = on_progress or (lambda _rows: None)
        self._split = on_split or (lambda _rows: None)
        self._lock = threading.Lock()
        self.refused_at: int | None = None
        """The smallest batch size refused so far: batches this large are split first."""

    def apply(self, pool: ConnectionPool[Any], batch: _Batch) -> None:
        """Run ``batch`` (or its halves, recursively) in autocommit transactions."""
        with self._lock:
            known_too_large = self.refused_at is not None and batch.rows >= self.refused_at
        if not known_too_large:
            try:
                with pool.connection() as conn:
                    batch.run(conn)
            except psycopg.Error as exc:
                if exc.sqlstate != TOO_LARGE:
                    raise
                with self._lock:
                    self.refused_at = min(self.refused_at or batch.rows, batch.rows)
                self._split(batch.rows)
                self._apply_halves(pool, batch, exc)
                return
            self._progress(batch.rows)
            return
        self._apply_halves(pool, batch, None)

    def _apply_halves(
        self, pool: ConnectionPool[Any], batch: _Batch, refusal: psycopg.Error | None
    ) -> None:
        with pool.connection() as conn:
            halves = batch.halves(conn)
            if halves is None and refusal is None:
                # Split ahead of time, but it no longer holds two rows: just try it.
                batch.run(conn)
                self._progress(batch.rows)
                return
        if halves is None:
            raise BatchRefused(
                f"the server refused a batch of {batch.rows} row(s) as too large "
                f"(SQLSTATE {TOO_LARGE}): {refusal}"
            ) from refusal
        for half in halves:
            self.apply(pool, half)
