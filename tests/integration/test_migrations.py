"""Migrations: an empty database migrates to exactly the declared schema, once, safely."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa
from db_snapshot import row_count

from statewf import Engine, StoreError
from statewf.store.schema import SCHEMA_VERSION, build_tables


def reflect(engine: Engine) -> dict[str, dict[str, Any]]:
    """Tables, columns, keys and indexes as the database reports them."""
    schema = engine.store.tables.metadata.schema
    insp = sa.inspect(engine.store.engine)
    out: dict[str, dict[str, Any]] = {}
    dialect = engine.store.engine.dialect
    for name in insp.get_table_names(schema=schema):
        out[name] = {
            "columns": {c["name"]: c["nullable"] for c in insp.get_columns(name, schema=schema)},
            "types": {
                c["name"]: c["type"].compile(dialect=dialect)
                for c in insp.get_columns(name, schema=schema)
            },
            "pk": sorted(insp.get_pk_constraint(name, schema=schema)["constrained_columns"]),
            "unique": sorted(
                tuple(u["column_names"]) for u in insp.get_unique_constraints(name, schema=schema)
            ),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]))
                for i in insp.get_indexes(name, schema=schema)
                if not i.get("unique")  # SQLite reports unique constraints as indexes too
            ),
        }
    return out


def declared(prefix: str, schema: str | None, dialect: Any) -> dict[str, dict[str, Any]]:
    """The same description, from ``statewf.store.schema.build_tables``."""
    tables = build_tables(prefix, schema)
    out: dict[str, dict[str, Any]] = {}
    for table in tables.metadata.tables.values():
        out[table.name] = {
            "columns": {c.name: c.nullable for c in table.columns},
            "types": {c.name: c.type.compile(dialect=dialect) for c in table.columns},
            "pk": sorted(c.name for c in table.primary_key.columns),
            "unique": sorted(
                tuple(c.name for c in u.columns)
                for u in table.constraints
                if isinstance(u, sa.UniqueConstraint)
            ),
            "indexes": sorted(
                (i.name, tuple(c.name for c in i.columns)) for i in table.indexes if not i.unique
            ),
        }
    return out


def test_migrating_an_empty_database_gives_exactly_the_declared_tables(
    db: dict[str, Any],
) -> None:
    with Engine(**db, table_prefix="mig_") as engine:
        actual = reflect(engine)
        expected = declared("mig_", db["schema"], engine.store.engine.dialect)
        assert (
            set(actual)
            == set(expected)
            == {
                "mig_instances",
                "mig_transitions",
                "mig_machines",
                "mig_effects",
                "mig_schema_version",
                "mig_workers",
                "mig_replay_snapshots",
            }
        )
        for name in expected:
            assert actual[name] == expected[name], name
        with engine.store.engine.connect() as conn:
            rows = conn.execute(sa.select(engine.store.tables.schema_version)).all()
        assert [r.version for r in rows] == list(range(1, SCHEMA_VERSION + 1))


def test_column_types_hold_what_statewf_writes(db: dict[str, Any]) -> None:
    with Engine(**db) as engine:
        schema = engine.store.tables.metadata.schema
        insp = sa.inspect(engine.store.engine)
        cols = {c["name"]: c for c in insp.get_columns("statewf_transitions", schema=schema)}
        if engine.store.dialect == "postgresql":
            # documents are json text (keys keep their order); lists of names are JSONB
            assert type(cols["payload"]["type"]).__name__ == "JSON"
            assert type(cols["source"]["type"]).__name__ == "JSONB"
            assert cols["created_at"]["type"].timezone is True
        assert set(cols) >= {"instance_id", "seq", "event", "source", "target", "payload"}


def test_migrating_twice_is_a_no_op(db: dict[str, Any]) -> None:
    with Engine(**db) as engine:
        assert engine.store.migrate() == []
        before = reflect(engine)
        with Engine(**db) as again:
            assert again.store.migrate() == []
        assert reflect(engine) == before
        assert row_count(engine, engine.store.tables.schema_version) == SCHEMA_VERSION


def test_migrate_false_creates_nothing_until_asked(db: dict[str, Any]) -> None:
    with Engine(**db, migrate=False) as engine:
        assert engine.store.migrate() == list(range(1, SCHEMA_VERSION + 1))
        assert engine.store.migrate() == []


def test_concurrent_migrations_are_safe(db: dict[str, Any]) -> None:
    errors: list[BaseException] = []
    applied: list[list[int]] = []
    barrier = threading.Barrier(6)

    def migrate() -> None:
        try:
            with Engine(**db, migrate=False) as engine:
                barrier.wait(timeout=30)
                applied.append(engine.store.migrate())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(applied, key=len) == [*([[]] * 5), list(range(1, SCHEMA_VERSION + 1))]
    with Engine(**db) as engine:
        assert row_count(engine, engine.store.tables.schema_version) == SCHEMA_VERSION


def test_a_schema_newer_than_the_code_is_a_store_error(db: dict[str, Any]) -> None:
    with Engine(**db) as engine, engine.store.engine.begin() as conn:
        conn.execute(
            engine.store.tables.schema_version.insert().values(
                version=SCHEMA_VERSION + 1, description="from the future", applied_at=sa.func.now()
            )
        )
    with pytest.raises(StoreError, match="newer than this statewf understands"):
        Engine(**db)
