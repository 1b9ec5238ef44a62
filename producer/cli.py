"""``python -m producer``: the command line around the ledger.

Each subcommand is one ``register_*`` function in :data:`COMMANDS` that adds its
subparser and sets ``handler`` to a function ``(args, settings) -> exit code``. A new
command (``send``, ``load``, ``dlq``) lives in its own module, exposes
``register(subparsers)`` and is appended to :data:`COMMANDS`; :func:`main` does the
rest: parsing, :class:`~worker.settings.Settings` from the environment, and turning
configuration and connection problems into one line on stderr.

Exit codes: 0 success; 1 the answer is "no" (unknown account, audit violations, a
rejected transfer, transfers without a result); 2 the command could not run (bad
arguments, no database or queue configured or reachable, schema missing); 3 ``send
--wait`` saw no result in time.

``send`` and ``load`` (:mod:`producer.send`, :mod:`producer.load`) put transfers on the
SQS queue (QUEUE_URL or QUEUE_NAME) and can wait for their results.

``dlq peek`` and ``dlq redrive`` (:mod:`producer.dlq`) show what is on the dead-letter
queue (DLQ_URL) and move it back to the transfer queue.

Results go to stdout, progress and errors to stderr, so ``--json`` output can be
piped as is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TypeAlias

import psycopg
import pydantic
from psycopg import errors as pg_errors

from producer import dlq, load, report, send, smoke, watch
from worker.db import connect
from worker.errors import NotConfigured
from worker.outcomes import TransferResult
from worker.settings import Settings

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler = Callable[[argparse.Namespace, Settings], int]

EXIT_OK = 0
EXIT_NO = 1
EXIT_CANNOT_RUN = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code (never raises SystemExit)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_CANNOT_RUN
    handler: Handler = args.handler
    try:
        settings = Settings()
    except pydantic.ValidationError as exc:
        # Without input values: the environment may hold secrets.
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        return _fail(f"invalid settings in the environment: {problems}")
    try:
        return handler(args, settings)
    except NotConfigured as exc:
        return _fail(f"no database configured: {exc}")
    except pg_errors.UndefinedTable as exc:
        return _fail(f"{exc.diag.message_primary}: run `python -m worker migrate` first")
    except psycopg.OperationalError as exc:
        # Connection faults have no SQLSTATE or class 08; the rest (a conflict, a
        # timeout) came from a server that answered.
        unreachable = exc.sqlstate is None or exc.sqlstate.startswith("08")
        return _fail(f"database {'unavailable' if unreachable else 'error'}: {exc}")


def build_parser() -> argparse.ArgumentParser:
    """The parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="python -m producer",
        description="Send transfers, set up, inspect and audit the transfer ledger.",
    )
    subparsers = parser.add_subparsers(
        title="commands", dest="command", required=True, metavar="COMMAND"
    )
    for register in COMMANDS:
        register(subparsers)
    return parser


# --- setup --------------------------------------------------------------------------


def register_setup(subparsers: Subparsers) -> None:
    """``setup --accounts N --balance B [--parallelism P]``."""
    cmd = subparsers.add_parser(
        "setup",
        help="replace all accounts with N accounts of balance B, delete old results",
        description="Delete every account and transfer result, create accounts 1..N "
        "with balance B, and record the baseline that `audit` checks against.",
    )
    cmd.add_argument("--accounts", type=_positive_int, required=True, metavar="N")
    cmd.add_argument("--balance", type=_decimal, required=True, metavar="B")
    cmd.add_argument(
        "--parallelism",
        type=_positive_int,
        default=4,
        metavar="P",
        help="connections working at once (default: 4)",
    )
    cmd.set_defaults(handler=run_setup)


def run_setup(args: argparse.Namespace, settings: Settings) -> int:
    """Reset the ledger with a progress bar on stderr, then print the baseline."""
    from producer.accounts import BatchRefused, check_arguments, plan_reset, reset_accounts
    from producer.progress import ProgressBar

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
        return _fail(str(exc))
    if refused:
        print(
            f"setup: the server refused {len(refused)} batch(es) as too large "
            f"(SQLSTATE 54000, largest {max(refused)} rows); each was split and retried",
            file=sys.stderr,
        )
    print(f"setup done in {time.monotonic() - started:.2f} s", file=sys.stderr)
    print("BASELINE")
    print(_line("accounts", str(baseline.accounts)))
    print(_line("initial balance", str(baseline.initial_balance)))
    print(_line("expected total", str(baseline.expected_total)))
    return EXIT_OK


# --- balance ------------------------------------------------------------------------


def register_balance(subparsers: Subparsers) -> None:
    """``balance ID``."""
    cmd = subparsers.add_parser("balance", help="print the balance of one account")
    cmd.add_argument("account_id", type=int, metavar="ID")
    cmd.set_defaults(handler=run_balance)


