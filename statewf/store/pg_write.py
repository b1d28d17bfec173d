"""``send``'s conditional write on PostgreSQL, prepared once per connection and run on libpq.

psycopg's ``cursor.execute(..., prepare=True)`` spends more CPU per call than the
rest of the write: it converts the query, dumps each parameter through its adapters,
looks the statement up in its prepared-statement cache and sets up a result (a
profile of a ping-pong send: ~37% of its CPU). The write is one statement with a
fixed set of parameters of known types, so here it is prepared once on each kept
connection of :class:`~statewf.store.postgres.FastPath` (``pgconn.prepare``, with
``$n`` placeholders and the types the statement's casts give), and each call sends
its parameters as text straight to ``pgconn.exec_prepared``: the JSON ones as
pydantic-core's encoding (what the ``Json``/``Jsonb`` wrappers send), instants in ISO
form, integers and strings as they are. A failed result is raised as the psycopg
error psycopg itself would raise (same class by SQLSTATE), so callers and
``FastPath.run`` handle it as before.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from operator import attrgetter
from typing import Any, cast

import psycopg
import pydantic_core
from psycopg import pq
from sqlalchemy import Insert
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.sql.compiler import SQLCompiler

from statewf.records import Instance, TransitionRecord
from statewf.store.postgres import FastPath
from statewf.store.prebuilt import ROW_FROM_SNAPSHOT

_TUPLES_OK = pq.ExecStatus.TUPLES_OK
_COMMAND_OK = pq.ExecStatus.COMMAND_OK
#: SQLSTATE of "prepared statement does not exist" (the server forgot it: DISCARD ALL).
NOT_PREPARED = "26000"


def text_array(items: Iterable[str]) -> str:
    """Strings as one PostgreSQL array literal (``{"a","b"}``), every element quoted.

    For a parameter the statement casts (``::VARCHAR[]``, ``::TEXT[]``): psycopg's list
    adaptation looks a dumper up per element, which costs more CPU than the text.
    """
    items = list(items)
    if not items:
        return "{}"
    joined = '","'.join(items)
    if "\\" in joined or '"' in joined:  # rare: escape each element's own
        joined = '","'.join(i.replace("\\", "\\\\").replace('"', '\\"') for i in items)
    return '{"' + joined + '"}'


def param_text(value: Any) -> bytes | None:
    """A non-JSON, non-null parameter in PostgreSQL's text input form; None if it has
    none here (a NUL in a string, a naive instant, another type): psycopg's path then."""
    kind = type(value)
    if kind is str:
        string: str = value
        return None if "\x00" in string else string.encode()
    if kind is bool:
        return b"t" if value else b"f"
    if kind is int:
        return str(value).encode()
    if kind is datetime and value.tzinfo is not None:
        instant: datetime = value
        return instant.isoformat().encode()
    return None


#: Where a parameter of the conditional write comes from, besides a snapshot's field
#: (``i_`` names) or its log row's (``t_``): these three.
_CONFIGURATION, _EXPECTED, _RELEASE = 0, 1, 2
_SPECIAL = {"i_configuration": _CONFIGURATION, "expected_version": _EXPECTED, "release": _RELEASE}
_ROW_PART = attrgetter(*ROW_FROM_SNAPSHOT)
_SNAPSHOT_PART = attrgetter(*ROW_FROM_SNAPSHOT.values())


#: The JSON text of an empty container, by its type (a tuple's is a list's).
_EMPTY_JSON: dict[type, bytes] = {dict: b"{}", list: b"[]", tuple: b"[]"}
#: The parameters whose value is a tuple of names (validated ``tuple[str, ...]``): their
#: JSON text is kept per tuple (``_NAMES`` in a plan's JSON slot).
_NAMES_PARAMS = frozenset({"i_configuration", "t_source", "t_target", "t_context_unset"})
_NAMES = 2
#: Tuples of state names whose JSON text is kept, per statement: at most this many.
_NAMES_KEPT = 1024


def _names_text(
    dumps: Callable[[Any], bytes], kept: dict[tuple[str, ...], bytes], value: tuple[str, ...]
) -> bytes:
    """``dumps(value)``, kept in ``kept`` if ``value`` holds only strings (state names).

    A tuple of ``str`` encodes by its items alone, and a key of strings never equals a
    tuple holding anything else, so a kept text is the one ``dumps`` would give.
    """
    text = dumps(value)
    if len(kept) < _NAMES_KEPT and all(type(item) is str for item in value):
        kept[value] = text
    return text


