"""Server-side prepared statements for the labeling hot path (PostgreSQL).

A labeling request runs a few small statements whose planning costs PostgreSQL more than running
them: EXPLAIN ANALYZE of the lease showed 0.8 ms planning against 0.2 ms execution; re-running a
prepared lease cost 0.30 ms instead of 0.53. ``execute`` sends ``PREPARE`` once per database
connection and ``EXECUTE`` afterwards, so each connection plans each statement once (PostgreSQL
uses custom plans for the first five runs, then a generic plan if it is no worse).

Elsewhere (SQLite), or with ``DATABASE_PREPARED_STATEMENTS`` off, it is a plain
``cursor.execute``. Turn it off behind a PgBouncer in transaction mode, where the server
connection that prepared a statement is not the one the next transaction gets.

Statements are written with psycopg's ``%(name)s`` / ``%s`` placeholders, as for
``cursor.execute``; they become ``$1, $2, ...`` for ``PREPARE``.
"""

from __future__ import annotations

import re
from functools import lru_cache

from django.conf import settings
from django.db import DatabaseError, connection

INVALID_SQL_STATEMENT_NAME = "26000"  # SQLSTATE: no prepared statement of that name
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s|%%")


@lru_cache(maxsize=64)
def _positional(sql: str) -> tuple[str, tuple]:
    """``sql`` with ``$n`` placeholders, and the order of the parameters they stand for: names
    (a name used twice is one parameter) or positions of ``%s``."""
    order: list = []

    def replace(match: re.Match) -> str:
        if match.group(0) == "%%":
            return "%"
        key = match.group(1) if match.group(1) is not None else sum(1 for k in order if isinstance(k, int))
        if key not in order:
            order.append(key)
        return f"${order.index(key) + 1}"

    return _PLACEHOLDER.sub(replace, sql), tuple(order)


def _prepared_names() -> set[str]:
    """Names prepared on the current database connection (a reconnect starts a new set)."""
    raw = connection.connection
    held = getattr(connection, "_arbiter_prepared", None)
    # The raw connection is held, not its id(): a new connection can never pass for the old one.
    if held is None or held[0] is not raw:
        held = connection._arbiter_prepared = (raw, set())
    return held[1]


def execute(cursor, name: str, sql: str, params=()) -> None:
    """``cursor.execute(sql, params)``, through a prepared statement ``name`` on PostgreSQL.

    ``name`` must be unique per distinct ``sql`` (it is the statement's name on the connection).
    """
    if connection.vendor != "postgresql" or not settings.DATABASE_PREPARED_STATEMENTS:
        cursor.execute(sql, params)
        return
    text, order = _positional(sql)
    names = _prepared_names()
    if name not in names:
        cursor.execute(f"PREPARE {name} AS {text}")
        names.add(name)
    args = [params[key] for key in order]
    try:
        cursor.execute(f"EXECUTE {name} ({', '.join(['%s'] * len(args))})" if args else f"EXECUTE {name}", args)
    except DatabaseError as exc:
        if getattr(exc.__cause__, "pgcode", None) == INVALID_SQL_STATEMENT_NAME:
            names.discard(name)  # gone (a DISCARD ALL, a pooler): prepared afresh next time
        raise
