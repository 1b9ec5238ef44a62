"""Writes in batches that halve when the server refuses them as too large.

``producer setup`` deletes and inserts in batches sized a third of DSQL's 3,000 rows
per transaction; should the server still refuse one as too large (SQLSTATE ``54000``,
DSQL's limit class), :class:`Batches` splits it at its middle key and runs each half,
recursively, down to a single row (:class:`BatchRefused` if even that is refused: then
the limit is not the row count). Once a size has been refused, later batches that
large are split before they are tried. A :class:`Delete` is a key range of a table
(:mod:`producer.keyranges` splits it); an :class:`Insert` a range of new account ids.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, LiteralString, Protocol

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from producer.keyranges import KeyRange, split

TOO_LARGE = "54000"
"""SQLSTATE of DSQL's per-transaction limits (rows, bytes, duration, memory)."""

Progress = Callable[[int], None]


class BatchRefused(RuntimeError):
    """A batch of one row was still refused with SQLSTATE 54000."""


class Batch(Protocol):
    """Rows written in one transaction, which can say how to halve itself."""

    @property
    def rows(self) -> int: ...

    def run(self, conn: psycopg.Connection[Any]) -> None: ...

    def halves(self, conn: psycopg.Connection[Any]) -> Sequence[Batch] | None: ...


@dataclass(frozen=True)
class Delete:
    """``DELETE`` the rows of ``table`` whose ``key`` is in ``range``."""

    table: LiteralString
    key: LiteralString
    range: KeyRange

    @property
    def rows(self) -> int:
        return self.range.rows

    def run(self, conn: psycopg.Connection[Any]) -> None:
        condition, params = self.range.where(self.key)
        query = sql.SQL("DELETE FROM {} WHERE {}").format(sql.Identifier(self.table), condition)
        conn.execute(query, params)

    def halves(self, conn: psycopg.Connection[Any]) -> Sequence[Batch] | None:
        parts = split(conn, self.table, self.key, self.range)
        return None if parts is None else [Delete(self.table, self.key, p) for p in parts]


@dataclass(frozen=True)
class Insert:
    """``INSERT`` accounts ``first..last``, each with ``balance``."""

    first: int
    last: int
    balance: Decimal

    @property
    def rows(self) -> int:
        return self.last - self.first + 1

    def run(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            "INSERT INTO accounts (id, balance) "
            "SELECT g, %s FROM generate_series(%s::int, %s::int) AS g",
            (self.balance, self.first, self.last),
        )

    def halves(self, conn: psycopg.Connection[Any]) -> Sequence[Batch] | None:
        if self.rows < 2:
            return None
        middle = self.first + self.rows // 2 - 1
        return [
            Insert(self.first, middle, self.balance),
            Insert(middle + 1, self.last, self.balance),
        ]


class Batches:
    """Runs batches on a pool; halves the ones the server refuses as too large."""

    def __init__(self, on_progress: Progress | None, on_split: Progress | None) -> None:
        self._progress = on_progress or (lambda _rows: None)
        self._split = on_split or (lambda _rows: None)
        self._lock = threading.Lock()
        self.refused_at: int | None = None
        """The smallest batch size refused so far: batches this large are split first."""

    def apply(self, pool: ConnectionPool[Any], batch: Batch) -> None:
        """Run ``batch`` (or its halves, recursively) in autocommit transactions."""
        with self._lock:
            known_too_large = self.refused_at is not None and batch.rows >= self.refused_at
        if not known_too_large:
            try:
                with pool.connection() as conn:
                    batch.run(conn)
            except psycopg.Error as exc:
                if exc.sqlstate != TOO_LARGE:
                    raise
                with self._lock:
                    self.refused_at = min(self.refused_at or batch.rows, batch.rows)
                self._split(batch.rows)
                self._apply_halves(pool, batch, exc)
                return
            self._progress(batch.rows)
            return
        self._apply_halves(pool, batch, None)

    def _apply_halves(
        self, pool: ConnectionPool[Any], batch: Batch, refusal: psycopg.Error | None
    ) -> None:
        with pool.connection() as conn:
            halves = batch.halves(conn)
            if halves is None and refusal is None:
                # Split ahead of time, but it no longer holds two rows: just try it.
                batch.run(conn)
                self._progress(batch.rows)
                return
        if halves is None:
            raise BatchRefused(
                f"the server refused a batch of {batch.rows} row(s) as too large "
                f"(SQLSTATE {TOO_LARGE}): {refusal}"
            ) from refusal
        for half in halves:
            self.apply(pool, half)
