"""Shared fixtures: a real SQLite file and a real PostgreSQL schema per test.

Postgres tests skip with a reason when no server answers, except under ``CI=true``,
where an unreachable server is a failure. Set ``STATEWF_TEST_PG_URL`` to point the
suite at another server.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.tracking import close_tracked, tracked

__all__ = ["tracked"]  # test modules import it from here

PG_URL = os.environ.get("STATEWF_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"

_pg_reason: str | None = None
_pg_checked = False


def postgres_unavailable() -> str | None:
    """Why Postgres cannot be used (None when it can); checked once per session."""
    global _pg_checked, _pg_reason
    if not _pg_checked:
        _pg_checked = True
        # A busy server ("too many clients") is not an absent one: try a few times.
        for attempt in range(5):
            try:
                engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
                with engine.connect() as conn:
                    conn.execute(sa.text("select 1"))
                engine.dispose()
                _pg_reason = None
                break
            except Exception as exc:  # any failure means: not reachable (yet)
                _pg_reason = (
                    f"PostgreSQL at {PG_URL} is not reachable: {exc.__class__.__name__}: "
                    f"{str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ''}"
                )
                time.sleep(0.5 * (attempt + 1))
    return _pg_reason


def require_postgres() -> None:
    """Skip (or, under CI=true, fail) when Postgres is unreachable."""
    reason = postgres_unavailable()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: Postgres tests must run)")
        pytest.skip(reason)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file."""
    return f"sqlite:///{tmp_path / 'statewf.db'}"


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh PostgreSQL schema, dropped after the test."""
    require_postgres()
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str | None]]:
    """Engine keyword arguments for one real database: ``{"url": ..., "schema": ...}``.

    Use as ``statewf.Engine(**db)``; parametrized over a SQLite file and Postgres.
    """
    yield from database(request.param, tmp_path)


def database(kind: str, tmp_path: Path) -> Iterator[dict[str, str | None]]:
    """The ``db`` fixture's databases: ``sqlite`` (a file), ``postgres`` (a schema of its
    own, dropped after) or ``memory`` (``sqlite://``, one per engine)."""
    if kind == "memory":
        yield {"url": "sqlite://", "schema": None}
        return
    if kind == "sqlite":
        yield {"url": f"sqlite:///{tmp_path / 'statewf.db'}", "schema": None}
        return
    require_postgres()
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield {"url": PG_URL, "schema": name}
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    engine.dispose()


@pytest.fixture(autouse=True)
def _close_tracked_engines() -> Iterator[None]:
    yield
    close_tracked()
