"""``python -m bench [--quick] [--repeats R] [--output bench/results.json]``.

One run, one embedded PostgreSQL, one moto server: every measurement of the issue,
in an order that needs the fewest account resets, then the targets, the table and
the JSON file. Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from bench import contention, footprint, machine, pgbench, pipeline, report, scale
from bench.engine import ACCOUNTS, EngineRun, run_engine, run_engine_processes
from bench.proxy import ProxyProcess
from bench.round_trips import run_round_trips
from bench.server import PGBENCH_DB, BenchServer, proxied
from sandbox.sqs import LocalSqs
from worker.settings import Settings

T = TypeVar("T")
CONCURRENCIES = (1, 4, 8)
DELAYS_S = (0.002, 0.005, 0.010)
LATENCY_S = 0.001
"""One-way delay of the proxied engine-vs-pgbench comparison (2 ms round trip)."""
LATENCY_CONCURRENCIES = (1, 4)
BATCH = Settings().transfer_batch
"""The batched runs use the default TRANSFER_BATCH: what a worker does out of the box."""
BATCH_SWEEP = (1, 2, 4, 8, 16, 32)
PROCESSES = 4
"""The concurrency also measured as that many single-threaded processes."""
"""Batch sizes tried once each at 4 clients: the evidence for that default."""


@dataclass(frozen=True)
class Plan:
    """How much of everything a run measures."""

    repeats: int
    engine_s: float
    warmup_s: float
    latency_s: float
    rtt_transfers: int
    pipeline_messages: int
    contention_transfers: int
    headline_sqs_transfers: int
    import_repeats: int

    @classmethod
    def full(cls, repeats: int) -> Plan:
        """About 13 minutes on a 2-core machine."""
        return cls(repeats, 8.0, 2.0, 5.0, 200, 1500, 10_000, 10_000, 7)

    @classmethod
    def quick(cls, repeats: int) -> Plan:
        """About 3.5 minutes: the same shape, smaller numbers."""
        return cls(repeats, 3.0, 1.0, 3.0, 50, 400, 2_000, 1_000, 3)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller numbers, one repeat")
    parser.add_argument("--repeats", type=int, default=None, help="repeats (default 3, quick 1)")
    parser.add_argument("--output", type=Path, default=report.DEFAULT_OUTPUT, help="JSON file")
    parser.add_argument(
        "--only",
        choices=["scale", "pipeline"],
        default=None,
        help="run one section and merge it into the JSON file (scale: setup, audit and "
        "stats at 1M accounts and 1M results; pipeline: raw moto vs end to end, with "
        "--quick and --repeats as for a whole run)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run everything, print the table, write the JSON."""
    args = parse_args(argv)
    if args.only == "scale":
        return only_scale(args.output)
    repeats = args.repeats or (1 if args.quick else 3)
    plan = Plan.quick(repeats) if args.quick else Plan.full(repeats)
    if args.only == "pipeline":
        return only_pipeline(args.output, plan)
    _quiet_logs()
    started = time.monotonic()
    busy = machine.Busy()
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    results: dict[str, Any] = {
        "run": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": command.strip(),
            "quick": args.quick,
            "repeats": repeats,
            "plan": plan.__dict__,
        },
        "machine": machine.describe(),
        "workshop": report.WORKSHOP,
    }
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    say(f"work dir {workdir} (worker logs)")
    # First, while nothing of ours runs: a fresh interpreter's import is the most
    # sensitive to a busy machine.
    cold = step("Lambda cold import", lambda: footprint.cold_import(plan.import_repeats))
    with BenchServer() as server, LocalSqs() as sqs:
        moto_errors = _count_moto_errors()
        results["postgres"] = {
            "version": server.version(),
            "version_short": " ".join(server.version().split()[:2]),
            "settings": server.server_settings(),
        }
        results["engine_vs_pgbench"] = step(
            "engine vs pgbench", lambda: engine_vs_pgbench(server, plan)
        )
        results["engine_vs_pgbench_latency"] = step(
            "engine vs pgbench, 1 ms each way", lambda: engine_vs_pgbench_latency(server, plan)
        )
        results["round_trips"] = step(
            "round trips", lambda: run_round_trips(server, DELAYS_S, plan.rtt_transfers)
        )
        results["pipeline"] = step(
            "pipeline (raw moto vs e2e)", lambda: pipelines(server, sqs, workdir, plan)
        )
        results["contention"] = step(
            "contention sweep", lambda: contention_sweep(server, sqs, workdir, plan)
        )
        results["scale"] = step(
            "scale (1M accounts, 1M results)", lambda: scale.run_scale(server, dict(os.environ))
        )
        results["moto_internal_errors"] = {
            "count": moto_errors.count,
            "note": "HTTP 500s moto's server answered (botocore retries them), with the "
            "exceptions behind the first few",
            "examples": moto_errors.examples,
        }
    results["footprint"] = footprints(results, cold)
    results["run"]["busy"] = busy.stop()
    results["run"]["elapsed_s"] = round(time.monotonic() - started, 1)
    results["targets"] = report.evaluate_targets(results)
    report.write(results, args.output)
    print(report.format_table(results))
    say(f"wrote {args.output} in {results['run']['elapsed_s']:.0f} s")
    return 0


