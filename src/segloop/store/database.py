"""The project database: SQLAlchemy Core tables, connection set-up and ordered migrations.

SQLite (WAL mode, foreign keys on) by default; PostgreSQL (psycopg 3,
``postgresql+psycopg://user@host[:port]/db``) given by the user works the same way. Reads run in
plain (deferred) transactions, so a project opens and is read without a single write; writes go
through `write_transaction`, which SQLite begins ``IMMEDIATE`` and PostgreSQL begins by taking one
transaction-scoped advisory lock, so that on both engines writers queue instead of deadlocking and a
check and the write it guards are atomic.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    select,
)
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from segloop.core.provenance import Source, parse_source
from segloop.errors import (
    ConflictError,
    InvalidInputError,
    MissingDependencyError,
    StoreIntegrityError,
)

__all__ = [
    "DATABASE_URL_VARIABLE",
    "SCHEMA_VERSION",
    "case_images",
    "cases",
    "class_decisions",
    "class_source_counts",
    "connect",
    "drafts",
    "evaluations",
    "events",
    "file_hashes",
    "is_writable_file",
    "jobs",
    "label_versions",
    "metadata",
    "migrate",
    "migrate_in",
    "models",
    "one_line",
    "parse_database_url",
    "patches",
    "predictions",
    "ranking_entries",
    "read_schema_version",
    "record_class_decisions",
    "rounds",
    "sqlite_path",
    "users",
    "utc_now",
    "write_transaction",
]

#: Environment variable through which a user points segloop at another database (never a project file).
DATABASE_URL_VARIABLE = "SEGLOOP_DATABASE_URL"

_WRITE_OPTION = "segloop_write"

#: The key of the PostgreSQL advisory lock that `write_transaction` holds (any fixed 64-bit number;
#: advisory locks are per database, so projects on one server do not wait for each other).
WRITE_LOCK_KEY = 0x5E6100B5

#: Seconds a PostgreSQL connection attempt may take before "unreachable" (unless the URL says).
CONNECT_TIMEOUT_S = 10

#: Milliseconds a writer waits for another's write transaction before it fails (both engines).
LOCK_TIMEOUT_MS = 60_000

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
    Column("size_bytes", BigInteger, nullable=False),
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


jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("author", String(255), nullable=False),
    Column("params", JSON, nullable=False),
    Column("progress", JSON, nullable=True),
    Column("result", JSON, nullable=False),
    Column("error", String(4096), nullable=True),
    Column("pid", Integer, nullable=False),
    Column("host", String(255), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
)

patches = Table(
    "patches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("patch_id", String(255), nullable=False, unique=True),
    Column("case_pk", Integer, ForeignKey("cases.id"), nullable=False),
    Column("offset", JSON, nullable=False),
    Column("size", JSON, nullable=False),
    Column("border_voxels", Integer, nullable=False),
    Column("parent_version_id", Integer, ForeignKey("label_versions.id"), nullable=True),
    Column("version_ids", JSON, nullable=False),
    Column("region_sha256", String(64), nullable=False),
    Column("label_sha256", String(64), nullable=False),
    Column("affine", JSON, nullable=False),
    Column("author", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("detail", JSON, nullable=False),
)

file_hashes = Table(
    "file_hashes",
    metadata,
    Column("path", String(4096), primary_key=True),
    Column("size_bytes", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("checked_at", DateTime(timezone=True), nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

#: One unsaved label per case and author (the editor's work in progress); its file is an object of
#: the project's ``drafts/`` store, replaced or deleted with the row.
drafts = Table(
    "drafts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("case_pk", Integer, ForeignKey("cases.id"), nullable=False),
    Column("author", String(255), nullable=False),
    Column("parent_id", Integer, ForeignKey("label_versions.id"), nullable=True),
    Column("object_key", String(64), nullable=False),
    Column("shape", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("case_pk", "author"),
)

#: Per case and annotated class, the label version that decides it (schema 6): the most trusted
#: source, the newest version among equals (`segloop.core.assembly`'s order), and whether a person
#: reviewed the class for the whole case (an ``original`` or ``revised`` version that is not a
#: patch merge: `segloop.loop.ranking`'s candidates). Kept by `record_class_decisions` in the
#: transaction of every label version insert, so summaries are one ``GROUP BY``; a class no version
#: annotates has no row.
class_decisions = Table(
    "class_decisions",
    metadata,
    Column("case_pk", Integer, ForeignKey("cases.id"), primary_key=True),
    Column("class_name", String(255), primary_key=True),
    Column("source", String(16), nullable=False),
    Column("label_version_id", Integer, ForeignKey("label_versions.id"), nullable=False),
    Column("reviewed", Boolean, nullable=False),
)

#: Per class and deciding source, how many cases `class_decisions` holds (schema 6): kept with it,
#: so `segloop status` counts without reading a row per case.
class_source_counts = Table(
    "class_source_counts",
    metadata,
    Column("class_name", String(255), primary_key=True),
    Column("source", String(16), primary_key=True),
    Column("cases", Integer, nullable=False),
)

#: The rankings `segloop.loop.ranking.rank_cases` records (schema 6): one row per ranked case of a
#: ``served`` event, rank 1 first (a case id, not a key: a ranking is a record of what was said).
ranking_entries = Table(
    "ranking_entries",
    metadata,
    Column("event_id", Integer, ForeignKey("events.id"), primary_key=True),
    Column("rank", Integer, primary_key=True),
    Column("case_id", String(255), nullable=False),
    Column("score", Float, nullable=True),
)

#: Indexes of the queries that grow with the project (schema 6): a case's rows, the jobs still
#: running, the newest event of a kind, the summary's counts, the cases some source decides a
#: class of (``status --source``: counted along ``source, case_pk`` alone).
INDEXES = (
    Index("ix_label_versions_case_pk", label_versions.c.case_pk),
    Index("ix_predictions_case_pk_model_id", predictions.c.case_pk, predictions.c.model_id),
    Index("ix_evaluations_case_pk", evaluations.c.case_pk),
    Index("ix_patches_case_pk", patches.c.case_pk),
    Index("ix_jobs_status", jobs.c.status),
    Index("ix_events_kind_id", events.c.kind, events.c.id),
    Index("ix_class_decisions_class_source", class_decisions.c.class_name, class_decisions.c.source),
    Index("ix_ranking_entries_event_case", ranking_entries.c.event_id, ranking_entries.c.case_id),
    Index("ix_ranking_entries_event_score", ranking_entries.c.event_id, ranking_entries.c.score),
    Index(
        "ix_class_decisions_reviewed",
        class_decisions.c.reviewed,
        class_decisions.c.case_pk,
        class_decisions.c.class_name,
    ),
    Index("ix_class_decisions_source_case", class_decisions.c.source, class_decisions.c.case_pk),
)

#: The manifest keys of a ``patch-extracted`` event that became columns of `patches`.
PATCH_COLUMNS = (
    "patch",
    "case",
    "offset",
    "size",
    "border_voxels",
    "parent_version_id",
    "version_ids",
    "region_sha256",
    "label_sha256",
    "affine",
)


def _create_version_1(connection: Connection) -> None:
    metadata.create_all(connection, tables=[cases, case_images, label_versions, events])


def _add_models_and_predictions(connection: Connection) -> None:
    metadata.create_all(connection, tables=[models, predictions])


def _add_evaluations_and_rounds(connection: Connection) -> None:
    metadata.create_all(connection, tables=[evaluations, rounds])


def _add_jobs_patches_and_hashes(connection: Connection) -> None:
    """Version 4: jobs, patches (copied from the ``patch-extracted`` journal entries), file hashes."""
    metadata.create_all(connection, tables=[jobs, patches, file_hashes])
    case_pks = {row.case_id: row.id for row in connection.execute(select(cases.c.case_id, cases.c.id))}
    taken: set[str] = set()
    query = select(events).where(events.c.kind == "patch-extracted").order_by(events.c.id)
    for entry in connection.execute(query).all():
        manifest = dict(entry.detail)
        if manifest.get("patch") in taken or manifest.get("case") not in case_pks:
            continue
        if any(key not in manifest for key in PATCH_COLUMNS):
            continue  # not a manifest this segloop wrote: left in the journal only
        taken.add(manifest["patch"])
        connection.execute(
            patches.insert().values(
                patch_id=manifest["patch"],
                case_pk=case_pks[manifest["case"]],
                offset=manifest["offset"],
                size=manifest["size"],
                border_voxels=manifest["border_voxels"],
                parent_version_id=manifest["parent_version_id"],
                version_ids=manifest["version_ids"],
                region_sha256=manifest["region_sha256"],
                label_sha256=manifest["label_sha256"],
                affine=manifest["affine"],
                author=entry.actor,
                created_at=entry.at,
                detail={k: v for k, v in manifest.items() if k not in PATCH_COLUMNS},
            )
        )


def _add_users_and_drafts(connection: Connection) -> None:
    """Version 5: users of `segloop serve` (token hashes) and the editor's drafts."""
    metadata.create_all(connection, tables=[users, drafts])


