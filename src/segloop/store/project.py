"""`Project`: a project folder (``segloop.toml``, database, ``objects/``) and its queries.

Label versions are immutable: nothing of them is updated or deleted here. The store owns the
project's files: label objects, images (verified against their recorded SHA-256 on every read),
predictions, patches and jobs are written and read only through `Project`.

The database is the project's own ``segloop.db`` unless the *user* names another one (the
``database_url`` argument or the ``SEGLOOP_DATABASE_URL`` environment variable), or the PostgreSQL
database `segloop migrate` moved the project to (recorded in ``segloop.toml``, used once the user
trusts it: `segloop.store.config.is_trusted_database`); a project file alone never chooses it.
Opening writes nothing unless the database needs a migration, so a read-only project can be opened
and read.
"""

from __future__ import annotations

import difflib
import os
import socket
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import Engine, Table, and_, bindparam, func, select, true
from sqlalchemy.engine import URL, Connection, Row
from sqlalchemy.exc import IntegrityError

from segloop.core.names import path_inside
from segloop.core.provenance import parse_source
from segloop.core.volume import Volume
from segloop.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    StoreIntegrityError,
)
from segloop.io import read_volume
from segloop.io.atomic import atomic_file, process_alive
from segloop.store.config import CONFIG_NAME, ProjectConfig, is_trusted_database, read_config, write_config
from segloop.store.database import (
    DATABASE_URL_VARIABLE,
    SCHEMA_VERSION,
    case_images,
    cases,
    check_schema_version,
    class_decisions,
    class_source_counts,
    connect,
    drafts,
    evaluations,
    events,
    is_writable_file,
    jobs,
    label_versions,
    migrate,
    models,
    parse_database_url,
    patches,
    predictions,
    ranking_entries,
    read_schema_version,
    record_class_decisions,
    rounds,
    sqlite_path,
    users,
    utc_now,
    write_transaction,
)
from segloop.store.drafts import check_draft_labels, check_draft_parent
from segloop.store.integrity import accept_legacy_sha256, check_recorded_grid, current_sha256
from segloop.store.objects import ObjectStore
from segloop.store.overview import CaseOverview, CaseSelection, count_selected, selection_clause
from segloop.store.predictions import NewPrediction, check_prediction_arrays
from segloop.store.records import (
    CaseRecord,
    DraftRecord,
    EvaluationRecord,
    EventRecord,
    ImageRecord,
    JobRecord,
    JobStatus,
    LabelVersionRecord,
    ModelRecord,
    ModelStatus,
    NewCase,
    NewLabel,
    NewPatch,
    PatchRecord,
    PredictionArrays,
    PredictionRecord,
    Progress,
    RoundRecord,
    RoundStatus,
    UserRecord,
    parse_status,
)
from segloop.store.users import check_token_sha256

__all__ = ["DATABASE_NAME", "Project"]

_Record = TypeVar("_Record")

DATABASE_NAME = "segloop.db"

#: `Project.add_label_version`'s default: no stale check.
ANY_HEAD = object()


