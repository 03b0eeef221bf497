"""`Project`: a project folder (``segloop.toml``, database, ``objects/``) and its queries.

Only adds and reads: label versions are immutable and nothing is updated or deleted here.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from segloop.errors import ConflictError, InvalidInputError, NotFoundError
from segloop.store.config import CONFIG_NAME, ProjectConfig, read_config, write_config
from segloop.store.database import (
    case_images,
    cases,
    connect,
    evaluations,
    events,
    label_versions,
    migrate,
    models,
    predictions,
    rounds,
    utc_now,
)
from segloop.store.objects import ObjectStore
from segloop.store.records import (
    SOURCES,
    CaseRecord,
    EvaluationRecord,
    EventRecord,
    ImageRecord,
    LabelVersionRecord,
    ModelRecord,
    NewCase,
    NewLabel,
    PredictionRecord,
    RoundRecord,
)

__all__ = ["DATABASE_NAME", "Project"]

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
    """

    root: Path
    config: ProjectConfig
    engine: Engine

    @property
    def objects(self) -> ObjectStore:
        """The immutable label files."""
        return ObjectStore(self.root / "objects")

    @classmethod
    def create(cls, root: str | Path, config: ProjectConfig) -> Project:
        """Create a project folder; raises `ConflictError` if ``root`` already holds one."""
        root = Path(root)
        if (root / CONFIG_NAME).exists():
            msg = f"{root} is already a segloop project ({CONFIG_NAME} exists): choose a new folder"
            raise ConflictError(msg)
        root.mkdir(parents=True, exist_ok=True)
        for folder in ("objects", "models", "reports"):
            (root / folder).mkdir(exist_ok=True)
        project = cls(root, config, connect(_database_url(root, config)))
        migrate(project.engine)
        write_config(config, root / CONFIG_NAME)
        return project

    @classmethod
    def open(cls, root: str | Path) -> Project:
        """Open an existing project; raises `NotFoundError` if ``root`` holds none."""
        root = Path(root)
        if not (root / CONFIG_NAME).is_file():
            msg = f"{root} is not a segloop project: expected {root / CONFIG_NAME} (run `segloop init`)"
            raise NotFoundError(msg)
        config = read_config(root / CONFIG_NAME)
        project = cls(root, config, connect(_database_url(root, config)))
        migrate(project.engine)
        return project

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
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            msg = f"duplicate case ids in one batch: {', '.join(repeated)} (use distinct file names)"
            raise ConflictError(msg)
        now = utc_now()
        try:
            with self.engine.begin() as connection:
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
            hint = f"; did you mean {', '.join(close)}?" if close else " (see `segloop status`)"
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
            NotFoundError: a case or a label object is missing.
            ConflictError: a case's newest version changed since the caller read it.
        """
        for _, label in items:
            if not self.objects.has(label.object_key):
                msg = f"label object {label.object_key} is not stored: publish it before adding the version"
                raise NotFoundError(msg)
        case_pks = {case_id: self.get_case(case_id).pk for case_id, _ in items}
        for case_id in expected_heads or {}:
            case_pks.setdefault(case_id, self.get_case(case_id).pk)
        now = utc_now()
        with self.engine.begin() as connection:
            for case_id, expected in (expected_heads or {}).items():
                head = self._head(connection, case_pks[case_id])
                if head != expected:
                    msg = (
                        f"case {case_id!r} changed while this was being saved: it was read at label"
                        f" version {expected}, it is now at version {head}; nothing was stored"
                    )
                    raise ConflictError(msg)
            ids = [self._insert_label(connection, case_pks[case_id], label, now) for case_id, label in items]
        return [self.get_label_version(version_id) for version_id in ids]

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
        if label.source not in SOURCES:
            msg = f"unknown label source {label.source!r}: expected one of {', '.join(SOURCES)}"
            raise InvalidInputError(msg)
        unknown = [name for name in label.classes if name not in self.config.schema.names]
        if unknown:
            msg = f"label classes {unknown} are not in the schema ({', '.join(self.config.schema.names)})"
            raise InvalidInputError(msg)
        return int(
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

    def list_label_versions(self, case_id: str | None = None) -> list[LabelVersionRecord]:
        """Label versions (of one case, or all), oldest first."""
        query = select(label_versions, cases.c.case_id).join(cases, label_versions.c.case_pk == cases.c.id)
        if case_id is not None:
            query = query.where(cases.c.case_id == case_id)
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(label_versions.c.id)).all()
        return [_label_record(row) for row in rows]

    def get_label_version(self, version_id: int) -> LabelVersionRecord:
        """The label version ``version_id``; raises `NotFoundError`."""
        query = (
            select(label_versions, cases.c.case_id)
            .join(cases, label_versions.c.case_pk == cases.c.id)
            .where(label_versions.c.id == version_id)
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
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
        with self.engine.begin() as connection:
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
        self, model_id: int, *, status: str, metrics: dict[str, Any], config: dict[str, Any]
    ) -> None:
        """Mark a training run ``done`` or ``failed`` with its metrics and resolved config."""
        with self.engine.begin() as connection:
            connection.execute(
                models.update()
                .where(models.c.id == model_id)
                .values(status=status, metrics=metrics, config=config, finished_at=utc_now())
            )

    def get_model(self, model_id: int) -> ModelRecord:
        """The model ``model_id``; raises `NotFoundError`."""
        with self.engine.connect() as connection:
            row = connection.execute(select(models).where(models.c.id == model_id)).first()
        if row is None:
            msg = f"no model {model_id} in {self.root} (see `segloop status`)"
            raise NotFoundError(msg)
        return _model_record(row)

    def list_models(self) -> list[ModelRecord]:
        """All models, oldest first."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(models).order_by(models.c.id)).all()
        return [_model_record(row) for row in rows]

    def find_latest_model(self, status: str = "done") -> ModelRecord | None:
        """The newest model with ``status``, or None."""
        candidates = [m for m in self.list_models() if m.status == status]
        return candidates[-1] if candidates else None

    def add_prediction(
        self,
        case_id: str,
        *,
        model_id: int,
        label_version_id: int,
        uncertainty: str,
        mean_entropy: float,
        params: dict[str, Any],
    ) -> PredictionRecord:
        """Record a prediction (its pseudo version and uncertainty file exist already)."""
        case = self.get_case(case_id)
        with self.engine.begin() as connection:
            connection.execute(
                predictions.insert().values(
                    case_pk=case.pk,
                    model_id=model_id,
                    label_version_id=label_version_id,
                    uncertainty=uncertainty,
                    mean_entropy=mean_entropy,
                    params=params,
                    created_at=utc_now(),
                )
            )
        return self.list_predictions(case_id)[-1]

    def list_predictions(self, case_id: str | None = None) -> list[PredictionRecord]:
        """Predictions (of one case, or all), oldest first."""
        query = select(predictions, cases.c.case_id).join(cases, predictions.c.case_pk == cases.c.id)
        if case_id is not None:
            query = query.where(cases.c.case_id == case_id)
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(predictions.c.id)).all()
        return [
            PredictionRecord(
                r.id,
                r.case_id,
                r.model_id,
                r.label_version_id,
                r.uncertainty,
                float(r.mean_entropy),
                dict(r.params),
                r.created_at,
            )
            for r in rows
        ]

    # -- events ------------------------------------------------------------------------------

    def log_event(self, kind: str, actor: str, detail: dict[str, Any]) -> None:
        """Append to the project's journal."""
        with self.engine.begin() as connection:
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
        return [EventRecord(r.id, r.at, r.kind, r.actor, dict(r.detail)) for r in rows]

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
        with self.engine.begin() as connection:
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
        return [
            EvaluationRecord(
                r.id,
                r.model_id,
                r.case_id,
                tuple(r.reference_version_ids),
                dict(r.metrics),
                r.round,
                r.created_at,
            )
            for r in rows
        ]

    def start_round(self, number: int, *, mode: str) -> RoundRecord:
        """Record that round ``number`` starts now (``running``); `ConflictError` if it exists."""
        try:
            with self.engine.begin() as connection:
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
        with self.engine.begin() as connection:
            connection.execute(
                rounds.update()
                .where(rounds.c.number == number)
                .values(stages={**current.stages, stage: result})
            )
        return self.get_round(number)

    def finish_round(self, number: int, summary: dict[str, Any]) -> RoundRecord:
        """Mark a round ``done`` with its summary."""
        with self.engine.begin() as connection:
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
        return [
            RoundRecord(
                r.number, r.mode, r.status, r.started_at, r.finished_at, dict(r.stages), dict(r.summary)
            )
            for r in rows
        ]


