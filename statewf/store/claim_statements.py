"""The claim's statements as libpq sends them, and what a fold adds to a claim.

:mod:`statewf.store.loop_claim` sends the claim's statements
(:func:`statewf.store.pgclaim.expressions`) on libpq: here they are compiled once per
set of tables with ``$n`` placeholders, named for the connection they are prepared on,
their parameters given as text (:class:`NoTextForm` when one has none). A
:class:`Fold` is what a claim hands its runs to, with its transaction open, for rows
that commit with it (:mod:`durable.execution.folding`).
"""

from __future__ import annotations

import functools
import weakref
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.sql.compiler import SQLCompiler

from statewf.records import ReplayRow
from statewf.store import pgclaim
from statewf.store.pg_write import param_text, prepare
from statewf.store.schema import Tables

#: One statement a fold adds to the claim's transaction: its prepared name, its arguments.
Folded = tuple[bytes, list[bytes | None]]


class Fold(Protocol):
    """Rows a claim writes in its own transaction once it holds the runs: the woken
    runs' first rows, made by their replay while the claim's locks are held."""

    def wants(self, writes: Sequence[pgclaim.ClaimWrite]) -> bool:
        """Whether to hold the transaction open for rows of these runs (else a plain claim)."""

    async def rows(self, logs: dict[str, list[ReplayRow]]) -> Sequence[Folded]:
        """The statements to send before the commit, given the claimed runs' logs."""

    def committed(self, returned: Sequence[int]) -> None:
        """The claim committed: how many rows each statement of :meth:`rows` returned."""


class NoTextForm(Exception):
    """A parameter has no text form here: the claim goes the thread path instead."""


@dataclass(frozen=True)
class Statement:
    """One prepared statement: its name on the connection, its SQL, its parameters."""

    name: bytes
    sql: bytes
    params: tuple[str, ...]

    def args(self, values: dict[str, Any]) -> list[bytes | None]:
        """The parameters in order, as text (None: NULL); :class:`NoTextForm` if one has none."""
        out: list[bytes | None] = []
        for name in self.params:
            value = values[name]
            if value is None:
                out.append(None)
                continue
            text = param_text(value)
            if text is None:
                raise NoTextForm(name)
            out.append(text)
        return out


@dataclass(frozen=True)
class Statements:
    """The claim's statements for one set of tables, as prepared on each connection."""

    candidates: Statement
    candidates_one: Statement
    write: Statement
    logs: Statement
    logs_replay: Statement
    logs_locked: Statement
    next_wake: Statement
    release: Statement
    columns: tuple[str, ...]
    json_params: tuple[str, ...]
    #: the connections these statements are prepared on (a pooled connection keeps them)
    prepared: weakref.WeakSet[psycopg.Connection[Any]] = field(
        default_factory=weakref.WeakSet, compare=False
    )

    def all(self) -> tuple[Statement, ...]:
        """Every statement, to prepare on a new connection."""
        return (
            self.candidates,
            self.candidates_one,
            self.write,
            self.logs,
            self.logs_replay,
            self.logs_locked,
            self.next_wake,
            self.release,
        )

    def prepare(self, conn: psycopg.Connection[Any]) -> None:
        """Prepare every statement on ``conn`` unless done already. Blocking."""
        if conn in self.prepared:
            return
        for statement in self.all():
            prepare(conn, statement.name, statement.sql)
        self.prepared.add(conn)


@functools.lru_cache(maxsize=64)
def for_tables(tables: Tables) -> Statements:
    """The claim's statements for ``tables``, compiled once (named per table set)."""
    built = pgclaim.expressions(tables)
    dialect = psycopg_dialect.dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]
    t = tables.instances
    tag = f"{zlib.crc32(f'{t.schema}.{t.name}'.encode()):08x}"

    def compiled(name: str) -> Statement:
        done = getattr(built, name).compile(dialect=dialect)
        assert isinstance(done, SQLCompiler)
        params = tuple(done.positiontup or ())
        return Statement(f"statewf_claim_{tag}_{name}".encode(), str(done).encode(), params)

    return Statements(
        candidates=compiled("candidates"),
        candidates_one=compiled("candidates_one"),
        write=compiled("write"),
        logs=compiled("logs"),
        logs_replay=compiled("logs_replay"),
        logs_locked=compiled("logs_locked"),
        next_wake=compiled("next_wake"),
        release=compiled("release"),
        columns=built.columns,
        json_params=built.json_params,
    )