@dataclass(frozen=True)
class Project:
    """An open project.

    Args:
        root: the project folder.
        config: the contents of its `segloop.toml`.
        engine: the database engine.
        read_only: the database cannot be written (opened read-only); reads work, writes fail.
    """

    root: Path
    config: ProjectConfig
    engine: Engine
    read_only: bool = False

    @property
    def objects(self) -> ObjectStore:
        """The immutable label files."""
        return ObjectStore(self.root / "objects")

    @property
    def draft_objects(self) -> ObjectStore:
        """The files of the drafts (apart from `objects`: a draft's file is removed with its draft)."""
        return ObjectStore(self.root / "drafts")

    @classmethod
    def create(cls, root: str | Path, config: ProjectConfig, *, database_url: str | None = None) -> Project:
        """Create a project folder and its database.

        Args:
            root: the new project folder.
            config: what `segloop.toml` will hold.
            database_url: a SQLAlchemy URL chosen by the user (default: ``SEGLOOP_DATABASE_URL``,
                else ``root/segloop.db``).

        Raises:
            ConflictError: ``root`` already holds a project.
            InvalidInputError: an unparseable or in-memory database URL.
            MissingDependencyError: the URL's database driver is not installed.
        """
        root = Path(root)
        if (root / CONFIG_NAME).exists():
            msg = f"{root} is already a segloop project ({CONFIG_NAME} exists): choose a new folder"
            raise ConflictError(msg)
        url = resolve_database_url(root, database_url)
        engine = connect(url)
        if sqlite_path(url) is None:
            read_schema_version(engine)  # a server that cannot be used: one line, and no folder made
        root.mkdir(parents=True, exist_ok=True)
        for folder in ("objects", "models", "reports"):
            (root / folder).mkdir(exist_ok=True)
        migrate(engine)
        config = replace(config, database_url="")  # another project's database is not this one's
        write_config(config, root / CONFIG_NAME)
        return cls(root, config, engine)

    @classmethod
    def open(cls, root: str | Path, *, database_url: str | None = None) -> Project:
        """Open an existing project, writing nothing unless its database needs a migration.

        Args:
            root: the project folder.
            database_url: a SQLAlchemy URL chosen by the user (default: ``SEGLOOP_DATABASE_URL``,
                else the database ``segloop.toml`` records if the user trusts it, else
                ``root/segloop.db``).

        Raises:
            NotFoundError: ``root`` holds no project.
            StoreIntegrityError: its database is missing, not a database, or damaged.
            ConflictError: the database needs a migration but cannot be written, or was made by a
                newer segloop, or ``segloop.toml`` records a database this user does not trust.
        """
        root = Path(root)
        if not (root / CONFIG_NAME).is_file():
            msg = f"{root} is not a segloop project: expected {root / CONFIG_NAME}"
            raise NotFoundError(msg)
        config = read_config(root / CONFIG_NAME)
        url = resolve_database_url(root, database_url, config.database_url)
        database_file = sqlite_path(url)
        if database_file is not None and not database_file.is_file():
            raise StoreIntegrityError(_missing_database_message(root, database_file))
        read_only = url.query.get("mode") == "ro" or (
            database_file is not None and not is_writable_file(database_file)
        )
        engine = connect(url, read_only=read_only)
        found = read_schema_version(engine)
        if found is None:
            shown = url.render_as_string(hide_password=True)
            msg = f"the database {shown} of {root} holds no segloop project: restore the project's database"
            if database_file is None and (root / DATABASE_NAME).is_file():
                msg += f" (or, to move {root / DATABASE_NAME} there: segloop migrate {root} --to URL)"
            raise StoreIntegrityError(msg)
        check_schema_version(found)
        if found < SCHEMA_VERSION:
            if read_only:
                msg = (
                    f"the database of {root} needs an upgrade (schema {found} to {SCHEMA_VERSION}) but"
                    " cannot be written: open it once with write access"
                )
                raise ConflictError(msg)
            migrate(engine)
        return cls(root, config, engine, read_only=read_only)

    # -- cases -------------------------------------------------------------------------------

    def add_cases(
        self, new_cases: Sequence[NewCase], labels: Sequence[tuple[str, NewLabel]] = ()
    ) -> list[CaseRecord]:
        """Add cases (and their first label versions) in one transaction: all or none.

        Args:
            new_cases: the cases.
            labels: more ``(case_id, label)`` versions, of these cases or of existing ones,
                inserted after the cases in the same transaction (their objects published).

        Raises:
            ConflictError: a case id exists already (nothing is added).
            NotFoundError: a label names a case that is neither new nor stored.
        """
        ids = [case.case_id for case in new_cases]
        repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
        if repeated:
            msg = f"duplicate case ids in one batch: {', '.join(repeated)} (use distinct file names)"
            raise ConflictError(msg)
        now = utc_now()
        try:
            with write_transaction(self.engine) as connection:
                existing = self._existing_case_ids(connection, ids)
                if existing:
                    msg = (
                        f"case ids already in the project: {', '.join(sorted(existing))} (nothing was added)"
                    )
                    raise ConflictError(msg)
                for case in new_cases:
                    pk = connection.execute(
                        cases.insert().values(
                            case_id=case.case_id,
                            shape=list(case.shape),
                            affine=case.affine.tolist(),
                            dtype=case.dtype,
                            added_at=now,
                            added_by=case.added_by,
                        )
                    ).inserted_primary_key[0]
                    connection.execute(
                        case_images.insert(),
                        [
                            {
                                "case_pk": pk,
                                "channel": image.channel,
                                "path": image.path,
                                "size_bytes": image.size_bytes,
                                "sha256": image.sha256,
                                "copied": image.copied,
                            }
                            for image in case.images
                        ],
                    )
                    if case.label is not None:
                        self._insert_label(connection, pk, case.label, now)
                for case_id, label in labels:
                    query = select(cases.c.id).where(cases.c.case_id == case_id)
                    case_pk = connection.execute(query).scalar()
                    if case_pk is None:
                        msg = f"no case {case_id!r} in {self.root}: a label version needs its case"
                        raise NotFoundError(msg)
                    self._insert_label(connection, case_pk, label, now)
        except IntegrityError as error:
            msg = f"another process added one of these case ids meanwhile; nothing was added ({ids[:3]}...)"
            raise ConflictError(msg) from error
        return [self.get_case(case_id) for case_id in ids]

    def _existing_case_ids(self, connection: Connection, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            found.update(
                connection.execute(select(cases.c.case_id).where(cases.c.case_id.in_(chunk))).scalars()
            )
        return found

    def find_case(self, case_id: str) -> CaseRecord | None:
        """The case ``case_id``, or None."""
        with self.engine.connect() as connection:
            row = connection.execute(select(cases).where(cases.c.case_id == case_id)).first()
            if row is None:
                return None
            images = connection.execute(
                select(case_images).where(case_images.c.case_pk == row.id).order_by(case_images.c.channel)
            ).all()
        return _case_record(row, images)

    def get_case(self, case_id: str) -> CaseRecord:
        """The case ``case_id``; raises `NotFoundError` naming close matches."""
        case = self.find_case(case_id)
        if case is None:
            close = difflib.get_close_matches(case_id, self.list_case_ids(), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            msg = f"no case {case_id!r} in {self.root}{hint}"
            raise NotFoundError(msg)
        return case

    def list_case_ids(self) -> list[str]:
        """All case ids, in the order they were added."""
        with self.engine.connect() as connection:
            return list(connection.execute(select(cases.c.case_id).order_by(cases.c.id)).scalars())

    def list_cases(self) -> list[CaseRecord]:
        """All cases, in the order they were added."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(cases).order_by(cases.c.id)).all()
            images = connection.execute(select(case_images).order_by(case_images.c.channel)).all()
        by_case: dict[int, list[Row]] = {}
        for image in images:
            by_case.setdefault(image.case_pk, []).append(image)
        return [_case_record(row, by_case.get(row.id, [])) for row in rows]

    # -- many cases at once (listings of large projects) -----------------------------------------

    def count_cases(self) -> int:
        """How many cases the project holds."""
        with self.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(cases)).scalar() or 0)

    def count_label_versions(self) -> int:
        """How many label versions the project holds."""
        with self.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(label_versions)).scalar() or 0)

    def count_class_sources(self) -> dict[tuple[str, str], int]:
        """``{(class name, deciding source): cases}`` over the whole project (kept counts: one small read)."""
        query = select(class_source_counts).where(class_source_counts.c.cases > 0)
        with self.engine.connect() as connection:
            return {(row.class_name, row.source): int(row.cases) for row in connection.execute(query)}

    def select_case_ids(
        self,
        selection: CaseSelection = CaseSelection(),  # noqa: B008 (frozen: a safe default)
        *,
        order: str = "added",
        descending: bool = False,
        offset: int = 0,
        limit: int | None = None,
        ranking: int | None = None,
    ) -> tuple[int, list[str]]:
        """``(cases selected, a page of their ids)``: two queries whatever the project's size.

        Args:
            selection: which cases (`CaseSelection`).
            order: ``added`` (the order cases were added), ``id`` (case id), ``versions``
                (number of label versions), ``rank`` or ``score`` (in the ranking of event
                ``ranking``: cases it does not rank, or scores None, last whatever the direction);
                ties in added order (of scores: by rank).
            descending: reverse the order.
            offset: ids skipped.
            limit: at most this many ids (None: all).
            ranking: the ``served`` event whose ranking ``rank`` and ``score`` follow (None: none).

        Raises:
            InvalidInputError: an unknown order.
        """
        where = selection_clause(selection, self.config.schema.names, self.engine.dialect.name)
        ranked = ranking_entries.alias("ranked")
        keys = {
            "added": cases.c.id,
            "id": cases.c.case_id,
            "versions": select(func.count()).where(label_versions.c.case_pk == cases.c.id).scalar_subquery(),
            "rank": ranked.c.rank,
            "score": ranked.c.score,
        }
        if order not in keys:
            msg = f"unknown case order {order!r}: expected one of {', '.join(keys)}"
            raise InvalidInputError(msg)
        key = keys[order]
        tie = cases.c.id.desc() if descending else cases.c.id
        query = select(cases.c.case_id).where(where)
        if order in ("rank", "score"):
            joined = (ranked.c.case_id == cases.c.case_id) & (ranked.c.event_id == (ranking or 0))
            query = select(cases.c.case_id).select_from(cases.outerjoin(ranked, joined)).where(where)
            query = query.order_by(key.is_(None), key.desc() if descending else key, cases.c.id)
        else:
            query = query.order_by(key.desc() if descending else key, tie)
        with self.engine.connect() as connection:
            names, dialect = self.config.schema.names, self.engine.dialect.name
            counted = connection.execute(count_selected(selection, names, dialect)).scalar()
            total = int(counted or 0)
            if order in ("rank", "score") and ranking is not None and not descending:
                return total, _ranked_first(connection, where, ranking, order, offset, limit)
            return total, list(connection.execute(query.offset(offset).limit(limit)).scalars())

    # -- recorded rankings --------------------------------------------------------------------

    def record_ranking(self, actor: str, detail: dict[str, Any], ranking: Sequence[tuple[str, Any]]) -> int:
        """Log a ``served`` event and its ranking (``(case id, score or None)``, rank 1 first) at once.

        The event's detail gets the ranking's length (``ranked``).

        Returns:
            The event's id.
        """
        detail = {**detail, "ranked": len(ranking)}
        with write_transaction(self.engine) as connection:
            event_id = int(
                connection.execute(
                    events.insert().values(at=utc_now(), kind="served", actor=actor, detail=detail)
                ).inserted_primary_key[0]
            )
            rows = [
                {"event_id": event_id, "rank": rank, "case_id": case_id, "score": score}
                for rank, (case_id, score) in enumerate(ranking, start=1)
            ]
            for start in range(0, len(rows), 10_000):
                connection.execute(ranking_entries.insert(), rows[start : start + 10_000])
        return event_id

    def find_latest_ranking(self, strategy: str | None = None) -> int | None:
        """The ``served`` event of the newest recorded ranking (of ``strategy``: any if None), or None.

        With a strategy, the ``served`` events are read newest first (along their index) until one
        names it and recorded a ranking (its rank-1 entry, by key): one probe per event since.
        """
        with self.engine.connect() as connection:
            if strategy is None:
                found = connection.execute(select(func.max(ranking_entries.c.event_id))).scalar()
                return None if found is None else int(found)
            first = select(ranking_entries.c.rank).where(
                (ranking_entries.c.event_id == events.c.id) & (ranking_entries.c.rank == 1)
            )
            query = (
                select(events.c.id)
                .where(
                    (events.c.kind == "served")
                    & (events.c.detail["strategy"].as_string() == strategy)
                    & first.exists()
                )
                .order_by(events.c.id.desc())
                .limit(1)
            )
            found = connection.execute(query).scalar()
        return None if found is None else int(found)

    def find_newest_ids(self) -> dict[str, int]:
        """The newest row id (0: none) of ``cases``, ``predictions``, ``label_versions`` and ``events``.

        Ids only grow: a row with a larger id was stored later (what a recorded ranking compares).
        """
        tables = {"cases": cases, "predictions": predictions, "label_versions": label_versions}
        tables["events"] = events
        newest = (select(func.coalesce(func.max(t.c.id), 0)).scalar_subquery() for t in tables.values())
        query = select(*(column.label(name) for column, name in zip(newest, tables, strict=True)))
        with self.engine.connect() as connection:
            row = connection.execute(query).one()
        return {name: int(value) for name, value in row._mapping.items()}

    def list_label_versions_after(self, version_id: int) -> list[LabelVersionRecord]:
        """The label versions stored after version ``version_id`` (by id), oldest first."""
        query = (
            select(label_versions, cases.c.case_id)
            .join(cases, label_versions.c.case_pk == cases.c.id)
            .where(label_versions.c.id > version_id)
            .order_by(label_versions.c.id)
        )
        with self.engine.connect() as connection:
            return [_label_record(row) for row in connection.execute(query).all()]

    def list_events_after(self, event_id: int, kind: str) -> list[EventRecord]:
        """The journal entries of ``kind`` logged after event ``event_id``, oldest first."""
        query = select(events).where((events.c.id > event_id) & (events.c.kind == kind)).order_by(events.c.id)
        with self.engine.connect() as connection:
            return [_from_row(EventRecord, r) for r in connection.execute(query).all()]

    def list_ranking(
        self, event_id: int, *, offset: int = 0, limit: int | None = None
    ) -> tuple[int, list[tuple[int, str, float | None]]]:
        """``(cases ranked, (rank, case id, score) rows from rank offset + 1)`` of a recorded ranking."""
        of_event = ranking_entries.c.event_id == event_id
        query = (
            select(ranking_entries.c.rank, ranking_entries.c.case_id, ranking_entries.c.score)
            .where(of_event)
            .order_by(ranking_entries.c.rank)
            .offset(offset)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            detail = connection.execute(select(events.c.detail).where(events.c.id == event_id)).scalar()
            total = (detail or {}).get("ranked")
            if total is None:  # recorded before its length was (the migration's backfill)
                total = connection.execute(select(func.count()).where(of_event)).scalar()
            rows = [(int(r), c, None if s is None else float(s)) for r, c, s in connection.execute(query)]
        return int(total or 0), rows

    def find_ranked(self, event_id: int, case_ids: Sequence[str]) -> dict[str, tuple[int, float | None]]:
        """``{case id: (rank, score)}`` of the cases of ``case_ids`` a recorded ranking holds."""
        query = select(ranking_entries.c.case_id, ranking_entries.c.rank, ranking_entries.c.score).where(
            (ranking_entries.c.event_id == event_id)
            & ranking_entries.c.case_id.in_(bindparam("ids", expanding=True))
        )
        found: dict[str, tuple[int, float | None]] = {}
        with self.engine.connect() as connection:
            for start in range(0, len(case_ids), 500):
                chunk = {"ids": list(case_ids[start : start + 500])}
                for case_id, rank, score in connection.execute(query, chunk):
                    found[case_id] = (int(rank), None if score is None else float(score))
        return found

    def list_reviewed_classes(self, case_id: str | None = None) -> dict[str, frozenset[str]]:
        """Per case id, the classes a person reviewed for the whole case (cases with none absent).

        Args:
            case_id: only this case's (None: every case's).
        """
        query = (
            select(cases.c.case_id, class_decisions.c.class_name)
            .join(cases, class_decisions.c.case_pk == cases.c.id)
            .where(class_decisions.c.reviewed == true())
        )
        if case_id is not None:
            query = query.where(cases.c.case_id == case_id)
        found: dict[str, set[str]] = {}
        with self.engine.connect() as connection:
            for case_id, name in connection.execute(query):
                found.setdefault(case_id, set()).add(name)
        return {case_id: frozenset(names) for case_id, names in found.items()}

    def list_case_overviews(self, case_ids: Sequence[str]) -> list[CaseOverview]:
        """A `CaseOverview` of each case in ``case_ids`` (in that order; unknown ids are skipped).

        Three queries per 500 cases (meant for a page of a listing).
        """
        wanted = list(dict.fromkeys(case_ids))
        pks = bindparam("pks", expanding=True)
        count_query = (
            select(label_versions.c.case_pk, func.count())
            .where(label_versions.c.case_pk.in_(pks))
            .group_by(label_versions.c.case_pk)
        )
        decision_query = select(
            class_decisions.c.case_pk,
            class_decisions.c.class_name,
            class_decisions.c.source,
            class_decisions.c.reviewed,
        ).where(class_decisions.c.case_pk.in_(pks))
        case_query = select(cases.c.id, cases.c.case_id, cases.c.shape, cases.c.affine).where(
            cases.c.case_id.in_(bindparam("ids", expanding=True))
        )
        rows, counts, decided = [], {}, {}
        with self.engine.connect() as connection:
            for start in range(0, len(wanted), 500):
                found = connection.execute(case_query, {"ids": wanted[start : start + 500]}).all()
                chunk = [row.id for row in found]
                rows += found
                counts |= dict(connection.execute(count_query, {"pks": chunk}).all())
                for row in connection.execute(decision_query, {"pks": chunk}):
                    decided.setdefault(row.case_pk, []).append(row)
        by_id = {row.case_id: row for row in rows}
        return [
            _case_overview(by_id[i], counts.get(by_id[i].id, 0), decided.get(by_id[i].id, []))
            for i in wanted
            if i in by_id
        ]

    # -- label versions -----------------------------------------------------------------------

    def add_label_version(
        self, case_id: str, label: NewLabel, *, expected_head: int | object | None = ANY_HEAD
    ) -> LabelVersionRecord:
        """Add an immutable label version (its object must be published already).

        Args:
            case_id: the case.
            label: the version to add.
            expected_head: the id of the case's newest version when the caller read it (None: the
                case had none); checked in the same transaction as the insert.

        Raises:
            ConflictError: the case's newest version is no longer ``expected_head``; nothing stored.
        """
        heads = {} if expected_head is ANY_HEAD else {case_id: expected_head}
        return self.add_label_versions([(case_id, label)], expected_heads=heads)[0]

    def add_label_versions(
        self,
        items: Sequence[tuple[str, NewLabel]],
        *,
        expected_heads: Mapping[str, int | None] | None = None,
    ) -> list[LabelVersionRecord]:
        """Add label versions to one or several cases in one transaction: all or none.

        The stale check and the inserts share one write transaction (SQLite ``BEGIN IMMEDIATE``),
        so two people saving corrections of the same case at once cannot both win: the second gets
        a `ConflictError` and nothing of its batch is stored.

        Args:
            items: ``(case_id, label)`` pairs, inserted in this order.
            expected_heads: per case id, the id of its newest version when the caller read it
                (None: it had none); cases not named are not checked.

        Raises:
            NotFoundError: a case is missing.
            ConflictError: a case's newest version changed since the caller read it (the refused
                labels' objects that no version uses are removed), or a label object is not stored.
        """
        case_pks = {case_id: self.get_case(case_id).pk for case_id, _ in items}
        for case_id in expected_heads or {}:
            case_pks.setdefault(case_id, self.get_case(case_id).pk)
        now = utc_now()
        with write_transaction(self.engine) as connection:
            # checked under the write lock: a refused save of the same content may remove a file
            for _, label in items:
                if not self.objects.has(label.object_key):
                    msg = (
                        f"label object {label.object_key} is not stored (publish it before adding the"
                        " version, or a refused save of the same label removed it: save again)"
                    )
                    raise ConflictError(msg)
            for case_id, expected in (expected_heads or {}).items():
                head = self._head(connection, case_pks[case_id])
                if head != expected:
                    self._discard_unreferenced(connection, [label.object_key for _, label in items])
                    msg = (
                        f"case {case_id!r} changed while this was being saved: it was read at label"
                        f" version {expected}, it is now at version {head}; nothing was stored"
                    )
                    raise ConflictError(msg)
            ids = [self._insert_label(connection, case_pks[case_id], label, now) for case_id, label in items]
        return [self.get_label_version(version_id) for version_id in ids]

    def _discard_unreferenced(self, connection: Connection, keys: Sequence[str]) -> None:
        """Remove the label objects of a refused save that no version uses (under the write lock)."""
        for key in set(keys):
            used = select(label_versions.c.id).where(label_versions.c.object_key == key).limit(1)
            if connection.execute(used).first() is None:
                self.objects.path_of(key).unlink(missing_ok=True)

    def find_head(self, case_id: str) -> int | None:
        """The id of the case's newest label version (None: it has none); for `add_label_versions`."""
        pk = self.get_case(case_id).pk
        with self.engine.connect() as connection:
            return self._head(connection, pk)

    @staticmethod
    def _head(connection: Connection, case_pk: int) -> int | None:
        head = connection.execute(
            select(func.max(label_versions.c.id)).where(label_versions.c.case_pk == case_pk)
        ).scalar()
        return None if head is None else int(head)

    def _insert_label(self, connection: Connection, case_pk: int, label: NewLabel, now: Any) -> int:
        parse_source(label.source)
        unknown = [name for name in label.classes if name not in self.config.schema.names]
        if unknown:
            msg = f"label classes {unknown} are not in the schema ({', '.join(self.config.schema.names)})"
            raise InvalidInputError(msg)
        version_id = int(
            connection.execute(
                label_versions.insert().values(
                    case_pk=case_pk,
                    object_key=label.object_key,
                    source=label.source,
                    classes=list(label.classes),
                    voxel_counts=label.voxel_counts,
                    author=label.author,
                    tool=label.tool,
                    params=label.params,
                    parent_id=label.parent_id,
                    round=label.round,
                    created_at=now,
                )
            ).inserted_primary_key[0]
        )
        record_class_decisions(connection, case_pk, version_id, label.source, label.classes, label.params)
        return version_id

    def _rows_of_case(self, table: Table, case_id: str | None) -> Sequence[Row]:
        """Rows of ``table`` with their ``case_id`` (of one case, or all), oldest first."""
        query = select(table, cases.c.case_id).join(cases, table.c.case_pk == cases.c.id)
        if case_id is not None:
            query = query.where(cases.c.case_id == case_id)
        with self.engine.connect() as connection:
            return connection.execute(query.order_by(table.c.id)).all()

    def list_label_versions(self, case_id: str | None = None) -> list[LabelVersionRecord]:
        """Label versions (of one case, or all), oldest first."""
        return [_label_record(row) for row in self._rows_of_case(label_versions, case_id)]

    def get_label_version(self, version_id: int) -> LabelVersionRecord:
        """The label version ``version_id``; raises `NotFoundError`."""
        query = (
            select(label_versions, cases.c.case_id)
            .join(cases, label_versions.c.case_pk == cases.c.id)
            .where(label_versions.c.id == version_id)
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first() if _is_row_id(version_id) else None
        if row is None:
            msg = f"no label version {version_id} in {self.root}"
            raise NotFoundError(msg)
        return _label_record(row)

    def read_labels(self, version: LabelVersionRecord) -> np.ndarray:
        """The ``(I, J, K)`` label array of ``version``."""
        return self.objects.read(version.object_key)

    # -- models and predictions ----------------------------------------------------------------

    def start_model(
        self,
        *,
        author: str,
        mode: str,
        parent_id: int | None,
        config: dict[str, Any],
        label_version_ids: Sequence[int],
        train_case_ids: Sequence[str],
        val_case_ids: Sequence[str],
        round_number: int | None = None,
    ) -> ModelRecord:
        """Record a training run that starts now (status ``running``); its folder is ``models/<id>``."""
        with write_transaction(self.engine) as connection:
            model_id = int(
                connection.execute(
                    models.insert().values(
                        created_at=utc_now(),
                        author=author,
                        mode=mode,
                        parent_id=parent_id,
                        status="running",
                        checkpoint="",
                        config=config,
                        label_version_ids=list(label_version_ids),
                        train_case_ids=list(train_case_ids),
                        val_case_ids=list(val_case_ids),
                        metrics={},
                        round=round_number,
                    )
                ).inserted_primary_key[0]
            )
            connection.execute(
                models.update()
                .where(models.c.id == model_id)
                .values(checkpoint=f"models/{model_id}/checkpoint.pt")
            )
        return self.get_model(model_id)

    def finish_model(
        self, model_id: int, *, status: ModelStatus | str, metrics: dict[str, Any], config: dict[str, Any]
    ) -> None:
        """Mark a training run ``done`` or ``failed`` with its metrics and resolved config.

        Raises:
            InvalidInputError: ``status`` is not ``done`` or ``failed``.
        """
        finished = parse_status(ModelStatus, status)
        if finished == ModelStatus.RUNNING:
            msg = "a training run finishes as done or failed; got running"
            raise InvalidInputError(msg)
        with write_transaction(self.engine) as connection:
            connection.execute(
                models.update()
                .where(models.c.id == model_id)
                .values(status=finished.value, metrics=metrics, config=config, finished_at=utc_now())
            )

    def get_model(self, model_id: int) -> ModelRecord:
        """The model ``model_id``; raises `NotFoundError`."""
        with self.engine.connect() as connection:
            row = (
                connection.execute(select(models).where(models.c.id == model_id)).first()
                if _is_row_id(model_id)
                else None
            )
        if row is None:
            msg = f"no model {model_id} in {self.root}"
            raise NotFoundError(msg)
        return _model_record(row)

    def list_models(self) -> list[ModelRecord]:
        """All models, oldest first."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(models).order_by(models.c.id)).all()
        return [_model_record(row) for row in rows]

    def find_latest_model(self, status: ModelStatus | str = ModelStatus.DONE) -> ModelRecord | None:
        """The newest model with ``status``, or None."""
        wanted = parse_status(ModelStatus, status)
        candidates = [m for m in self.list_models() if m.status == wanted]
        return candidates[-1] if candidates else None

    def list_predictions(self, case_id: str | None = None) -> list[PredictionRecord]:
        """Predictions (of one case, or all), oldest first."""
        rows = self._rows_of_case(predictions, case_id)
        return [_from_row(PredictionRecord, r, mean_entropy=float(r.mean_entropy)) for r in rows]

    # -- events ------------------------------------------------------------------------------

    def log_event(self, kind: str, actor: str, detail: dict[str, Any]) -> None:
        """Append to the project's journal."""
        with write_transaction(self.engine) as connection:
            connection.execute(events.insert().values(at=utc_now(), kind=kind, actor=actor, detail=detail))

    def count_events(self, kind: str) -> int:
        """How many events of ``kind`` the journal holds."""
        with self.engine.connect() as connection:
            return int(connection.execute(select(func.count()).where(events.c.kind == kind)).scalar() or 0)

    def list_events(self, kind: str | None = None) -> list[EventRecord]:
        """Journal entries (of one kind, or all), oldest first."""
        query = select(events).order_by(events.c.id)
        if kind is not None:
            query = query.where(events.c.kind == kind)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        return [_from_row(EventRecord, r) for r in rows]

    def find_latest_event(self, kind: str) -> EventRecord | None:
        """The newest journal entry of ``kind``, or None (reads one row, however long the journal)."""
        query = select(events).where(events.c.kind == kind).order_by(events.c.id.desc()).limit(1)
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else _from_row(EventRecord, row)

    def find_event(self, event_id: int) -> EventRecord | None:
        """The journal entry ``event_id``, or None."""
        with self.engine.connect() as connection:
            row = connection.execute(select(events).where(events.c.id == event_id)).first()
        return None if row is None else _from_row(EventRecord, row)

    def list_unfinished_jobs(self) -> list[JobRecord]:
        """Jobs stored as running (those whose process died read as ``interrupted``) or interrupted."""
        wanted = (JobStatus.RUNNING.value, JobStatus.INTERRUPTED.value)
        query = select(jobs).where(jobs.c.status.in_(wanted)).order_by(jobs.c.id)
        with self.engine.connect() as connection:
            return [_job_record(row) for row in connection.execute(query).all()]

    # -- evaluations and rounds --------------------------------------------------------------

    def add_evaluation(
        self,
        case_id: str,
        *,
        model_id: int,
        reference_version_ids: Sequence[int],
        metrics: dict[str, Any],
        round_number: int | None = None,
    ) -> EvaluationRecord:
        """Record a model's metrics on a case (per class name: dice, hd95_mm, surface_dice)."""
        case = self.get_case(case_id)
        with write_transaction(self.engine) as connection:
            evaluation_id = connection.execute(
                evaluations.insert().values(
                    model_id=model_id,
                    case_pk=case.pk,
                    reference_version_ids=list(reference_version_ids),
                    metrics=metrics,
                    round=round_number,
                    created_at=utc_now(),
                )
            ).inserted_primary_key[0]
        return next(e for e in self.list_evaluations(model_id=model_id) if e.id == evaluation_id)

    def list_evaluations(self, *, model_id: int | None = None) -> list[EvaluationRecord]:
        """Evaluations (of one model, or all), oldest first."""
        query = select(evaluations, cases.c.case_id).join(cases, evaluations.c.case_pk == cases.c.id)
        if model_id is not None:
            query = query.where(evaluations.c.model_id == model_id)
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(evaluations.c.id)).all()
        return [_from_row(EvaluationRecord, r) for r in rows]

    def start_round(self, number: int, *, mode: str) -> RoundRecord:
        """Record that round ``number`` starts now (``running``); `ConflictError` if it exists."""
        try:
            with write_transaction(self.engine) as connection:
                connection.execute(
                    rounds.insert().values(
                        number=number,
                        mode=mode,
                        status="running",
                        started_at=utc_now(),
                        stages={},
                        summary={},
                    )
                )
        except IntegrityError as error:
            msg = f"round {number} exists already in {self.root}"
            raise ConflictError(msg) from error
        return self.get_round(number)

    def record_round_stage(self, number: int, stage: str, result: dict[str, Any]) -> RoundRecord:
        """Add a finished stage (and what it produced) to a running round."""
        current = self.get_round(number)
        with write_transaction(self.engine) as connection:
            connection.execute(
                rounds.update()
                .where(rounds.c.number == number)
                .values(stages={**current.stages, stage: result})
            )
        return self.get_round(number)

    def finish_round(self, number: int, summary: dict[str, Any]) -> RoundRecord:
        """Mark a round ``done`` with its summary."""
        with write_transaction(self.engine) as connection:
            connection.execute(
                rounds.update()
                .where(rounds.c.number == number)
                .values(status="done", summary=summary, finished_at=utc_now())
            )
        return self.get_round(number)

    def get_round(self, number: int) -> RoundRecord:
        """Round ``number``; raises `NotFoundError`."""
        found = [r for r in self.list_rounds() if r.number == number]
        if not found:
            msg = f"no round {number} in {self.root}"
            raise NotFoundError(msg)
        return found[0]

    def list_rounds(self) -> list[RoundRecord]:
        """All rounds, first first."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(rounds).order_by(rounds.c.number)).all()
        return [_from_row(RoundRecord, r, status=RoundStatus(r.status)) for r in rows]

    # -- images -------------------------------------------------------------------------------

    def image_path(self, image: ImageRecord) -> Path:
        """Where an image file lives (copied images are recorded relative to the project)."""
        path = Path(image.path)
        if path.is_absolute():
            return path
        inside = path_inside(self.root, image.path)
        if image.copied and not inside.exists() and path.parent.name == "images":
            # copied before paths were recorded relative to the project: they were recorded as
            # "<project as typed>/images/<name>", relative to the folder `add --copy` ran in
            legacy = path_inside(self.root, "images", path.name)
            if legacy.exists():
                return legacy
        return inside

    def _verified_image_path(self, case: CaseRecord, channel: int) -> Path:
        """The path of a case's image, whose files hash to the SHA-256 recorded when it was added.

        The hash is cached by the files' size and modification time (`current_sha256`), so
        checking an unchanged file again does not re-read it.
        """
        found = [image for image in case.images if image.channel == channel]
        if not found:
            msg = (
                f"case {case.case_id!r} has no image channel {channel}: it has {len(case.images)} channel(s)"
            )
            raise NotFoundError(msg)
        image = found[0]
        path = self.image_path(image)
        if not path.exists():
            msg = f"image of case {case.case_id!r} is missing: expected {path} (moved or deleted? restore it)"
            raise NotFoundError(msg)
        sha256 = current_sha256(self.engine, path, remember=not self.read_only)
        if sha256 != image.sha256 and not accept_legacy_sha256(
            self.engine,
            case.pk,
            channel,
            path,
            recorded=image.sha256,
            found=sha256,
            remember=not self.read_only,
        ):
            msg = (
                f"image {path} of case {case.case_id!r} changed since it was added: SHA-256 {sha256},"
                f" recorded {image.sha256}"
            )
            raise StoreIntegrityError(msg)
        return path

    def read_image(self, case_id: str, channel: int = 0) -> Volume:
        """A case's image (one channel), verified against its recorded SHA-256 and grid.

        Returns:
            The `Volume` as read: ``(I, J, K)`` (or ``(C, I, J, K)`` for an RGB file) on the case grid.

        Raises:
            NotFoundError: the case, the channel or the file is missing.
            StoreIntegrityError: the file changed since it was added.
        """
        case = self.get_case(case_id)
        path = self._verified_image_path(case, channel)
        volume = read_volume(path)
        check_recorded_grid(volume.spatial_shape, tuple(case.shape), path, case_id)
        return volume

    # -- prediction arrays --------------------------------------------------------------------

    def write_prediction(
        self,
        case_id: str,
        model_id: int,
        arrays: PredictionArrays,
        *,
        label_version_id: int,
        params: dict[str, Any],
    ) -> PredictionRecord:
        """Store a model's prediction of a case: its arrays (float16) and its record.

        The arrays go to ``predictions/<model>/<case>.npz`` (atomically); the record names that
        file, the pseudo label version already stored and the parameters.

        Args:
            case_id: the case predicted.
            model_id: the model that predicted it.
            arrays: probabilities ``(C, I, J, K)``, entropy and optional disagreement ``(I, J, K)``.
            label_version_id: the ``pseudo`` version holding the predicted labels.
            params: how it was predicted (passes, flips, post-processing).

        Raises:
            NotFoundError: no such case or model.
            GeometryMismatchError: an array is not on the case's grid.
        """
        case = self.get_case(case_id)
        self.get_model(model_id)
        stored = check_prediction_arrays(arrays, case.shape)
        relative = f"predictions/{model_id}/{case_id}.npz"
        target = path_inside(self.root, relative)
        with atomic_file(target, overwrite=True) as temporary, open(temporary, "wb") as out:
            np.savez_compressed(out, **stored)
        with write_transaction(self.engine) as connection:
            connection.execute(
                predictions.insert().values(
                    case_pk=case.pk,
                    model_id=model_id,
                    label_version_id=label_version_id,
                    uncertainty=relative,
                    mean_entropy=float(np.mean(stored["entropy"], dtype=np.float64)),
                    params=params,
                    created_at=utc_now(),
                )
            )
        return self.list_predictions(case_id)[-1]

    def add_predictions(
        self, model_id: int, items: Sequence[NewPrediction], *, again: bool = False
    ) -> list[PredictionRecord]:
        """Record a batch of a model's predictions: per case its ``pseudo`` version and its row.

        One write transaction (SQLite ``BEGIN IMMEDIATE``) holds the whole batch, so a killed
        client leaves whole batches. Label objects and prediction files are published before
        (`segloop.store.predictions.write_prediction_file`: workers write them, the client
        records them). Under the write lock, a case that has a prediction by ``model_id`` already
        (stored before, or earlier in ``items``) is skipped unless ``again``, so two clients never
        both record one (case, model); the skipped items' objects and files that nothing
        references are removed.

        Args:
            model_id: the model that predicted every item.
            items: the predictions, recorded in this order.
            again: record a case that has a prediction by the model already.

        Returns:
            The records stored, in the order of ``items`` (skipped ones left out).

        Raises:
            NotFoundError: the model or a case is missing; nothing stored.
            ConflictError: a label object or prediction file is not published; nothing stored.
        """
        self.get_model(model_id)
        case_pks = {item.case_id: self.get_case(item.case_id).pk for item in items}
        now = utc_now()
        with write_transaction(self.engine) as connection:
            for item in items:
                if not self.objects.has(item.label.object_key):
                    msg = f"label object {item.label.object_key} of case {item.case_id!r} is not stored"
                    raise ConflictError(msg)
                if not path_inside(self.root, item.file.relative).is_file():
                    msg = f"prediction file {item.file.relative} of case {item.case_id!r} is not stored"
                    raise ConflictError(msg)
            predicted = select(predictions.c.case_pk).where(
                predictions.c.model_id == model_id, predictions.c.case_pk.in_(set(case_pks.values()))
            )
            done = set() if again else set(connection.execute(predicted).scalars())
            ids, skipped = [], []
            for item in items:
                case_pk = case_pks[item.case_id]
                if not again and case_pk in done:
                    skipped.append(item)
                    continue
                done.add(case_pk)
                row = {
                    "case_pk": case_pk,
                    "model_id": model_id,
                    "label_version_id": self._insert_label(connection, case_pk, item.label, now),
                    "uncertainty": item.file.relative,
                    "mean_entropy": item.file.mean_entropy,
                    "params": dict(item.params),
                    "created_at": now,
                }
                ids.append(int(connection.execute(predictions.insert().values(**row)).inserted_primary_key[0]))
            self._discard_unreferenced(connection, [item.label.object_key for item in skipped])
            for relative in {item.file.relative for item in skipped}:
                used = select(predictions.c.id).where(predictions.c.uncertainty == relative).limit(1)
                if connection.execute(used).first() is None:
                    path_inside(self.root, relative).unlink(missing_ok=True)
            query = select(predictions, cases.c.case_id).join(cases, predictions.c.case_pk == cases.c.id)
            rows = connection.execute(query.where(predictions.c.id.in_(ids)).order_by(predictions.c.id)).all()
        return [_from_row(PredictionRecord, r, mean_entropy=float(r.mean_entropy)) for r in rows]

    def read_prediction(self, case_id: str, model_id: int | None = None) -> PredictionArrays:
        """The arrays of a case's newest prediction (by ``model_id``, or by any model).

        Raises:
            NotFoundError: the case has no prediction (by that model).
            StoreIntegrityError: the stored file is missing or unreadable.
        """
        records = [r for r in self.list_predictions(case_id) if model_id is None or r.model_id == model_id]
        if not records:
            by = "" if model_id is None else f" by model {model_id}"
            msg = f"case {case_id!r} has no stored prediction{by}"
            raise NotFoundError(msg)
        return self._load_prediction(records[-1])

    def _load_prediction(self, record: PredictionRecord) -> PredictionArrays:
        path = path_inside(self.root, record.uncertainty)
        if not path.is_file():
            msg = f"prediction file {path} of case {record.case_id!r} (model {record.model_id}) is missing"
            raise StoreIntegrityError(msg)
        try:
            with np.load(path, allow_pickle=False) as data:
                stored = {key: data[key] for key in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            msg = f"prediction file {path} cannot be read ({error}): predict the case again"
            raise StoreIntegrityError(msg) from error
        if "probabilities" not in stored or "entropy" not in stored:
            msg = f"prediction file {path} holds {sorted(stored)}; expected probabilities and entropy"
            raise StoreIntegrityError(msg)
        return PredictionArrays(stored["probabilities"], stored["entropy"], stored.get("disagreement"))

    # -- jobs ---------------------------------------------------------------------------------

    def start_job(self, kind: str, *, author: str, params: dict[str, Any] | None = None) -> JobRecord:
        """Record a long piece of work (``train``, ``predict``, ``round``) starting now in this process."""
        now = utc_now()
        with write_transaction(self.engine) as connection:
            job_id = connection.execute(
                jobs.insert().values(
                    kind=kind,
                    status=JobStatus.RUNNING.value,
                    author=author,
                    params=dict(params or {}),
                    progress=None,
                    result={},
                    error=None,
                    pid=os.getpid(),
                    host=socket.gethostname(),
                    started_at=now,
                    updated_at=now,
                )
            ).inserted_primary_key[0]
        return self.get_job(int(job_id))

    def claim_job(self, job_id: int, *, kind: str, params: dict[str, Any] | None = None) -> JobRecord:
        """Take over a running job that another process recorded (a server's job run by its worker).

        The job's process becomes this one (its end is this process's to store; if this process
        dies, the job reads ``interrupted``) and ``params`` are added to the job's.

        Raises:
            NotFoundError: no such job.
            ConflictError: the job is not running, or is of another kind.
        """
        with write_transaction(self.engine) as connection:
            row = connection.execute(select(jobs.c.kind, jobs.c.params).where(jobs.c.id == job_id)).first()
            status = self._job_status(connection, job_id)
            if status != JobStatus.RUNNING or row.kind != kind:
                msg = f"job {job_id} is a {status} {row.kind} job: expected a running {kind} job to take over"
                raise ConflictError(msg)
            connection.execute(
                jobs.update()
                .where(jobs.c.id == job_id)
                .values(params={**row.params, **(params or {})}, pid=os.getpid(), updated_at=utc_now())
            )
        return self.get_job(job_id)

    def update_job(self, progress: Progress) -> None:
        """Store a running job's newest progress.

        Raises:
            NotFoundError: no such job.
            ConflictError: the job is not running any more.
        """
        values = {
            "stage": progress.stage,
            "done": progress.done,
            "total": progress.total,
            "message": progress.message,
            "metrics": dict(progress.metrics),
        }
        with write_transaction(self.engine) as connection:
            status = self._job_status(connection, progress.job_id)
            if status != JobStatus.RUNNING:
                msg = f"job {progress.job_id} is {status}, not running: its progress cannot change"
                raise ConflictError(msg)
            connection.execute(
                jobs.update()
                .where(jobs.c.id == progress.job_id)
                .values(progress=values, updated_at=utc_now())
            )

    def finish_job(
        self,
        job_id: int,
        *,
        status: JobStatus = JobStatus.DONE,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> JobRecord:
        """Mark a running job ``done``, ``failed`` or ``interrupted`` with its result or error.

        Raises:
            NotFoundError: no such job.
            InvalidInputError: ``status`` is ``running``.
            ConflictError: the job is finished already.
        """
        status = parse_status(JobStatus, status)
        if status == JobStatus.RUNNING:
            msg = "a job finishes as done, failed or interrupted; got running"
            raise InvalidInputError(msg)
        now = utc_now()
        with write_transaction(self.engine) as connection:
            current = self._job_status(connection, job_id)
            if current != JobStatus.RUNNING:
                msg = f"job {job_id} is {current} already: it cannot finish again"
                raise ConflictError(msg)
            connection.execute(
                jobs.update()
                .where(jobs.c.id == job_id)
                .values(
                    status=status.value,
                    result=dict(result or {}),
                    error=None if error is None else error[: jobs.c.error.type.length],  # as PostgreSQL must
                    finished_at=now,
                    updated_at=now,
                )
            )
        return self.get_job(job_id)

    @staticmethod
    def _job_status(connection: Connection, job_id: int) -> str:
        status = connection.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar()
        if status is None:
            msg = f"no job {job_id} in this project"
            raise NotFoundError(msg)
        return str(status)

    def get_job(self, job_id: int) -> JobRecord:
        """The job ``job_id`` (a running job whose process died reads as ``interrupted``)."""
        with self.engine.connect() as connection:
            row = (
                connection.execute(select(jobs).where(jobs.c.id == job_id)).first()
                if _is_row_id(job_id)
                else None
            )
        if row is None:
            msg = f"no job {job_id} in {self.root}"
            raise NotFoundError(msg)
        return _job_record(row)

    def list_jobs(self, kind: str | None = None, status: JobStatus | str | None = None) -> list[JobRecord]:
        """Jobs (of one kind, with one status), oldest first; dead running jobs read as ``interrupted``."""
        query = select(jobs).order_by(jobs.c.id)
        if kind is not None:
            query = query.where(jobs.c.kind == kind)
        with self.engine.connect() as connection:
            records = [_job_record(row) for row in connection.execute(query).all()]
        wanted = None if status is None else parse_status(JobStatus, status)
        return [r for r in records if wanted is None or r.status == wanted]

    def mark_interrupted_jobs(self) -> list[JobRecord]:
        """Store ``interrupted`` for every running job whose process (on this host) is gone."""
        interrupted = [job for job in self.list_jobs(status=JobStatus.INTERRUPTED) if job.finished_at is None]
        if not interrupted:
            return []
        now = utc_now()
        with write_transaction(self.engine) as connection:
            for job in interrupted:
                connection.execute(
                    jobs.update()
                    .where((jobs.c.id == job.id) & (jobs.c.status == JobStatus.RUNNING.value))
                    .values(status=JobStatus.INTERRUPTED.value, finished_at=now, updated_at=now)
                )
        return [self.get_job(job.id) for job in interrupted]

    # -- patches ------------------------------------------------------------------------------

    def add_patches(self, new_patches: Sequence[NewPatch]) -> list[PatchRecord]:
        """Record extracted correction patches in one transaction: all or none.

        Raises:
            NotFoundError: a case is not in the project.
            ConflictError: a patch id is taken (in the project or twice in the batch).
        """
        ids = [patch.patch_id for patch in new_patches]
        repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
        if repeated:
            msg = f"patch ids repeated in one batch: {', '.join(repeated)}; expected distinct ids"
            raise ConflictError(msg)
        case_pks = {patch.case_id: self.get_case(patch.case_id).pk for patch in new_patches}
        now = utc_now()
        try:
            with write_transaction(self.engine) as connection:
                query = select(patches.c.patch_id).where(patches.c.patch_id.in_(ids))
                taken = sorted(connection.execute(query).scalars())
                if taken:
                    msg = f"patch ids already in the project: {', '.join(taken)}; nothing was recorded"
                    raise ConflictError(msg)
                for patch in new_patches:
                    connection.execute(
                        patches.insert().values(**_patch_row(patch, case_pks[patch.case_id], now))
                    )
        except IntegrityError as error:
            msg = f"another process recorded one of the patches {ids[:3]} meanwhile: nothing recorded"
            raise ConflictError(msg) from error
        return [self.get_patch(patch_id) for patch_id in ids]

    def list_patches(self, case_id: str | None = None) -> list[PatchRecord]:
        """Extracted patches (of one case, or all), oldest first."""
        return [_patch_record(row) for row in self._rows_of_case(patches, case_id)]

    def find_patch(self, patch_id: str) -> PatchRecord | None:
        """The patch ``patch_id``, or None."""
        query = (
            select(patches, cases.c.case_id)
            .join(cases, patches.c.case_pk == cases.c.id)
            .where(patches.c.patch_id == patch_id)
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else _patch_record(row)

    def get_patch(self, patch_id: str) -> PatchRecord:
        """The patch ``patch_id``; raises `NotFoundError`."""
        patch = self.find_patch(patch_id)
        if patch is None:
            msg = f"no patch {patch_id!r} in {self.root}"
            raise NotFoundError(msg)
        return patch

    # -- users --------------------------------------------------------------------------------

    def add_user(self, name: str, token_sha256: str) -> UserRecord:
        """Record a person who may sign in with the token whose SHA-256 (hex) is ``token_sha256``.

        Raises:
            InvalidInputError: ``token_sha256`` is not a SHA-256 hex digest.
            ConflictError: the name, or the token, is another user's already.
        """
        check_token_sha256(token_sha256)
        try:
            with write_transaction(self.engine) as connection:
                connection.execute(
                    users.insert().values(name=name, token_sha256=token_sha256, created_at=utc_now())
                )
        except IntegrityError as error:
            taken = any(user.name == name for user in self.list_users())
            what = f"a user named {name!r} exists already" if taken else "that token is another user's"
            msg = f"{what}: nothing was added"
            raise ConflictError(msg) from error
        return next(user for user in self.list_users() if user.name == name)

    def find_user_by_token_hash(self, token_sha256: str) -> UserRecord | None:
        """The user whose token hashes to ``token_sha256``, or None.

        The lookup compares hashes of 256-bit random tokens, so its timing tells a caller nothing
        about any token.
        """
        query = select(users).where(users.c.token_sha256 == token_sha256)
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else _from_row(UserRecord, row)

    def list_users(self) -> list[UserRecord]:
        """Every user, in the order they were added."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(users).order_by(users.c.id)).all()
        return [_from_row(UserRecord, row) for row in rows]

    def remove_user(self, name: str) -> None:
        """Remove a user (their token stops working; what they stored keeps their name).

        Raises:
            NotFoundError: no such user.
        """
        with write_transaction(self.engine) as connection:
            removed = connection.execute(users.delete().where(users.c.name == name)).rowcount
        if not removed:
            msg = f"no user {name!r} in {self.root}"
            raise NotFoundError(msg)

    # -- drafts -------------------------------------------------------------------------------

    def save_draft(self, case_id: str, author: str, labels: np.ndarray, parent: int | None) -> DraftRecord:
        """Store ``author``'s draft of a case, replacing their previous one.

        The file is written atomically to ``drafts/`` before the row; the replaced draft's file
        is removed only after the new row is committed (and only when no other draft shares it).

        Args:
            case_id: the case.
            author: whose draft it is.
            labels: ``(I, J, K)`` schema values on the case's grid.
            parent: the label version the author started from (None: the case had none).

        Raises:
            NotFoundError: no such case or label version.
            GeometryMismatchError: ``labels`` is not on the case's grid.
            LabelValueError: values outside the schema.
            InvalidInputError: ``parent`` is a version of another case.
            ConflictError: a save or discard of the same draft ran at the same moment.
        """
        case = self.get_case(case_id)
        stored = check_draft_labels(labels, case_id, case.shape, self.config.schema)
        if parent is not None:
            check_draft_parent(parent, self.get_label_version(parent).case_id, case_id)
        values = {
            "case_pk": case.pk,
            "author": author,
            "parent_id": parent,
            "shape": list(stored.shape),
        }
        for _ in range(3):
            with self.draft_objects.stage() as staged:
                key = staged.put(stored, case.affine)
            try:
                with write_transaction(self.engine) as connection:
                    if not self.draft_objects.has(key):
                        continue  # a concurrent replace removed the same file after it was published
                    replaced = self._upsert_draft(connection, {**values, "object_key": key})
            except IntegrityError as error:  # PostgreSQL: another request inserted this draft first
                self._remove_draft_object(key)
                msg = f"the draft of case {case_id!r} by {author!r} was saved twice at once: save it again"
                raise ConflictError(msg) from error
            break
        else:
            msg = f"the draft of case {case_id!r} kept being replaced while it was saved: save it again"
            raise ConflictError(msg)
        if replaced not in (None, key):
            self._remove_draft_object(replaced)
        record = self.find_draft(case_id, author)
        if record is None:
            msg = f"the draft of case {case_id!r} by {author!r} was discarded as it was saved: save it again"
            raise ConflictError(msg)
        return record

    @staticmethod
    def _upsert_draft(connection: Connection, values: dict[str, Any]) -> str | None:
        """Insert or replace the draft row of ``values``' case and author; the replaced object key."""
        where = (drafts.c.case_pk == values["case_pk"]) & (drafts.c.author == values["author"])
        old = connection.execute(select(drafts.c.object_key).where(where)).scalar()
        values = {**values, "updated_at": utc_now()}
        if old is None:
            connection.execute(drafts.insert().values(**values))
        else:
            connection.execute(drafts.update().where(where).values(**values))
        return old

    def _remove_draft_object(self, key: str) -> None:
        """Remove a draft file no draft references (checked under the write lock, so no save races it)."""
        with write_transaction(self.engine) as connection:
            query = select(func.count()).where(drafts.c.object_key == key)
            if connection.execute(query).scalar():
                return
            try:
                self.draft_objects.path_of(key).unlink(missing_ok=True)
            except OSError:
                return  # left behind: `check_project` reports it as an orphan

    def find_draft(self, case_id: str, author: str) -> DraftRecord | None:
        """``author``'s draft of a case, or None (also when there is no such case)."""
        return next((d for d in self.list_drafts(case_id) if d.author == author), None)

    def read_draft(self, record: DraftRecord) -> np.ndarray:
        """The ``(I, J, K)`` label array of a draft, verified against its key.

        Raises:
            StoreIntegrityError: its file is missing or changed.
        """
        return self.draft_objects.read(record.object_key)

    def delete_draft(self, case_id: str, author: str) -> bool:
        """Discard ``author``'s draft of a case; whether there was one."""
        case_pks = select(cases.c.id).where(cases.c.case_id == case_id)
        where = (drafts.c.author == author) & drafts.c.case_pk.in_(case_pks)
        with write_transaction(self.engine) as connection:
            key = connection.execute(select(drafts.c.object_key).where(where)).scalar()
            if key is not None:
                connection.execute(drafts.delete().where(where))
        if key is None:
            return False
        self._remove_draft_object(key)
        return True

    def list_drafts(self, case_id: str | None = None) -> list[DraftRecord]:
        """Drafts (of one case, or all), oldest first."""
        return [
            _from_row(DraftRecord, row, parent=row.parent_id) for row in self._rows_of_case(drafts, case_id)
        ]


