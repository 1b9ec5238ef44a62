"""The checker: after the queue drains, every invariant the product promises.

Jepsen's bank test, plus what a queue adds: exactly one result per well-formed
request, results that match what was asked, money conserved and reconciled, the DLQ
holding exactly the malformed messages, and no worker dying of its own accord.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg

from faults.workload import Kind, Message
from producer.audit import run_audit
from worker.contract import parse_body


@dataclass(frozen=True)
class Check:
    """One invariant and whether it held."""

    name: str
    ok: bool
    detail: str


def check_results(conn: psycopg.Connection[Any], sent: list[tuple[Message, str]]) -> list[Check]:
    """Results against what was sent; ``sent`` pairs each message with its SQS id."""
    expected: dict[uuid.UUID, list[str]] = {}
    for message, message_id in sent:
        if message.kind is Kind.MALFORMED:
            continue
        request = parse_body(message.body, message_id)
        expected.setdefault(request.transfer_id, []).append(message.body)
    rows = conn.execute(
        "SELECT transfer_id, payer_id, payee_id, amount, status, reason FROM transfer_results"
    ).fetchall()
    conn.rollback()
    stored = {row[0]: row for row in rows}
    missing = [tid for tid in expected if tid not in stored]
    unknown = [tid for tid in stored if tid not in expected]
    mismatched = [
        tid for tid, row in stored.items() if tid in expected and not _matches(row, expected[tid])
    ]
    checks = [
        Check(
            "every well-formed request has exactly one result",
            not missing and not unknown,
            f"{len(stored)} results for {len(expected)} transfer ids"
            + (f"; missing {missing[:3]}" if missing else "")
            + (f"; unexpected {unknown[:3]}" if unknown else ""),
        ),
        Check(
            "each result is the outcome of a request sent under its id",
            not mismatched,
            f"{len(mismatched)} mismatched" + (f": {mismatched[:3]}" if mismatched else ""),
        ),
    ]
    report = run_audit(conn)
    checks.append(
        Check(
            "audit: total conserved, no negative balance, every account reconciles",
            report.ok,
            "; ".join(report.violations[:3])
            or f"total {report.total}, {report.committed_transfers} committed",
        )
    )
    return checks


def check_dead_letters(dead: list[dict[str, Any]], sent: list[tuple[Message, str]]) -> list[Check]:
    """Two invariants. No well-formed transfer reached the DLQ: a message the redrive
    policy moved there (it carries no ``source_message_id``, only its body) or that a
    worker dead-lettered, whose body is one we sent as well-formed, only ever waited for
    a database or a worker. And the DLQ holds exactly the malformed messages (a copy may
    repeat if a worker died between the DLQ send and the delete: at-least-once)."""
    malformed = {message_id for message, message_id in sent if message.kind is Kind.MALFORMED}
    well_formed = {m.body for m, _ in sent if m.kind is not Kind.MALFORMED}
    good = [m for m in dead if m.get("Body") in well_formed]
    sources = [
        m["MessageAttributes"]["source_message_id"]["StringValue"]
        for m in dead
        if "source_message_id" in m.get("MessageAttributes", {})
    ]
    extra = set(sources) - malformed
    absent = malformed - set(sources)
    repeats = len(sources) - len(set(sources))
    return [
        Check(
            "no well-formed transfer in the DLQ",
            not good,
            f"{len(good)} well-formed in the DLQ"
            + (f": {[m['Body'][:80] for m in good[:3]]}" if good else ""),
        ),
        Check(
            "the DLQ holds exactly the malformed messages",
            not extra and not absent and len(sources) + len(good) == len(dead),
            f"{len(set(sources))}/{len(malformed)} malformed, {repeats} repeated copies"
            + (f"; not malformed: {sorted(extra)[:3]}" if extra else "")
            + (f"; missing: {sorted(absent)[:3]}" if absent else ""),
        ),
    ]


def _matches(row: tuple[Any, ...], bodies: list[str]) -> bool:
    _, payer, payee, amount, _, _ = row
    for body in bodies:
        data = json.loads(body)
        if (data["payer_id"], data["payee_id"]) != (payer, payee):
            continue
        if amount is None or Decimal(str(data["amount"])) == amount:
            return True
    return False
