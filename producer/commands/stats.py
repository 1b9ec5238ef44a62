"""``producer stats``: outcomes, retries, transaction times and throughput of the results.

The database counts, chunk by chunk (:func:`producer.summary.summarize_table`), all
results or a window of them (``--since`` / ``--until``); this module prints the STATS
block or its JSON form (:mod:`producer.stats_format`).
"""

from __future__ import annotations

import argparse
import json

from producer.console import (
    EXIT_OK,
    Subparsers,
    add_json,
    add_window_arguments,
    fail,
    window_problem,
)
from producer.stats_format import format_stats, stats_as_dict
from producer.summary import Window, summarize_table
from worker.db import connect
from worker.settings import Settings


def register(subparsers: Subparsers) -> None:
    """``stats [--json] [--since T] [--until T]``."""
    cmd = subparsers.add_parser(
        "stats", help="outcomes, retries, transaction times and throughput of all results"
    )
    add_json(cmd)
    add_window_arguments(cmd)
    cmd.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Summarize the recorded results, all or a window (see :mod:`producer.summary`)."""
    if problem := window_problem(args):
        return fail(problem)
    with connect(settings, autocommit=True) as conn:
        stats = summarize_table(conn, Window(args.since, args.until))
    print(json.dumps(stats_as_dict(stats)) if args.json else format_stats(stats))
    return EXIT_OK
