"""``python -m producer report``: write the HTML report of a window of results.

The page is :func:`producer.report.build_report`'s: throughput and latency
percentiles over time, attempts, rejections by reason and the STATS numbers of the
results completed in ``[--since, --until)``, in one file that opens without a network.
It needs plotly (the ``producer`` extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from producer.console import EXIT_OK, Subparsers, add_window_arguments, fail, window_problem
from producer.report import build_report
from producer.summary import Window
from worker.settings import Settings


def register(subparsers: Subparsers) -> None:
    """``report [--since T] [--until T] [--output FILE] [--title TEXT]``."""
    cmd = subparsers.add_parser(
        "report",
        help="write one self-contained HTML page with charts of a window of results",
        description="Throughput over time by outcome, latency percentiles over time, "
        "attempts, rejections by reason and the STATS numbers of the results completed "
        "in [--since, --until), as one HTML file that opens without a network.",
    )
    add_window_arguments(cmd)
    cmd.add_argument(
        "--output", type=Path, default=Path("report.html"), metavar="FILE", help="(report.html)"
    )
    cmd.add_argument("--title", default="dsql-transfers report", help="the page's title")
    cmd.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Write the page; prints its path and size."""
    if problem := window_problem(args):
        return fail(problem)
    try:
        page = build_report(
            settings, Window(args.since, args.until), title=args.title, run_settings={}
        )
    except ImportError:
        return fail("report needs plotly: pip install 'dsql-transfers[producer]'")
    args.output.write_text(page, encoding="utf-8")
    print(f"wrote {args.output} ({len(page) / 2**20:.1f} MiB)")
    return EXIT_OK
