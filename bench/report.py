"""Targets, the printed table, and ``bench/results.json``.

``python -m bench.report [bench/results.json]`` prints the table of an earlier run
again (the README's Performance section is that output).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.json"

WORKSHOP = {
    "source": "DAT401 workshop, Lambda + Aurora DSQL (../shared/reference/DSQL.md)",
    "without_retry_success_pct": 93.44,
    "with_retry_retries_per_call": 0.07,
    "with_retry_retried_pct": 6.42,
    "calls_per_s_1000_accounts": [909, 931],
    "calls_per_s_1m_accounts": 4192,
}


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when the denominator is 0."""
    return numerator / denominator if denominator else float("nan")


# --- targets ------------------------------------------------------------------------------


Target = dict[str, Any]
COLD_IMPORT_MS = 300
"""The Lambda handler's module import, interpreter start-up subtracted."""


def evaluate_targets(results: dict[str, Any]) -> list[Target]:
    """Each target of the issue: what was measured, pass or miss, and by how much."""
    return [
        *_engine_targets(results),
        *_pipeline_targets(results),
        *_contention_targets(results),
        *_footprint_targets(results),
    ]


def _target(name: str, goal: str, measured: float | None, passed: bool, note: str) -> Target:
    return {"target": name, "goal": goal, "measured": measured, "pass": passed, "note": note}


def _over(value: float, limit: float, unit: str) -> str:
    return f"; over by {value - limit:.0f} {unit}" if value >= limit else ""


def _engine_targets(results: dict[str, Any]) -> list[Target]:
    targets = []
    engine = results.get("engine_vs_pgbench", {})
    row = engine.get("by_concurrency", {}).get("4")
    if row:
        targets.append(_ratio_target("engine vs pgbench tpcb-like, c=4", row["engine_tps"],
                                     row["pgbench_tps"], 1.0))  # fmt: skip
        if "batched_tps" in row:
            name = f"engine batched ({engine['batch']}) vs pgbench tpcb-like, c=4"
            targets.append(_ratio_target(name, row["batched_tps"], row["pgbench_tps"], 1.5))
        for batch, run in engine.get("by_batch_in_processes", {}).items():
            kind = "single" if batch == "1" else f"batched ({batch})"
            name = f"engine {kind}, {engine['processes']} processes, vs pgbench, c=4"
            targets.append(_ratio_target(name, run["tps"], row["pgbench_tps"],
                                         1.0 if batch == "1" else 1.5))  # fmt: skip
    latency = results.get("engine_vs_pgbench_latency", {})
    row = latency.get("by_concurrency", {}).get("4")
    if row:
        name = f"engine vs pgbench, +{latency['one_way_delay_ms']:g} ms each way, c=4"
        targets.append(_ratio_target(name, row["engine_tps"], row["pgbench_tps"], 3.0))
    rtt = results.get("round_trips")
    if rtt:
        estimate, bursts = rtt["round_trips"], rtt["bursts_median"]
        note = f"latency slope {estimate:.2f} RTT per transfer; proxy counted {bursts:g} bursts"
        targets.append(_target("round trips per committed transfer", "1", estimate,
                               round(estimate) <= 1 and bursts <= 1, note))  # fmt: skip
    return targets


def _ratio_target(name: str, tps: float, baseline: float, goal: float) -> Target:
    value = ratio(tps, baseline)
    note = f"{tps:,.0f} vs {baseline:,.0f} tps"
    if value < goal:
        note += f"; short by {100 * (1 - value / goal):.0f} %"
    return _target(name, f">= {goal:g}x", value, value >= goal, note)


def _pipeline_targets(results: dict[str, Any]) -> list[Target]:
    pipe = results.get("pipeline", {}).get("stock_moto")
    if not pipe:
        return []
    value = pipe["ratio"]
    note = f"{pipe['e2e_per_s']:.0f} vs {pipe['raw_per_s']:.0f} msg/s"
    if value < 0.8:
        note += f"; {100 * (1 - value / 0.8):.0f} % below the target"
    return [_target("e2e vs raw moto", ">= 0.8x", value, value >= 0.8, note)]


def _contention_targets(results: dict[str, Any]) -> list[Target]:
    targets = []
    contention = results.get("contention", {})
    for key, label in (("headline_engine", "engine, saturated"), ("headline_sqs", "through moto")):
        row = contention.get(key)
        if not row:
            continue
        retries = row["retries_per_transfer"] or 0.0
        note = f"{row['with_outcome_pct']:.2f} % with an outcome, {retries:.3f} retries/transfer"
        note += f", max {row['max_retries']}"
        if "mean_in_flight" in row:
            note += f", {row['throughput_per_s']:.0f}/s, ~{row['mean_in_flight']:.1f} in flight"
        passed = row["with_outcome_pct"] == 100 and retries < 0.07
        name = f"10 accounts, 16-way, 2 workers ({label})"
        goal = "100 % outcome, < 0.07 retries/transfer"
        targets.append(_target(name, goal, retries, passed, note))
    return targets


