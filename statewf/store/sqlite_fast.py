"""``send``'s fast path on SQLite: the conditional write on kept ``sqlite3`` connections.

A send on SQLite used to take the locked path through SQLAlchemy's execution machinery
(four statements, each with its parameter processing and event dispatch, a pool
check-out, ``BEGIN IMMEDIATE`` and the commit): ~45% of its CPU. Here the same
statements are SQLAlchemy Core expressions compiled once to SQLite SQL, with the bind
and result processors SQLAlchemy itself would apply (so the rows, their JSON text and
their instants are byte for byte what the SQLAlchemy path writes), run directly on
``sqlite3`` connections kept checked out between calls.

The write is ``BEGIN IMMEDIATE``, ``UPDATE ... WHERE id = ? AND version = ?``, the log
row's ``INSERT`` (and the outbox rows'), ``COMMIT``: both or neither, under SQLite's
write lock, so several engines and processes on one file are serialized as on the
locked path. The connections come from a pool configured like the store's own (WAL,
``synchronous=NORMAL``, the busy timeout); an in-memory database has one connection,
shared with the store, used in the store's turn. Errors are statewf errors.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from operator import attrgetter, itemgetter
from typing import Any, TypeVar

from sqlalchemy import JSON, Engine, Select, bindparam, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from statewf.errors import StatewfError, StoreError
from statewf.records import Instance, TransitionRecord
from statewf.store import driver_errors, prebuilt
from statewf.store.schema import Tables, UTCDateTime

T = TypeVar("T")

#: Columns of an outbox row, in the order the fast path binds them.
_EFFECT_COLUMNS = (
    "instance_id",
    "seq",
    "position",
    "name",
    "args",
    "status",
    "attempts",
    "available_at",
    "created_at",
)

#: The conditional write's parameters that are not a snapshot's field (``i_`` names) or
#: its log row's (``t_``), in the order ``Compiled.row_args`` appends them.
_SPECIAL = ("i_configuration", "expected_version", "release")
_ROW_PART = attrgetter(*prebuilt.ROW_FROM_SNAPSHOT)
_SNAPSHOT_PART = attrgetter(*prebuilt.ROW_FROM_SNAPSHOT.values())
#: Snapshot columns the move leaves out when the row keeps their value: SQLite rewrites
#: the index entries of every column its ``SET`` names, changed or not (``status`` is in
#: two indexes, ``wake_at`` in one), a context's text is the longest value, and the
#: machine's version changes only when an instance is migrated (one parameter less).
_KEPT_IF_SAME = ("context", "status", "wake_at", "machine_version")


class Compiled:
    """A statement compiled once to SQLite SQL, with its positional parameters' processors."""

    def __init__(
        self,
        statement: ClauseElement,
        dialect: Dialect,
        column_keys: Sequence[str] | None = None,
        *,
        instants: list[tuple[Any, Any]] | None = None,
    ) -> None:
        compiled = statement.compile(
            dialect=dialect, column_keys=list(column_keys) if column_keys is not None else None
        )
        assert isinstance(compiled, SQLCompiler)
        self.sql = str(compiled)
        names = tuple(compiled.positiontup or ())
        self.names = names
        self._get: Callable[[dict[str, Any]], Any] = (
            itemgetter(*names) if len(names) > 1 else (lambda p: (p[names[0]],))
        )
        # the processors SQLAlchemy's execution would run on each value (the same
        # JSON serializer, the same DATETIME text)
        found: list[tuple[int, Callable[[Any], Any]]] = []
        for position, name in enumerate(names):
            type_ = compiled.binds[name].type
            impl = type_.dialect_impl(dialect)
            process = impl.bind_processor(dialect)
            if process is not None:
                if isinstance(type_, JSON):
                    null = bool(getattr(impl, "none_as_null", False))
                    found.append((position, _short_json(process, none_as_null=null)))
                elif isinstance(type_, UTCDateTime):
                    found.append((position, _utc_text(type_, dialect, process, instants)))
                else:
                    found.append((position, process))
        self._processors = tuple(found)
        # the conditional write's parameters read from the models in three C calls: the
        # snapshot's fields, the row's, then one reordering (None: another statement)
        self._from_models: tuple[Any, Any, Any, bool] | None = None
        if names and all(n in _SPECIAL or n.startswith(("i_", "t_")) for n in names):
            snap = [n[2:] for n in names if n not in _SPECIAL and n[0] == "i"]
            row = [n[2:] for n in names if n not in _SPECIAL and n[0] == "t"]
            combined = [f"i_{n}" for n in snap] + [f"t_{n}" for n in row] + list(_SPECIAL)
            self._from_models = (
                _getter(attrgetter, snap),
                _getter(attrgetter, row),
                _getter(itemgetter, [combined.index(n) for n in names]),
                "i_configuration" in names,
            )

    def args(self, params: dict[str, Any]) -> list[Any]:
        """The statement's positional arguments from ``params``, processed."""
        values = list(self._get(params))
        for position, process in self._processors:
            values[position] = process(values[position])
        return values

    def row_args(
        self, snapshot: Instance, record: TransitionRecord, expected_version: int, release: bool
    ) -> list[Any]:
        """``args(prebuilt.conditional_params(...))`` from the models' fields, without the
        dict in between: the same values (a tuple's JSON is a list's), processed."""
        plan = self._from_models
        if plan is None:
            raise TypeError("row_args is for the conditional write's statements")
        of_snapshot, of_row, order, configuration = plan
        values = list(
            order(
                (
                    *of_snapshot(snapshot),
                    *of_row(record),
                    # a flat machine's as its tuple (a list's JSON, the memo's key)
                    (snapshot.stored_configuration() if snapshot.chart else snapshot.configuration)
                    if configuration
                    else None,
                    expected_version,
                    release,
                )
            )
        )
        for position, process in self._processors:
            values[position] = process(values[position])
        return values


