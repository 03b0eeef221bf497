"""`segloop migrate`: a project's SQLite database copied into an empty PostgreSQL database, verified.

The copy keeps every row and id (PostgreSQL's sequences then start past the largest id), runs in
one destination transaction (a failure leaves the destination empty), and is verified afterwards by
reading both sides again: per table, the number of rows and a SHA-256 of their values must be equal.
Only then does ``segloop.toml`` record the new database (and the user's ``databases.toml`` trust
it); the SQLite file is left as it was. The source's write lock is held from the first row read to
the recorded URL, so no write to the SQLite file can slip in between.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, func, inspect, select, text
from sqlalchemy.engine import Connection

from segloop.errors import ConflictError, NotFoundError, StoreIntegrityError
from segloop.store.config import (
    CONFIG_NAME,
    check_recordable_url,
    read_config,
    trust_database,
    with_database_url,
    write_config,
)
from segloop.store.database import (
    SCHEMA_VERSION,
    connect,
    metadata,
    migrate_in,
    read_schema_version,
    schema_info,
    sqlite_path,
    write_transaction,
)
from segloop.store.project import resolve_database_url

__all__ = ["MigrateReport", "copy_database", "migrate_project", "table_digest"]

#: Rows read and inserted at a time.
BATCH_ROWS = 5000


@dataclass(frozen=True)
class MigrateReport:
    """What `migrate_project` did.

    Args:
        source: the database copied (URL without password).
        destination: the database the project uses now (as recorded in ``segloop.toml``).
        rows: rows copied per table (empty: the project used ``destination`` already; only trusted).
        trusted_in: the user's ``databases.toml`` that trusts ``destination`` for the project.
    """

    source: str
    destination: str
    rows: dict[str, int]
    trusted_in: Path


def _tables() -> list[Table]:
    """The data tables in foreign-key order (``schema_info`` is written by the migrations)."""
    return [table for table in metadata.sorted_tables if table is not schema_info]


def _canonical(value: Any) -> Any:
    """``value`` as the same JSON-able value whichever engine returned it (datetimes as UTC text)."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # SQLite: naive UTC
        return aware.astimezone(UTC).isoformat()
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def _rows(connection: Connection, table: Table) -> Iterator[dict[str, Any]]:
    """Every row of ``table`` as ``{column: value}``, in primary-key order, read in batches."""
    query = select(table).order_by(*table.primary_key.columns)
    result = connection.execution_options(yield_per=BATCH_ROWS).execute(query)
    for row in result:
        yield dict(row._mapping)


def table_digest(connection: Connection, table: Table) -> tuple[int, str]:
    """``(rows, SHA-256 hex)`` of ``table``'s values, equal on SQLite and PostgreSQL for equal rows.

    Each row is hashed as canonical JSON and the sorted row hashes are hashed again, so the
    digest does not depend on the engine's collation (text keys sort differently).
    """
    names = [column.name for column in table.columns]
    hashes = sorted(
        hashlib.sha256(json.dumps([_canonical(row[n]) for n in names], sort_keys=True).encode()).digest()
        for row in _rows(connection, table)
    )
    return len(hashes), hashlib.sha256(b"".join(hashes)).hexdigest()


def _check_empty(connection: Connection) -> None:
    """Refuse a destination that holds any table (a segloop project, or anything else)."""
    shown = connection.engine.url.render_as_string(hide_password=True)
    names = inspect(connection).get_table_names()
    if schema_info.name in names:
        found = connection.execute(select(schema_info.c.version)).scalar()
        msg = f"{shown} holds a segloop project already (schema {found}): expected an empty database"
        raise ConflictError(msg)
    if names:
        msg = f"{shown} is not empty (tables {', '.join(sorted(names)[:5])}): expected an empty database"
        raise ConflictError(msg)


def _reset_sequences(connection: Connection) -> None:
    """Start each PostgreSQL id sequence past the largest id copied."""
    for table in _tables():
        column = table.autoincrement_column
        if column is None:
            continue
        largest = connection.execute(select(func.max(column))).scalar()
        values = {"table": table.name, "column": column.name, "value": largest or 1}
        connection.execute(
            text("SELECT setval(pg_get_serial_sequence(:table, :column), :value, :called)"),
            values | {"called": largest is not None},
        )


def _copy_rows(source: Connection, destination: Connection) -> dict[str, int]:
    copied = {}
    for table in _tables():
        copied[table.name] = 0
        batch: list[dict[str, Any]] = []
        for row in _rows(source, table):
            batch.append({k: _aware(v) for k, v in row.items()})
            if len(batch) == BATCH_ROWS:
                destination.execute(table.insert(), batch)
                copied[table.name] += len(batch)
                batch = []
        if batch:
            destination.execute(table.insert(), batch)
            copied[table.name] += len(batch)
    return copied


def _aware(value: Any) -> Any:
    """SQLite returns the UTC datetimes it stored naive; PostgreSQL is given them as UTC."""
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value


