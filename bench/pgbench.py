"""``pgbench -b tpcb-like -M prepared``: the classic transfer benchmark, same server.

tpcb-like is BEGIN; UPDATE account; SELECT balance; UPDATE teller; UPDATE branch;
INSERT history; END: seven round trips per transaction, against the transfer's two.
With ``-s 1`` it has a single branch row that every transaction updates, which makes
it a lock-contention benchmark at more than one client; the bench initializes with a
scale of at least the largest client count (``-s 10`` by default: 10 branches, 100
tellers, 1,000,000 accounts) so that pgbench, like the engine, is measured mostly
uncontended.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.cpu import backend_count, postgres_cpu_s, reaped_children_cpu_s, settle_backends
from bench.server import Endpoint

SCALE = 10
_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_LATENCY = re.compile(r"^latency average = ([0-9.]+) ms", re.MULTILINE)


class PgbenchFailed(RuntimeError):
    """pgbench exited non-zero or printed no tps line."""


@dataclass(frozen=True)
class PgbenchRun:
    """One ``pgbench -T`` run."""

    clients: int
    duration_s: float
    tps: float
    latency_avg_ms: float | None
    client_cpu_us: float
    """pgbench's own CPU per transaction (whole run, including its connection set-up)."""
    server_cpu_us: float | None
    """The server's CPU per transaction over the whole run, when its data dir is known."""


def initialize(program: str, endpoint: Endpoint, scale: int = SCALE) -> None:
    """``pgbench -i -s scale`` (quiet); replaces earlier pgbench tables."""
    _run([program, "-i", "-q", "-s", str(scale), *_connection(endpoint)])


def run_pgbench(
    program: str,
    endpoint: Endpoint,
    clients: int,
    *,
    duration_s: float,
    pg_data_dir: Path | None = None,
) -> PgbenchRun:
    """``pgbench -b tpcb-like -M prepared -c N -j N -T duration``; tps excludes
    connection set-up. pgbench vacuums its small tables and empties history first."""
    client_start = reaped_children_cpu_s()
    server_start = postgres_cpu_s(pg_data_dir) if pg_data_dir else 0.0
    processes = backend_count(pg_data_dir) if pg_data_dir else 0
    output = _run(
        [
            program, "-b", "tpcb-like", "-M", "prepared",
            "-c", str(clients), "-j", str(clients), "-T", str(round(duration_s)),
            *_connection(endpoint),
        ]
    )  # fmt: skip
    client_cpu = reaped_children_cpu_s() - client_start
    server_cpu = None
    if pg_data_dir:
        settle_backends(pg_data_dir, processes)
        server_cpu = postgres_cpu_s(pg_data_dir) - server_start
    tps = _TPS.search(output)
    if tps is None:
        raise PgbenchFailed(f"no tps line in pgbench output:\n{output[-2000:]}")
    latency = _LATENCY.search(output)
    transactions = max(float(tps.group(1)) * round(duration_s), 1.0)
    return PgbenchRun(
        clients=clients,
        duration_s=round(duration_s),
        tps=float(tps.group(1)),
        latency_avg_ms=float(latency.group(1)) if latency else None,
        client_cpu_us=1e6 * client_cpu / transactions,
        server_cpu_us=1e6 * server_cpu / transactions if server_cpu is not None else None,
    )


def _connection(endpoint: Endpoint) -> list[str]:
    return ["-h", endpoint.host, "-p", str(endpoint.port), "-U", "postgres", endpoint.dbname]


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if proc.returncode != 0:
        raise PgbenchFailed(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout + proc.stderr
