"""SQLite: a table rebuilt under a new declaration, by SQLite's documented procedure.

SQLite cannot change a column's declared type in place. Its procedure for other
schema changes ("Making Other Kinds Of Table Schema Changes" in its ALTER TABLE page):
remember the table's indexes and triggers, create the new table, copy the rows, drop
the old table, rename the new one, create the indexes and triggers again, all in one
transaction (the migration's). statewf's tables have no foreign keys and no views
of statewf's refer to them, so the procedure's foreign-key and view steps do nothing.

The indexes come back from their own ``CREATE`` text, so every one is kept: the
declared ones, the optional ones an operator added (``statewf index add``) and
any other an operator created by hand.

A document column that SQLite had converted on insert (its ``JSON`` declaration
gave it NUMERIC affinity) is copied back as JSON text: an INTEGER as its decimal
text, a REAL as the shortest text that reads back as the same double (Python's
``repr``; SQLite's own conversion to text keeps only 15 significant digits).
"""

from __future__ import annotations

import math
from collections.abc import Collection

from sqlalchemy import Connection, MetaData, Table
from sqlalchemy.schema import CreateTable

#: The SQL function the copy calls for a REAL held in a document column.
_REAL_AS_JSON = "statewf_real_as_json"


def real_as_json(value: float | None) -> str | None:
    """A REAL's JSON text: the shortest decimal that reads back as the same double.

    SQLite gives a REAL only to a numeric text; one beyond the doubles' range (a JSON
    text such as ``1e999``) became an infinity, kept as such a text (Python's JSON
    reads it back as the same infinity). SQLite stores no NaN.
    """
    if value is None:
        return None
    if math.isinf(value):
        return "1e999" if value > 0 else "-1e999"
    return repr(float(value))


def rebuild(conn: Connection, table: Table, documents: Collection[str] = ()) -> None:
    """Rebuild ``table`` (declared as it should now be) in ``conn``'s transaction, its
    rows, indexes and triggers kept; the ``documents`` columns' numbers as JSON text."""
    dbapi = conn.connection.driver_connection
    assert dbapi is not None
    dbapi.create_function(_REAL_AS_JSON, 1, real_as_json, deterministic=True)
    quote = conn.dialect.identifier_preparer.quote
    name = table.name
    kept = [
        str(sql)
        for (sql,) in conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE tbl_name = ? AND type IN ('index', 'trigger')"
            " AND sql IS NOT NULL ORDER BY type, name",
            (name,),
        )
    ]
    staging = table.to_metadata(MetaData(), name=f"{name}_rebuilt")
    conn.execute(CreateTable(staging))  # the table and its constraints; no index yet
    columns = [quote(c.name) for c in table.columns]
    values = [
        _as_json_text(quote(c.name)) if c.name in documents else quote(c.name)
        for c in table.columns
    ]
    conn.exec_driver_sql(
        f"INSERT INTO {quote(staging.name)} ({', '.join(columns)}) "
        f"SELECT {', '.join(values)} FROM {quote(name)}"
    )
    conn.exec_driver_sql(f"DROP TABLE {quote(name)}")
    conn.exec_driver_sql(f"ALTER TABLE {quote(staging.name)} RENAME TO {quote(name)}")
    for sql in kept:
        conn.exec_driver_sql(sql)


def _as_json_text(column: str) -> str:
    """The SQL of a document column's value as its JSON text, whatever SQLite stored."""
    return (
        f"CASE typeof({column}) WHEN 'real' THEN {_REAL_AS_JSON}({column})"
        f" WHEN 'integer' THEN CAST({column} AS TEXT) ELSE {column} END"
    )
