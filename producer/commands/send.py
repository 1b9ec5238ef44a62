"""``python -m producer send``: enqueue one transfer, and with ``--wait`` report its outcome.

The queued counterpart of the workshop's ``cargo lambda invoke ... '{"payer_id": 1,
"payee_id": 2, "amount": 10}'``, through :class:`producer.client.TransferClient` (the
same code a Python producer uses): the body is the contract's, and it always carries a
``transfer_id`` (a new uuid4 unless one is given), which is printed first so that the
outcome can be looked up later and ``--wait`` can poll ``transfer_results`` for it. The
outcome is printed like chapter 05's response: payer balance, transaction time and
attempts for a committed transfer, the reason for a rejected one.

Exit codes: 0 committed (or sent, without ``--wait``), 1 rejected, 2 could not send,
3 no result within ``--timeout``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING
from uuid import UUID

from worker.outcomes import TransferResult
from worker.settings import Settings

if TYPE_CHECKING:
    # producer.cli imports this module to list it in COMMANDS: what this module needs
    # from it is imported when the parser is built or a command runs, never at import.
    from producer.cli import Subparsers

EXIT_TIMEOUT = 3
POLL_S = 0.1
DEFAULT_TIMEOUT_S = 30.0


def register(subparsers: Subparsers) -> None:
    """``send --payer P --payee Q --amount A [--transfer-id U] [--wait] [--timeout S]``."""
    from producer.cli import _decimal

    cmd = subparsers.add_parser(
        "send",
        help="enqueue one transfer; --wait prints its outcome",
        description="Put one transfer request on the queue and print its transfer id. "
        "With --wait, poll transfer_results for it and print the outcome.",
    )
    cmd.add_argument("--payer", type=int, required=True, metavar="P", help="payer account id")
    cmd.add_argument("--payee", type=int, required=True, metavar="Q", help="payee account id")
    cmd.add_argument("--amount", type=_decimal, required=True, metavar="A")
    cmd.add_argument(
        "--transfer-id",
        type=UUID,
        default=None,
        metavar="U",
        help="idempotency key; resending an id never moves the money twice (default: new uuid4)",
    )
    cmd.add_argument("--wait", action="store_true", help="wait for the outcome and print it")
    cmd.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"longest wait for the outcome (default: {DEFAULT_TIMEOUT_S:g} s)",
    )
    cmd.set_defaults(handler=run_send)


def run_send(args: argparse.Namespace, settings: Settings) -> int:
    """Send the transfer, print its id, and with ``--wait`` its outcome."""
    from producer.cli import EXIT_NO, EXIT_OK, _fail
    from producer.client import (
        InvalidTransfer,
        Transfer,
        TransferClient,
        TransferNotSent,
        to_request,
    )
    from producer.sqs import SQS_ERRORS, QueueNotConfigured

    try:
        # The worker's own parser: what it would dead-letter is never sent.
        request = to_request(Transfer(args.payer, args.payee, args.amount, args.transfer_id))
    except InvalidTransfer as exc:
        return _fail(str(exc))
    try:
        client = TransferClient.from_settings(settings)
    except QueueNotConfigured as exc:
        return _fail(str(exc))
    except SQS_ERRORS as exc:
        return _fail(f"SQS: {exc}")
    with client:
        if args.wait:
            # Connected before sending: an unreachable database stops us with nothing queued.
            client.connect()
        try:
            transfer_id = client.send(
                request.payer_id, request.payee_id, request.amount, transfer_id=request.transfer_id
            )
        except TransferNotSent as exc:
            return _fail(f"SQS did not take the message: {exc.code}")
        except SQS_ERRORS as exc:
            return _fail(f"SQS: {exc}")
        print(transfer_id, flush=True)
        if not args.wait:
            return EXIT_OK
        result = client.result(transfer_id, wait=args.timeout)
    if result is None:
        print(
            f"timed out: no result for transfer {transfer_id} within {args.timeout:g} s "
            "(is a worker running? a malformed or undeliverable message goes to the DLQ)",
            file=sys.stderr,
        )
        return EXIT_TIMEOUT
    print(format_outcome(result))
    return EXIT_OK if result.committed else EXIT_NO


def format_outcome(result: TransferResult) -> str:
    """``committed`` with payer balance, transaction time and attempts, or ``rejected``
    with the reason; one ``label  value`` line per figure."""
    from producer.cli import _line

    lines = [result.status.value]
    if result.committed:
        ms = "-" if result.transaction_ms is None else f"{result.transaction_ms:.3f}"
        lines += [_line("payer balance", str(result.payer_balance)), _line("transaction ms", ms)]
    else:
        lines.append(_line("reason", result.reason.value if result.reason else "unknown"))
    lines.append(_line("attempts", str(result.attempts)))
    return "\n".join(lines)


def seconds(text: str) -> float:
    """argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value
