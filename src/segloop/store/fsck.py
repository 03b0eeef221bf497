"""`check_project`: verify a whole project (what ``segloop fsck`` prints).

Checks, reading every stored file once: the database's own integrity (SQLite ``PRAGMA
integrity_check`` and ``foreign_key_check``); every label object referenced by a version, and
every draft's file (present, and holding the array its key names); files no version or draft
references (orphans) and staging folders a killed write left behind; every case image (present,
and the SHA-256 recorded when it was added, re-hashed whatever the cache says); every prediction
file and finished model's checkpoint (present). Nothing is repaired.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from segloop.core.names import path_inside
from segloop.errors import InvalidInputError, NotFoundError
from segloop.io import read_volume
from segloop.store.integrity import accept_legacy_sha256, current_sha256
from segloop.store.objects import ObjectStore, compute_label_key
from segloop.store.project import Project
from segloop.store.records import CaseRecord, ImageRecord

__all__ = ["FsckProblem", "FsckReport", "check_project"]


@dataclass(frozen=True)
class FsckProblem:
    """One thing wrong with a project.

    Args:
        kind: ``database``, ``missing-object``, ``changed-object``, ``orphan-object``,
            ``leftover``, ``missing-image``, ``changed-image``, ``missing-prediction`` or
            ``missing-checkpoint``.
        subject: the file (or table) concerned.
        detail: what was expected and what was found, one line.
    """

    kind: str
    subject: str
    detail: str


@dataclass(frozen=True)
class FsckReport:
    """What `check_project` checked and found."""

    problems: tuple[FsckProblem, ...]
    objects_checked: int
    images_checked: int
    predictions_checked: int

    @property
    def ok(self) -> bool:
        """Whether nothing is wrong."""
        return not self.problems


def check_project(project: Project, *, on_item: Callable[[str], None] | None = None) -> FsckReport:
    """Verify every stored file and the database of ``project`` (see the module docstring).

    Args:
        project: the open project.
        on_item: called with each file about to be checked (progress).

    Returns:
        The problems found (empty when the project is sound) and how much was checked.
    """
    notify = on_item or (lambda _item: None)
    problems = _check_database(project)
    referenced = sorted({version.object_key for version in project.list_label_versions()})
    drafted = sorted({draft.object_key for draft in project.list_drafts()})
    for store, keys, owner in (
        (project.objects, referenced, "label version"),
        (project.draft_objects, drafted, "draft"),
    ):
        for key in keys:
            notify(str(store.path_of(key)))
            problems.extend(_check_object(store, key, owner))
        for key in sorted(set(store.list_keys()) - set(keys)):
            detail = f"no {owner} references it (left by an interrupted write)"
            problems.append(FsckProblem("orphan-object", str(store.path_of(key)), detail))
        for leftover in sorted(store.root.glob(".staging-*")):
            problems.append(
                FsckProblem("leftover", str(leftover), "a staging folder of an interrupted write")
            )
    images = 0
    for case in project.list_cases():
        for image in case.images:
            images += 1
            notify(image.path)
            problems.extend(_check_image(project, case, image))
    predictions = project.list_predictions()
    for record in predictions:
        if not _inside(project, record.uncertainty).is_file():
            detail = f"prediction of case {record.case_id!r} by model {record.model_id} is missing"
            problems.append(FsckProblem("missing-prediction", record.uncertainty, detail))
    for model in project.list_models():
        if model.status == "done" and not _inside(project, model.checkpoint).is_file():
            detail = f"checkpoint of finished model {model.id} is missing"
            problems.append(FsckProblem("missing-checkpoint", model.checkpoint, detail))
    return FsckReport(tuple(problems), len(referenced) + len(drafted), images, len(predictions))


def _inside(project: Project, relative: str) -> Path:
    try:
        return path_inside(project.root, relative)
    except InvalidInputError:
        return project.root / "\0outside"  # never a file: reported as missing


def _check_database(project: Project) -> list[FsckProblem]:
    if project.engine.dialect.name != "sqlite":
        return []
    subject = project.engine.url.render_as_string(hide_password=True)
    try:
        with project.engine.connect() as connection:
            integrity = [str(row[0]) for row in connection.exec_driver_sql("PRAGMA integrity_check")]
            foreign = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    except SQLAlchemyError as error:
        return [FsckProblem("database", subject, f"cannot be checked ({getattr(error, 'orig', error)})")]
    problems = [FsckProblem("database", subject, line) for line in integrity if line != "ok"]
    problems.extend(
        FsckProblem("database", subject, f"row {row[1]} of {row[0]} names a missing {row[2]} row")
        for row in foreign
    )
    return problems


def _check_object(store: ObjectStore, key: str, owner: str) -> list[FsckProblem]:
    path = store.path_of(key)
    if not path.is_file():
        return [FsckProblem("missing-object", str(path), f"a {owner}'s file is missing")]
    try:
        found = compute_label_key(read_volume(path).array)
    except InvalidInputError as error:
        return [FsckProblem("changed-object", str(path), f"cannot be read ({error})")]
    if found != key:
        return [FsckProblem("changed-object", str(path), f"holds content key {found}, expected {key}")]
    return []


def _check_image(project: Project, case: CaseRecord, image: ImageRecord) -> list[FsckProblem]:
    case_id = case.case_id
    try:
        path = project.image_path(image)
        found = current_sha256(project.engine, path, use_cache=False, remember=not project.read_only)
    except (OSError, NotFoundError, InvalidInputError) as error:
        detail = f"image of case {case_id!r} (channel {image.channel}) is missing ({error})"
        return [FsckProblem("missing-image", image.path, detail)]
    if found != image.sha256 and not accept_legacy_sha256(  # accepted, not rewritten: fsck repairs nothing
        project.engine, case.pk, image.channel, path, recorded=image.sha256, found=found, remember=False
    ):
        detail = f"case {case_id!r}: SHA-256 {found}, recorded {image.sha256}"
        return [FsckProblem("changed-image", str(path), detail)]
    return []
