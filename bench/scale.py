"""The producer's table-wide commands at a million accounts and a million results.

``producer setup``, ``audit`` and ``stats`` read whole tables, so they are the ones
DSQL's limits (5-minute transactions, 128 MiB per query) could break as the ledger
grows. This section builds a ledger of :data:`ACCOUNTS` accounts and :data:`RESULTS`
results that is consistent (every committed result's amount is reflected in both
balances, so the audit must pass), then runs each command as its own process, exactly
as a user would, and records its wall time and peak resident memory (``ru_maxrss`` of
that process, from ``wait4``):

1. ``setup --accounts 1000000`` on empty tables (inserts only);
2. a million results (90 % committed), written by one ``INSERT ... SELECT`` and one
   ``UPDATE`` of the balances (bench-only SQL, not how workers write);
3. ``audit --json`` (must report ok) and ``stats --json`` (must count every result);
4. ``setup --accounts 1000000`` again: walks, deletes and re-inserts two million rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.server import BenchServer

ROOT = Path(__file__).resolve().parent.parent
ACCOUNTS = 1_000_000
RESULTS = 1_000_000
BALANCE = "1000"

_FILL = """
    INSERT INTO transfer_results (transfer_id, payer_id, payee_id, amount, status, reason,
                                  payer_balance, attempts, transaction_ms, enqueued_at,
                                  completed_at)
    SELECT gen_random_uuid(), payer, payee, amount,
           CASE WHEN mod(i, 10) = 0 THEN 'rejected' ELSE 'committed' END,
           CASE WHEN mod(i, 10) = 0 THEN 'insufficient_funds' END,
           NULL, 1 + (mod(i, 97) = 0)::int + (mod(i, 991) = 0)::int,
           CASE WHEN mod(i, 10) = 0 THEN NULL ELSE 0.3 + mod(i, 1000) / 250.0 END,
           now() - interval '1 hour' + i * interval '3 ms',
           now() - interval '1 hour' + i * interval '3 ms' + interval '40 ms'
    FROM (
        SELECT i, 1 + mod(i * 7919, %(accounts)s) AS payer,
               1 + mod(i * 7919 + 1 + mod(i, 1000), %(accounts)s) AS payee,
               (1 + mod(i, 100)) / 100.0 AS amount
        FROM generate_series(1::bigint, %(results)s) AS i
    ) AS t
"""
_APPLY = """
    UPDATE accounts AS a SET balance = a.balance + d.delta
    FROM (
        SELECT id, sum(delta) AS delta FROM (
            SELECT payee_id AS id, amount AS delta FROM transfer_results
            WHERE status = 'committed'
            UNION ALL
            SELECT payer_id, -amount FROM transfer_results WHERE status = 'committed'
        ) AS moves GROUP BY id
    ) AS d
    WHERE a.id = d.id
"""


def run_scale(server: BenchServer, env_base: dict[str, str]) -> dict[str, Any]:
    """Every step above; returns seconds and peak RSS per command."""
    url = server.endpoint().url()
    env = {**env_base, "DATABASE_URL": url}
    env.pop("DSQL_ENDPOINT", None)
    out: dict[str, Any] = {"accounts": ACCOUNTS, "results": RESULTS}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM transfer_results")
        conn.execute("DELETE FROM accounts")
        conn.execute("VACUUM ANALYZE")
    out["setup_empty"] = _command(env, "setup", "--accounts", str(ACCOUNTS), "--balance", BALANCE)
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_FILL, {"accounts": ACCOUNTS, "results": RESULTS})
        conn.execute(_APPLY)
        conn.execute("VACUUM ANALYZE")
    out["fill_s"] = round(time.monotonic() - started, 1)
    audit = _command(env, "audit", "--json")
    audit["ok"] = json.loads(audit.pop("stdout") or "{}").get("ok")
    out["audit"] = audit
    stats = _command(env, "stats", "--json")
    counted = json.loads(stats.pop("stdout") or "{}")
    stats["total"] = counted.get("total")
    stats["transaction_ms"] = counted.get("transaction_ms")
    out["stats"] = stats
    out["setup_full"] = _command(env, "setup", "--accounts", str(ACCOUNTS), "--balance", BALANCE)
    with psycopg.connect(url) as conn:
        left = conn.execute(
            "SELECT (SELECT count(*) FROM accounts), (SELECT count(*) FROM transfer_results)"
        ).fetchone()
    out["setup_full"]["left"] = {"accounts": left[0], "results": left[1]} if left else None
    for key in ("setup_empty", "setup_full"):
        out[key].pop("stdout", None)
    return out


def _command(env: dict[str, str], *argv: str) -> dict[str, Any]:
    """``python -m producer argv``: exit code, seconds, peak RSS (MiB) and stdout."""
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "producer", *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        assert proc.stdout is not None
        stdout = proc.stdout.read()
        # wait4, not wait: it returns this child's own rusage (ru_maxrss in KiB).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        if proc.returncode:
            errors.seek(0)
            _say(f"  producer {' '.join(argv)} exited {proc.returncode}: {errors.read()[-2000:]}")
    _say(f"  producer {' '.join(argv)}: {seconds:.1f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MiB")
    return {
        "command": "python -m producer " + " ".join(argv),
        "exit_code": proc.returncode,
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "stdout": stdout,
    }


def format_section(results: dict[str, Any]) -> list[str]:
    """The SCALE block of the bench table."""
    scale = results.get("scale")
    if not scale:
        return []
    lines = [
        f"SCALE  ({scale['accounts']:,} accounts, {scale['results']:,} results; each command "
        "its own process, wall time and peak RSS)",
        f"  {'command':<48} {'exit':>4} {'seconds':>8} {'peak MiB':>9}",
    ]
    for key, note in (
        ("setup_empty", "into empty tables"),
        ("audit", "ok" if scale.get("audit", {}).get("ok") else "NOT ok"),
        ("stats", f"total {scale.get('stats', {}).get('total')}"),
        ("setup_full", "replacing 1M accounts + 1M results"),
    ):
        row = scale.get(key)
        if row:
            lines.append(
                f"  {row['command'][len('python -m producer ') :]:<48} {row['exit_code']:>4} "
                f"{row['seconds']:>8.1f} {row['peak_rss_mib']:>9.0f}  {note}"
            )
    fill = scale.get("fill_s", "?")
    lines.append(f"  (filling the results table took {fill} s, not timed above)")
    return lines


def _say(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)
