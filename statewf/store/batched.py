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
from statewf.store import driver_errors, prebuilt
from statewf.store.logrows import RECORD_FIELDS
from statewf.store.schema import Tables
from statewf.store.sql import SqlStore


class Row(NamedTuple):
    """One conditional write: the new snapshot, its log row, the version it expects."""

    snapshot: Instance
    record: TransitionRecord
    expected_version: int
    #: also clear the instance's lease (a run's final row)
    release: bool = False


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
    sql = _statement(store.tables, store.engine.dialect)
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
            row.snapshot, row.record, row.expected_version, release=row.release
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
def _statement(tables: Tables, dialect: Dialect) -> str:
    """The many-row conditional write for ``tables``: one ``%s``, a JSON array of the
    rows' :func:`_params`; returns the ids written."""
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
        f"WITH r AS (SELECT * FROM json_to_recordset(%s::json) AS r({declared})), "
        f"moved AS (UPDATE {table(instances)} AS i SET {moved} FROM r "
        f"WHERE i.id = r.i_id AND i.version = r.expected_version RETURNING i.id) "
        f"INSERT INTO {table(transitions)} ({columns}) "
        f"SELECT {values} FROM r JOIN moved ON moved.id = r.i_id "
        f"RETURNING {quote('instance_id')}"
    )