def only_scale(output: Path) -> int:
    """``--only scale``: run that section on a server of its own and merge it into
    ``output`` (the other sections of an earlier run stay as they were)."""
    _quiet_logs()
    results: dict[str, Any] = json.loads(output.read_text()) if output.exists() else {}
    with BenchServer() as server:
        results["scale"] = step(
            "scale (1M accounts, 1M results)", lambda: scale.run_scale(server, dict(os.environ))
        )
    report.write(results, output)
    print("\n".join(report.format_scale(results)))
    say(f"merged the scale section into {output}")
    return 0


def only_pipeline(output: Path, plan: Plan) -> int:
    """``--only pipeline``: run that section on a server and a moto of its own and merge
    it into ``output``, re-evaluating the targets (the other sections stay as they were)."""
    _quiet_logs()
    results: dict[str, Any] = json.loads(output.read_text()) if output.exists() else {}
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    say(f"work dir {workdir} (worker logs)")
    with BenchServer() as server, LocalSqs() as sqs:
        moto_errors = _count_moto_errors()
        results["pipeline"] = step(
            "pipeline (raw moto vs e2e)", lambda: pipelines(server, sqs, workdir, plan)
        )
    say(f"moto answered {moto_errors.count} HTTP 500s (botocore retries them)")
    results["targets"] = report.evaluate_targets(results)
    report.write(results, output)
    print("\n".join(report.format_pipeline(results)))
    say(f"merged the pipeline section into {output}")
    return 0


# --- the measurements, in order ---------------------------------------------------------------


