"""``python -m bench.profile engine|worker``: the profiles behind the README's "why".

- ``engine``: the transfer engine at concurrency 4 on 100,000 accounts (the
  engine-vs-pgbench case), sampled by py-spy with ``--gil --native`` (only the thread
  holding the GIL, i.e. where the process's one usable core goes, with C frames),
  summarized as inclusive shares of the engine's key frames and of libc's socket calls.
- ``worker``: ``python -m worker run`` during an end-to-end run through moto, sampled
  with ``--idle`` so waiting shows: per thread role (executor, poller, acknowledger),
  the share of its samples in each state.

Needs py-spy (`pip install py-spy`: not a dev dependency) and, for ptrace, root or
``kernel.yama.ptrace_scope=0``; ``syscalls`` needs strace. Writes the raw samples next
to the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
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

from bench.engine import ACCOUNTS, disjoint, run_engine
from bench.server import BenchServer

ENGINE_FRAMES = (
    "TransferEngine.apply",
    "TransferEngine._run",
    "single",
    "params",
    "_recorded",
    "outcome",
    "Connection.execute",
    "Cursor.execute",
    "BaseCursor._convert_query",
    "BaseCursor._maybe_prepare_gen",
    "Cursor.fetchone",
    "Connection.wait",
    "ConnectionPool.connection",
    "plan_transfers",
)
"""The engine's frames (and psycopg's under them) whose inclusive share is reported."""
NATIVE_FRAMES = ("send", "__libc_send", "__send", "sendto", "poll", "__poll", "recv", "__libc_recv")
"""libc's socket calls, as ``--native`` names them: the per-statement flush cost."""
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
    py_spy()  # fail here, not in the thread that starts it
    with BenchServer() as server:
        server.reset(ACCOUNTS, server_balance())
        run_engine(server.settings(), 4, duration_s=1.0, warmup_s=0.5)
        spy: list[subprocess.Popen[bytes]] = []

        def start_spy() -> None:
            time.sleep(1.5)
            spy.append(record(os.getpid(), seconds, raw, "--gil", "--native"))

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
    native = {
        frame: round(100 * sum(n for names, n in samples if frame in names) / total, 1)
        for frame in NATIVE_FRAMES
        if any(frame in names for names, _ in samples)
    }
    return {
        "tps": run.tps,
        "native_inclusive_pct_of_gil_time": native,
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


SYSCALLS = ("sendto", "recvfrom", "poll", "ppoll", "epoll_wait", "select", "pselect6")
"""What a libpq client does per round trip: send, wait, receive."""


def syscall_profile(transfers: int = 400) -> dict[str, Any]:
    """System calls per committed transfer, counted by ``strace -c`` on this thread
    while it applies ``transfers`` uncontended transfers one after another: for each
    way of sending a transfer, and for batches of the default TRANSFER_BATCH."""
    from producer.load import plan_transfers
    from worker.db import create_pool
    from worker.engine import TransferEngine
    from worker.settings import Settings, Statements

    strace = shutil.which("strace")
    if not strace:
        raise SystemExit("strace not found (apt-get install strace)")
    batch = Settings().transfer_batch
    out: dict[str, Any] = {"transfers": transfers, "batch": batch, "per_transfer": {}}
    with BenchServer() as server, tempfile.TemporaryDirectory() as tmp:
        server.reset(ACCOUNTS, server_balance())
        for label, statements, size in (
            ("single", Statements.SINGLE, 1),
            ("pipelined", Statements.PIPELINED, 1),
            (f"single, batches of {batch}", Statements.SINGLE, batch),
        ):
            with create_pool(server.settings(), min_size=1, max_size=1) as pool:
                pool.wait()
                engine = TransferEngine(pool, statements=statements)
                work = list(plan_transfers(transfers + 20, ACCOUNTS, random.Random(1)))
                for request in work[:20]:
                    engine.apply(request)  # warm: plans, the connection
                counts = Path(tmp) / f"{size}-{statements.value}.txt"
                tracer = subprocess.Popen(  # noqa: S603 - strace with fixed arguments
                    [strace, "-c", "-q", "-o", str(counts), "-p", str(threading.get_native_id())],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(1.0)  # attached
                rest = work[20:]
                if size == 1:
                    for request in rest:
                        engine.apply(request)
                else:
                    for group in disjoint(rest, size):
                        engine.apply_batch([(r, None) for r in group])
                tracer.send_signal(2)
                tracer.wait(30)
            calls = _strace_counts(counts)
            out["per_transfer"][label] = {
                name: round(calls.get(name, 0) / len(rest), 2) for name in SYSCALLS if name in calls
            }
    return out


def _strace_counts(path: Path) -> dict[str, int]:
    """``strace -c`` output: calls per syscall name."""
    counts = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1].isidentifier() and parts[3].isdigit():
            counts[parts[-1]] = int(parts[3])
    return counts


def server_balance() -> Any:
    """The bench's opening balance (1,000,000 per account)."""
    from bench.contention import BALANCE

    return BALANCE


def main(argv: Sequence[str] | None = None) -> int:
    """Profile what was asked and print the JSON summary."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("what", choices=("engine", "worker", "syscalls"))
    parser.add_argument("--dir", type=Path, default=None, help="where raw samples go")
    args = parser.parse_args(argv)
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="bench-profile-"))
    workdir.mkdir(parents=True, exist_ok=True)
    profiles = {"engine": engine_profile, "worker": worker_profile}
    summary = syscall_profile() if args.what == "syscalls" else profiles[args.what](workdir)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
