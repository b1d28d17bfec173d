"""Several instances' conditional writes in one commit (PostgreSQL).

A worker executing many runs at once has many one-row writes ready at the same
moment, each its own commit and round trip. :func:`write_rows` sends them together:
one transaction, pipelined, one commit for all. Each row keeps its own condition (the
snapshot still at the version its writer read), so a row whose instance moved is
simply not written and its writer alone learns it (``False``), exactly as with
:meth:`~statewf.store.sql.SqlStore.write_if_version`.

On PostgreSQL the rows travel as one JSON document, unpacked on the server
(``json_to_recordset``) by one statement: ``WITH r AS (...), moved AS (UPDATE
instances ... FROM r WHERE id = r.id AND version = r.expected RETURNING id) INSERT
INTO transitions SELECT ... FROM r JOIN moved``. One round trip, one autocommitted
commit and one parameter, however many rows; a ``json`` column keeps the document's
text as written, as the one-row statement's ``Json`` parameter does.

A database error in the shared statement rolls back every row of it. Where it is
the server refusing one row (a constraint, a bad value), the rows are written again
one by one, so the error reaches the writer of that row only and the others land. A
lost connection reaches every writer of the batch as the same transient
:class:`~statewf.errors.StoreError`: their rows are all written or none is, and each
writer looks before trying again, as after any failed write.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from operator import attrgetter
from typing import Any, NamedTuple

import psycopg
import pydantic_core
from sqlalchemy.engine import Dialect

from statewf.errors import StatewfError
from statewf.records import Instance, TransitionRecord
from statewf.store import driver_errors, pg_start, pg_write, prebuilt
from statewf.store.logrows import RECORD_FIELDS
from statewf.store.loop_writes import Result, failure
from statewf.store.schema import Tables
from statewf.store.sql import SqlStore


class Row(NamedTuple):
    """One conditional write: the new snapshot, its log row, the version it expects."""

    snapshot: Instance
    record: TransitionRecord
    expected_version: int
    #: also clear the instance's lease (a run's final row)
    release: bool = False
    #: the snapshot at ``expected_version`` the row was made from: SQLite's move then
    #: leaves out the columns it keeps (``SqlStore.write_if_version``)
    previous: Instance | None = None


#: Per row: True if written, False if the instance had moved, or the error its writer gets.
Outcome = bool | StatewfError


#: Fewer rows than this go one by one (a batch of one gains nothing: measured)
MIN_ROWS = 2


def write_rows(store: SqlStore, rows: Sequence[Row]) -> list[Outcome]:
    """Write ``rows`` (of distinct instances) in one commit where the store can; an
    outcome per row, in order."""
    fast = store.fast_path
    if fast is None or len(rows) < MIN_ROWS:
        return [_write_one(store, row) for row in rows]
    sql = _statement(store.tables, store.engine.dialect, "%s")
    try:
        document = pydantic_core.to_json([_params(row) for row in rows])

        def work(cur: psycopg.Cursor[Any]) -> set[str]:
            cur.execute(sql, (document.decode(),), prepare=True)
            return {written for (written,) in cur.fetchall()}

        written = fast.run(work)
        return [row.snapshot.id in written for row in rows]
    except psycopg.OperationalError as exc:
        # the connection is gone: whether the transaction committed is unknown, for
        # all the rows alike
        error = driver_errors.wrap_driver(exc, store.url)
        return [error] * len(rows)
    except (psycopg.Error, UnicodeEncodeError):
        # one row refused rolled back the others: each again on its own
        return [_write_one(store, row) for row in rows]


def _write_one(store: SqlStore, row: Row) -> Outcome:
    try:
        return store.write_if_version(
            row.snapshot,
            row.record,
            row.expected_version,
            release=row.release,
            previous=row.previous,
        )
    except StatewfError as exc:  # a lone surrogate too: InvalidInput
        return exc


_MOVED = attrgetter(*prebuilt.MUTABLE_FIELDS)
_MOVED_NAMES = tuple(f"i_{name}" for name in prebuilt.MUTABLE_FIELDS)
_RECORD = attrgetter(*RECORD_FIELDS)
_RECORD_NAMES = tuple(f"t_{name}" for name in RECORD_FIELDS)


def _params(row: Row) -> dict[str, Any]:
    """One row's fields as :func:`_statement` declares them (tuples become JSON arrays)."""
    params = dict(zip(_MOVED_NAMES, _MOVED(row.snapshot), strict=True))
    params.update(zip(_RECORD_NAMES, _RECORD(row.record), strict=True))
    params["i_id"] = row.snapshot.id
    params["i_configuration"] = row.snapshot.stored_configuration()
    params["expected_version"] = row.expected_version
    params["release"] = row.release
    return params