def _add_class_decisions_and_indexes(connection: Connection) -> None:
    """Version 6: `class_decisions` (from every label version), `ranking_entries` (of the newest
    ranking: older ones stay in their events' detail) and `INDEXES`."""
    for table in (class_decisions, class_source_counts, ranking_entries):
        table.create(connection, checkfirst=True)
    for index in INDEXES:
        index.create(connection, checkfirst=True)
    backfill_class_decisions(connection)
    query = select(events).where(events.c.kind == "served").order_by(events.c.id.desc()).limit(1)
    newest = connection.execute(query).first()
    if newest is not None:
        rows = newest.detail.get("ranking") or [[case_id, None] for case_id in newest.detail.get("cases", [])]
        entries = [
            {"event_id": newest.id, "rank": rank, "case_id": str(case_id), "score": score}
            for rank, (case_id, score) in enumerate(rows, start=1)
        ]
        if entries:
            connection.execute(ranking_entries.insert(), entries)


def is_whole_case_review(source: str, params: Mapping[str, Any]) -> bool:
    """Whether a version of ``source`` made with ``params`` is a person's review of the whole case.

    ``original`` and ``revised`` versions are, except a merge of correction patches (its
    ``params`` name its ``patches``) or a correction of a reviewed region (``coverage``): a
    person saw only those voxels.
    """
    partial = "patches" in params or "coverage" in params
    return source in (Source.ORIGINAL, Source.REVISED) and not partial