def _is_row_id(value: int) -> bool:
    """Whether ``value`` fits a database id (the tables' ``Integer``: 32-bit signed, which PostgreSQL
    enforces in a query too); a larger one, from a request, names no row."""
    return -(2**31) <= int(value) < 2**31


def resolve_database_url(root: Path, database_url: str | None, recorded: str = "") -> URL:
    """The user's URL (argument, else ``SEGLOOP_DATABASE_URL``), else the ``recorded`` one (of
    ``segloop.toml``) if the user trusts it, else the project's ``segloop.db``.

    Raises:
        ConflictError: ``recorded`` is a database the user has not trusted for ``root``.
    """
    given = database_url or os.environ.get(DATABASE_URL_VARIABLE, "")
    if given:
        return parse_database_url(given)
    if recorded:
        if not is_trusted_database(root, recorded):
            msg = (
                f"{root}'s database moved to {recorded} ({CONFIG_NAME} [database] url), which you have not"
                f" trusted for this folder: run `segloop migrate {root} --to {recorded}` to trust it"
                f" (it copies nothing then), or set {DATABASE_URL_VARIABLE}"
            )
            raise ConflictError(msg)
        return parse_database_url(recorded)
    return URL.create("sqlite", database=str((root / DATABASE_NAME).resolve()))


