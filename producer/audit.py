"""``producer audit``: is every unit of money accounted for?

The Jepsen bank-test checker, as SQL:

1. the number of accounts is what setup created;
2. the total balance equals the recorded setup total (no money lost or created);
3. no balance is negative;
4. every account equals its initial balance plus its committed credits minus its
   committed debits, as recorded in ``transfer_results`` (each money movement has
   exactly one committed result, and vice versa).

**In chunks, one snapshot per chunk.** At a million accounts and a million results
one snapshot for everything would be one transaction reading every row: on DSQL that
risks the 5-minute transaction limit and, as one query, the 128 MiB query memory (the
old single query grouped every result by account). So the audit walks the accounts'
primary key in ranges of :data:`CHUNK` accounts (:mod:`producer.keyranges`; the first
range is open below and the last open above, so together they cover every possible
account id), and checks each range in its own short REPEATABLE READ transaction: its
accounts' count, sum and negative balances, invariant 4 for each of its accounts, and
the committed credits (by ``payee_id``) and debits (by ``payer_id``) that fall in it.
Every statement is bounded by the range and served by the primary key or a history
index.

**What is still guaranteed, and why.** Invariants 3 and 4 are exact per account
whatever runs meanwhile: a transfer's two balance updates and its ``committed`` row
commit in one transaction, so every snapshot sees all of them or none, and an account
and its credits and debits are always read in the same snapshot. Invariants 1 and 2
add up chunks read at different moments. With no transfer committing during the
audit (workers stopped, the same rule as ``setup``) every chunk sees the same ledger
and the sums are exactly what one snapshot would give. While workers run, a transfer
between two chunks can commit after the first is read and before the second, so the
final check compares what the chunks saw: the committed credits added over all
ranges must equal the committed debits added over all ranges (each committed
transfer is one credit and one debit of the same amount, and the ranges partition the
ids). If they differ, the ledger changed during the audit and the audit says so as a
violation ("changed while the audit ran: stop the workers and run it again") rather
than reporting a false loss or a false pass. Equal sums over a quiet ledger are the
proof; equal sums while workers run are the usual case but not a proof, which is why
the documented way to audit is with the workers stopped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from producer.keyranges import KeyRange, next_range

SAMPLE = 10
"""How many offending accounts to name per violated invariant."""
CHUNK = 10_000
"""Accounts per snapshot: one range's statements read this many accounts and the
results that credit or debit them."""

_BASELINE = "SELECT accounts, initial_balance, expected_total FROM ledger_baseline WHERE id = 1"

_ACCOUNTS = "SELECT count(*), coalesce(sum(balance), 0) FROM accounts WHERE {range}"

_NEGATIVE = (
    "SELECT id, balance FROM accounts WHERE {range} AND balance < 0 ORDER BY id LIMIT %(limit)s"
)

_FLOWS = """
    SELECT
        (SELECT count(*) FROM transfer_results
         WHERE status = 'committed' AND {payer_range}),
        (SELECT coalesce(sum(amount), 0) FROM transfer_results
         WHERE status = 'committed' AND {payer_range}),
        (SELECT coalesce(sum(amount), 0) FROM transfer_results
         WHERE status = 'committed' AND {payee_range})
"""
"""Committed debits (count and sum, by payer) and credits (sum, by payee) in a range."""

_MISMATCHES = """
    SELECT a.id, a.balance, %(initial)s + coalesce(cr.total, 0) - coalesce(db.total, 0)
    FROM accounts AS a
    LEFT JOIN (
        SELECT payee_id AS id, sum(amount) AS total FROM transfer_results
        WHERE status = 'committed' AND {payee_range} GROUP BY payee_id
    ) AS cr ON cr.id = a.id
    LEFT JOIN (
        SELECT payer_id AS id, sum(amount) AS total FROM transfer_results
        WHERE status = 'committed' AND {payer_range} GROUP BY payer_id
    ) AS db ON db.id = a.id
    WHERE {range} AND a.balance <> %(initial)s + coalesce(cr.total, 0) - coalesce(db.total, 0)
    ORDER BY a.id
    LIMIT %(limit)s
