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

from statewf.store.pg_write import PreparedWrite, text_array
from statewf.store.postgres import FastPath


class PreparedEffectsWrite(PreparedWrite):
    """The conditional write with outbox rows; :meth:`write_effects` returns their ids."""

    def write_effects(self, fast: FastPath, params: dict[str, Any]) -> list[tuple[int, int]] | None:
        """The outbox rows' (id, position), none if the instance moved; None when the
        parameters need psycopg's own path. Driver errors propagate."""
        names = params["e_names"]
        if any("\x00" in name for name in names):
            return None  # psycopg's own path refuses it as it always did
        found = self.args({**params, "e_names": text_array(names)})
        if found is None:
            return None
        args = cast("Sequence[bytes]", found)  # libpq takes None for a NULL

        def work(cur: psycopg.Cursor[Any]) -> list[tuple[int, int]]:
            result = self.execute(cur.connection, args)
            value = result.get_value
            return [(int(value(i, 0) or 0), int(value(i, 1) or 0)) for i in range(result.ntuples)]

        return fast.run(work)
