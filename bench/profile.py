"""``python -m bench.profile engine|worker``: the profiles behind the README's "why".

- ``engine``: the transfer engine at concurrency 4 on 100,000 accounts (the
  engine-vs-pgbench case), sampled by py-spy with ``--gil`` (only the thread holding
  the GIL, i.e. where the process's one usable core goes), summarized as inclusive
  shares of the engine's key frames.
- ``worker``: ``python -m worker run`` during an end-to-end run through moto, sampled
  with ``--idle`` so waiting shows: per thread role (executor, poller, acknowledger),
  the share of its samples in each state.

Needs py-spy (installed in the dev virtualenv) and, for ptrace, root or
``kernel.yama.ptrace_scope=0``. Writes the raw samples next to the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.engine import ACCOUNTS, run_engine
from bench.server import BenchServer

ENGINE_FRAMES = (
    "TransferEngine.apply",
    "_transfer",
    "Connection.execute",
    "Cursor.execute",
    "BaseCursor._convert_query",
    "BaseCursor._maybe_prepare_gen",
    "BasePipeline._communicate_gen",
    "Pipeline.sync",
    "Pipeline.__exit__",
    "Connection.wait",
    "ConnectionPool.connection",
    "_decide",
    "plan_transfers",
)
WORKER_ROLES: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    # role: (the frame that marks its threads, ((state, frame inside it), ...))
    "executor": (
        "Consumer._execute",
        (("waiting for a runnable job", "AccountScheduler.take"),
         ("applying a transfer", "TransferEngine.apply")),
    ),
    "poller": (
        "Consumer._poll",
        (("in ReceiveMessage (an SQS call)", "BaseClient._make_api_call"),
         ("waiting for room (held messages)", "Consumer._wait_for_room"),
         ("handing messages to the scheduler", "Consumer._accept")),
    ),
    "acknowledger": (
        "Acknowledger._loop",
        (("in DeleteMessageBatch (an SQS call)", "Acknowledger._call"),
         ("collecting acks to send", "Queue.get")),
    ),
}  # fmt: skip


def py_spy() -> str:
    """The py-spy next to this interpreter, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy not found (pip install py-spy)")
    return found


def record(pid: int, seconds: float, out: Path, *flags: str) -> subprocess.Popen[bytes]:
    """Start ``py-spy record`` of ``pid`` for ``seconds`` into ``out`` (raw format)."""
    return subprocess.Popen(  # noqa: S603 - py-spy with fixed arguments
        [py_spy(), "record", "-p", str(pid), "-d", str(round(seconds)), "-r", "200",
         "-f", "raw", "-o", str(out), *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stacks(raw: Path) -> list[tuple[list[str], int]]:
    """(function names root first, sample count) per line of a raw py-spy file."""
    out = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        names = [frame.split(" (")[0] for frame in stack.split(";")]
        out.append((names, int(count)))
    return out


def engine_profile(workdir: Path, seconds: float = 8.0) -> dict[str, Any]:
    """py-spy --gil of this process while the engine runs at concurrency 4."""
    raw = workdir / "engine-c4.gil.txt"
    with BenchServer() as server:
        server.reset(ACCOUNTS, server_balance())
        run_engine(server.settings(), 4, duration_s=1.0, warmup_s=0.5)
        spy: list[subprocess.Popen[bytes]] = []

        def start_spy() -> None:
            time.sleep(1.5)
            spy.append(record(os.getpid(), seconds, raw, "--gil"))

        threading.Thread(target=start_spy, daemon=True).start()
        run = run_engine(server.settings(), 4, duration_s=seconds + 2, warmup_s=1.0)
        spy[0].wait()
    samples = [(names, n) for names, n in stacks(raw) if "run_engine.<locals>.work" in names]
    total = sum(n for _, n in samples) or 1
    shares = {
        frame: round(100 * sum(n for names, n in samples if frame in names) / total, 1)
        for frame in ENGINE_FRAMES
    }
    leaves: Counter[str] = Counter()
    for names, n in samples:
        leaves[names[-1]] += n
    return {
        "tps": run.tps,
        "client_cpu_us": run.client_cpu_us,
        "gil_samples": total,
        "inclusive_pct_of_gil_time": shares,
        "top_self_pct": {name: round(100 * n / total, 1) for name, n in leaves.most_common(12)},
        "raw": str(raw),
    }


def worker_profile(workdir: Path, seconds: float = 10.0, messages: int = 2500) -> dict[str, Any]:
    """py-spy --idle of a worker process during an end-to-end run through moto."""
    from bench import pipeline
    from sandbox.processes import WorkerProcess
    from sandbox.sqs import LocalSqs

    raw = workdir / "worker-e2e.idle.txt"
    spies: list[subprocess.Popen[bytes]] = []

    def profile_later(worker: WorkerProcess) -> None:
        def later() -> None:
            time.sleep(4)
            spies.append(record(worker.process.pid, seconds, raw, "--idle"))

        threading.Thread(target=later, daemon=True).start()

    with BenchServer() as server, LocalSqs() as sqs:
        logging.getLogger("werkzeug").addFilter(lambda _record: False)
        server.reset(pipeline.ACCOUNTS, server_balance())
        config = pipeline.PipelineConfig(
            database_url=server.endpoint().url(),
            sqs=sqs,
            workdir=workdir,
            pg_data_dir=server.pg.data_dir,
            messages=messages,
        )
        run = pipeline.e2e_run(config, on_ready=profile_later)
    for spy in spies:
        spy.wait()
    roles: dict[str, dict[str, float]] = {}
    all_stacks = stacks(raw)
    for role, (marker, states) in WORKER_ROLES.items():
        mine = [(names, n) for names, n in all_stacks if marker in names]
        total = sum(n for _, n in mine) or 1
        roles[role] = {
            state: round(100 * sum(n for names, n in mine if frame in names) / total, 1)
            for state, frame in states
        }
    return {
        "e2e_per_s": run["throughput_per_s"],
        "moto_in_flight_median": run["moto_queue"]["in_flight_median"],
        "pct_of_samples_by_thread_role": roles,
        "raw": str(raw),
    }


def server_balance() -> Any:
    """The bench's opening balance (1,000,000 per account)."""
    from bench.contention import BALANCE

    return BALANCE


def main(argv: Sequence[str] | None = None) -> int:
    """Profile what was asked and print the JSON summary."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("what", choices=("engine", "worker"))
    parser.add_argument("--dir", type=Path, default=None, help="where raw samples go")
    args = parser.parse_args(argv)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="bench-profile-"))
    workdir.mkdir(parents=True, exist_ok=True)
    summary = engine_profile(workdir) if args.what == "engine" else worker_profile(workdir)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
