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
row (:class:`~producer.batches.BatchRefused` if even that is refused: then the limit is
not the row count). Once a size has been refused, later batches that large are split
before they are tried (:mod:`producer.batches`).

**Bounded reads.** Nothing reads every existing id: the old rows are found by walking
each table's primary key in ranges of one batch (:mod:`producer.keyranges`), one
bounded statement per range, which also counts them for the progress bar. The plan
holds one ``(after, upto, rows)`` triple per batch (about 3,000 for a million
accounts and a million results).

Run it on a quiet system (workers stopped): rows written while it runs may escape the
key ranges it deletes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from producer.batches import Batch, Batches, Delete, Insert, Progress
from producer.keyranges import KeyRange, walk
from worker.contract import fits_numeric
from worker.db import connect, create_pool
from worker.settings import Settings

MAX_ACCOUNTS = 1_000_000
ACCOUNT_BATCH = 1_000
"""Accounts per transaction: a third of DSQL's 3,000-row limit (no secondary index)."""
RESULT_BATCH = 500
"""Results per transaction: deleting one also deletes its two history-index entries,
so even counting those this is half the 3,000-row limit."""


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

    runner = Batches(on_progress, on_split)
    deletes: list[Batch] = [
        *(Delete("transfer_results", "transfer_id", r) for r in plan.old_results),
        *(Delete("accounts", "id", r) for r in plan.old_accounts),
    ]
    inserts: list[Batch] = [
        Insert(lo, min(lo + ACCOUNT_BATCH - 1, accounts), balance)
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