def _missing_database_message(root: Path, database_file: Path) -> str:
    objects = sum(1 for _ in (root / "objects").glob("*/*.nii.gz"))
    return (
        f"the project database {database_file} is missing while {root} holds a project"
        f" ({objects} label objects in objects/): restore the database from a backup (or name the"
        f" project's database, e.g. on PostgreSQL, by {DATABASE_URL_VARIABLE})"
    )


def _from_row(record_type: type[_Record], row: Row, **given: Any) -> _Record:
    """A ``record_type`` from the row's columns of its field names (JSON lists as tuples).

    Args:
        record_type: a frozen dataclass of `segloop.store.records`.
        row: a database row holding a column for every field not in ``given``.
        **given: field values that are not a column as stored (enums, arrays, nested records).
    """
    columns = row._mapping
    values = {}
    for item in fields(record_type):
        value = given[item.name] if item.name in given else columns[item.name]
        values[item.name] = tuple(value) if isinstance(value, list) else value
    return record_type(**values)


def _case_record(row: Row, images: Sequence[Row]) -> CaseRecord:
    return _from_row(
        CaseRecord,
        row,
        pk=row.id,
        affine=np.asarray(row.affine),
        images=tuple(_from_row(ImageRecord, image) for image in images),
    )


def _ranked_first(
    connection: Connection, where: Any, event_id: int, order: str, offset: int, limit: int | None
) -> list[str]:
    """`Project.select_case_ids`'s ascending ``rank`` / ``score`` page, read along the ranking's index.

    The ranked cases (a score: for ``score``) come first, from the index of `ranking_entries`, so
    the first pages of a ranking of 100,000 cases read a page's rows, not every case; the others
    follow in the order they were added.
    """
    entries = ranking_entries.c
    key = entries.rank if order == "rank" else entries.score
    ranked = (
        select(cases.c.case_id)
        .select_from(ranking_entries.join(cases, entries.case_id == cases.c.case_id))
        .where(and_(where, entries.event_id == event_id, key.is_not(None)))
    )
    # rank is unique within a ranking (ties of score by rank): the index gives the order itself, even
    # while the planner's statistics do not know the newest ranking yet (PostgreSQL)
    order = (key,) if order == "rank" else (key, entries.rank)
    page = list(connection.execute(ranked.order_by(*order).offset(offset).limit(limit)).scalars())
    if limit is not None and len(page) == limit:
        return page
    n_ranked = int(connection.execute(select(func.count()).select_from(ranked.subquery())).scalar() or 0)
    placed = select(entries.case_id).where((entries.event_id == event_id) & key.is_not(None))
    rest = (
        select(cases.c.case_id)
        .where(and_(where, cases.c.case_id.not_in(placed)))
        .order_by(cases.c.id)
        .offset(max(0, offset - n_ranked))
        .limit(None if limit is None else limit - len(page))
    )
    return page + list(connection.execute(rest).scalars())


