"""Driver errors as statewf errors: conflicts to retry, or a ``StoreError`` with its SQLSTATE."""

from __future__ import annotations

import psycopg
from sqlalchemy.exc import DBAPIError

from statewf.errors import ConcurrencyConflict, InvalidInput, StatewfError, StoreError


def unencodable(exc: UnicodeEncodeError) -> InvalidInput:
    """A string the driver cannot encode (a lone surrogate), as the caller's error."""
    return InvalidInput(
        f"a string argument cannot be stored: {exc.reason} at position {exc.start} "
        "(a lone surrogate?); pass valid Unicode text"
    )


def wrap_driver(exc: psycopg.Error, url: str) -> StatewfError:
    """A psycopg error raised on statewf's fast path, as a statewf error."""
    if isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
        return ConcurrencyConflict(
            "the database reported a conflicting concurrent write; retry the operation"
        )
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreError(
        f"database error on {url}: {type(exc).__name__}: {first_line}", sqlstate=exc.sqlstate
    )


def wrap(exc: DBAPIError, url: str, log_table: str) -> StatewfError:
    """A SQLAlchemy driver error, as a statewf error."""
    if is_serialization_failure(exc, log_table):
        return ConcurrencyConflict(
            "the database reported a conflicting concurrent write; retry the operation"
        )
    first_line = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
    lost = (
        " (connection lost; the pool reconnects on the next call)"
        if (exc.connection_invalidated)
        else ""
    )
    return StoreError(
        f"database error on {url}: {type(exc.orig).__name__}: {first_line}{lost}",
        sqlstate=getattr(exc.orig, "sqlstate", None),
    )


def is_serialization_failure(exc: DBAPIError, log_table: str) -> bool:
    """A conflicting concurrent write: a serialization failure, a deadlock, or a log row
    another writer appended first (the log's own unique key). A unique violation on
    any other table (a transactional step's own SQL) is the caller's error, not this."""
    code = getattr(exc.orig, "sqlstate", None)
    if code in ("40001", "40P01"):
        return True
    if code == "23505":
        diag = getattr(exc.orig, "diag", None)
        return getattr(diag, "table_name", None) == log_table
    text = str(exc.orig)
    return "UNIQUE constraint failed" in text and f"{log_table}." in text
