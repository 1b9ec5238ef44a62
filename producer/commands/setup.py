"""``producer setup``: replace every account, print the baseline the audit checks.

The work is :func:`producer.accounts.reset_accounts`; this module adds the arguments,
a progress bar on stderr and the ``BASELINE`` block on stdout.
"""

from __future__ import annotations

import argparse
import sys
import time

from producer.accounts import check_arguments, plan_reset, reset_accounts
from producer.batches import BatchRefused
from producer.console import EXIT_OK, Subparsers, decimal, fail, line, positive_int
from producer.progress import ProgressBar
from worker.settings import Settings


def register(subparsers: Subparsers) -> None:
    """``setup --accounts N --balance B [--parallelism P]``."""
    cmd = subparsers.add_parser(
        "setup",
        help="replace all accounts with N accounts of balance B, delete old results",
        description="Delete every account and transfer result, create accounts 1..N "
        "with balance B, and record the baseline that `audit` checks against.",
    )
    cmd.add_argument("--accounts", type=positive_int, required=True, metavar="N")
    cmd.add_argument("--balance", type=decimal, required=True, metavar="B")
    cmd.add_argument(
        "--parallelism",
        type=positive_int,
        default=4,
        metavar="P",
        help="connections working at once (default: 4)",
    )
    cmd.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Reset the ledger with a progress bar on stderr, then print the baseline."""
    started = time.monotonic()
    refused: list[int] = []
    try:
        # Checked before the tables are walked, so bad arguments cost nothing.
        check_arguments(args.accounts, args.balance, args.parallelism)
        plan = plan_reset(settings, args.accounts)
        with ProgressBar(plan.rows, label="setup") as bar:
            baseline = reset_accounts(
                settings,
                args.accounts,
                args.balance,
                parallelism=args.parallelism,
                on_progress=bar.advance,
                on_split=refused.append,
                plan=plan,
            )
    except (ValueError, BatchRefused) as exc:
        return fail(str(exc))
    if refused:
        print(
            f"setup: the server refused {len(refused)} batch(es) as too large "
            f"(SQLSTATE 54000, largest {max(refused)} rows); each was split and retried",
            file=sys.stderr,
        )
    print(f"setup done in {time.monotonic() - started:.2f} s", file=sys.stderr)
    print("BASELINE")
    print(line("accounts", str(baseline.accounts)))
    print(line("initial balance", str(baseline.initial_balance)))
    print(line("expected total", str(baseline.expected_total)))
    return EXIT_OK