def _case_overview(row: Row, n_versions: int, decided: Sequence[Row]) -> CaseOverview:
    return CaseOverview(
        case_id=row.case_id,
        shape=tuple(row.shape),  # type: ignore[arg-type]
        affine=np.asarray(row.affine, dtype=float),
        n_versions=int(n_versions),
        class_sources={d.class_name: d.source for d in decided},
        reviewed=frozenset(d.class_name for d in decided if d.reviewed),
    )


def _label_record(row: Row) -> LabelVersionRecord:
    return _from_row(LabelVersionRecord, row)


def _model_record(row: Row) -> ModelRecord:
    return _from_row(ModelRecord, row, status=ModelStatus(row.status))


def _job_record(row: Row) -> JobRecord:
    status = JobStatus(row.status)
    if status == JobStatus.RUNNING and row.host == socket.gethostname() and not process_alive(row.pid):
        status = JobStatus.INTERRUPTED
    progress = None if row.progress is None else Progress(job_id=row.id, **row.progress)
    return _from_row(JobRecord, row, status=status, progress=progress)


def _patch_row(patch: NewPatch, case_pk: int, now: Any) -> dict[str, Any]:
    return {
        "patch_id": patch.patch_id,
        "case_pk": case_pk,
        "offset": [int(n) for n in patch.offset],
        "size": [int(n) for n in patch.size],
        "border_voxels": int(patch.border_voxels),
        "parent_version_id": patch.parent_version_id,
        "version_ids": [int(n) for n in patch.version_ids],
        "region_sha256": patch.region_sha256,
        "label_sha256": patch.label_sha256,
        "affine": np.asarray(patch.affine, dtype=float).tolist(),
        "author": patch.author,
        "created_at": now,
        "detail": dict(patch.detail),
    }


def _patch_record(row: Row) -> PatchRecord:
    return _from_row(PatchRecord, row, affine=np.asarray(row.affine, dtype=float))