def _getter(
    make: Callable[..., Callable[[Any], Any]], keys: Sequence[Any]
) -> Callable[[Any], tuple[Any, ...]]:
    """``make(*keys)`` (an ``attrgetter`` or ``itemgetter``) always answering a tuple."""
    if not keys:
        return lambda _: ()
    if len(keys) == 1:
        one = make(keys[0])
        return lambda obj: (one(obj),)
    return make(*keys)


#: Lists of state names encoded once (configurations, sources, targets): at most this many.
_MEMO_SIZE = 1024


def _short_json(
    encode: Callable[[Any], Any], *, none_as_null: bool = False
) -> Callable[[Any], Any]:
    """``encode`` (SQLAlchemy's JSON bind processor) with its commonest answers short:
    an empty object or list, lists (or tuples) of strings (state names) seen before,
    and ``None`` as SQL NULL where the type says so (``none_as_null``: the processor's
    own answer; otherwise it encodes JSON ``null``).

    The text is the one ``encode`` gives: a list of ``str`` encodes by its items alone,
    a tuple as the list of its items, and a key of strings never equals one holding
    anything else.
    """
    memo: dict[tuple[Any, ...], Any] = {}

    def process(value: Any) -> Any:
        if value is None and none_as_null:
            return None
        kind = type(value)
        if kind is list or kind is tuple:
            if not value:
                return "[]"
            key = value if kind is tuple else tuple(value)
            try:  # a stored key holds only strings: it equals only a key of the same strings
                found = memo.get(key)
            except TypeError:  # unhashable items (lists, objects): not a list of names
                found = None
            if found is not None:
                return found
            if all(type(item) is str for item in value):
                found = encode(value)
                if len(memo) < _MEMO_SIZE:
                    memo[key] = found
                return found
        if kind is dict and not value:
            return "{}"
        return encode(value)

    return process


#: The text SQLAlchemy's SQLite DATETIME stores (its default storage format).
_DATETIME_FORMAT = (
    "%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06d"
)


def _utc_text(
    type_: UTCDateTime,
    dialect: Dialect,
    process: Callable[[Any], Any],
    last: list[tuple[Any, Any]] | None = None,
) -> Callable[[Any], Any]:
    """``process`` (an instant's bind processor: to UTC, naive, then SQLite's DATETIME
    text) in one step for instants already in UTC; any other value goes through it.

    ``last`` (one slot, shared by the processors of one fast path) remembers the latest
    instant formatted and its text: a send's row and snapshot hold the same instant
    object (``created_at``, ``updated_at``). The slot holds a reference, so the identity
    test cannot meet a new object at a recycled address.
    """
    if getattr(type_.impl_instance.dialect_impl(dialect), "_storage_format", None) != (
        _DATETIME_FORMAT
    ):
        return process  # pragma: no cover - statewf's tables use the default format
    slot: list[tuple[Any, Any]] = last if last is not None else [(None, None)]

    def utc_text(value: Any) -> Any:
        if value is None:
            return None  # what the processor answers for None
        seen, text = slot[0]  # one read of the pair: threads may share the slot
        if value is seen:
            return text
        if type(value) is datetime and value.tzinfo is UTC:
            text = (
                f"{value.year:04d}-{value.month:02d}-{value.day:02d} {value.hour:02d}:"
                f"{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
            )
            slot[0] = (value, text)
            return text
        return process(value)

    return utc_text