def _footprint_targets(results: dict[str, Any]) -> list[Target]:
    targets = []
    footprint = results.get("footprint", {})
    rss = footprint.get("worker_peak_rss_mib")
    if rss:
        megabytes = rss * 2**20 / 10**6
        targets.append(_target("worker peak RSS", "< 150 MB", megabytes, megabytes < 150,
                               f"{rss:.0f} MiB = {megabytes:.0f} MB (VmHWM)"))  # fmt: skip
    cold = footprint.get("cold_import")
    if not cold:
        return targets
    packaged = cold.get("packaged", {})
    if "import_minus_interpreter_ms" in packaged:
        value = packaged["import_minus_interpreter_ms"]
        note = (
            f"the deployment zip ({packaged['pyc_files_in_zip']} .pyc files) under python3.12 "
            f"-I -S; {packaged['import_ms']:.0f} ms incl. the interpreter's "
            f"{packaged['python_pass_ms']:.0f} ms" + _over(value, COLD_IMPORT_MS, "ms")
        )
        targets.append(_target("Lambda cold import, packaged zip", f"< {COLD_IMPORT_MS} ms",
                               value, value < COLD_IMPORT_MS, note))  # fmt: skip
    value = cold["import_minus_interpreter_ms"]
    note = f"{cold['import_ms']:.0f} ms incl. the interpreter's {cold['python_pass_ms']:.0f} ms"
    targets.append(_target("Lambda cold import, this virtualenv (3.11)", f"< {COLD_IMPORT_MS} ms",
                           value, value < COLD_IMPORT_MS,
                           note + _over(value, COLD_IMPORT_MS, "ms")))  # fmt: skip
    return targets


# --- the table ------------------------------------------------------------------------------


def format_table(results: dict[str, Any]) -> str:
    """The human-readable report of a run."""
    sections = (
        _header,
        _engine_section,
        _latency_section,
        _round_trip_section,
        _pipeline_section,
        _contention_section,
        format_scale,
        _footprint_section,
        _targets_section,
    )
    lines: list[str] = []
    for section in sections:
        part = section(results)
        if part:
            lines += ([""] if lines else []) + part
    return "\n".join(lines)


def _header(results: dict[str, Any]) -> list[str]:
    machine = results.get("machine", {})
    run = results.get("run", {})
    busy = run.get("busy", {})
    return [
        f"dsql-transfers bench, {run.get('date', '?')}: {machine.get('cpus')} x "
        f"{machine.get('cpu_model')}, {machine.get('memory_gib')} GiB, Python "
        f"{machine.get('python')}, {results.get('postgres', {}).get('version_short', '?')}",
        f"command: {run.get('command')}  (repeats {run.get('repeats')}, "
        f"{run.get('elapsed_s', '?')} s; machine CPU busy {busy.get('cpu_busy_pct', '?')} %, "
        f"load {busy.get('loadavg_start', '?')} -> {busy.get('loadavg_end', '?')})",
    ]


def _engine_section(results: dict[str, Any]) -> list[str]:
    engine = results.get("engine_vs_pgbench")
    if not engine:
        return []
    lines = [
        f"ENGINE vs PGBENCH  ({engine['accounts']:,} accounts vs pgbench -s "
        f"{engine['pgbench_scale']}, {engine['duration_s']:g} s windows, median of "
        f"{engine['repeats']})",
        f"  {'clients':>7}  {'engine tps':>10}  {'pgbench tps':>11}  {'ratio':>5}  "
        f"{'p50 ms':>6}  {'p99 ms':>6}  CPU us/tx client engine|pgbench  server engine|pgbench",
    ]
    for clients, row in engine["by_concurrency"].items():
        lines.append(
            f"  {clients:>7}  {row['engine_tps']:>10,.0f}  {row['pgbench_tps']:>11,.0f}  "
            f"{row['ratio']:>5.2f}  {row['engine_p50_ms']:>6.2f}  {row['engine_p99_ms']:>6.2f}  "
            f"{row['engine_client_cpu_us']:>19.0f} | {row['pgbench_client_cpu_us']:<4.0f}  "
            f"{row['engine_server_cpu_us']:>13.0f} | {row['pgbench_server_cpu_us']:<4.0f}"
        )
    if "batch" in engine:
        lines.append(f"  batched, TRANSFER_BATCH={engine['batch']} (each transfer counted):")
        for clients, row in engine["by_concurrency"].items():
            lines.append(
                f"  {clients:>7}  {row['batched_tps']:>10,.0f}  {row['pgbench_tps']:>11,.0f}  "
                f"{row['batched_ratio']:>5.2f}  retries {row['batched_retries']:<5}  "
                f"CPU us/tx client {row['batched_client_cpu_us']:.0f}, "
                f"server {row['batched_server_cpu_us']:.0f}"
            )
        for batch, run in engine.get("by_batch_in_processes", {}).items():
            lines.append(
                f"  as {engine['processes']} processes x 1 thread, batch {batch}: "
                f"{run['tps']:,.0f} tps = {run['ratio']:.2f}x pgbench, client CPU "
                f"{run['client_cpu_us']:.0f} us/tx, retries {run['retries']}"
            )
        lines.append(
            "  batch size at 4 clients: "
            + ", ".join(f"{r['batch']}: {r['tps']:,.0f} tps" for r in engine["batch_sweep"])
        )
    return lines


