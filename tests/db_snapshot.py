"""Read every statewf table raw, to prove that a rejected operation wrote nothing."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

import statewf


def dump_tables(engine: statewf.Engine) -> dict[str, list[str]]:
    """Every row of every statewf table of ``engine``, as sorted JSON text per table."""
    tables = engine.store.tables
    out: dict[str, list[str]] = {}
    with engine.store.engine.connect() as conn:
        for table in (
            tables.instances,
            tables.transitions,
            tables.machines,
            tables.effects,
            tables.schema_version,
        ):
            rows = conn.execute(sa.select(table)).all()
            out[table.name] = sorted(
                json.dumps(dict(r._mapping), sort_keys=True, default=str) for r in rows
            )
    return out


def frozen(engine: statewf.Engine, instance_id: str) -> tuple[str, str]:
    """An instance's snapshot and log as JSON text, for byte-for-byte comparisons."""
    snapshot = engine.get(instance_id).model_dump_json()
    log = json.dumps([r.model_dump(mode="json") for r in engine.history(instance_id)])
    return snapshot, log


def row_count(engine: statewf.Engine, table: Any) -> int:
    """The number of rows in one statewf table."""
    with engine.store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
