"""``python -m producer smoke``: prove the product against a real cluster in a minute.

The run is :func:`producer.smoke.run_smoke` (every step in a throwaway schema, see
:mod:`producer.smoke`); this module adds the arguments, configures logging and prints
the report. Exit 0 only when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse

from producer import smoke
from producer.console import EXIT_NO, EXIT_OK, Subparsers
from worker.logs import configure_logging
from worker.settings import Settings


def register(subparsers: Subparsers) -> None:
    """``smoke [--transfers N] [--threads T] [--seed S]``."""
    cmd = subparsers.add_parser(
        "smoke",
        help="check the product against DSQL_ENDPOINT (or DATABASE_URL, or an embedded "
        "PostgreSQL) in a throwaway schema; exit 1 on any failure",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    cmd.add_argument("--transfers", type=int, default=240, help="contended transfers (240)")
    cmd.add_argument("--threads", type=int, default=8, help="threads applying them (8)")
    cmd.add_argument("--seed", type=int, default=None, help="workload seed")
    cmd.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the smoke test and print its report; 0 only when every check passed."""
    configure_logging(settings)
    report = smoke.run_smoke(
        settings, transfers=args.transfers, threads=args.threads, seed=args.seed
    )
    print(report.render(), end="")
    return EXIT_OK if report.passed else EXIT_NO
