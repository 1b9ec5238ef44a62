"""The one PostgreSQL of a bench run, with a database for the transfers and one for
pgbench, so both are measured on the same server in the same run."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Self

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pydantic import SecretStr

from producer.accounts import reset_accounts
from sandbox.lifecycle import Service
from sandbox.postgres import EmbeddedPostgres
from worker.db import connect
from worker.ops.migrate import migrate
from worker.settings import Backend, Settings

TRANSFERS_DB = "transfers"
PGBENCH_DB = "pgbench"


@dataclass(frozen=True)
class Endpoint:
    """Where a client connects: host, port, database."""

    host: str
    port: int
    dbname: str

    def url(self) -> str:
        """libpq URL as superuser ``postgres``."""
        return make_conninfo(
            host=self.host, port=str(self.port), dbname=self.dbname, user="postgres"
        )


class BenchServer(Service):
    """An embedded PostgreSQL with the migrated ``transfers`` database and an empty
    ``pgbench`` database."""

    def __init__(self) -> None:
        self.pg = EmbeddedPostgres()

    def start(self) -> Self:
        """Start the server and create both databases."""
        self.pg.start()
        with psycopg.connect(self.pg.url, autocommit=True) as admin:
            for name in (TRANSFERS_DB, PGBENCH_DB):
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        with connect(self.settings()) as conn:
            migrate(conn, Backend.POSTGRES)
        return self

    def close(self) -> None:
        """Stop the server and delete its data."""
        self.pg.close()

    def endpoint(self, dbname: str = TRANSFERS_DB) -> Endpoint:
        """The server's address for ``dbname``."""
        return Endpoint("127.0.0.1", self.pg.port, dbname)

    def settings(self, endpoint: Endpoint | None = None, **overrides: object) -> Settings:
        """Settings for the transfers database, optionally through another address
        (a latency proxy), with field overrides."""
        url = (endpoint or self.endpoint()).url()
        base = Settings(database_url=SecretStr(url), pool_min_size=1)
        return base.model_copy(update=overrides) if overrides else base

    def reset(self, accounts: int, balance: Decimal) -> None:
        """``producer setup``: accounts 1..N with ``balance`` each, no results; then
        VACUUM ANALYZE so every case starts from the same table state."""
        settings = self.settings()
        reset_accounts(settings, accounts, balance)
        with psycopg.connect(self.endpoint().url(), autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE accounts")
            conn.execute("VACUUM ANALYZE transfer_results")

    def version(self) -> str:
        """``SELECT version()``."""
        with psycopg.connect(self.pg.url) as conn:
            row = conn.execute("SELECT version()").fetchone()
        return str(row[0]) if row else "?"

    def server_settings(self) -> dict[str, str]:
        """The non-default server options the bench runs with (durability is off)."""
        names = ("fsync", "full_page_writes", "synchronous_commit", "shared_buffers")
        with psycopg.connect(self.pg.url) as conn:
            rows = conn.execute(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
                (list(names),),
            ).fetchall()
        return {str(name): str(value) for name, value in rows}


def proxied(endpoint: Endpoint, port: int) -> Endpoint:
    """``endpoint`` reached through a local proxy listening on ``port``."""
    return Endpoint("127.0.0.1", port, endpoint.dbname)