def copy_database(source: Connection, destination: Engine) -> dict[str, int]:
    """Copy every row of ``source`` (a segloop database of `SCHEMA_VERSION`) into the empty
    ``destination`` in one transaction, then verify the copy; rows copied per table.

    Args:
        source: a connection to the database copied, in a transaction the caller holds (so nothing
            changes it meanwhile).
        destination: an empty PostgreSQL database.

    Raises:
        ConflictError: ``destination`` is not empty.
        StoreIntegrityError: the copy differs from the source (the destination is left as it is,
            for inspection), or ``destination`` cannot be reached.
    """
    read_schema_version(destination)  # a one-line error when it cannot be reached
    with write_transaction(destination) as connection:
        _check_empty(connection)  # under the write lock: two migrations into one database cannot both copy
        migrate_in(connection)
        copied = _copy_rows(source, connection)
        if connection.dialect.name == "postgresql":
            _reset_sequences(connection)
    with destination.connect() as connection:
        for table in _tables():
            expected, found = table_digest(source, table), table_digest(connection, table)
            if expected != found:
                shown = destination.url.render_as_string(hide_password=True)
                msg = (
                    f"the copy of table {table.name} in {shown} differs from the source ({found[0]} rows,"
                    f" SHA-256 {found[1][:12]} vs {expected[0]} rows, {expected[1][:12]}): the project"
                    " still uses its SQLite file; the copy is left for inspection (drop it before retrying)"
                )
                raise StoreIntegrityError(msg)
    return copied


def migrate_project(root: str | Path, url: str) -> MigrateReport:
    """Move a project's database from its SQLite file to the empty PostgreSQL database ``url``.

    Copies and verifies every row (`copy_database`), then records ``url`` in ``segloop.toml`` and
    trusts it for this user; the SQLite file is kept as it was. When ``segloop.toml`` records
    ``url`` already (the project was migrated, by this user or another), nothing is copied: the
    database is checked to hold a segloop project and trusted for this user.

    Args:
        root: the project folder.
        url: ``postgresql+psycopg://user@host[:port]/db`` without a password (``~/.pgpass`` or
            ``PGPASSWORD`` give it).

    Raises:
        NotFoundError: ``root`` holds no project.
        InvalidInputError: ``url`` is not a password-less PostgreSQL URL.
        ConflictError: the project's database is not SQLite, or its schema is not this segloop's,
            or the destination is not empty.
        StoreIntegrityError: a database cannot be read or the copy differs (`copy_database`).
    """
    root = Path(root)
    if not (root / CONFIG_NAME).is_file():
        msg = f"{root} is not a segloop project: expected {root / CONFIG_NAME}"
        raise NotFoundError(msg)
    check_recordable_url(url)
    config = read_config(root / CONFIG_NAME)
    destination = connect(url)
    try:
        if config.database_url == url:
            return _trust_migrated(root, url, destination)
        source = connect(_source_url(root, config.database_url))
        try:
            with write_transaction(source) as reading:  # SQLite's write lock: nobody writes meanwhile
                _check_source_schema(root, reading)
                copied = copy_database(reading, destination)
                write_config(with_database_url(config, url), root / CONFIG_NAME, overwrite=True)
        finally:
            source.dispose()
        shown = source.url.render_as_string(hide_password=True)
        return MigrateReport(shown, url, copied, trust_database(root, url))
    finally:
        destination.dispose()


def _source_url(root: Path, recorded: str) -> str:
    """The project's SQLite database (``SEGLOOP_DATABASE_URL`` if set), or a refusal."""
    if recorded:
        msg = f"{root} uses {recorded} already ({CONFIG_NAME} [database] url): migrate copies SQLite only"
        raise ConflictError(msg)
    url = resolve_database_url(root, None)
    path = sqlite_path(url)
    if path is None:
        shown = url.render_as_string(hide_password=True)
        msg = f"the database of {root} is {shown}: migrate copies a SQLite database, not another"
        raise ConflictError(msg)
    if not path.is_file():
        msg = f"the project database {path} is missing: nothing to migrate (restore it from a backup)"
        raise StoreIntegrityError(msg)
    return url.render_as_string(hide_password=False)


def _check_source_schema(root: Path, connection: Connection) -> None:
    found = connection.execute(select(schema_info.c.version)).scalar()
    if found != SCHEMA_VERSION:
        upgrade = (
            "upgrade segloop first"
            if (found or 0) > SCHEMA_VERSION
            else f"run `segloop status {root}` first (it upgrades the database)"
        )
        msg = f"the database of {root} has schema {found}, this segloop {SCHEMA_VERSION}: {upgrade}"
        raise ConflictError(msg)


def _trust_migrated(root: Path, url: str, destination: Engine) -> MigrateReport:
    """Trust ``url``, which ``segloop.toml`` records, once it is checked to hold a segloop project."""
    if read_schema_version(destination) is None:
        msg = f"{root}'s {CONFIG_NAME} names {url}, which holds no segloop project: restore that database"
        raise StoreIntegrityError(msg)
    return MigrateReport(url, url, {}, trust_database(root, url))