def _latency_section(results: dict[str, Any]) -> list[str]:
    latency = results.get("engine_vs_pgbench_latency")
    if not latency:
        return []
    rtt = latency["round_trips_per_transaction"]
    lines = [
        f"ENGINE vs PGBENCH through a proxy adding {latency['one_way_delay_ms']:g} ms each way "
        f"({latency['duration_s']:g} s windows, median of {latency['repeats']}; round trips "
        f"per transaction counted by the proxy: engine {rtt['engine']:.2f}, pgbench "
        f"{rtt['pgbench']:.2f})",
        f"  {'clients':>7}  {'engine tps':>10}  {'pgbench tps':>11}  {'ratio':>5}  "
        f"{'engine p50 ms':>13}  {'pgbench avg ms':>14}",
    ]
    for clients, row in latency["by_concurrency"].items():
        lines.append(
            f"  {clients:>7}  {row['engine_tps']:>10,.0f}  {row['pgbench_tps']:>11,.0f}  "
            f"{row['ratio']:>5.2f}  {row['engine_p50_ms']:>13.2f}  "
            f"{row['pgbench_latency_avg_ms']:>14.2f}"
        )
    if "batch" in latency:
        lines.append(
            f"  batched ({latency['batch']}): "
            + ", ".join(
                f"c={c} {row['batched_tps']:,.0f} tps = {row['batched_ratio']:.2f}x"
                for c, row in latency["by_concurrency"].items()
            )
        )
    return lines


def _round_trip_section(results: dict[str, Any]) -> list[str]:
    rtt = results.get("round_trips")
    if not rtt:
        return []
    lines = [
        f"ROUND TRIPS  (one connection, sequential committed transfers, medians of "
        f"{rtt['transfers_per_delay']})",
        f"  no proxy {rtt['median_ms_direct']:.2f} ms; proxy at 0 ms "
        f"{rtt['median_ms_proxy_0ms']:.2f} ms",
    ]
    for sample in rtt["samples"]:
        lines.append(
            f"  +{sample['one_way_delay_ms']:g} ms each way: {sample['median_ms']:.2f} ms "
            f"= {sample['round_trips']:.2f} x RTT over the 0 ms baseline; "
            f"bursts {sample['bursts_median']:g}"
        )
    lines.append(
        f"  round trips per transfer (slope over the delays): {rtt['round_trips']:.2f}; "
        f"proxy timer overhead {rtt['overhead_ms_per_round_trip']:.2f} ms per round trip"
    )
    return lines


def _pipeline_section(results: dict[str, Any]) -> list[str]:
    pipeline = results.get("pipeline")
    if not pipeline:
        return []
    lines = [
        f"PIPELINE through moto  ({pipeline['messages']} messages per run, producer "
        f"--threads {pipeline['threads']} --max-backlog {pipeline['max_backlog']}, "
        f"{pipeline['accounts']:,} accounts)",
        f"  {'consumer':<44}  {'raw/s':>5}  {'e2e/s':>5}  {'ratio':>5}  {'in flight':>9}  "
        "CPU ms/msg: worker / moto / postgres / producer",
    ]
    stock = pipeline["stock_moto"]
    cpu = stock["e2e_cpu_ms_per_message"]
    label = f"python -m worker run, median of {pipeline['repeats']}"
    lines.append(
        f"  {label:<44}  {stock['raw_per_s']:>5.0f}  {stock['e2e_per_s']:>5.0f}  "
        f"{stock['ratio']:>5.2f}  {stock['e2e_moto_in_flight_median']:>9.0f}  "
        f"{cpu['consumer']:.2f} / {cpu['moto']:.2f} / {cpu['postgres']:.2f} / "
        f"{cpu['producer']:.2f}"
    )
    lines.append(
        f"  raw moto keeps {stock['raw_moto_in_flight_median']:.0f} messages in flight (median); "
        f"end-to-end p50/p99 {stock['e2e_p50_ms']:.0f}/{stock['e2e_p99_ms']:.0f} ms"
    )
    return lines


