"""``producer audit``: is every unit of money accounted for?

The Jepsen bank-test checker, as SQL over one consistent snapshot:

1. the number of accounts is what setup created;
2. the total balance equals the recorded setup total (no money lost or created);
3. no balance is negative;
4. every account equals its initial balance plus its committed credits minus its
   committed debits, as recorded in ``transfer_results`` (each money movement has
   exactly one committed result, and vice versa).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

import psycopg

SAMPLE = 10
"""How many offending accounts to name per violated invariant."""

_MISMATCHES = """
    SELECT a.id, a.balance, %(initial)s + coalesce(cr.total, 0) - coalesce(db.total, 0)
    FROM accounts AS a
    LEFT JOIN (
        SELECT payee_id AS id, sum(amount) AS total FROM transfer_results
        WHERE status = 'committed' GROUP BY payee_id
    ) AS cr ON cr.id = a.id
    LEFT JOIN (
        SELECT payer_id AS id, sum(amount) AS total FROM transfer_results
        WHERE status = 'committed' GROUP BY payer_id
    ) AS db ON db.id = a.id
    WHERE a.balance <> %(initial)s + coalesce(cr.total, 0) - coalesce(db.total, 0)
    ORDER BY a.id
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


def run_audit(conn: psycopg.Connection[Any]) -> AuditReport:
    """Check every invariant in one REPEATABLE READ snapshot; read-only."""
    report = AuditReport()
    try:
        baseline = conn.execute(
            "SELECT accounts, initial_balance, expected_total FROM ledger_baseline WHERE id = 1"
        ).fetchone()
        count, total = conn.execute(
            "SELECT count(*), coalesce(sum(balance), 0) FROM accounts"
        ).fetchone() or (0, Decimal(0))
        report.accounts, report.total = int(count), Decimal(total)
        committed = conn.execute(
            "SELECT count(*) FROM transfer_results WHERE status = 'committed'"
        ).fetchone()
        report.committed_transfers = int(committed[0]) if committed else 0
        negative = conn.execute(
            "SELECT id, balance FROM accounts WHERE balance < 0 ORDER BY id LIMIT %s", (SAMPLE,)
        ).fetchall()
        for account, balance in negative:
            report.violations.append(f"account {account} has a negative balance {balance}")

        if baseline is None:
            report.violations.append("no baseline recorded: run `python -m producer setup` first")
            return report
        report.expected_accounts, initial, report.expected_total = (
            int(baseline[0]),
            Decimal(baseline[1]),
            Decimal(baseline[2]),
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
        cur = conn.execute(_MISMATCHES + " LIMIT %(limit)s", {"initial": initial, "limit": SAMPLE})
        for account, balance, expected in cur:
            report.violations.append(
                f"account {account} balance {balance} != initial + credits - debits = {expected}"
            )
        return report
    finally:
        conn.rollback()
