"""``make demo``: the whole pipeline on this machine, no Docker, no AWS account.

Starts an embedded PostgreSQL (standing in for Aurora DSQL) and moto's SQS server,
then runs exactly the commands a user runs against AWS, as separate processes:

1. ``python -m worker migrate``
2. ``python -m producer setup --accounts 1000 --balance 100``
3. ``python -m worker run`` (in the background: the long-running worker)
4. ``python -m producer load --iters 2000 --threads 10 --accounts 10 --wait
   --max-backlog 50``
5. ``python -m producer audit``
6. SIGTERM to the worker, which drains and exits 0.

moto's SQS slows down sharply as its queue grows, so the worker consumes while the
load tool produces; the demo only composes the environment for its children.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from sandbox.postgres import EmbeddedPostgres
from sandbox.sqs import LocalSqs


class DemoFailed(RuntimeError):
    """A step of the demo did not do what it should."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--iters", type=int, default=2000, help="transfers to send")
    parser.add_argument("--threads", type=int, default=10, help="sending threads")
    parser.add_argument("--accounts", type=int, default=10, help="accounts the load picks from")
    parser.add_argument("--setup-accounts", type=int, default=1000, help="accounts to create")
    parser.add_argument("--balance", default="100", help="initial balance of each account")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--json", action="store_true", help="load prints its STATS as JSON")
    parser.add_argument(
        "--max-backlog",
        type=int,
        default=50,
        help="load pauses while more messages than this wait (keeps moto's queue shallow)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; 0 when every transfer got an outcome and the audit is clean."""
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="transfer-demo-"))
    say(f"starting embedded PostgreSQL and a local SQS endpoint (work dir {workdir})")
    with EmbeddedPostgres() as pg, LocalSqs() as sqs:
        queues = sqs.create_queues("transfers")
        env = {
            **os.environ,
            **sqs.env(),
            "DATABASE_URL": pg.url,
            "QUEUE_URL": queues.queue_url,
            "DLQ_URL": queues.dlq_url,
            "LOG_LEVEL": "INFO",
            # Short long-polls: on SIGTERM the worker waits for in-flight receives so
            # it can hand their messages back; 20 s (the production default) would
            # make the demo's shutdown slow for no benefit.
            "RECEIVE_WAIT_S": "2",
        }
        env.pop("DSQL_ENDPOINT", None)
        say(f"DATABASE_URL={pg.url}")
        say(f"QUEUE_URL={queues.queue_url}")
        step(env, "worker", "migrate")
        step(
            env,
            "producer",
            "setup",
            "--accounts",
            str(args.setup_accounts),
            "--balance",
            args.balance,
        )
        workers = [start_worker(env, workdir, i) for i in range(args.workers)]
        try:
            wait_healthy(env, workers, workdir)
            load = [
                "load", "--iters", str(args.iters), "--threads", str(args.threads),
                "--accounts", str(args.accounts), "--wait",
                "--max-backlog", str(args.max_backlog),
            ]  # fmt: skip
            if args.json:
                load.append("--json")
            load_rc = step(env, "producer", *load, check=False)
            audit_rc = step(env, "producer", "audit", check=False)
        finally:
            stopped = [stop_worker(p) for p in workers]
        say(f"worker logs: {workdir}")
        if any(rc != 0 for rc in stopped):
            raise DemoFailed(f"worker exit codes {stopped}; see {workdir}")
        if load_rc or audit_rc:
            say(
                "demo FAILED: "
                + ("not every transfer got an outcome; " if load_rc else "")
                + ("audit found violations" if audit_rc else "")
            )
            return 1
    say("demo OK: every transfer has exactly one outcome and the audit is clean")
    return 0


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def step(env: dict[str, str], package: str, *args: str, check: bool = True) -> int:
    """Run ``python -m package args`` with the demo environment, showing the command."""
    say(f"python -m {package} {shlex.join(args)}")
    rc = subprocess.call([sys.executable, "-m", package, *args], env=env)  # noqa: S603
    if check and rc != 0:
        raise DemoFailed(f"python -m {package} {shlex.join(args)} exited {rc}")
    return rc


def start_worker(env: dict[str, str], workdir: Path, index: int) -> subprocess.Popen[bytes]:
    log = (workdir / f"worker-{index}.log").open("wb")
    worker_env = {**env, "HEALTH_FILE": str(workdir / f"worker-{index}.alive")}
    say(f"python -m worker run   (worker {index}, logs in {log.name})")
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "run"],
        env=worker_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_healthy(
    env: dict[str, str], workers: list[subprocess.Popen[bytes]], workdir: Path
) -> None:
    deadline = time.monotonic() + 60
    for index, worker in enumerate(workers):
        health_env = {**env, "HEALTH_FILE": str(workdir / f"worker-{index}.alive")}
        while True:
            if worker.poll() is not None:
                raise DemoFailed(f"worker {index} exited with {worker.returncode}; see {workdir}")
            probe = subprocess.run(
                [sys.executable, "-m", "worker", "health"],
                env=health_env,
                capture_output=True,
                check=False,
            )
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise DemoFailed(f"worker {index} never became healthy; see {workdir}")
            time.sleep(0.2)


def stop_worker(worker: subprocess.Popen[bytes]) -> int:
    """SIGTERM, as ECS does; the worker drains and exits 0."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        return worker.wait(40)
    except subprocess.TimeoutExpired:
        worker.kill()
        return -9


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DemoFailed as exc:
        say(f"demo FAILED: {exc}")
        sys.exit(1)