def _decides(new_source: str, old_source: str) -> bool:
    """Whether a newer version of ``new_source`` decides a class over one of ``old_source``."""
    return parse_source(new_source).priority >= parse_source(old_source).priority


def record_class_decisions(
    connection: Connection,
    case_pk: int,
    version_id: int,
    source: str,
    classes: Sequence[str],
    params: Mapping[str, Any],
) -> None:
    """Update `class_decisions` and `class_source_counts` for a label version just inserted.

    Runs in the version's write transaction: a few statements per class the version annotates.
    """
    if not classes:
        return
    reviewed = is_whole_case_review(source, params)
    query = select(class_decisions).where(
        (class_decisions.c.case_pk == case_pk) & class_decisions.c.class_name.in_(list(classes))
    )
    known = {row.class_name: row for row in connection.execute(query)}
    counted: Counter[tuple[str, str]] = Counter()
    for name in dict.fromkeys(classes):
        row = known.get(name)
        if row is None:
            counted[name, source] += 1
            continue
        values: dict[str, Any] = {"reviewed": row.reviewed or reviewed}
        if _decides(source, row.source):
            values |= {"source": source, "label_version_id": version_id}
            counted[name, row.source] -= 1
            counted[name, source] += 1
        if values != {"reviewed": row.reviewed}:
            connection.execute(
                class_decisions.update()
                .where((class_decisions.c.case_pk == case_pk) & (class_decisions.c.class_name == name))
                .values(**values)
            )
    new = [
        {
            "case_pk": case_pk,
            "class_name": n,
            "source": source,
            "label_version_id": version_id,
            "reviewed": reviewed,
        }
        for n in dict.fromkeys(classes)
        if n not in known
    ]
    if new:
        connection.execute(class_decisions.insert(), new)
    _add_to_counts(connection, counted)


def _add_to_counts(connection: Connection, deltas: Mapping[tuple[str, str], int]) -> None:
    """Add ``{(class, source): cases}`` to `class_source_counts` (rows in one order: no deadlock)."""
    for (name, source), delta in sorted(deltas.items()):
        if delta == 0:
            continue
        key = (class_source_counts.c.class_name == name) & (class_source_counts.c.source == source)
        updated = connection.execute(
            class_source_counts.update().where(key).values(cases=class_source_counts.c.cases + delta)
        )
        if updated.rowcount == 0:
            row = {"class_name": name, "source": source, "cases": delta}
            connection.execute(class_source_counts.insert().values(**row))