"""


@dataclass
class AuditReport:
    """The audit's findings; ``ok`` is False when any violation was found."""

    accounts: int = 0
    expected_accounts: int | None = None
    total: Decimal = Decimal(0)
    expected_total: Decimal | None = None
    committed_transfers: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every invariant holds."""
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (decimals as strings, so nothing is rounded)."""
        data = asdict(self)
        data["ok"] = self.ok
        for key in ("total", "expected_total"):
            if data[key] is not None:
                data[key] = str(data[key])
        return data


@dataclass
class _Tally:
    negative: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    debits: Decimal = Decimal(0)
    credits: Decimal = Decimal(0)


def run_audit(conn: psycopg.Connection[Any], *, chunk: int = CHUNK) -> AuditReport:
    """Check every invariant, ``chunk`` accounts per REPEATABLE READ snapshot; read-only.

    ``conn`` must not be in autocommit mode: each chunk is one transaction on it,
    ended with a rollback.
    """
    if conn.autocommit:
        raise ValueError("the audit needs transactions (a connection without autocommit)")
    report, tally = AuditReport(), _Tally()
    try:
        baseline = conn.execute(_BASELINE).fetchone()
        initial = Decimal(baseline[1]) if baseline else Decimal(0)
        conn.rollback()
        after: Any = None
        while True:
            # The range's upper boundary is found in the snapshot that reads the range.
            current = next_range(conn, "accounts", "id", chunk, after=after)
            _audit_range(conn, current, initial, report, tally)
            conn.rollback()
            if current.upto is None:
                break
            after = current.upto
    finally:
        conn.rollback()

    report.violations += tally.negative[:SAMPLE]
    if baseline is None:
        report.violations.append("no baseline recorded: run `python -m producer setup` first")
        return report
    report.expected_accounts, report.expected_total = int(baseline[0]), Decimal(baseline[2])
    if tally.credits != tally.debits:
        report.violations.append(
            f"the ledger changed while the audit ran (committed credits seen {tally.credits}"
            f" != debits seen {tally.debits}): stop the workers and run it again"
        )
    if report.accounts != report.expected_accounts:
        report.violations.append(
            f"{report.accounts} accounts exist, setup created {report.expected_accounts}"
        )
    if report.total != report.expected_total:
        report.violations.append(
            f"total balance {report.total} != expected {report.expected_total} "
            f"(difference {report.total - report.expected_total})"
        )
    report.violations += tally.mismatched[:SAMPLE]
    return report


def _audit_range(
    conn: psycopg.Connection[Any],
    current: KeyRange,
    initial: Decimal,
    report: AuditReport,
    tally: _Tally,
) -> None:
    """Every statement about the accounts in ``current``, in the current snapshot."""
    accounts, params = current.where("id")
    qualified, _ = current.where("a.id")
    payers, _ = current.where("payer_id")
    payees, _ = current.where("payee_id")

    count, total = conn.execute(sql.SQL(_ACCOUNTS).format(range=accounts), params).fetchone() or (
        0,
        Decimal(0),
    )
    report.accounts += int(count)
    report.total += Decimal(total)

    if len(tally.negative) < SAMPLE:
        for account, balance in conn.execute(
            sql.SQL(_NEGATIVE).format(range=accounts), {**params, "limit": SAMPLE}
        ):
            tally.negative.append(f"account {account} has a negative balance {balance}")

    flows = conn.execute(
        sql.SQL(_FLOWS).format(payer_range=payers, payee_range=payees), params
    ).fetchone()
    if flows is not None:
        report.committed_transfers += int(flows[0])
        tally.debits += Decimal(flows[1])
        tally.credits += Decimal(flows[2])

    if len(tally.mismatched) < SAMPLE:
        cur = conn.execute(
            sql.SQL(_MISMATCHES).format(range=qualified, payer_range=payers, payee_range=payees),
            {**params, "initial": initial, "limit": SAMPLE},
        )
        for account, balance, expected in cur:
            tally.mismatched.append(
                f"account {account} balance {balance} != initial + credits - debits = {expected}"
            )