@functools.lru_cache(maxsize=64)
def _statement(tables: Tables, dialect: Dialect, placeholder: str) -> str:
    """The many-row conditional write for ``tables``: one parameter (``placeholder``), a
    JSON array of the rows' :func:`_params`; returns the ids written."""
    quote = dialect.identifier_preparer.quote
    instances, transitions = tables.instances, tables.transitions
    fields = [
        *((f"i_{name}", instances.c[name]) for name in prebuilt.MUTABLE_FIELDS),
        ("i_id", instances.c.id),
        *((f"t_{name}", transitions.c[name]) for name in RECORD_FIELDS),
    ]
    declared = ", ".join(
        [f"{quote(name)} {column.type.compile(dialect)}" for name, column in fields]
        + ["expected_version INTEGER", "release BOOLEAN"]
    )
    moved = ", ".join(
        [f"{quote(name)} = r.{quote('i_' + name)}" for name in prebuilt.MUTABLE_FIELDS]
        + [
            # a run's final row gives up its lease in the same statement
            f"{quote(name)} = CASE WHEN r.release THEN NULL ELSE i.{quote(name)} END"
            for name in ("lease_owner", "lease_expires_at")
        ]
    )
    columns = ", ".join(quote(name) for name in RECORD_FIELDS)
    values = ", ".join(f"r.{quote('t_' + name)}" for name in RECORD_FIELDS)
    table = dialect.identifier_preparer.format_table
    return (
        f"WITH r AS (SELECT * FROM json_to_recordset({placeholder}::json) AS r({declared})), "
        f"moved AS (UPDATE {table(instances)} AS i SET {moved} FROM r "
        f"WHERE i.id = r.i_id AND i.version = r.expected_version RETURNING i.id) "
        f"INSERT INTO {table(transitions)} ({columns}) "
        f"SELECT {values} FROM r JOIN moved ON moved.id = r.i_id "
        f"RETURNING {quote('instance_id')}"
    )


# ---------------------------------------------------------------- from the event loop

#: The name of the many-row statement prepared on a loop connection.
ROWS_STATEMENT = b"statewf_rows"


def loop_writable(store: SqlStore) -> bool:
    """Whether rows may go on a :class:`~statewf.store.loop_writes.LoopConnection`: a
    PostgreSQL store with its own pool, whose ``write_if_version`` is its own (one
    wrapped by the application, or by a test injecting faults, is honoured: the rows
    then go through it, in a thread)."""
    return (
        store.prepared_write is not None
        and store.fast_path is not None
        and "write_if_version" not in vars(store)
        and type(store).write_if_version is SqlStore.write_if_version
    )


def loop_statements(store: SqlStore) -> dict[bytes, bytes]:
    """The statements a loop connection prepares: the one-row write, the many-row one,
    and a run's start (:mod:`statewf.store.pg_start`)."""
    prepared = store.prepared_write
    assert prepared is not None
    rows = _statement(store.tables, store.engine.dialect, "$1")
    start = pg_start.start_statement(store.tables, store.engine.dialect)
    return {prepared.name: prepared.sql, ROWS_STATEMENT: rows.encode(), start.name: start.sql}


def loop_args(store: SqlStore, rows: Sequence[Row]) -> tuple[bytes, list[bytes | None]] | None:
    """The prepared statement for ``rows`` and its text arguments, what the thread path
    would send; None where that path must take them (a value without a text form here,
    a value the thread path refuses: it raises the same error as before)."""
    if len(rows) == 1:
        return loop_row_args(store, rows[0])
    try:
        return ROWS_STATEMENT, [pydantic_core.to_json([_params(row) for row in rows])]
    except Exception:
        return None


def loop_row_args(store: SqlStore, row: Row) -> tuple[bytes, list[bytes | None]] | None:
    """:func:`loop_args` of one row (the one-row statement), without a list around it."""
    prepared = store.prepared_write
    assert prepared is not None
    try:
        args = prepared.row_args(row.snapshot, row.record, row.expected_version, row.release)
    except Exception:
        return None
    return None if args is None else (prepared.name, args)


def loop_outcomes(
    store: SqlStore,
    rows: Sequence[Row],
    result: Result | None,
    error: BaseException | None,
    encoding: str,
) -> list[Outcome] | None:
    """Each row's outcome from a loop connection's answer, as :func:`write_rows` gives
    it; None: the thread path writes them (the server refused the many-row statement:
    one by one; the statement was not prepared there any more)."""
    if result is None:  # the connection failed: committed or not, alike for every row
        lost = error if isinstance(error, psycopg.Error) else psycopg.OperationalError(str(error))
        return [driver_errors.wrap_driver(lost, store.url)] * len(rows)
    refused = failure(result, encoding)
    if refused is None:
        if len(rows) == 1:
            return [result.ntuples > 0]
        written = {bytes(result.get_value(i, 0) or b"").decode() for i in range(result.ntuples)}
        return [row.snapshot.id in written for row in rows]
    if isinstance(refused, psycopg.OperationalError):
        return [driver_errors.wrap_driver(refused, store.url)] * len(rows)
    if len(rows) > 1 or refused.sqlstate == pg_write.NOT_PREPARED:
        return None
    if isinstance(refused, psycopg.errors.UniqueViolation):
        return [False]  # another writer appended this seq first
    return [driver_errors.wrap_driver(refused, store.url)]
