"""The project database: SQLAlchemy Core tables, connection set-up and ordered migrations.

SQLite (WAL mode, foreign keys on, write transactions begun IMMEDIATE so two processes queue
instead of deadlocking) by default; any SQLAlchemy URL (PostgreSQL) works the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Connection

from segloop.errors import SegloopError

__all__ = [
    "SCHEMA_VERSION",
    "case_images",
    "cases",
    "connect",
    "evaluations",
    "events",
    "label_versions",
    "metadata",
    "migrate",
    "models",
    "predictions",
    "rounds",
    "utc_now",
]

metadata = MetaData()

schema_info = Table("schema_info", metadata, Column("version", Integer, nullable=False))

cases = Table(
    "cases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("case_id", String(255), nullable=False, unique=True),
    Column("shape", JSON, nullable=False),
    Column("affine", JSON, nullable=False),
    Column("dtype", String(32), nullable=False),
    Column("added_at", DateTime(timezone=True), nullable=False),
    Column("added_by", String(255), nullable=False),
)

case_images = Table(
    "case_images",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("case_pk", Integer, ForeignKey("cases.id"), nullable=False),
    Column("channel", Integer, nullable=False),
    Column("path", String(4096), nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("copied", Boolean, nullable=False),
    UniqueConstraint("case_pk", "channel"),
)

label_versions = Table(
    "label_versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("case_pk", Integer, ForeignKey("cases.id"), nullable=False),
    Column("object_key", String(64), nullable=False),
    Column("source", String(16), nullable=False),
    Column("classes", JSON, nullable=False),
    Column("voxel_counts", JSON, nullable=False),
    Column("author", String(255), nullable=False),
    Column("tool", String(255), nullable=False),
    Column("params", JSON, nullable=False),
    Column("parent_id", Integer, ForeignKey("label_versions.id"), nullable=True),
    Column("round", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("detail", JSON, nullable=False),
)


models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("author", String(255), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("parent_id", Integer, ForeignKey("models.id"), nullable=True),
    Column("status", String(16), nullable=False),
    Column("checkpoint", String(4096), nullable=False),
    Column("config", JSON, nullable=False),
    Column("label_version_ids", JSON, nullable=False),
    Column("train_case_ids", JSON, nullable=False),
    Column("val_case_ids", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("round", Integer, nullable=True),
)

predictions = Table(
    "predictions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("case_pk", Integer, ForeignKey("cases.id"), nullable=False),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("label_version_id", Integer, ForeignKey("label_versions.id"), nullable=False),
    Column("uncertainty", String(4096), nullable=False),
    Column("mean_entropy", Float, nullable=False),
    Column("params", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

evaluations = Table(
    "evaluations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("case_pk", Integer, ForeignKey("cases.id"), nullable=False),
    Column("reference_version_ids", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("round", Integer, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

rounds = Table(
    "rounds",
    metadata,
    Column("number", Integer, primary_key=True, autoincrement=False),
    Column("mode", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("stages", JSON, nullable=False),
    Column("summary", JSON, nullable=False),
)


def _create_version_1(connection: Connection) -> None:
    metadata.create_all(connection, tables=[cases, case_images, label_versions, events])


def _add_models_and_predictions(connection: Connection) -> None:
    metadata.create_all(connection, tables=[models, predictions])


def _add_evaluations_and_rounds(connection: Connection) -> None:
    metadata.create_all(connection, tables=[evaluations, rounds])


#: Ordered migrations: entry N brings a database from version N to N + 1.
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (
    _create_version_1,
    _add_models_and_predictions,
    _add_evaluations_and_rounds,
)
SCHEMA_VERSION = len(MIGRATIONS)


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 60000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def connect(url: str) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or any SQLAlchemy URL)."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine)
    return engine


def migrate(engine: Engine) -> int:
    """Bring the database to `SCHEMA_VERSION`; returns the version found before.

    Raises:
        SegloopError: the database was made by a newer segloop.
    """
    with engine.begin() as connection:
        schema_info.create(connection, checkfirst=True)
        found = connection.execute(select(schema_info.c.version)).scalar()
        if found is None:
            connection.execute(schema_info.insert().values(version=0))
            found = 0
        if found > SCHEMA_VERSION:
            msg = (
                f"database schema version {found} is newer than"
                f" this segloop's {SCHEMA_VERSION}: upgrade segloop"
            )
            raise SegloopError(msg)
        for version in range(found, SCHEMA_VERSION):
            MIGRATIONS[version](connection)
        connection.execute(schema_info.update().values(version=SCHEMA_VERSION))
    return int(found)
