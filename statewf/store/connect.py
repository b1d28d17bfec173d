"""Creating statewf's SQLAlchemy engines, or adopting an application's own."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from statewf.errors import InvalidInput
from statewf.store import sqlite


def create(url: str, *, pool_size: int, max_overflow: int, echo: bool) -> Engine:
    """A new SQLAlchemy engine for a statewf URL."""
    try:
        if url.startswith("sqlite"):
            return sqlite.create(url, echo=echo)
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        # No pre-ping: it costs a round trip per transaction. A dropped
        # connection surfaces once as StoreError and the pool is refreshed.
        engine = create_engine(url, echo=echo, pool_size=pool_size, max_overflow=max_overflow)
        utc_sessions(engine)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise InvalidInput(
            f"cannot use database URL {hide_password(url)!r}: {exc}; use "
            "sqlite:///path.db or postgresql+psycopg://user@host/db"
        ) from exc
    check_dialect(engine)
    return engine


def adopt(engine: Engine) -> Engine:
    """An application's own engine, checked, and configured where SQLite needs it."""
    check_dialect(engine)
    if engine.dialect.name == "sqlite":
        sqlite.configure(engine)
    return engine


def check_dialect(engine: Engine) -> None:
    """Refuse an engine statewf cannot use: another database, or PostgreSQL without psycopg 3."""
    where = engine.url.render_as_string(hide_password=True)
    if engine.dialect.name not in ("sqlite", "postgresql"):
        raise InvalidInput(
            f"statewf supports SQLite and PostgreSQL, not {engine.dialect.name} ({where})"
        )
    if engine.dialect.name == "postgresql" and engine.dialect.driver != "psycopg":
        raise InvalidInput(
            f"statewf talks to PostgreSQL through psycopg 3, not {engine.dialect.driver} "
            f"({where}); create the engine with a postgresql+psycopg:// URL"
        )


def hide_password(url: str) -> str:
    """``url`` with its password masked, even when it does not parse."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)


def autocommit_pool(engine: Engine, pool_size: int, max_overflow: int) -> Engine:
    """A second pool to the same PostgreSQL database, in autocommit (the send fast path)."""
    pool = create_engine(
        engine.url, pool_size=pool_size, max_overflow=max_overflow, isolation_level="AUTOCOMMIT"
    )
    utc_sessions(pool)
    return pool


def utc_sessions(engine: Engine) -> None:
    """Give the PostgreSQL sessions of a pool statewf created the time zone UTC.

    Instants are stored as ``timestamptz`` either way; with the session in UTC the
    driver hands them back as UTC datetimes already, and reading a long log does
    not convert each row's instants (an application's own engine keeps its zone:
    those rows are converted as they are read).
    """
    if engine.dialect.name != "postgresql":
        return

    @event.listens_for(engine, "connect")
    def set_utc(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("SET TimeZone TO 'UTC'")
        dbapi_connection.commit()
