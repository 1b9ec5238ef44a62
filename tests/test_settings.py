"""Settings: environment variables, the README's table, configuration errors, logging."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr, ValidationError

from worker.logs import configure_logging
from worker.ops.cli import main, settings_markdown
from worker.settings import Backend, Settings

README = Path(__file__).resolve().parent.parent / "README.md"

CANDIDATES = ("3", "2", "1", "7", "0", "staging", "pipelined")
"""Environment strings tried, in order, for a valid non-default value of each field."""


def plain(value: Any) -> Any:
    """A field value with secrets revealed, for comparison."""
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def non_default(name: str) -> tuple[str, Any]:
    """An environment string that sets field ``name`` to a valid non-default value, and
    that value."""
    for raw in CANDIDATES:
        try:
            value = plain(getattr(Settings.model_validate({name: raw}), name))
        except ValidationError:
            continue
        if value != Settings.model_fields[name].default:
            return raw, value
    raise AssertionError(f"no valid non-default sample for {name}; extend CANDIDATES")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the machine running the tests."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


# --- the environment ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_field_is_read_from_its_upper_case_environment_variable(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each Settings field is set by the environment variable named like it, upper-cased
    (the name the settings table and the README give)."""
    raw, expected = non_default(name)
    assert plain(getattr(Settings(), name)) != expected
    monkeypatch.setenv(name.upper(), raw)
    assert plain(getattr(Settings(), name)) == expected


def test_backend_is_postgres_without_a_dsql_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """DATABASE_URL alone selects PostgreSQL; DSQL_ENDPOINT takes precedence over it."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db.example/transfers")
    assert Settings().backend is Backend.POSTGRES
    monkeypatch.setenv("DSQL_ENDPOINT", "c1.dsql.eu-west-1.on.aws")
    assert Settings().backend is Backend.DSQL


# --- the table in the README ------------------------------------------------------------


def test_settings_command_prints_one_markdown_row_per_field(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`python -m worker settings` prints a header and one row per field: env var, default
    (unset for None) and description, without needing any configuration."""
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert out == settings_markdown()
    lines = out.splitlines()
    assert lines[:2] == ["| env var | default | description |", "| --- | --- | --- |"]
    rows = lines[2:]
    assert len(rows) == len(Settings.model_fields)
    for row, (name, field) in zip(rows, Settings.model_fields.items(), strict=True):
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
        assert len(cells) == 3, row
        assert cells[0] == f"`{name.upper()}`"
        assert cells[1] == ("(unset)" if field.default is None else f"`{field.default}`")
        assert cells[2] == " ".join((field.description or "").split())


def test_readme_documents_every_setting() -> None:
    """README.md's "## Settings" section names every environment variable Settings reads."""
    assert README.exists(), "README.md is missing; paste `python -m worker settings` into it"
    text = README.read_text()
    start = re.search(r"^## Settings\b.*$", text, re.MULTILINE)
    assert start is not None, 'README.md has no "## Settings" section'
    end = re.search(r"^## ", text[start.end() :], re.MULTILINE)
    section = text[start.end() : start.end() + end.start()] if end else text[start.end() :]
    missing = [
        name.upper()
        for name in Settings.model_fields
        if not re.search(rf"\b{name.upper()}\b", section)
    ]
    assert missing == [], f"README ## Settings does not mention {missing}"


# --- configuration errors -----------------------------------------------------------------


