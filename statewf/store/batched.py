"""Several instances' conditional writes in one commit (PostgreSQL).

A worker executing many runs at once has many one-row writes ready at the same
moment, each its own commit and round trip. :func:`write_rows` sends them together:
one transaction, pipelined, one commit for all. Each row keeps its own condition (the
snapshot still at the version its writer read), so a row whose instance moved is
simply not written and its writer alone learns it (``False``), exactly as with
:meth:`~statewf.store.sql.SqlStore.write_if_version`.

A database error in the shared transaction rolls back every row of it. Where it is
the server refusing one row (a constraint, a bad value), the rows are written again
one by one, so the error reaches the writer of that row only and the others land. A
lost connection reaches every writer of the batch as the same transient
:class:`~statewf.errors.StoreError`: their rows are all written or none is, and each
writer looks before trying again, as after any failed write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import psycopg

from statewf.errors import StatewfError
from statewf.records import Instance, TransitionRecord
from statewf.store import driver_errors, prebuilt
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


def write_rows(store: SqlStore, rows: Sequence[Row]) -> list[Outcome]:
    """Write ``rows`` (of distinct instances) in one commit where the store can; an
    outcome per row, in order."""
    fast = store.fast_path
    if fast is None or len(rows) < 2:
        return [_write_one(store, row) for row in rows]
    try:
        params = [prebuilt.conditional_params(*row) for row in rows]
        return list(fast.write_many(params))
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
