"""``producer audit``: is every unit of money accounted for? Exit 1 if not.

The checks are :func:`producer.audit.run_audit`'s; this module prints its report,
as the ``AUDIT`` block or as one JSON object.
"""

from __future__ import annotations

import argparse
import json

from producer.audit import run_audit
from producer.console import EXIT_NO, EXIT_OK, Subparsers, add_json, line
from worker.db import connect
from worker.settings import Settings


def register(subparsers: Subparsers) -> None:
    """``audit [--json]``."""
    cmd = subparsers.add_parser(
        "audit", help="check that no money was lost or created (exit 1 if any was)"
    )
    add_json(cmd)
    cmd.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the audit report; exit 1 when an invariant is violated."""
    with connect(settings) as conn:
        report = run_audit(conn)
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print("AUDIT " + ("ok" if report.ok else f"FAILED ({len(report.violations)} violations)"))
        print(line("accounts", f"{report.accounts} (expected {report.expected_accounts})"))
        print(line("total balance", f"{report.total} (expected {report.expected_total})"))
        print(line("committed", str(report.committed_transfers)))
        for violation in report.violations:
            print(line("violation", violation))
    return EXIT_OK if report.ok else EXIT_NO