@pytest.mark.parametrize("command", ["migrate", "explain"])
def test_a_command_without_a_database_exits_2_with_a_clear_message(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without DATABASE_URL or DSQL_ENDPOINT a command exits 2 naming both, no traceback."""
    assert main([command]) == 2
    err = capsys.readouterr().err
    assert "DATABASE_URL" in err
    assert "DSQL_ENDPOINT" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"POOL_MAX_LIFETIME_S": "3600"}, "POOL_MAX_LIFETIME_S"),
        ({"POOL_MIN_SIZE": "5", "POOL_MAX_SIZE": "2"}, "POOL_MIN_SIZE must not exceed"),
        ({"CONNECT_TIMEOUT_S": "soon"}, "CONNECT_TIMEOUT_S"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ],
)
def test_an_invalid_setting_exits_2_naming_it(
    variables: dict[str, str],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A refused environment variable makes a command exit 2 with a one-line message that
    names it, before any connection is attempted."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@127.0.0.1:1/none")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert named in err
    assert err.count("\n") == 1
    assert "database unavailable" not in err


# --- LOG_LEVEL and LOG_FORMAT -------------------------------------------------------------


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` parsed as a JSON object."""
    return [json.loads(line) for line in text.splitlines()]


def test_json_logs_carry_structlog_and_stdlib_records_in_one_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """LOG_FORMAT=json writes one JSON object per line to stderr, with an ISO UTC
    timestamp, for structlog events and stdlib records alike."""
    configure_logging(Settings(log_format="json"))
    structlog.get_logger("worker.test").info("transfer applied", attempts=2)
    logging.getLogger("psycopg.pool").warning("error connecting in %r: %s", "pool", "refused")

    captured = capsys.readouterr()
    assert captured.out == ""
    ours, theirs = json_lines(captured.err)
    assert ours["event"] == "transfer applied"
    assert ours["attempts"] == 2
    assert (ours["level"], ours["logger"]) == ("info", "worker.test")
    assert theirs["event"] == "error connecting in 'pool': refused"
    assert (theirs["level"], theirs["logger"]) == ("warning", "psycopg.pool")
    for record in (ours, theirs):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", record["timestamp"])


def test_exceptions_are_rendered_into_the_log_record(capsys: pytest.CaptureFixture[str]) -> None:
    """A logged exception becomes a traceback string inside its JSON record."""
    configure_logging(Settings(log_format="json"))
    try:
        raise ZeroDivisionError("boom")
    except ZeroDivisionError:
        structlog.get_logger("worker.test").exception("failed")
        logging.getLogger("other.library").exception("also failed")

    ours, theirs = json_lines(capsys.readouterr().err)
    for record in (ours, theirs):
        assert record["level"] == "error"
        assert "Traceback (most recent call last)" in record["exception"]
        assert "ZeroDivisionError: boom" in record["exception"]


def test_log_level_filters_both_structlog_and_stdlib(capsys: pytest.CaptureFixture[str]) -> None:
    """LOG_LEVEL=WARNING drops info events from structlog and from stdlib loggers."""
    configure_logging(Settings(log_level="warning"))
    structlog.get_logger("worker.test").info("hidden")
    logging.getLogger("psycopg.pool").info("hidden too")
    structlog.get_logger("worker.test").warning("shown")

    assert [r["event"] for r in json_lines(capsys.readouterr().err)] == ["shown"]


def test_botocore_never_logs_below_info(capsys: pytest.CaptureFixture[str]) -> None:
    """At LOG_LEVEL=DEBUG botocore stays at INFO: its DEBUG lines carry token signatures."""
    configure_logging(Settings(log_level="DEBUG"))
    logging.getLogger("botocore.auth").debug("Signature:\nabc123")
    logging.getLogger("worker.test").debug("visible")

    assert [r["event"] for r in json_lines(capsys.readouterr().err)] == ["visible"]


def test_console_format_is_human_readable(capsys: pytest.CaptureFixture[str]) -> None:
    """LOG_FORMAT=console prints readable lines (not JSON) with the event and its fields."""
    configure_logging(Settings(log_format="console"))
    structlog.get_logger("worker.test").info("transfer applied", attempts=2)

    err = capsys.readouterr().err
    assert "transfer applied" in err
    assert "attempts=2" in err
    with pytest.raises(json.JSONDecodeError):
        json.loads(err)


def test_configure_logging_twice_logs_each_event_once(capsys: pytest.CaptureFixture[str]) -> None:
    """Calling configure_logging again replaces its handler instead of adding another."""
    configure_logging(Settings(log_format="console"))
    configure_logging(Settings(log_format="json"))
    configure_logging(Settings(log_format="json"))
    structlog.get_logger("worker.test").info("once")
    logging.getLogger("psycopg.pool").warning("once too")

    assert [r["event"] for r in json_lines(capsys.readouterr().err)] == ["once", "once too"]
