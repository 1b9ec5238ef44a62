"""The fault suite: a short run holds every invariant, and the checker can see a breach."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from faults.checker import check_dead_letters, check_results
from faults.run import Config, run
from faults.workload import Kind, Message, build
from producer.accounts import reset_accounts
from worker.contract import parse_body
from worker.db import connect
from worker.engine import TransferEngine
from worker.settings import Settings


def test_short_fault_run_holds_every_invariant() -> None:
    """kill -9, PostgreSQL restarts and an outage, terminated backends, SIGSTOP and SIGTERM
    during a contended load with duplicates and malformed messages: nothing lost or
    doubled, nothing well-formed dead-lettered by the product's own redrive policy."""
    report = run(Config(seed=20261127, transfers=400, workers=3, rounds=1), echo=lambda _: None)
    assert len(report.faults) == 7, report.format()
    assert report.ok, report.format()
    assert {c.name for c in report.checks} >= {
        "every well-formed request has exactly one result",
        "the DLQ holds exactly the malformed messages",
        "no well-formed transfer in the DLQ",
        "no worker died of an unhandled exception",
    }


def test_workload_is_replayed_exactly_by_its_seed() -> None:
    """Same seed, same messages and ids; every kind of traffic is present."""
    first, again, other = build(7, 200), build(7, 200), build(8, 200)
    assert first.messages == again.messages
    assert first.messages != other.messages
    assert {m.kind for m in first.messages} == set(Kind)
    assert first.count(Kind.TRANSFER) == 200


@pytest.fixture
def applied(settings: Settings, engine: TransferEngine) -> list[tuple[Message, str]]:
    """A small workload applied straight through the engine, as the workers would."""
    reset_accounts(settings, 5, Decimal(1000))
    sent = [(m, str(uuid.uuid4())) for m in build(3, 40).messages]
    for message, message_id in sent:
        if message.kind is not Kind.MALFORMED:
            engine.apply(parse_body(message.body, message_id))
    return sent


def checks_by_name(settings: Settings, sent: list[tuple[Message, str]]) -> dict[str, bool]:
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        return {c.name: c.ok for c in check_results(conn, sent)}


def test_checker_passes_a_correct_history(
    settings: Settings, applied: list[tuple[Message, str]]
) -> None:
    """The baseline: a history applied once per id satisfies every result check."""
    assert all(checks_by_name(settings, applied).values())


def test_checker_sees_a_lost_result_and_lost_money(
    settings: Settings, applied: list[tuple[Message, str]]
) -> None:
    """A deleted committed result is both a missing outcome and an audit breach."""
    with connect(settings) as conn:
        conn.execute(
            "DELETE FROM transfer_results WHERE transfer_id ="
            " (SELECT transfer_id FROM transfer_results WHERE status = 'committed' LIMIT 1)"
        )
        conn.commit()
    checks = checks_by_name(settings, applied)
    assert not checks["every well-formed request has exactly one result"]
    assert not checks["audit: total conserved, no negative balance, every account reconciles"]


def test_checker_sees_a_result_that_no_request_asked_for(
    settings: Settings, applied: list[tuple[Message, str]]
) -> None:
    """A stored amount different from every body sent under that id is flagged."""
    with connect(settings) as conn:
        conn.execute(
            "UPDATE transfer_results SET amount = amount + 1 WHERE transfer_id ="
            " (SELECT transfer_id FROM transfer_results WHERE status = 'rejected' LIMIT 1)"
        )
        conn.commit()
    checks = checks_by_name(settings, applied)
    assert not checks["each result is the outcome of a request sent under its id"]


def dead(message_id: str) -> dict[str, Any]:
    return {
        "Body": "x",
        "MessageAttributes": {"source_message_id": {"StringValue": message_id}},
    }


def test_checker_demands_exactly_the_malformed_messages_in_the_dlq(
    applied: list[tuple[Message, str]],
) -> None:
    """Missing or extra DLQ entries fail; a repeated copy of a malformed one does not."""
    malformed = [mid for m, mid in applied if m.kind is Kind.MALFORMED]
    valid = next(mid for m, mid in applied if m.kind is Kind.TRANSFER)
    exact = [dead(mid) for mid in malformed]

    def ok(entries: list[dict[str, Any]]) -> bool:
        return all(check.ok for check in check_dead_letters(entries, applied))

    assert ok(exact)
    assert ok([*exact, dead(malformed[0])])
    assert not ok(exact[1:])
    assert not ok([*exact, dead(valid)])
    assert json.loads(applied[0][0].body)  # the first message is a real transfer


def test_checker_flags_a_well_formed_transfer_the_redrive_policy_moved(
    applied: list[tuple[Message, str]],
) -> None:
    """A message the queue's redrive moved carries only its body; if that body is a
    well-formed transfer we sent, the outage invariant fails."""
    malformed = [dead(mid) for m, mid in applied if m.kind is Kind.MALFORMED]
    transfer = next(m for m, _ in applied if m.kind is Kind.TRANSFER)
    checks = {c.name: c for c in check_dead_letters([*malformed, {"Body": transfer.body}], applied)}
    assert not checks["no well-formed transfer in the DLQ"].ok
    assert "1 well-formed" in checks["no well-formed transfer in the DLQ"].detail