def backfill_class_decisions(connection: Connection, *, batch_rows: int = 10_000) -> None:
    """Rebuild `class_decisions` and `class_source_counts` from every label version (oldest first)."""
    decided: dict[tuple[int, str], dict[str, Any]] = {}
    query = select(
        label_versions.c.id, label_versions.c.case_pk, label_versions.c.source,
        label_versions.c.classes, label_versions.c.params,
    ).order_by(label_versions.c.id)  # fmt: skip
    for version in connection.execute(query):
        reviewed = is_whole_case_review(version.source, version.params)
        for name in version.classes:
            row = decided.get((version.case_pk, name))
            if row is None:
                decided[version.case_pk, name] = {
                    "case_pk": version.case_pk, "class_name": name, "source": version.source,
                    "label_version_id": version.id, "reviewed": reviewed,
                }  # fmt: skip
                continue
            row["reviewed"] = row["reviewed"] or reviewed
            if _decides(version.source, row["source"]):
                row |= {"source": version.source, "label_version_id": version.id}
    connection.execute(class_decisions.delete())
    connection.execute(class_source_counts.delete())
    rows = list(decided.values())
    for start in range(0, len(rows), batch_rows):
        connection.execute(class_decisions.insert(), rows[start : start + batch_rows])
    _add_to_counts(connection, Counter((row["class_name"], row["source"]) for row in rows))


#: Ordered migrations: entry N brings a database from version N to N + 1.
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (
    _create_version_1,
    _add_models_and_predictions,
    _add_evaluations_and_rounds,
    _add_jobs_patches_and_hashes,
    _add_users_and_drafts,
    _add_class_decisions_and_indexes,
)
SCHEMA_VERSION = len(MIGRATIONS)


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def parse_database_url(url: str) -> URL:
    """A database URL, checked: parseable and not an in-memory SQLite database (``postgresql://``
    means psycopg 3: ``postgresql+psycopg://``).

    Raises:
        InvalidInputError: ``url`` is not a SQLAlchemy URL, or it names an in-memory database
            (which would keep nothing).
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as error:
        msg = f"database URL {url!r} is not a SQLAlchemy URL (expected e.g. sqlite:////path/segloop.db)"
        raise InvalidInputError(msg) from error
    if parsed.drivername == "postgresql":  # SQLAlchemy's default driver would be psycopg2
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        msg = f"database URL {url!r} names an in-memory database, which keeps nothing: expected a file"
        raise InvalidInputError(msg)
    return parsed


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite URL (None for other databases and ``file:`` URIs)."""
    if url.get_backend_name() != "sqlite" or url.query.get("uri") or not url.database:
        return None
    return Path(url.database)