def _database_url(root: Path, config: ProjectConfig) -> str:
    return config.database_url or f"sqlite:///{(root / DATABASE_NAME).resolve()}"


def _case_record(row: Row, images: Sequence[Row]) -> CaseRecord:
    return CaseRecord(
        pk=row.id,
        case_id=row.case_id,
        shape=tuple(row.shape),
        affine=np.asarray(row.affine),
        dtype=row.dtype,
        images=tuple(ImageRecord(i.channel, i.path, i.size_bytes, i.sha256, i.copied) for i in images),
        added_at=row.added_at,
        added_by=row.added_by,
    )


def _label_record(row: Row) -> LabelVersionRecord:
    return LabelVersionRecord(
        id=row.id,
        case_id=row.case_id,
        object_key=row.object_key,
        source=row.source,
        classes=tuple(row.classes),
        voxel_counts=dict(row.voxel_counts),
        author=row.author,
        tool=row.tool,
        params=dict(row.params),
        parent_id=row.parent_id,
        round=row.round,
        created_at=row.created_at,
    )


def _model_record(row: Row) -> ModelRecord:
    return ModelRecord(
        id=row.id,
        created_at=row.created_at,
        finished_at=row.finished_at,
        author=row.author,
        mode=row.mode,
        parent_id=row.parent_id,
        status=row.status,
        checkpoint=row.checkpoint,
        config=dict(row.config),
        label_version_ids=tuple(row.label_version_ids),
        train_case_ids=tuple(row.train_case_ids),
        val_case_ids=tuple(row.val_case_ids),
        metrics=dict(row.metrics),
        round=row.round,
    )