def run_balance(args: argparse.Namespace, settings: Settings) -> int:
    """Print ``account ID balance B``; exit 1 when the account does not exist."""
    from producer.queries import account_balance

    with connect(settings) as conn:
        balance = account_balance(conn, args.account_id)
        conn.rollback()
    if balance is None:
        return _fail(f"account {args.account_id} not found", EXIT_NO)
    print(f"account {args.account_id} balance {balance}")
    return EXIT_OK


# --- history ------------------------------------------------------------------------


def register_history(subparsers: Subparsers) -> None:
    """``history ID [--limit N]``."""
    cmd = subparsers.add_parser("history", help="latest transfers paid by or to an account")
    cmd.add_argument("account_id", type=int, metavar="ID")
    cmd.add_argument(
        "--limit", type=_positive_int, default=20, metavar="N", help="rows (default: 20)"
    )
    cmd.set_defaults(handler=run_history)


def run_history(args: argparse.Namespace, settings: Settings) -> int:
    """Print the account's latest results as a table, newest first."""
    from producer.queries import account_history

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


# --- audit --------------------------------------------------------------------------


def register_audit(subparsers: Subparsers) -> None:
    """``audit [--json]``."""
    cmd = subparsers.add_parser(
        "audit", help="check that no money was lost or created (exit 1 if any was)"
    )
    cmd.add_argument("--json", action="store_true", help="one JSON object on stdout")
    cmd.set_defaults(handler=run_audit)


def run_audit(args: argparse.Namespace, settings: Settings) -> int:
    """Print the audit report; exit 1 when an invariant is violated."""
    from producer.audit import run_audit as audit

    with connect(settings) as conn:
        report = audit(conn)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print("AUDIT " + ("ok" if report.ok else f"FAILED ({len(report.violations)} violations)"))
        print(_line("accounts", f"{report.accounts} (expected {report.expected_accounts})"))
        print(_line("total balance", f"{report.total} (expected {report.expected_total})"))
        print(_line("committed", str(report.committed_transfers)))
        for violation in report.violations:
            print(_line("violation", violation))
    return EXIT_OK if report.ok else EXIT_NO


# --- stats --------------------------------------------------------------------------


def register_stats(subparsers: Subparsers) -> None:
    """``stats [--json] [--since T] [--until T]``."""
    cmd = subparsers.add_parser(
        "stats", help="outcomes, retries, transaction times and throughput of all results"
    )
    cmd.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_window_arguments(cmd)
    cmd.set_defaults(handler=run_stats)


def add_window_arguments(cmd: argparse.ArgumentParser) -> None:
    """``--since T`` and ``--until T``: a window of completion times."""
    cmd.add_argument(
        "--since",
        type=moment,
        default=None,
        metavar="T",
        help="only results completed at or after T: ISO 8601 (2026-12-01T10:00:00Z; "
        "UTC when no offset is given) or a time ago (90s, 15m, 2h, 1d)",
    )
    cmd.add_argument(
        "--until", type=moment, default=None, metavar="T", help="only results completed before T"
    )


def run_stats(args: argparse.Namespace, settings: Settings) -> int:
    """Summarize the recorded results, all or a window (see :mod:`producer.summary`)."""
    from producer.stats import format_stats, stats_as_dict
    from producer.summary import Window, summarize_table

    window = Window(args.since, args.until)
    if window.since and window.until and window.since >= window.until:
        return _fail("--since must be before --until")
    with connect(settings, autocommit=True) as conn:
        stats = summarize_table(conn, window)
    print(json.dumps(stats_as_dict(stats)) if args.json else format_stats(stats))
    return EXIT_OK


# --- the command table ----------------------------------------------------------------

COMMANDS: tuple[Callable[[Subparsers], None], ...] = (
    register_setup,
    register_balance,
    register_history,
    register_audit,
    register_stats,
    send.register,
    load.register,
    dlq.register,
    watch.register,
    report.register,
    smoke.register,
)
"""Every subcommand, in ``--help`` order. Add ``send.register`` etc. here."""


# --- helpers ------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    # "1e3" becomes 1000, so the baseline prints as a plain amount.
    return Decimal(format(value, "f"))


_AGO = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def moment(text: str) -> datetime:
    """argparse type: an aware datetime from ISO 8601 (UTC if no offset is given) or
    from a time ago such as ``90s``, ``15m``, ``2h``, ``1d``."""
    text = text.strip()
    unit = text[-1:].lower()
    if unit in _AGO and text[:-1].replace(".", "", 1).isdigit():
        return datetime.now(UTC) - timedelta(seconds=float(text[:-1]) * _AGO[unit])
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (ISO 8601 such as 2026-12-01T10:00:00Z, or 15m, 2h, 1d ago)"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _fail(message: str, code: int = EXIT_CANNOT_RUN) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _line(label: str, value: str) -> str:
    return f"  {label:<15} {value}"