def engine_vs_pgbench(server: BenchServer, plan: Plan) -> dict[str, Any]:
    """Per concurrency, engine and pgbench alternately (which goes first alternates
    too), ``repeats`` times; medians and the ratio of the medians."""
    server.reset(ACCOUNTS, contention.BALANCE)
    program, endpoint = server.pg.bin("pgbench"), server.endpoint(PGBENCH_DB)
    scale = max(pgbench.SCALE, *CONCURRENCIES)
    pgbench.initialize(program, endpoint, scale)
    # Warm-ups: caches, plans, the pool's first connections.
    run_engine(server.settings(), 1, duration_s=plan.warmup_s, warmup_s=0.5)
    pgbench.run_pgbench(program, endpoint, 1, duration_s=max(plan.warmup_s, 1))
    engine_runs: dict[int, list[EngineRun]] = {c: [] for c in CONCURRENCIES}
    batched_runs: dict[int, list[EngineRun]] = {c: [] for c in CONCURRENCIES}
    process_runs: dict[int, list[EngineRun]] = {1: [], BATCH: []}
    pgbench_runs: dict[int, list[pgbench.PgbenchRun]] = {c: [] for c in CONCURRENCIES}
    data_dir = server.pg.data_dir

    def engine_once(c: int, seed: int) -> None:
        for batch, runs in ((1, engine_runs), (BATCH, batched_runs)):
            runs[c].append(
                run_engine(
                    server.settings(),
                    c,
                    duration_s=plan.engine_s,
                    warmup_s=plan.warmup_s,
                    seed=seed,
                    pg_data_dir=data_dir,
                    batch=batch,
                )
            )
        if c == PROCESSES:
            # The same clients as processes (WORKER_PROCESSES): one GIL each, as pgbench
            # gives each client a thread of C.
            for size, sized in process_runs.items():
                run = run_engine_processes(
                    server.settings(), c, duration_s=plan.engine_s, warmup_s=plan.warmup_s,
                    batch=size, seed=seed,
                )  # fmt: skip
                sized.append(run)

    def pgbench_once(c: int) -> None:
        pgbench_runs[c].append(
            pgbench.run_pgbench(
                program, endpoint, c, duration_s=plan.engine_s, pg_data_dir=data_dir
            )
        )

    for repeat in range(plan.repeats):
        for c in CONCURRENCIES:
            # Which goes first alternates, so a drift in the machine's load favours neither.
            if repeat % 2:
                pgbench_once(c)
            engine_once(c, seed=repeat)
            if not repeat % 2:
                pgbench_once(c)
            say(
                f"  c={c} repeat {repeat + 1}: engine {engine_runs[c][-1].tps:,.0f} tps, "
                f"batched ({BATCH}) {batched_runs[c][-1].tps:,.0f} tps, "
                f"pgbench {pgbench_runs[c][-1].tps:,.0f} tps"
            )
    by_concurrency = {}
    for c in CONCURRENCIES:
        by_concurrency[str(c)] = {
            **_medians(engine_runs[c], batched_runs[c], pgbench_runs[c]),
            "batched_retries": sum(r.retries for r in batched_runs[c]),
            "batched_client_cpu_us": report.median([r.client_cpu_us for r in batched_runs[c]]),
            "batched_server_cpu_us": report.median(
                [r.server_cpu_us or float("nan") for r in batched_runs[c]]
            ),
            "engine_p50_ms": report.median([r.p50_ms for r in engine_runs[c]]),
            "engine_p99_ms": report.median([r.p99_ms for r in engine_runs[c]]),
            "engine_retries": sum(r.retries for r in engine_runs[c]),
            "engine_runs_tps": [r.tps for r in engine_runs[c]],
            "pgbench_runs_tps": [r.tps for r in pgbench_runs[c]],
            "engine_client_cpu_us": report.median([r.client_cpu_us for r in engine_runs[c]]),
            "engine_server_cpu_us": report.median(
                [r.server_cpu_us or float("nan") for r in engine_runs[c]]
            ),
            "pgbench_client_cpu_us": report.median([r.client_cpu_us for r in pgbench_runs[c]]),
            "pgbench_server_cpu_us": report.median(
                [r.server_cpu_us or float("nan") for r in pgbench_runs[c]]
            ),
            "pgbench_latency_avg_ms": report.median(
                [r.latency_avg_ms or float("nan") for r in pgbench_runs[c]]
            ),
        }
    pgbench_at = report.median([r.tps for r in pgbench_runs[PROCESSES]])
    processes = {
        str(batch): {
            "tps": report.median([r.tps for r in runs]),
            "ratio": report.ratio(report.median([r.tps for r in runs]), pgbench_at),
            "client_cpu_us": report.median([r.client_cpu_us for r in runs]),
            "retries": sum(r.retries for r in runs),
            "runs_tps": [r.tps for r in runs],
        }
        for batch, runs in process_runs.items()
    }
    sweep = []
    for batch in BATCH_SWEEP:
        run = run_engine(
            server.settings(), 4, duration_s=plan.latency_s, warmup_s=plan.warmup_s, batch=batch
        )
        sweep.append({"batch": batch, "tps": run.tps, "retries": run.retries,
                      "client_cpu_us": run.client_cpu_us, "p50_ms": run.p50_ms})  # fmt: skip
        say(f"  batch {batch} at c=4: {run.tps:,.0f} tps, {run.retries} retries")
    return {
        "accounts": ACCOUNTS,
        "batch": BATCH,
        "batch_sweep": sweep,
        "processes": PROCESSES,
        "by_batch_in_processes": processes,
        "pgbench_scale": scale,
        "pgbench_command": "pgbench -b tpcb-like -M prepared -c C -j C -T T",
        "duration_s": plan.engine_s,
        "warmup_s": plan.warmup_s,
        "repeats": plan.repeats,
        "by_concurrency": by_concurrency,
    }


