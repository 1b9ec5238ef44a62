"""``python -m bench.prepare``: what ``prepare_threshold=None`` (DSQL's setting) costs
on PostgreSQL.

The engine's throughput with psycopg's default (statements prepared on their 5th run)
and with no prepared statements at all, at 1 and 4 threads, alternately in one run on
one embedded PostgreSQL (which goes first alternates too), ``--repeats`` times; the
medians go to stdout and to ``bench/prepare_threshold.json``, which
``python -m sandbox.dsql_statements`` renders into ``docs/dsql-statements.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import contention, machine, report
from bench.engine import ACCOUNTS, run_engine
from bench.server import BenchServer
from sandbox.dsql_statements import PREPARE_COST

CONCURRENCIES = (1, 4)
SETTINGS: dict[str, dict[str, Any]] = {"default": {}, "none": {"prepare_threshold": None}}


def measure(repeats: int, duration_s: float, warmup_s: float) -> dict[str, Any]:
    """Alternating runs; per concurrency the median tps of each setting."""
    runs: dict[tuple[str, int], list[float]] = {}
    with BenchServer() as server:
        server.reset(ACCOUNTS, contention.BALANCE)
        run_engine(server.settings(), 1, duration_s=warmup_s, warmup_s=0.5)
        for repeat in range(repeats):
            for concurrency in CONCURRENCIES:
                order = list(SETTINGS) if repeat % 2 == 0 else list(reversed(SETTINGS))
                for name in order:
                    run = run_engine(
                        server.settings(),
                        concurrency,
                        duration_s=duration_s,
                        warmup_s=warmup_s,
                        seed=repeat,
                        connection_kwargs=SETTINGS[name],
                    )
                    runs.setdefault((name, concurrency), []).append(run.tps)
                    print(
                        f"  c={concurrency} repeat {repeat + 1} {name}: {run.tps:,.0f} tps",
                        file=sys.stderr,
                    )
    rows = []
    for concurrency in CONCURRENCIES:
        default = report.median(runs[("default", concurrency)])
        none = report.median(runs[("none", concurrency)])
        rows.append(
            {
                "concurrency": concurrency,
                "default_tps": default,
                "none_tps": none,
                "change_pct": 100 * (none - default) / default,
                "default_runs_tps": runs[("default", concurrency)],
                "none_runs_tps": runs[("none", concurrency)],
            }
        )
    return {"repeats": repeats, "duration_s": duration_s, "warmup_s": warmup_s, "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the table, write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.prepare", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each run")
    parser.add_argument("--output", type=Path, default=PREPARE_COST)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    result = measure(args.repeats, args.duration, args.warmup)
    described = machine.describe()
    arguments = shlex.join(sys.argv[1:] if argv is None else list(argv))
    result["command"] = f"python -m bench.prepare {arguments}".strip()
    result["date"] = datetime.now(UTC).date().isoformat()
    result["machine"] = f"{described.get('cpus', '?')} CPUs, embedded PostgreSQL, loopback"
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print("threads  default tps  none tps  change")
    for row in result["rows"]:
        print(
            f"{row['concurrency']:>7}  {row['default_tps']:>11,.0f}  {row['none_tps']:>8,.0f}"
            f"  {row['change_pct']:+.1f} %"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