class SqliteFastPath:
    """The read and the conditional write of ``send``, run on kept ``sqlite3`` connections.

    ``engine`` is a pool of connections configured by :func:`statewf.store.sqlite.configure`
    (file) or the store's one-connection engine (memory, with ``turns`` the store's lock
    for it). At most ``keep`` idle connections are kept checked out between calls.
    """

    def __init__(
        self,
        engine: Engine,
        tables: Tables,
        url: str,
        *,
        turns: threading.RLock | None = None,
        keep: int = 5,
    ) -> None:
        self.engine = engine
        self.url = url
        self.turns = turns
        self.keep = keep
        self.idle: list[tuple[PoolProxiedConnection, sqlite3.Connection]] = []
        self.log_table = tables.transitions.name
        dialect = engine.dialect
        t = tables.instances
        read: Select[Any] = select(t).where(t.c.id == bindparam("id"))
        self.read_sql = Compiled(read, dialect)
        self.columns = tuple(col.name for col in t.c)
        self.results = tuple(
            (i, process)
            for i, col in enumerate(t.c)
            if (process := col.type.dialect_impl(dialect).result_processor(dialect, None))
            is not None
        )
        self.tables = tables
        self.instants: list[tuple[Any, Any]] = [(None, None)]
        self.update = Compiled(prebuilt.conditional_update(tables), dialect, instants=self.instants)
        self.append = Compiled(prebuilt.log_row_insert(tables), dialect, instants=self.instants)
        self.add_effect = Compiled(tables.effects.insert(), dialect, _EFFECT_COLUMNS)
        # the move without the columns a row keeps, by which of _KEPT_IF_SAME it writes
        # (at most 16 statements)
        self._moves: dict[tuple[bool, ...], Compiled] = {}

    # ------------------------------------------------------------ connections

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on a kept connection, in the store's turn (errors as statewf's)."""
        if self.turns is not None:
            with self.turns:
                return self._run(work)
        return self._run(work)

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:  # _errors() inline: a context manager costs ~1.3 us a call
            try:
                raw, conn = self.idle.pop()
            except IndexError:
                raw = self.engine.raw_connection()
                conn = raw.driver_connection  # type: ignore[assignment]
            try:
                result = work(conn)
            except BaseException:
                self._give_back(raw, conn)
                raise
            self._give_back(raw, conn)
            return result
        except Exception as exc:
            wrapped = error_of(exc, self.url, self.log_table)
            if wrapped is None:
                raise
            raise wrapped from exc

    def _give_back(self, raw: PoolProxiedConnection, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.rollback()
            except sqlite3.Error as exc:
                raw.invalidate(exc)  # never reused: the pool opens a fresh one
                return
        if len(self.idle) < self.keep:
            self.idle.append((raw, conn))
        else:
            raw.close()

    def release(self) -> None:
        """Give the kept connections back to their pool."""
        while self.idle:
            try:
                raw, _ = self.idle.pop()
            except IndexError:
                return
            raw.close()

    # ------------------------------------------------------------ statements

    def read(self, instance_id: str) -> dict[str, Any] | None:
        """The snapshot row as a dict of column values (processed), or None."""
        args = self.read_sql.args({"id": instance_id})

        def work(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            found: tuple[Any, ...] | None = conn.execute(self.read_sql.sql, args).fetchone()
            return found

        row = self.run(work)
        if row is None:
            return None
        values = list(row)
        for i, process in self.results:
            values[i] = process(values[i])
        return dict(zip(self.columns, values, strict=True))

    def write(
        self,
        snapshot: Instance,
        record: TransitionRecord,
        expected_version: int,
        *,
        release: bool = False,
        previous: Instance | None = None,
        effects: Sequence[dict[str, Any]] = (),
    ) -> list[int] | None:
        """Move the snapshot and append its row (and its outbox rows) if the instance is
        still at ``expected_version``, in one transaction: the outbox rows' ids (none
        without effects), or None, with nothing written, if another writer got there
        first. The arguments are ``prebuilt.conditional_params``' read from the models.

        ``previous`` is the snapshot the decision was made from (at ``expected_version``):
        the move then leaves out the columns whose stored value it keeps (the context
        when the row sets and unsets nothing, an unchanged status, ``wake_at`` or machine
        version), and the lease columns when it does not ``release``. The row is the same
        after it: the update only matches the row at ``expected_version``, whose values
        those are (only the leases change without a new version, and they are left alone
        unless released).
        """
        if _ROW_PART(record) != _SNAPSHOT_PART(snapshot):
            prebuilt.conditional_params(snapshot, record, expected_version, release)  # raises
        update_ = self.update
        if (
            previous is not None
            and not release
            and previous.id == snapshot.id
            and previous.version == expected_version
        ):
            update_ = self._move(
                (
                    bool(record.context_set or record.context_unset)
                    or snapshot.context != previous.context,
                    snapshot.status != previous.status,
                    snapshot.wake_at != previous.wake_at,
                    snapshot.machine_version != previous.machine_version,
                )
            )
        moved = update_.row_args(snapshot, record, expected_version, release)
        logged = self.append.row_args(snapshot, record, expected_version, release)
        rows = [self.add_effect.args(e) for e in effects] if effects else []
        return self._write(update_.sql, moved, logged, rows)

    def _move(self, writes: tuple[bool, ...]) -> Compiled:
        """The conditional move writing ``_KEPT_IF_SAME``'s columns where ``writes`` says,
        and no lease column (built once per combination)."""
        found = self._moves.get(writes)
        if found is None:
            left_out = {name for name, w in zip(_KEPT_IF_SAME, writes, strict=True) if not w}
            t = self.tables.instances
            c = t.c
            statement = (
                update(t)
                .where(c.id == bindparam("i_id"), c.version == bindparam("expected_version"))
                .values(
                    {
                        name: bindparam(f"i_{name}", type_=c[name].type)
                        for name in prebuilt.MUTABLE_FIELDS
                        if name not in left_out
                    }
                )
            )
            found = Compiled(statement, self.engine.dialect, instants=self.instants)
            self._moves[writes] = found
        return found

    def _write(
        self, update_sql: str, moved: list[Any], logged: list[Any], rows: list[list[Any]]
    ) -> list[int] | None:
        """Run the move, the log row's insert and the outbox rows' in one transaction."""

        def work(conn: sqlite3.Connection) -> list[int] | None:
            conn.execute("BEGIN IMMEDIATE")
            if conn.execute(update_sql, moved).rowcount != 1:
                conn.rollback()
                return None
            try:
                conn.execute(self.append.sql, logged)
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" not in str(exc):
                    raise
                conn.rollback()  # another writer appended this seq first
                return None
            ids = []
            for row in rows:
                cur = conn.execute(self.add_effect.sql, row)
                ids.append(int(cur.lastrowid or 0))
            conn.commit()
            return ids

        return self.run(work)


def error_of(exc: Exception, url: str, log_table: str) -> StatewfError | None:
    """The statewf error a fast-path call raises for ``exc`` (None: ``exc`` itself)."""
    if isinstance(exc, StatewfError):
        return None
    if isinstance(exc, UnicodeEncodeError):
        return driver_errors.unencodable(exc)
    if isinstance(exc, sqlite3.Error):
        return wrap(exc, url)
    if isinstance(exc, DBAPIError):  # opening a connection, through the pool
        return driver_errors.wrap(exc, url, log_table)
    return None


def wrap(exc: sqlite3.Error, url: str) -> StatewfError:
    """An ``sqlite3`` error raised on the fast path, as the locked path would report it."""
    text = str(exc).strip()
    first_line = text.splitlines()[0] if text else type(exc).__name__
    hint = (
        " (another connection held the database's write lock past the busy timeout; "
        "retry, and keep other writers' transactions short)"
        if "locked" in first_line or "busy" in first_line
        else ""
    )
    return StoreError(f"database error on {url}: {type(exc).__name__}: {first_line}{hint}")