def engine_vs_pgbench_latency(server: BenchServer, plan: Plan) -> dict[str, Any]:
    """The same pair through a latency proxy (its own process) adding
    :data:`LATENCY_S` each way, as a network between client and database would: the
    regime DSQL runs in, where round trips rather than CPU set the pace. At c=1 the
    proxy's burst count gives each side's round trips per transaction."""
    program = server.pg.bin("pgbench")
    target = (server.endpoint().host, server.endpoint().port)
    engine_runs: dict[int, list[EngineRun]] = {c: [] for c in LATENCY_CONCURRENCIES}
    batched_runs: dict[int, list[EngineRun]] = {c: [] for c in LATENCY_CONCURRENCIES}
    pgbench_runs: dict[int, list[pgbench.PgbenchRun]] = {c: [] for c in LATENCY_CONCURRENCIES}
    rtt: dict[str, float] = {}
    with ProxyProcess(target, LATENCY_S) as proxy:
        settings = server.settings(proxied(server.endpoint(), proxy.port))
        endpoint = proxied(server.endpoint(PGBENCH_DB), proxy.port)
        proxy.reset()
        first = run_engine(settings, 1, duration_s=plan.latency_s, warmup_s=0.0)
        rtt["engine"] = proxy.round_trips / max(first.committed, 1)
        proxy.reset()
        first_pgbench = pgbench.run_pgbench(program, endpoint, 1, duration_s=plan.latency_s)
        rtt["pgbench"] = proxy.round_trips / max(first_pgbench.tps * first_pgbench.duration_s, 1)
        say(
            f"  round trips per transaction through the proxy: engine {rtt['engine']:.2f}, "
            f"pgbench {rtt['pgbench']:.2f}"
        )
        for repeat in range(plan.repeats):
            for c in LATENCY_CONCURRENCIES:
                for batch, runs in ((1, engine_runs), (BATCH, batched_runs)):
                    runs[c].append(
                        run_engine(settings, c, duration_s=plan.latency_s, warmup_s=1.0,
                                   seed=100 + repeat, batch=batch)
                    )  # fmt: skip
                pgbench_runs[c].append(
                    pgbench.run_pgbench(program, endpoint, c, duration_s=plan.latency_s)
                )
                say(
                    f"  +{LATENCY_S * 1000:g} ms, c={c} repeat {repeat + 1}: engine "
                    f"{engine_runs[c][-1].tps:,.0f} tps, batched {batched_runs[c][-1].tps:,.0f} "
                    f"tps, pgbench {pgbench_runs[c][-1].tps:,.0f} tps"
                )
    by_concurrency = {}
    for c in LATENCY_CONCURRENCIES:
        by_concurrency[str(c)] = {
            **_medians(engine_runs[c], batched_runs[c], pgbench_runs[c]),
            "engine_p50_ms": report.median([r.p50_ms for r in engine_runs[c]]),
            "pgbench_latency_avg_ms": report.median(
                [r.latency_avg_ms or float("nan") for r in pgbench_runs[c]]
            ),
        }
    return {
        "batch": BATCH,
        "one_way_delay_ms": LATENCY_S * 1000,
        "duration_s": plan.latency_s,
        "repeats": plan.repeats,
        "round_trips_per_transaction": rtt,
        "by_concurrency": by_concurrency,
    }


def pipelines(server: BenchServer, sqs: LocalSqs, workdir: Path, plan: Plan) -> dict[str, Any]:
    """Raw moto and end to end, alternately, ``repeats`` times (the target); then one
    run of each diagnostic."""
    server.reset(ACCOUNTS, contention.BALANCE)
    config = pipeline.PipelineConfig(
        database_url=server.endpoint().url(),
        sqs=sqs,
        workdir=workdir,
        pg_data_dir=server.pg.data_dir,
        messages=plan.pipeline_messages,
    )
    out: dict[str, Any] = {
        "messages": plan.pipeline_messages,
        "threads": config.threads,
        "max_backlog": config.max_backlog,
        "accounts": ACCOUNTS,
        "repeats": plan.repeats,
    }
    out["stock_moto"] = _pipeline_pair(config, plan.repeats)
    return out


def _pipeline_pair(config: pipeline.PipelineConfig, repeats: int) -> dict[str, Any]:
    raws: list[dict[str, Any]] = []
    e2es: list[dict[str, Any]] = []
    for repeat in range(repeats):
        if repeat % 2:
            e2es.append(pipeline.e2e_run(config))
        raws.append(pipeline.raw_run(config))
        if not repeat % 2:
            e2es.append(pipeline.e2e_run(config))
        say(
            f"  repeat {repeat + 1}: raw moto {raws[-1]['throughput_per_s']:.0f}/s, "
            f"e2e {e2es[-1]['throughput_per_s']:.0f}/s"
        )
    raw = report.median([r["throughput_per_s"] for r in raws])
    e2e = report.median([r["throughput_per_s"] for r in e2es])
    return {
        "raw_per_s": raw,
        "e2e_per_s": e2e,
        "ratio": report.ratio(e2e, raw),
        "e2e_p50_ms": report.median([r["end_to_end_ms_p50"] for r in e2es]),
        "e2e_p99_ms": report.median([r["end_to_end_ms_p99"] for r in e2es]),
        "e2e_cpu_ms_per_message": _median_dict([r["cpu_ms_per_message"] for r in e2es]),
        "raw_cpu_ms_per_message": _median_dict([r["cpu_ms_per_message"] for r in raws]),
        "e2e_moto_in_flight_median": report.median(
            [r["moto_queue"]["in_flight_median"] or 0 for r in e2es]
        ),
        "raw_moto_in_flight_median": report.median(
            [r["moto_queue"]["in_flight_median"] or 0 for r in raws]
        ),
        "raw_runs": raws,
        "e2e_runs": e2es,
    }


