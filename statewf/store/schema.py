"""The statewf tables, declared once with SQLAlchemy Core for both dialects.

Tables are built per configuration (table-name prefix and, on PostgreSQL, schema),
so statewf's tables sit beside an application's own without clashing.
Postgres-only types are variants: JSONB on PostgreSQL, JSON text on SQLite, for
the columns statewf queries into (configurations, labels, lists of names). The
columns that hold the application's own documents (contexts, payloads, inputs,
step results, meta, effect arguments, definitions) are ``json`` text on PostgreSQL
since schema version 3, so that objects come back with their keys in the order
they were written; JSONB reorders them. On SQLite they are declared ``TEXT`` since
schema version 8 (:class:`DocumentJSON`), so that SQLite keeps a bare number's JSON
text as written instead of converting it.

``build_tables(..., version=N)`` declares the tables as they were at schema version
N, so each migration creates or changes exactly what its version declared.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles

#: The schema version this code declares; migrations bring a database up to it.
SCHEMA_VERSION = 8

#: The schema version from which ``list`` by status or kind reads an index of its own.
LIST_INDEXES = 4

#: The schema version from which a worker's row lists the workflow versions it serves.
SERVED_WORKFLOWS = 5

#: The schema version from which a long run's replay may start from a snapshot row.
REPLAY_SNAPSHOTS = 6

#: The schema version from which document columns are json text on PostgreSQL.
DOCUMENTS_AS_TEXT = 3

#: The schema version from which SQLite keeps the log in its primary key's order
#: (``WITHOUT ROWID``): an append writes the key's b-tree only, not a table and an index.
LOG_WITHOUT_ROWID = 7

#: The schema version from which SQLite's document columns are declared ``TEXT``: a
#: column declared ``JSON`` has NUMERIC affinity, and SQLite converted a bare number's
#: JSON text on insert (``1.0`` to the integer 1, ``2**70`` to a REAL, a REAL then read
#: back with 15 digits). With TEXT affinity the stored text is the JSON text written.
DOCUMENTS_TEXT_AFFINITY = 8

ID_LENGTH = 255


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both dialects (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("statewf stores only timezone-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def json_type() -> Any:
    """JSON on SQLite, JSONB on PostgreSQL."""
    return JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class DocumentJSON(JSON):
    """SQLAlchemy's JSON (the same serializer, ``none_as_null``, result processing),
    declared ``TEXT`` on SQLite so that the column has TEXT affinity (see
    :data:`DOCUMENTS_TEXT_AFFINITY`); ``json`` on PostgreSQL as before."""

    cache_ok = True


@compiles(DocumentJSON, "sqlite")
def _document_ddl_on_sqlite(type_: DocumentJSON, compiler: Any, **kw: Any) -> str:
    """The SQLite DDL type of a document column: ``TEXT`` (TEXT affinity)."""
    return "TEXT"


def document_type(version: int) -> Any:
    """An application document: JSON text on both dialects (JSONB on PostgreSQL before v3;
    on SQLite declared ``JSON`` before v8, ``TEXT`` from v8)."""
    if version >= DOCUMENTS_TEXT_AFFINITY:
        return DocumentJSON(none_as_null=True)
    return JSON(none_as_null=True) if version >= DOCUMENTS_AS_TEXT else json_type()


def document_column(name: str, version: int, *, nullable: bool = True) -> Column[Any]:
    """A column holding an application document, marked as such in its ``info``."""
    return Column(name, document_type(version), nullable=nullable, info={"statewf_document": True})


def is_document(column: Column[Any]) -> bool:
    """Whether ``column`` holds an application document (kept as JSON text)."""
    return bool(column.info.get("statewf_document"))


def served_columns(version: int) -> list[Column[Any]]:
    """The workers' ``workflows`` column (v5): the ``[name, version]`` pairs a worker serves."""
    if version < SERVED_WORKFLOWS:
        return []
    return [Column("workflows", json_type(), nullable=False, server_default="[]")]


def log_options(version: int) -> dict[str, Any]:
    """The log table's dialect options: on SQLite from v7 ``WITHOUT ROWID``.

    A rowid table keeps each row in its rowid b-tree and its ``(instance_id, seq)`` key
    in a second one, so an append wrote two pages besides the instance row's; clustered
    on the key, one (and ``history`` reads the rows in key order without a lookup per
    row). PostgreSQL ignores the option.
    """
    return {"sqlite_with_rowid": False} if version >= LOG_WITHOUT_ROWID else {}


def list_indexes(prefix: str, version: int) -> list[Index]:
    """The instances' indexes for ``list`` filters on status and kind (v4), in the
    listing's order, so such a filter reads its page from the index, not the table.

    ``state`` has none on purpose: it changes with nearly every transition, and an
    index on it makes every snapshot update a non-HOT update that rewrites every
    index of the table (measured: a send 1.5x slower; docs/performance.md).
    ``status`` is indexed already (with ``machine``) and ``kind`` never changes, so
    these two cost nothing on the send path.
    """
    if version < LIST_INDEXES:
        return []
    return [
        Index(f"{prefix}instances_status", "status", "created_at", "id"),
        Index(f"{prefix}instances_kind", "kind", "created_at", "id"),
    ]