def _contention_section(results: dict[str, Any]) -> list[str]:
    contention = results.get("contention")
    if not contention:
        return []
    lines = [
        f"CONTENTION  ({contention['transfers']:,} transfers per case, 16-way, engine level, "
        "every account starts at 1,000,000)",
        f"  {'accounts':>8}  {'mode':<22}  {'retry':<5}  {'goodput/s':>9}  {'committed':>9}  "
        f"{'outcome':>7}  {'conflicts/t':>11}  {'retries/t':>9}  {'max':>3}  {'p99 ms':>7}",
    ]
    for row in contention["cases"]:
        lines.append(
            f"  {row['accounts']:>8,}  {row['mode']:<22}  {row['retries']:<5}  "
            f"{row['goodput_per_s']:>9,.0f}  {row['committed_pct']:>8.2f}%  "
            f"{row['with_outcome_pct']:>6.2f}%  {row['conflicts_per_transfer']:>11.3f}  "
            f"{row['retries_per_transfer']:>9.3f}  {row['max_retries']:>3}  "
            f"{row['latency_ms_p99']:>7.1f}"
        )
    sqs = contention.get("headline_sqs")
    if sqs:
        lines.append(
            f"  through moto, 10 accounts, 2 workers x 8, retries on: {sqs['transfers']:,} "
            f"transfers, {sqs['with_outcome_pct']:.2f} % with an outcome, "
            f"{sqs['retries_per_transfer']:.3f} retries/transfer (max {sqs['max_retries']}), "
            f"{sqs['throughput_per_s']:.0f}/s, ~{sqs['mean_in_flight']:.1f} in flight, "
            f"transaction p99 {sqs['transaction_ms_p99']:.1f} ms"
        )
    return lines


def format_pipeline(results: dict[str, Any]) -> list[str]:
    """The PIPELINE block and its target."""
    lines = _pipeline_section(results)
    for t in _pipeline_targets(results):
        verdict = "pass" if t["pass"] else "MISS"
        lines.append(f"  {verdict}  {t['target']} {t['goal']}: {t['measured']:.2f}; {t['note']}")
    return lines


def format_scale(results: dict[str, Any]) -> list[str]:
    """The SCALE block (see :mod:`bench.scale`)."""
    from bench.scale import format_section

    return format_section(results)


def _footprint_section(results: dict[str, Any]) -> list[str]:
    footprint = results.get("footprint")
    if not footprint:
        return []
    cold = footprint.get("cold_import", {})
    nan = float("nan")
    breakdown = ", ".join(f"{k} {v:g}" for k, v in cold.get("breakdown_ms", {}).items())
    packaged = cold.get("packaged", {})
    packaged_ms = (
        f"{packaged['import_minus_interpreter_ms']:.0f} ms "
        f"(+{packaged['python_pass_ms']:.0f} ms interpreter start)"
        if "import_minus_interpreter_ms" in packaged
        else f"skipped ({packaged.get('skipped', 'not measured')})"
    )
    return [
        "FOOTPRINT",
        f"  worker RSS: peak {footprint.get('worker_peak_rss_mib') or nan:.0f} MiB, steady "
        f"{footprint.get('worker_steady_rss_mib') or nan:.0f} MiB (pipeline runs)",
        f"  Lambda cold import: packaged zip (python3.12) {packaged_ms}; this virtualenv "
        f"{cold.get('import_minus_interpreter_ms', nan):.0f} ms "
        f"(+{cold.get('python_pass_ms', nan):.0f} ms interpreter start); without any "
        f"bytecode {cold.get('import_no_bytecode_minus_interpreter_ms', nan):.0f} ms",
        f"  import time by what worker/ imports (-X importtime, ms): {breakdown}",
    ]


def _targets_section(results: dict[str, Any]) -> list[str]:
    targets = results.get("targets", [])
    if not targets:
        return []
    lines = ["TARGETS"]
    for t in targets:
        verdict = "pass" if t["pass"] else "MISS"
        measured = "-" if t["measured"] is None else f"{t['measured']:.3g}"
        lines.append(f"  {verdict:<4}  {t['target']:<48}  {t['goal']:<38}  {measured:>6}")
        lines.append(f"        {t['note']}")
    return lines


def write(results: dict[str, Any], path: Path) -> None:
    """``results`` as indented JSON (NaN becomes null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_no_nan(results), indent=2, sort_keys=False) + "\n")


def _no_nan(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # noqa: PLR0124 - NaN check
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table of a results file."""
    args = list(sys.argv[1:] if argv is None else argv)
    path = Path(args[0]) if args else DEFAULT_OUTPUT
    print(format_table(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
