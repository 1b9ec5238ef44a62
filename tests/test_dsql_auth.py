"""The DSQL IAM-token path, end to end through libpq, without a network or AWS account.

A fake server (``tests/pgwire.py``) with a certificate for a DSQL host name records
the password libpq sends. libpq is pointed at it through its own environment
variables (``PGHOSTADDR``/``PGPORT``), so the product code runs unchanged: the host
name stays the DSQL endpoint for TLS verification and token signing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg
import pytest
import structlog
from psycopg_pool import PoolTimeout
from pydantic import ValidationError

from sandbox.postgres import free_port
from tests.pgwire import Certificates, FakeLoginServer, LoginAttempt, make_certificates
from worker.db import APPLICATION_NAME, connect, create_pool
from worker.logs import configure_logging
from worker.ops.cli import main
from worker.settings import Settings

HOST = "abc123.dsql.us-east-1.on.aws"
KEY_1 = "AKIAFAKEKEY1EXAMPLE"
KEY_2 = "AKIAFAKEKEY2EXAMPLE"

Attempt = Callable[[Settings, FakeLoginServer], None]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA and a server certificate for the DSQL host name."""
    return make_certificates(tmp_path_factory.mktemp("tls"), HOST)


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake static credentials; no profile, config file or instance metadata is read."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_1)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-access-key")
    for name in (
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "DSQL_USER",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-such-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-such-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def serve(certs: Certificates, monkeypatch: pytest.MonkeyPatch) -> FakeLoginServer:
    """A fake server that libpq will dial instead of resolving the DSQL host name."""
    server = FakeLoginServer(certs)
    monkeypatch.setenv("PGHOSTADDR", "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(server.port))
    monkeypatch.setenv("PGGSSENCMODE", "disable")
    return server


@pytest.fixture
def server(certs: Certificates, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLoginServer]:
    """The fake DSQL endpoint, trusted through ``certs.ca``."""
    with serve(certs, monkeypatch) as server:
        yield server


def dsql_settings(certs: Certificates, **overrides: Any) -> Settings:
    """Settings for the fake endpoint; DSQL_USER etc. still come from the environment."""
    values: dict[str, Any] = {
        "dsql_endpoint": HOST,
        "dsql_sslrootcert": str(certs.ca),
        "connect_timeout_s": 5,
        **overrides,
    }
    return Settings(**values)


def connect_once(settings: Settings, _server: FakeLoginServer | None = None) -> None:
    """One attempt through worker.db.connect; the fake server always refuses it."""
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(settings)


def pool_once(settings: Settings, server: FakeLoginServer) -> None:
    """Open worker.db.create_pool until its first login attempt was refused."""
    pool = create_pool(settings, min_size=1, max_size=1)
    try:
        pool.open(wait=False)
        server.wait_for_passwords(1)
        with pytest.raises(PoolTimeout):
            pool.getconn(timeout=0.2)
    finally:
        pool.close(timeout=1)


def token_parts(token: str) -> tuple[str, dict[str, str]]:
    """The signed host and the query parameters of a presigned DSQL token."""
    url = urlsplit("https://" + token)
    query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
    return url.netloc, query


def assert_dsql_login(attempt: LoginAttempt, *, user: str, action: str, key: str) -> None:
    """One login: verified TLS to HOST, the right role and database, a token for them."""
    assert attempt.ssl_requested
    assert attempt.tls_established
    assert attempt.server_name == HOST
    assert attempt.startup is not None
    assert attempt.startup["user"] == user
    assert attempt.startup["database"] == "postgres"
    assert APPLICATION_NAME in attempt.startup["application_name"]
    assert attempt.password is not None
    host, query = token_parts(attempt.password)
    assert host == HOST
    assert query["Action"] == action
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert unquote(query["X-Amz-Credential"]).split("/")[::2] == [key, "us-east-1", "aws4_request"]
    assert "/dsql/" in unquote(query["X-Amz-Credential"])
    assert len(query["X-Amz-Signature"]) == 64


@pytest.mark.parametrize("attempt", [connect_once, pool_once], ids=["connect", "pool"])
def test_admin_logs_in_with_a_db_connect_admin_token_over_verified_tls(
    attempt: Attempt, certs: Certificates, server: FakeLoginServer
) -> None:
    """The default role admin sends a DbConnectAdmin token for the endpoint, over TLS
    verified against DSQL_SSLROOTCERT, to database postgres."""
    attempt(dsql_settings(certs), server)

    logins = server.logins()
    assert logins
    for login in logins:
        assert_dsql_login(login, user="admin", action="DbConnectAdmin", key=KEY_1)
        assert "Action=DbConnectAdmin" in (login.password or "")
        assert "X-Amz-Signature=" in (login.password or "")


@pytest.mark.parametrize("attempt", [connect_once, pool_once], ids=["connect", "pool"])
def test_other_roles_log_in_with_a_db_connect_token(
    attempt: Attempt,
    certs: Certificates,
    server: FakeLoginServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DSQL_USER=app logs in as app with a DbConnect (not DbConnectAdmin) token."""
    monkeypatch.setenv("DSQL_USER", "app")
    attempt(dsql_settings(certs), server)

    logins = server.logins()
    assert logins
    for login in logins:
        assert_dsql_login(login, user="app", action="DbConnect", key=KEY_1)
        assert "DbConnectAdmin" not in (login.password or "")


def test_connect_signs_each_connection_with_the_credentials_in_force(
    certs: Certificates, server: FakeLoginServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """worker.db.connect makes a new token per connection, from the current credentials."""
    settings = dsql_settings(certs)
    connect_once(settings)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_2)
    connect_once(settings)

    first, second = server.logins()
    assert_dsql_login(first, user="admin", action="DbConnectAdmin", key=KEY_1)
    assert_dsql_login(second, user="admin", action="DbConnectAdmin", key=KEY_2)


def test_pool_signs_each_new_connection_with_the_credentials_in_force(
    certs: Certificates, server: FakeLoginServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's reconnect after a refused login carries a token signed afresh with the
    credentials in force at that moment, not a token cached from the first attempt."""
    pool = create_pool(dsql_settings(certs), min_size=1, max_size=1)
    try:
        pool.open(wait=False)
        server.wait_for_passwords(1)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_2)
        # psycopg_pool retries a failed connection after about one second.
        server.wait_for_passwords(2)
    finally:
        pool.close(timeout=1)

    first, second = server.logins()[:2]
    assert_dsql_login(first, user="admin", action="DbConnectAdmin", key=KEY_1)
    assert_dsql_login(second, user="admin", action="DbConnectAdmin", key=KEY_2)


@pytest.mark.parametrize("problem", ["certificate for another host", "unknown CA"])
def test_verify_full_refuses_a_server_it_cannot_verify(
    problem: str, certs: Certificates, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No token leaves the client when the server certificate names another host or is
    not signed by DSQL_SSLROOTCERT (sslmode=verify-full, not require or verify-ca)."""
    if problem == "unknown CA":
        served = make_certificates(tmp_path / "served", HOST, ca_name="someone else")
        trusted = certs.ca
    else:
        # Signed by the CA the client trusts, so only the host name check can refuse it.
        served = make_certificates(tmp_path / "served", "xyz789.dsql.us-east-1.on.aws")
        trusted = served.ca

    with serve(served, monkeypatch) as server:
        with pytest.raises(psycopg.OperationalError) as raised:
            connect(dsql_settings(certs, dsql_sslrootcert=str(trusted)))
        assert server.attempts
        assert server.passwords() == []
    assert "password authentication failed" not in str(raised.value)


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_tokens_never_appear_in_logs_or_exceptions(
    log_format: str,
    certs: Certificates,
    server: FakeLoginServer,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While the pool fails to log in and retries, and when connect fails, neither the
    log output (ours and stdlib's, at DEBUG) nor the exceptions contain a token."""
    settings = dsql_settings(certs, log_level="DEBUG", log_format=log_format)
    configure_logging(settings)
    log = structlog.get_logger("tests.dsql_auth")

    pool = create_pool(settings)
    try:
        pool.open(wait=False)
        server.wait_for_passwords(3)  # min_size=2 first attempts, then a retry
        with pytest.raises(PoolTimeout) as pool_error:
            pool.getconn(timeout=0.2)
    finally:
        pool.close(timeout=1)
    with pytest.raises(psycopg.OperationalError) as connect_error:
        connect(settings)
    log.error("connect failed", exc_info=connect_error.value)
    log.info("settings", settings=settings)

    tokens = server.passwords()
    signatures = [token_parts(t)[1]["X-Amz-Signature"] for t in tokens]
    output = capsys.readouterr().err
    texts = {
        "stderr": output,
        "caplog": caplog.text,
        "pool error": f"{pool_error.value} {pool_error.value!r}",
        "connect error": f"{connect_error.value} {connect_error.value!r}",
    }
    assert "error connecting" in output  # psycopg_pool's warnings were captured
    assert "connect failed" in output
    assert "password authentication failed" in output
    for where, text in texts.items():
        for secret in [*tokens, *signatures]:
            assert secret not in text, f"token leaked into {where}"
        assert "X-Amz-Signature" not in text, where


def test_database_url_password_stays_out_of_errors_logs_and_repr(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The DATABASE_URL password appears in no connect error, pool log, CLI message or
    repr/str of the settings."""
    secret = "s3cret-pw"
    url = f"postgresql://u:{secret}@127.0.0.1:{free_port()}/db"
    monkeypatch.delenv("DSQL_ENDPOINT", raising=False)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    settings = Settings()
    configure_logging(settings)

    with pytest.raises(psycopg.OperationalError) as connect_error:
        connect(settings)
    structlog.get_logger("tests.dsql_auth").error("failed", exc_info=connect_error.value)
    pool = create_pool(settings, min_size=1, max_size=1)
    try:
        pool.open(wait=False)
        deadline = time.monotonic() + 10
        while not any(r.getMessage().startswith("error connecting") for r in caplog.records):
            assert time.monotonic() < deadline, "the pool never reported its failure"
            time.sleep(0.01)
        with pytest.raises(PoolTimeout) as pool_error:
            pool.getconn(timeout=0.2)
    finally:
        pool.close(timeout=1)
    assert main(["migrate"]) == 1

    output = capsys.readouterr()
    texts = {
        "exception": f"{connect_error.value} {connect_error.value!r}",
        "pool exception": f"{pool_error.value} {pool_error.value!r}",
        "stderr": output.err,
        "stdout": output.out,
        "caplog": caplog.text,
        "repr": repr(settings),
        "str": str(settings),
        "json": settings.model_dump_json(),
    }
    assert "error connecting" in output.err
    assert "database unavailable" in output.err
    for where, text in texts.items():
        assert secret not in text, f"password leaked into {where}"
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == url


def test_dsql_pool_retires_connections_before_the_hour(certs: Certificates) -> None:
    """The DSQL pool's max_lifetime defaults to 3000 s, under DSQL's 60-minute cap."""
    pool = create_pool(dsql_settings(certs))
    assert pool.max_lifetime == 3000
    assert pool.max_lifetime < 3600
    assert create_pool(dsql_settings(certs, pool_max_lifetime_s=3599)).max_lifetime == 3599


@pytest.mark.parametrize("lifetime", ["3600", "7200"])
def test_pool_lifetimes_of_an_hour_or_more_are_refused(
    lifetime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POOL_MAX_LIFETIME_S >= 3600 is a settings error, never a pool DSQL would cut."""
    monkeypatch.setenv("POOL_MAX_LIFETIME_S", lifetime)
    with pytest.raises(ValidationError, match="pool_max_lifetime_s"):
        Settings(dsql_endpoint=HOST)
    with pytest.raises(ValidationError, match="pool_max_lifetime_s"):
        Settings(dsql_endpoint=HOST, pool_max_lifetime_s=float(lifetime))
