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
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sandbox.postgres import EmbeddedPostgres
from sandbox.processes import ProcessFailed, WorkerFleet, child_environment
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
        # Short long-polls: on SIGTERM the worker waits for in-flight receives so it can
        # hand their messages back; 20 s (the production default) would make the
        # demo's shutdown slow for no benefit.
        env = child_environment(pg.url, sqs, queues, log_level="INFO", receive_wait_s=2)
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
        fleet = WorkerFleet(env, workdir)
        try:
            for _ in range(args.workers):
                worker = fleet.start()
                say(f"python -m worker run   ({worker.name}, logs in {worker.log})")
            for worker in fleet.workers:
                worker.wait_healthy()
            load = [
                "load", "--iters", str(args.iters), "--threads", str(args.threads),
                "--accounts", str(args.accounts), "--wait",
                "--max-backlog", str(args.max_backlog),
            ]  # fmt: skip
            if args.json:
                load.append("--json")
            load_rc = step(env, "producer", *load, check=False)
            audit_rc = step(env, "producer", "audit", check=False)
        except ProcessFailed as exc:
            raise DemoFailed(str(exc)) from None
        finally:
            stopped = fleet.stop_all(timeout_s=40)
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


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DemoFailed as exc:
        say(f"demo FAILED: {exc}")
        sys.exit(1)