@dataclass(frozen=True)
class Tables:
    """The statewf tables for one prefix and schema."""

    metadata: MetaData
    instances: Table
    transitions: Table
    machines: Table
    effects: Table
    schema_version: Table
    workers: Table
    #: schema version 6: derived replay snapshots of long runs (one row per run)
    replay_snapshots: Table
    prefix: str = "statewf_"


def build_tables(
    prefix: str = "statewf_", schema: str | None = None, *, version: int = SCHEMA_VERSION
) -> Tables:
    """Declare the statewf tables under ``prefix`` (and Postgres ``schema``), as of ``version``."""
    md = MetaData(schema=schema)
    instances = Table(
        f"{prefix}instances",
        md,
        Column("id", String(ID_LENGTH), primary_key=True),
        Column("machine", String(200), nullable=False),
        Column("machine_version", String(200), nullable=False),
        Column("kind", String(32), nullable=False),
        Column("state", Text, nullable=False),
        Column("configuration", json_type(), nullable=False),
        document_column("context", version, nullable=False),
        Column("status", String(32), nullable=False),
        Column("version", Integer, nullable=False),
        Column("resource_id", String(ID_LENGTH)),
        Column("idempotency_key", String(ID_LENGTH)),
        Column("wake_at", UTCDateTime()),
        Column("queue", String(200), nullable=False, server_default="default"),
        Column("priority", Integer, nullable=False, server_default="0"),
        Column("labels", json_type()),
        Column("lease_owner", String(ID_LENGTH)),
        Column("lease_expires_at", UTCDateTime()),
        Column("lease_epoch", Integer, nullable=False, server_default="0"),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("updated_at", UTCDateTime(), nullable=False),
        UniqueConstraint("machine", "idempotency_key", name=f"{prefix}instances_idem_key"),
        Index(f"{prefix}instances_machine_status", "machine", "status", "created_at", "id"),
        Index(f"{prefix}instances_resource", "resource_id", "created_at", "id"),
        Index(f"{prefix}instances_created", "created_at", "id"),
        Index(f"{prefix}instances_wake", "wake_at"),
        *list_indexes(prefix, version),
    )
    transitions = Table(
        f"{prefix}transitions",
        md,
        Column("instance_id", String(ID_LENGTH), nullable=False),
        Column("seq", Integer, nullable=False),
        Column("kind", String(32), nullable=False),
        Column("event", Text),
        Column("source", json_type(), nullable=False),
        Column("target", json_type(), nullable=False),
        document_column("payload", version),
        document_column("context_set", version, nullable=False),
        Column("context_unset", json_type(), nullable=False),
        Column("status", String(32), nullable=False),
        Column("wake_at", UTCDateTime()),
        Column("key", Text),
        document_column("meta", version, nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        PrimaryKeyConstraint("instance_id", "seq", name=f"{prefix}transitions_pk"),
        **log_options(version),
    )
    machines = Table(
        f"{prefix}machines",
        md,
        Column("name", String(200), nullable=False),
        Column("version", String(200), nullable=False),
        Column("fingerprint", String(64), nullable=False),
        document_column("definition", version, nullable=False),
        Column("registered_at", UTCDateTime(), nullable=False),
        PrimaryKeyConstraint("name", "version", name=f"{prefix}machines_pk"),
    )
    effects = Table(
        f"{prefix}effects",
        md,
        Column(
            "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        Column("instance_id", String(ID_LENGTH), nullable=False),
        Column("seq", Integer, nullable=False),
        Column("position", Integer, nullable=False),
        Column("name", String(200), nullable=False),
        document_column("args", version, nullable=False),
        Column("status", String(32), nullable=False),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("last_error", Text),
        Column("available_at", UTCDateTime(), nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("done_at", UTCDateTime()),
        UniqueConstraint("instance_id", "seq", "position", name=f"{prefix}effects_once"),
        Index(f"{prefix}effects_due", "status", "available_at"),
    )
    schema_version = Table(
        f"{prefix}schema_version",
        md,
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("description", Text, nullable=False),
        Column("applied_at", UTCDateTime(), nullable=False),
    )
    # schema version 2: the live workers (durable.Worker) and their heartbeats
    workers = Table(
        f"{prefix}workers",
        md,
        Column("id", String(ID_LENGTH), primary_key=True),
        Column("host", String(255), nullable=False),
        Column("pid", Integer, nullable=False),
        Column("queues", json_type(), nullable=False),
        Column("labels", json_type(), nullable=False),
        Column("concurrency", Integer, nullable=False),
        Column("held", Integer, nullable=False, server_default="0"),
        Column("started_at", UTCDateTime(), nullable=False),
        Column("heartbeat_at", UTCDateTime(), nullable=False),
        Column("stopped_at", UTCDateTime()),
        *served_columns(version),
        Index(f"{prefix}workers_heartbeat", "heartbeat_at"),
    )
    # schema version 6: what replay needs of a run's log up to ``seq``, folded into one
    # document (durable.log.snapshot), so that resuming a long run reads it and the
    # rows after ``seq`` only. Derived data: deleting a row costs one full read.
    replay_snapshots = Table(
        f"{prefix}replay_snapshots",
        md,
        Column("instance_id", String(ID_LENGTH), primary_key=True),
        Column("seq", Integer, nullable=False),
        Column("format", Integer, nullable=False),
        Column("document", Text, nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
    )
    return Tables(
        md,
        instances,
        transitions,
        machines,
        effects,
        schema_version,
        workers,
        replay_snapshots,
        prefix,
    )
