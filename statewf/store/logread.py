"""One instance's log read in order (``history()``, ``state_at()``): the statements built
once, the rows streamed on PostgreSQL.

On PostgreSQL the server spends about a third of a long log's read making and sending
its rows (the index walk, the documents' texts, the instants' output) and the driver
waits for the last of them before handing over the first. Here the rows come in
chunks (libpq's chunked rows mode, through psycopg's ``stream``) and each block of
:data:`~statewf.store.logrows.BLOCK` rows is decoded and built while the server sends
the next: on two processors the server's part and ours overlap. Where the driver
cannot (psycopg < 3.2, libpq < 17) and on SQLite, the rows are fetched at once, as
before; the records are the same either way (:func:`~statewf.store.logrows.records`).
"""

from __future__ import annotations

import functools
from typing import Any

import psycopg
from sqlalchemy import Connection, Dialect, Select, bindparam
from sqlalchemy.exc import DBAPIError

from statewf.records import TransitionRecord
from statewf.store import logrows
from statewf.store.schema import Tables


@functools.lru_cache(maxsize=64)
def statement(tables: Tables, upto: bool, after: bool) -> Select[Any]:
    """The log read of one instance (``upto`` / ``after``: with those bounds), built once.

    Parameters: ``log_instance``, ``log_upto``, ``log_after``.
    """
    c = tables.transitions.c
    query = logrows.select_rows(tables).where(c.instance_id == bindparam("log_instance"))
    if upto:
        query = query.where(c.seq <= bindparam("log_upto"))
    if after:
        query = query.where(c.seq > bindparam("log_after"))
    return query.order_by(c.seq)


@functools.lru_cache(maxsize=64)
def _sql(tables: Tables, upto: bool, after: bool, dialect: Dialect) -> str:
    """:func:`statement` as the driver's text (psycopg's named ``%(name)s`` parameters)."""
    return str(statement(tables, upto, after).compile(dialect=dialect))


@functools.cache
def streams_in_chunks() -> bool:
    """True if psycopg and its libpq can stream a result in chunks of rows."""
    capabilities = getattr(psycopg, "capabilities", None)  # psycopg >= 3.2
    return capabilities is not None and bool(capabilities.has_stream_chunked())


def instance_log(
    conn: Connection,
    tables: Tables,
    instance_id: str,
    *,
    upto: int | None = None,
    after: int | None = None,
) -> list[TransitionRecord]:
    """An instance's log rows in order, optionally up to / after a sequence number."""
    params: dict[str, Any] = {"log_instance": instance_id}
    if upto is not None:
        params["log_upto"] = upto
    if after is not None:
        params["log_after"] = after
    shape = (tables, upto is not None, after is not None)
    if (
        conn.dialect.name == "postgresql"
        and streams_in_chunks()
        # an application's schema_translate_map applies to SQLAlchemy's executions only
        and not conn.get_execution_options().get("schema_translate_map")
    ):
        driver = conn.connection.driver_connection
        if isinstance(driver, psycopg.Connection):
            return _streamed(driver, _sql(*shape, conn.dialect), params, instance_id)
    return logrows.read(conn, statement(*shape), instance_id, params)


def _streamed(
    driver: psycopg.Connection[Any], sql: str, params: dict[str, Any], instance_id: str
) -> list[TransitionRecord]:
    """The rows of ``sql`` (a :func:`statement`) streamed, each block built as it comes.

    A driver error is raised as SQLAlchemy's (the store's edge turns it into a statewf
    error, as for every other statement of the transaction).
    """
    out: list[TransitionRecord] = []
    size = logrows.BLOCK
    block: list[Any] = []
    append = block.append
    with logrows.gc_paused():
        try:
            with driver.cursor() as cursor:
                for row in cursor.stream(sql, params, size=size):
                    append(row)
                    if len(block) == size:
                        out += logrows.records(block, instance_id)
                        block.clear()
        except psycopg.Error as exc:
            raise DBAPIError.instance(sql, params, exc, psycopg.Error) from exc
        if block:
            out += logrows.records(block, instance_id)
    return out
