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
from uuid import UUID

from producer.client import TransferClient
from producer.console import (
    EXIT_NO,
    EXIT_OK,
    EXIT_TIMEOUT,
    Subparsers,
    add_timeout,
    decimal,
    fail,
    line,
)
from producer.sqs import SQS_ERRORS
from producer.transfer import InvalidTransfer, Transfer, TransferNotSent, to_request
from worker.errors import QueueNotConfigured
from worker.outcomes import TransferResult
from worker.settings import Settings

DEFAULT_TIMEOUT_S = 30.0


def register(subparsers: Subparsers) -> None:
    """``send --payer P --payee Q --amount A [--transfer-id U] [--wait] [--timeout S]``."""
    cmd = subparsers.add_parser(
        "send",
        help="enqueue one transfer; --wait prints its outcome",
        description="Put one transfer request on the queue and print its transfer id. "
        "With --wait, poll transfer_results for it and print the outcome.",
    )
    cmd.add_argument("--payer", type=int, required=True, metavar="P", help="payer account id")
    cmd.add_argument("--payee", type=int, required=True, metavar="Q", help="payee account id")
    cmd.add_argument("--amount", type=decimal, required=True, metavar="A")
    cmd.add_argument(
        "--transfer-id",
        type=UUID,
        default=None,
        metavar="U",
        help="idempotency key; resending an id never moves the money twice (default: new uuid4)",
    )
    cmd.add_argument("--wait", action="store_true", help="wait for the outcome and print it")
    add_timeout(cmd, DEFAULT_TIMEOUT_S, "the outcome")
    cmd.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Send the transfer, print its id, and with ``--wait`` its outcome."""
    try:
        # The worker's own parser: what it would dead-letter is never sent.
        request = to_request(Transfer(args.payer, args.payee, args.amount, args.transfer_id))
    except InvalidTransfer as exc:
        return fail(str(exc))
    try:
        client = TransferClient.from_settings(settings)
    except QueueNotConfigured as exc:
        return fail(str(exc))
    except SQS_ERRORS as exc:
        return fail(f"SQS: {exc}")
    with client:
        if args.wait:
            # Connected before sending: an unreachable database stops us with nothing queued.
            client.connect()
        try:
            transfer_id = client.send(
                request.payer_id, request.payee_id, request.amount, transfer_id=request.transfer_id
            )
        except TransferNotSent as exc:
            return fail(f"SQS did not take the message: {exc.code}")
        except SQS_ERRORS as exc:
            return fail(f"SQS: {exc}")
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
    lines = [result.status.value]
    if result.committed:
        ms = "-" if result.transaction_ms is None else f"{result.transaction_ms:.3f}"
        lines += [line("payer balance", str(result.payer_balance)), line("transaction ms", ms)]
    else:
        lines.append(line("reason", result.reason.value if result.reason else "unknown"))
    lines.append(line("attempts", str(result.attempts)))
    return "\n".join(lines)