def _configure_sqlite(engine: Engine, *, read_only: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {LOCK_TIMEOUT_MS}")
        if not read_only:
            cursor.execute("PRAGMA journal_mode = WAL")  # a no-op once the file is in WAL mode
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _configure_postgresql(engine: Engine) -> None:
    """Serialise writers as SQLite's ``BEGIN IMMEDIATE`` does.

    The store's checks read and then write (a stale parent in `Project.add_label_versions`, a draft,
    a job claimed once), which under PostgreSQL's default READ COMMITTED would let two writers both
    pass the check. One transaction-scoped advisory lock taken first by every write transaction makes
    writers run one at a time, and each statement after it sees everything committed before: the
    guarantees of ``BEGIN IMMEDIATE``, with nothing to retry (SERIALIZABLE would abort one writer,
    row locks cannot guard rows that do not exist yet). Readers never wait; the lock ends with the
    transaction, also when its process dies.
    """

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(_WRITE_OPTION, False):
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")


def _engine_options(url: URL) -> dict[str, object]:
    """`create_engine` arguments of ``url``'s engine (PostgreSQL: UTC sessions, a connect timeout,
    and a writer waits for the write lock at most `LOCK_TIMEOUT_MS`, as SQLite's busy timeout)."""
    if url.get_backend_name() != "postgresql":
        return {}
    connect_args: dict[str, object] = {"options": f"-c timezone=UTC -c lock_timeout={LOCK_TIMEOUT_MS}"}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    return {"connect_args": connect_args, "pool_pre_ping": True}


def connect(url: str | URL, *, read_only: bool = False) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or any SQLAlchemy URL); connects lazily.

    Args:
        url: the database URL.
        read_only: open a SQLite file with ``mode=ro`` (every write fails in SQLite itself).

    Raises:
        InvalidInputError: an unparseable or in-memory URL.
        MissingDependencyError: the URL's database driver is not installed.
    """
    parsed = parse_database_url(url) if isinstance(url, str) else url
    path = sqlite_path(parsed)
    if read_only and path is not None:
        parsed = make_url(f"sqlite:///file:{quote(str(path.resolve()))}?{_read_only_query(path)}&uri=true")
    try:
        engine = create_engine(parsed, **_engine_options(parsed))
    except (NoSuchModuleError, ImportError) as error:
        msg = (
            f"the database driver for {parsed.drivername!r} URLs is not available ({error}):"
            " install it (PostgreSQL: psycopg) or use a sqlite:/// URL"
        )
        raise MissingDependencyError(msg) from error
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, read_only=read_only)
    elif engine.dialect.name == "postgresql":
        _configure_postgresql(engine)
    return engine


def _read_only_query(path: Path) -> str:
    """SQLite URI parameters that read ``path`` without writing anything beside it.

    A WAL database needs its ``-shm`` file; when that is absent and cannot be created (a folder
    this process may not write), the file is opened ``immutable`` (no locking: nobody can be
    writing it either).
    """
    shared_memory = path.with_name(f"{path.name}-shm")
    if not os.access(path.parent, os.W_OK) and not shared_memory.exists():
        return "mode=ro&immutable=1"
    return "mode=ro"


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A write transaction, one at a time per database (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an
    advisory lock, see `_configure_postgresql`): committed on success, rolled back on error."""
    with engine.execution_options(**{_WRITE_OPTION: True}).begin() as connection:
        yield connection


def read_schema_version(engine: Engine) -> int | None:
    """The database's schema version without writing anything (None: not a segloop database).

    Raises:
        StoreIntegrityError: the database cannot be read (not a SQLite file, damaged, unreachable).
    """
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(schema_info.name):
                return None
            found = connection.execute(select(schema_info.c.version)).scalar()
    except SQLAlchemyError as error:
        reason = one_line(getattr(error, "orig", None) or error)
        url = engine.url.render_as_string(hide_password=True)
        fix = "restore it from a backup" if engine.dialect.name == "sqlite" else "check that it is reachable"
        msg = f"the project database {url} cannot be read ({reason}): {fix}"
        raise StoreIntegrityError(msg) from error
    return None if found is None else int(found)


def migrate(engine: Engine) -> int:
    """Bring the database to `SCHEMA_VERSION` (nothing written when it is there); the version found.

    Raises:
        ConflictError: the database was made by a newer segloop.
        StoreIntegrityError: the database cannot be read.
    """
    found = read_schema_version(engine)
    if found == SCHEMA_VERSION:
        return found
    with write_transaction(engine) as connection:
        return migrate_in(connection)


def migrate_in(connection: Connection) -> int:
    """`migrate` inside the caller's write transaction (an empty database gets the whole schema).

    Raises:
        ConflictError: the database was made by a newer segloop.
    """
    schema_info.create(connection, checkfirst=True)
    found = connection.execute(select(schema_info.c.version)).scalar()
    if found is None:
        connection.execute(schema_info.insert().values(version=0))
        found = 0
    check_schema_version(found)
    for version in range(found, SCHEMA_VERSION):
        MIGRATIONS[version](connection)
    connection.execute(schema_info.update().values(version=SCHEMA_VERSION))
    return int(found)


def check_schema_version(found: int) -> None:
    """Raise `ConflictError` when a database's schema is newer than this segloop's."""
    if found > SCHEMA_VERSION:
        msg = (
            f"database schema version {found} is newer than this segloop's {SCHEMA_VERSION}: upgrade segloop"
        )
        raise ConflictError(msg)


def one_line(error: BaseException) -> str:
    """A driver's error as one line (libpq's messages span several, with hints on their own lines)."""
    return " ".join(str(error).split())


def is_writable_file(path: Path) -> bool:
    """Whether this process may write ``path`` and create the SQLite side files beside it."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
