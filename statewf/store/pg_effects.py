"""``send``'s write that also records outbox rows, prepared on libpq like the plain write.

The same technique as :mod:`statewf.store.pg_write` (prepared once per kept
connection, text parameters straight to ``exec_prepared``, psycopg's own path for a
value with no text form here), for the statement that also inserts one outbox row
per effect name and returns their ``(id, position)``. The names go as one
``text[]`` literal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import psycopg

from statewf.store.pg_write import PreparedWrite
from statewf.store.postgres import FastPath

_NOT_PREPARED = "26000"


def text_array(names: Sequence[str]) -> str | None:
    """``names`` as a PostgreSQL ``text[]`` literal; None if one holds a NUL."""
    parts = []
    for name in names:
        if "\x00" in name:
            return None
        parts.append('"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(parts) + "}"


class PreparedEffectsWrite(PreparedWrite):
    """The conditional write with outbox rows; :meth:`write_effects` returns their ids."""

    def write_effects(self, fast: FastPath, params: dict[str, Any]) -> list[tuple[int, int]] | None:
        """The outbox rows' (id, position), none if the instance moved; None when the
        parameters need psycopg's own path. Driver errors propagate."""
        names = text_array(params["e_names"])
        if names is None:
            return None
        found = self.args({**params, "e_names": names})
        if found is None:
            return None
        args = cast("Sequence[bytes]", found)  # libpq takes None for a NULL

        def work(cur: psycopg.Cursor[Any]) -> list[tuple[int, int]]:
            conn = cur.connection
            if conn not in self._prepared:
                self._prepare(conn)
            result = conn.pgconn.exec_prepared(self.name, args)
            if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
                error = psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
                if error.sqlstate != _NOT_PREPARED:
                    raise error
                self._prepared.discard(conn)
                self._prepare(conn)
                result = conn.pgconn.exec_prepared(self.name, args)
                if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
                    raise psycopg.errors.error_from_result(result, encoding=conn.info.encoding)
            value = result.get_value
            return [(int(value(i, 0) or 0), int(value(i, 1) or 0)) for i in range(result.ntuples)]

        return fast.run(work)
