"""``producer balance ID`` and ``producer history ID``: one account, read.

Both read through :mod:`producer.queries` in one transaction, rolled back; ``balance``
exits 1 for an account that does not exist, ``history`` prints a fixed-width table.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC

from producer.console import EXIT_NO, EXIT_OK, Subparsers, fail, positive_int
from producer.queries import account_balance, account_history
from worker.db import connect
from worker.outcomes import TransferResult
from worker.settings import Settings


def register_balance(subparsers: Subparsers) -> None:
    """``balance ID``."""
    cmd = subparsers.add_parser("balance", help="print the balance of one account")
    cmd.add_argument("account_id", type=int, metavar="ID")
    cmd.set_defaults(handler=run_balance)


def run_balance(args: argparse.Namespace, settings: Settings) -> int:
    """Print ``account ID balance B``; exit 1 when the account does not exist."""
    with connect(settings) as conn:
        balance = account_balance(conn, args.account_id)
        conn.rollback()
    if balance is None:
        return fail(f"account {args.account_id} not found", EXIT_NO)
    print(f"account {args.account_id} balance {balance}")
    return EXIT_OK


def register_history(subparsers: Subparsers) -> None:
    """``history ID [--limit N]``."""
    cmd = subparsers.add_parser("history", help="latest transfers paid by or to an account")
    cmd.add_argument("account_id", type=int, metavar="ID")
    cmd.add_argument(
        "--limit", type=positive_int, default=20, metavar="N", help="rows (default: 20)"
    )
    cmd.set_defaults(handler=run_history)


def run_history(args: argparse.Namespace, settings: Settings) -> int:
    """Print the account's latest results as a table, newest first."""
    with connect(settings) as conn:
        results = account_history(conn, args.account_id, args.limit)
        conn.rollback()
    if not results:
        print(f"no transfers recorded for account {args.account_id}")
        return EXIT_OK
    print(format_history(args.account_id, results))
    return EXIT_OK


HISTORY_HEADER = ("completed_at (UTC)", "dir", "counterparty", "amount", "outcome", "transfer_id")


def format_history(account_id: int, results: Sequence[TransferResult]) -> str:
    """A fixed-width table: time, in/out, counterparty, amount, outcome, transfer id.

    ``self`` marks a request naming the account on both sides (a same_account
    rejection); ``outcome`` is ``committed`` or the rejection reason.
    """
    rows = [HISTORY_HEADER]
    for r in results:
        direction = (
            "self" if r.payer_id == r.payee_id else "out" if r.payer_id == account_id else "in"
        )
        counterparty = r.payee_id if direction == "out" else r.payer_id
        rows.append(
            (
                r.completed_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                direction,
                str(counterparty),
                "-" if r.amount is None else str(r.amount),
                r.reason.value if r.reason is not None else r.status.value,
                str(r.transfer_id),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(HISTORY_HEADER))]
    right = {2, 3}  # numbers line up on the right
    return "\n".join(
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    )
