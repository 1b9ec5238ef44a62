"""Bounded key ranges over a table's primary key: how the producer reads a big table.

DSQL caps a transaction at 5 minutes and a query at 128 MiB, and a ``COUNT(*)`` over a
large table may not finish in time. So nothing in the producer reads or aggregates a
whole table in one statement or one Python list: it walks the primary key in ranges
of at most ``size`` rows and works range by range.

A range is ``(after, upto]``: ``after`` is None for the first range (no lower bound),
``upto`` None for the last (no upper bound), so the ranges of one walk cover the whole
key space, keys that appear later included. Each step of the walk is one bounded
statement: ``ORDER BY key OFFSET size - 1 LIMIT 1`` from the previous boundary (it
reads at most ``size`` keys of the primary key, which on DSQL *is* the table, in key
order), and a ``count(*)`` of fewer than ``size`` keys for the tail.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, LiteralString

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class KeyRange:
    """Keys ``k`` with ``after < k <= upto``; a None bound is open."""

    after: Any
    upto: Any
    rows: int
    """Rows the range held when it was walked."""

    def where(self, column: str) -> tuple[sql.Composable, dict[str, Any]]:
        """The SQL condition on ``column`` (``"id"`` or ``"a.id"``) and its parameters
        (``after``, ``upto``)."""
        parts: list[sql.Composable] = []
        params: dict[str, Any] = {}
        ident = sql.Identifier(*column.split("."))
        if self.after is not None:
            parts.append(sql.SQL("{} > %(after)s").format(ident))
            params["after"] = self.after
        if self.upto is not None:
            parts.append(sql.SQL("{} <= %(upto)s").format(ident))
            params["upto"] = self.upto
        if not parts:
            return sql.SQL("TRUE"), params
        return sql.SQL(" AND ").join(parts), params


EVERYTHING = KeyRange(None, None, 0)
"""One range covering every key."""


def walk(
    conn: psycopg.Connection[Any],
    table: LiteralString,
    key: LiteralString,
    size: int,
    *,
    start: KeyRange = EVERYTHING,
) -> Iterator[KeyRange]:
    """Consecutive ranges of at most ``size`` rows of ``table`` by ``key``, inside
    ``start`` (default: the whole table), lazily: each one is found when asked for.
    The last range is open above like ``start`` and may be empty, so the ranges always
    cover all of ``start``.

    Every statement runs on ``conn`` in whatever transaction it is in; a caller that
    wants each range in its own snapshot uses :func:`next_range` and ends the
    transaction between steps.
    """
    after = start.after
    while True:
        current = next_range(conn, table, key, size, after=after, upto=start.upto)
        yield current
        if current.upto == start.upto:
            return
        after = current.upto


def next_range(
    conn: psycopg.Connection[Any],
    table: LiteralString,
    key: LiteralString,
    size: int,
    *,
    after: Any = None,
    upto: Any = None,
) -> KeyRange:
    """The range of at most ``size`` rows that starts after ``after``: it ends at the
    ``size``-th key, or at ``upto`` (None: open above) when fewer keys are left."""
    if size < 1:
        raise ValueError("size must be at least 1")
    rest = KeyRange(after, upto, 0)
    condition, params = rest.where(key)
    boundary = conn.execute(
        sql.SQL(
            "SELECT {key} FROM {table} WHERE {cond} ORDER BY {key} OFFSET %(skip)s LIMIT 1"
        ).format(key=sql.Identifier(key), table=sql.Identifier(table), cond=condition),
        {**params, "skip": size - 1},
    ).fetchone()
    if boundary is not None and boundary[0] != upto:
        return KeyRange(after, boundary[0], size)
    # At most ``size`` keys are left: counting them reads no more than that.
    counted = conn.execute(
        sql.SQL("SELECT count(*) FROM {table} WHERE {cond}").format(
            table=sql.Identifier(table), cond=condition
        ),
        params,
    ).fetchone()
    return KeyRange(after, upto, int(counted[0]) if counted else 0)


def split(
    conn: psycopg.Connection[Any], table: LiteralString, key: LiteralString, whole: KeyRange
) -> tuple[KeyRange, KeyRange] | None:
    """``whole`` cut at its middle key into two ranges of about half its rows each;
    None when it holds fewer than two rows (then there is nothing to split)."""
    half = whole.rows // 2
    if half < 1:
        return None
    condition, params = whole.where(key)
    middle = conn.execute(
        sql.SQL(
            "SELECT {key} FROM {table} WHERE {cond} ORDER BY {key} OFFSET %(skip)s LIMIT 1"
        ).format(key=sql.Identifier(key), table=sql.Identifier(table), cond=condition),
        {**params, "skip": half - 1},
    ).fetchone()
    if middle is None or middle[0] == whole.upto:
        return None
    return (
        KeyRange(whole.after, middle[0], half),
        KeyRange(middle[0], whole.upto, whole.rows - half),
    )
