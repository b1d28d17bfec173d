"""A new run's instance row and create row in one autocommitted statement (PostgreSQL).

Starting a run through a transaction costs five round trips (``BEGIN``, the
database's clock, the instance's ``INSERT``, the log row's ``INSERT``, ``COMMIT``) and
SQLAlchemy building two statements. Here it is one prepared statement, sent from the
event loop on a :class:`~statewf.store.loop_writes.LoopConnection`:

``WITH ins AS (INSERT INTO instances ... VALUES (..., clock_timestamp() + lease)
ON CONFLICT DO NOTHING RETURNING lease_expires_at), logged AS (INSERT INTO transitions
SELECT ... FROM ins) SELECT the expiry FROM ins``

Both rows or neither, committed together, the lease measured on the database's clock
as :func:`statewf.store.leases.db_now` measures it. No row back means the id (or the
idempotency key) exists already: the caller then takes the transaction's path, which
finds the first run or raises as before. The parameters are text, as
:mod:`statewf.store.pg_write` sends them; a value without a text form here answers
None (the transaction's path then).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import pq
from sqlalchemy import JSON, String, Text
from sqlalchemy.engine import Dialect

from statewf.records import Instance, TransitionRecord
from statewf.store import driver_errors
from statewf.store.logrows import RECORD_FIELDS
from statewf.store.loop_writes import Result
from statewf.store.pg_write import PreparedWrite
from statewf.store.schema import Tables
from statewf.store.sql import SqlStore
from statewf.store.tx import INSTANCE_FIELDS

_TUPLES_OK = pq.ExecStatus.TUPLES_OK

#: The name of the start statement prepared on a loop connection.
START_STATEMENT = b"statewf_start"

#: The instance columns a start sets besides the snapshot's (the route and the lease).
EXTRA_COLUMNS = ("queue", "priority", "labels", "lease_owner", "lease_epoch")

_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US'


def _cast(column: Any, dialect: Dialect) -> str:
    """A parameter's cast in the ``SELECT`` list: strings without their length (a too
    long value then fails on the column, as in an ``INSERT ... VALUES``)."""
    kind = column.type
    if isinstance(kind, String) and not isinstance(kind, Text):
        return "VARCHAR"
    return str(kind.compile(dialect))


@functools.lru_cache(maxsize=64)
def _statement(tables: Tables, dialect: Dialect) -> tuple[bytes, tuple[tuple[str, bool], ...]]:
    """The start statement for ``tables`` (``$n`` placeholders) and its parameters in
    order, each with whether it is sent as JSON text."""
    quote = dialect.identifier_preparer.quote
    table = dialect.identifier_preparer.format_table
    instances, transitions = tables.instances, tables.transitions
    params: list[tuple[str, bool]] = []

    def param(name: str, column: Any, cast: bool) -> str:
        params.append((name, isinstance(column.type, JSON)))
        placeholder = f"${len(params)}"
        return f"{placeholder}::{_cast(column, dialect)}" if cast else placeholder

    names = [*INSTANCE_FIELDS, *EXTRA_COLUMNS]
    values = [param(f"i_{name}", instances.c[name], False) for name in names]
    params.append(("lease_for", False))
    lease = f"clock_timestamp() + ${len(params)}::INTERVAL"
    logged = [param(f"t_{name}", transitions.c[name], True) for name in RECORD_FIELDS]
    expires = quote("lease_expires_at")
    sql = (
        f"WITH ins AS (INSERT INTO {table(instances)} "
        f"({', '.join(quote(n) for n in names)}, {expires}) "
        f"VALUES ({', '.join(values)}, {lease}) ON CONFLICT DO NOTHING "
        f"RETURNING {expires} AS until), "
        f"logged AS (INSERT INTO {table(transitions)} "
        f"({', '.join(quote(n) for n in RECORD_FIELDS)}) SELECT {', '.join(logged)} FROM ins) "
        f"SELECT to_char(until AT TIME ZONE 'UTC', '{_FORMAT}') FROM ins"
    )
    return sql.encode(), tuple(params)


@functools.lru_cache(maxsize=64)
def start_statement(tables: Tables, dialect: Dialect) -> PreparedWrite:
    """The start statement of ``tables``, as a :class:`PreparedWrite` (for its text)."""
    sql, params = _statement(tables, dialect)
    return PreparedWrite.of_sql(sql, params, START_STATEMENT)


def start_params(
    snapshot: Instance,
    record: TransitionRecord,
    columns: Mapping[str, Any],
    lease_for: timedelta,
) -> dict[str, Any] | None:
    """The statement's parameters; None for ``columns`` other than the route and lease."""
    if set(columns) != set(EXTRA_COLUMNS):
        return None
    params = {f"i_{name}": getattr(snapshot, name) for name in INSTANCE_FIELDS}
    params["i_configuration"] = snapshot.stored_configuration()
    params.update({f"i_{name}": columns[name] for name in EXTRA_COLUMNS})
    params.update({f"t_{name}": getattr(record, name) for name in RECORD_FIELDS})
    params["t_source"] = list(record.source)
    params["t_target"] = list(record.target)
    params["t_context_unset"] = list(record.context_unset)
    seconds = lease_for.days * 86_400 + lease_for.seconds
    params["lease_for"] = f"{seconds} seconds {lease_for.microseconds} microseconds"
    return params


def start_args(
    store: SqlStore,
    snapshot: Instance,
    record: TransitionRecord,
    columns: Mapping[str, Any],
    lease_for: timedelta,
) -> list[bytes | None] | None:
    """The statement's text arguments; None where the transaction's path must start the
    run (other columns, a value without a text form here)."""
    params = start_params(snapshot, record, columns, lease_for)
    if params is None:
        return None
    try:
        return start_statement(store.tables, store.engine.dialect).args(params)
    except Exception:  # a value the transaction's path refuses: it raises as before
        return None


def started(store: SqlStore, result: Result | None, error: BaseException | None) -> datetime | None:
    """The lease expiry of the run the statement inserted; None if it inserted nothing
    (the id or key exists) or was refused: the transaction's path then. A connection
    lost under it raises the transient :class:`~statewf.errors.StoreError` the
    transaction's path raises for a lost commit."""
    if result is None:
        lost = error if isinstance(error, psycopg.Error) else psycopg.OperationalError(str(error))
        raise driver_errors.wrap_driver(lost, store.url) from error
    if result.status != _TUPLES_OK or result.ntuples != 1:
        return None
    text = bytes(result.get_value(0, 0) or b"").decode()
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def refused(result: Result | None) -> bool:
    """Whether the statement came back with an error (not: inserted, or nothing to
    insert because the id or key is taken). A commit can be done on the server when
    its answer is an error (a backend ended while waiting for a synchronous standby)."""
    return result is not None and result.status != _TUPLES_OK