def contention_sweep(
    server: BenchServer, sqs: LocalSqs, workdir: Path, plan: Plan
) -> dict[str, Any]:
    """The engine-level sweep, then the headline case through moto."""

    def progress(row: dict[str, Any]) -> None:
        say(
            f"  {row['accounts']:>5} accounts, {row['mode']:<22} retries {row['retries']:<3}: "
            f"{row['goodput_per_s']:,.0f}/s, {row['committed_pct']:.2f} % committed, "
            f"{row['retries_per_transfer']:.3f} retries/transfer"
        )

    cases = contention.sweep(server, plan.contention_transfers, on_case=progress)
    headline = next(
        row
        for row in cases
        if row["accounts"] == 10 and row["mode"] == "2 workers" and row["retries"] == "on"
    )
    sqs_case = contention.through_sqs(server, sqs, workdir, plan.headline_sqs_transfers)
    say(
        f"  through moto: {sqs_case['retries_per_transfer']:.3f} retries/transfer, "
        f"{sqs_case['throughput_per_s']:.0f}/s"
    )
    return {
        "transfers": plan.contention_transfers,
        "concurrency": contention.CONCURRENCY,
        "balance": str(contention.BALANCE),
        "cases": cases,
        "headline_engine": headline,
        "headline_sqs": sqs_case,
    }


def footprints(results: dict[str, Any], cold_import: dict[str, Any]) -> dict[str, Any]:
    """Worker RSS from the pipeline runs; the Lambda handler's cold import."""
    e2e_runs = results.get("pipeline", {}).get("stock_moto", {}).get("e2e_runs", [])
    peaks = [run["worker_rss"]["peak_mib"] for run in e2e_runs if run["worker_rss"]["peak_mib"]]
    steady = [
        run["worker_rss"]["steady_median_mib"]
        for run in e2e_runs
        if run["worker_rss"]["steady_median_mib"]
    ]
    headline = results.get("contention", {}).get("headline_sqs", {})
    if headline.get("worker_peak_rss_mib"):
        peaks.append(headline["worker_peak_rss_mib"])
    return {
        "worker_peak_rss_mib": max(peaks) if peaks else None,
        "worker_steady_rss_mib": report.median(steady),
        "worker_rss_note": "VmHWM of each worker process over its life (start-up, load, "
        "drain); steady = median VmRSS over the second half of each load",
        "cold_import": cold_import,
        "cold_import_bytecode": footprint.bytecode_note(),
    }


# --- helpers ----------------------------------------------------------------------------------


def step(name: str, action: Callable[[], T]) -> T:
    """Run one measurement, saying how long it took and how busy the machine was."""
    say(f"{name} ...")
    busy = machine.Busy()
    started = time.monotonic()
    result = action()
    load = busy.stop()
    say(
        f"{name}: {time.monotonic() - started:.0f} s (machine CPU busy {load['cpu_busy_pct']} %,"
        f" load {load['loadavg_start']} -> {load['loadavg_end']})"
    )
    if isinstance(result, dict):
        result["machine_busy"] = load
        result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


def say(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)


def _medians(
    engine: list[EngineRun], batched: list[EngineRun], pgbench_runs: list[pgbench.PgbenchRun]
) -> dict[str, float]:
    """The median tps of each side of one pair, and the engine's ratios to pgbench."""
    engine_tps = report.median([r.tps for r in engine])
    batched_tps = report.median([r.tps for r in batched])
    pgbench_tps = report.median([r.tps for r in pgbench_runs])
    return {
        "engine_tps": engine_tps,
        "pgbench_tps": pgbench_tps,
        "ratio": report.ratio(engine_tps, pgbench_tps),
        "batched_tps": batched_tps,
        "batched_ratio": report.ratio(batched_tps, pgbench_tps),
    }


def _median_dict(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = rows[0].keys() if rows else []
    return {key: report.median([row[key] for row in rows]) for key in keys}


class _ErrorCounter(logging.Filter):
    """Counts (and silences) the tracebacks moto's server logs for its own 500s."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.examples: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self.count += 1
            if record.exc_info and record.exc_info[1] is not None and len(self.examples) < 3:
                error = record.exc_info[1]
                self.examples.append(f"{type(error).__name__}: {error}")
        return False


def _count_moto_errors() -> _ErrorCounter:
    counter = _ErrorCounter()
    logging.getLogger("werkzeug").addFilter(counter)
    return counter


def _quiet_logs() -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.basicConfig(level=logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