class PreparedWrite:
    """One statement, prepared on each connection it runs on, executed with text parameters.

    ``json_params`` names the parameters sent as JSON text (whatever their Python
    type: a payload may be a string). A value this module does not put in text form
    (a string holding a NUL, which the text protocol cannot carry; a naive instant;
    another type) makes :meth:`write` answer None: the caller then takes psycopg's
    path, which stores or rejects it as before.
    """

    def __init__(self, statement: Insert, json_params: set[str], name: bytes) -> None:
        dialect = psycopg_dialect.dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql = str(compiled).encode()
        self.name = name
        names = tuple(compiled.positiontup or ())
        encode_json: Callable[[Any], bytes] = pydantic_core.to_json
        self.params = tuple((n, n in json_params) for n in names)
        self._json = encode_json
        # per parameter of the conditional write: its source ("s" the snapshot, "r" the
        # log row, or a special), the field, JSON? (None: another statement)
        self._row_plan: list[tuple[Any, str, Any]] | None = None
        if all(n in _SPECIAL or n.startswith(("i_", "t_")) for n in names):
            self._row_plan = [
                (_SPECIAL[n], "", j) if n in _SPECIAL else ("s" if n[0] == "i" else "r", n[2:], j)
                for n, j in ((n, _NAMES if j and n in _NAMES_PARAMS else j) for n, j in self.params)
            ]
        # tuples of state names (configurations, sources, targets) and their JSON text
        self._names_json: dict[tuple[str, ...], bytes] = {}
        # the connections this statement is prepared on (a new one prepares it first)
        self._prepared: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()

    @classmethod
    def of_sql(cls, sql: bytes, params: tuple[tuple[str, bool], ...], name: bytes) -> PreparedWrite:
        """A statement written as SQL (``$n`` placeholders), its parameters in order, each
        with whether it is sent as JSON text."""
        self = cls.__new__(cls)
        self.sql, self.name, self.params = sql, name, params
        self._json = pydantic_core.to_json
        self._prepared = weakref.WeakSet()
        return self

    def args(self, params: dict[str, Any]) -> list[bytes | None] | None:
        """The parameters as text, or None if one has no text form here."""
        out: list[bytes | None] = []
        append = out.append
        dumps = self._json
        for name, is_json in self.params:
            value = params[name]
            if value is None:
                append(None)
            elif is_json:
                append(dumps(value))
            elif type(value) is str and "\x00" not in value:  # the commonest, inline
                append(value.encode())
            else:
                text = param_text(value)
                if text is None:
                    return None
                append(text)
        return out

    def row_args(
        self, snapshot: Instance, record: TransitionRecord, expected_version: int, release: bool
    ) -> list[bytes | None] | None:
        """``args(prebuilt.conditional_params(...))`` of the conditional write, the same
        text, built from the models' fields without the dict in between (a tuple's JSON
        is a list's); None where ``conditional_params``' path must take them (it raises
        the error for a row that is not its snapshot's, or has a value without text)."""
        plan = self._row_plan
        if plan is None:
            raise TypeError("row_args is for the conditional write's statement")
        if _ROW_PART(record) != _SNAPSHOT_PART(snapshot):
            return None
        fields, row_fields = snapshot.__dict__, record.__dict__
        dumps = self._json
        names_json = self._names_json
        out: list[bytes | None] = []
        append = out.append
        last: Any = None
        last_text: bytes | None = None
        for source, name, is_json in plan:
            if source == "s":
                value = fields[name]
            elif source == "r":
                value = row_fields[name]
            elif source == _CONFIGURATION:  # a flat machine's: its tuple (a list's JSON)
                value = (
                    snapshot.stored_configuration() if snapshot.chart else fields["configuration"]
                )
            elif source == _EXPECTED:
                value = expected_version
            else:
                value = release
            if value is None:
                append(None)
            elif is_json:
                if is_json is _NAMES and type(value) is tuple:
                    text = names_json.get(value)
                    append(_names_text(dumps, names_json, value) if text is None else text)
                elif not value and type(value) in _EMPTY_JSON:
                    append(_EMPTY_JSON[type(value)])
                else:
                    append(dumps(value))
            elif (kind := type(value)) is str:  # param_text's commonest answers inline
                if "\x00" in value:
                    return None  # the text protocol cannot carry it: psycopg's path
                append(value.encode())
            elif kind is int:
                append(b"%d" % value)
            elif kind is bool:
                append(b"t" if value else b"f")
            elif value is last:  # the row's instant is the snapshot's
                append(last_text)
            else:
                encoded = param_text(value)
                if encoded is None:
                    return None
                last, last_text = value, encoded
                append(encoded)
        return out

    def write_args(self, fast: FastPath, found: list[bytes | None]) -> int:
        """Run the statement with arguments :meth:`args` or :meth:`row_args` gave, on a
        kept connection: the number of rows it returned. Driver errors propagate."""
        # libpq takes None for a NULL (psycopg's own calls pass it; its stubs say bytes)
        args = cast("Sequence[bytes]", found)

        def work(cur: psycopg.Cursor[Any]) -> int:
            return int(self.execute(cur.connection, args).ntuples)

        return fast.run(work)

    def execute(self, conn: psycopg.Connection[Any], args: Sequence[bytes]) -> pq.abc.PGresult:
        """Run the prepared statement on ``conn`` (prepared there first, again if the
        server forgot it); its result. Driver errors raise."""
        pgconn = conn.pgconn
        if conn not in self._prepared:
            self._prepare(conn)
        result = pgconn.exec_prepared(self.name, args)
        if result.status != _TUPLES_OK:
            error = psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
            if error.sqlstate != NOT_PREPARED:
                raise error
            self._prepared.discard(conn)
            self._prepare(conn)
            result = pgconn.exec_prepared(self.name, args)
            if result.status != _TUPLES_OK:
                raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
        return result

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        prepare(conn, self.name, self.sql)
        self._prepared.add(conn)


def prepare(conn: psycopg.Connection[Any], name: bytes, sql: bytes) -> None:
    """Prepare ``sql`` as ``name`` on ``conn`` on libpq; prepared there already (by an
    earlier object of the same tables) is fine. Driver errors raise."""
    result = conn.pgconn.prepare(name, sql)
    if result.status != _COMMAND_OK:
        error = psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
        if error.sqlstate != "42P05":  # duplicate_prepared_statement
            raise error
