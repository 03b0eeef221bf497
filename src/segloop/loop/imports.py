"""The one import pipeline of `segloop add` and every exchange import: all or nothing.

A batch reads and checks every image and label before the project changes: case ids are
validated where they enter, images must be 3D grids of finite scalar voxels, labels must hold
schema values on their case's grid. Label files are staged in the object store, copies of images
(``copy=True``) in a staging folder under ``images/``; only when the whole input is valid are
they published and every case and version added in one database transaction.

Copied images live in ``images/<sha256>/<file name>`` (the SHA-256 of the image's files), and
the database records that path relative to the project folder, so the project keeps working when
it is moved, renamed or used from another directory. Copies are moved into place before the
database commit and removed again if it fails; a copy left by a killed run has the same name a
retry computes, so the retry simply reuses it.

Example:
    >>> from segloop.loop.imports import run_import
    >>> def fill(batch, report):                                          # doctest: +SKIP
    ...     batch.add_case("ct_1", [Path("ct_1.nii.gz")])
    ...     batch.add_label("ct_1", labels, source="original", classes=("liver",), tool="x", params={})
    >>> report = run_import(project, "ana", "my-format", fill)          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segloop.core.geometry import check_same_grid
from segloop.core.names import validate_case_id
from segloop.core.provenance import parse_source
from segloop.core.volume import Volume
from segloop.errors import ConflictError, GeometryMismatchError, InvalidInputError
from segloop.io import read_volume
from segloop.io.atomic import fsync_path, process_alive
from segloop.io.checks import check_scalar_image
from segloop.loop.labels import count_voxels
from segloop.store import ImageRecord, LabelVersionRecord, NewCase, NewLabel, Project
from segloop.store.integrity import hash_path, image_files, name_below
from segloop.store.objects import StagedObjects

__all__ = [
    "IMAGES_DIR",
    "ImportBatch",
    "ImportReport",
    "file_params",
    "hash_path",
    "run_import",
]

#: Copies of images, inside the project folder.
IMAGES_DIR = "images"
_STAGING_PREFIX = ".staging-"


@dataclass
class ImportReport:
    """What an import added (new cases and label versions) and what it left out.

    Attributes:
        added_cases: ids of the new cases, in input order.
        versions: the label versions stored (of new and existing cases).
        unchanged: case ids whose label equalled a version they have: not added again.
        unmatched_labels: label files that named no image of the input.
        notes: other things left out, one line each.
        seconds: wall time.
    """

    added_cases: list[str] = field(default_factory=list)
    versions: list[LabelVersionRecord] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    unmatched_labels: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def labeled(self) -> list[str]:
        """Case ids that got a label version, in order, each once."""
        return list(dict.fromkeys(v.case_id for v in self.versions))


# ------------------------------------------------------------------------------ image files


@dataclass
class _CopyStage:
    """Image copies staged in ``images/.staging-<pid>-<id>/<sha256>/``; published by `publish`."""

    project_root: Path
    folder: Path
    digests: list[str] = field(default_factory=list)
    published: list[Path] = field(default_factory=list)

    def copy(self, source: Path, sha256: str) -> str:
        """Stage a copy of image ``source`` (all its files) in a folder named by its SHA-256 (of all
        its files: `hash_path`); returns its final path relative to the project."""
        digest = sha256
        base = source if source.is_dir() else source.parent
        target = self.folder / digest / source.name
        if digest not in self.digests:
            for file in image_files(source):
                relative = name_below(file, base)
                destination = target / relative if source.is_dir() else target.parent / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, destination)
                fsync_path(destination)
            self.digests.append(digest)
        return f"{IMAGES_DIR}/{digest}/{source.name}"

    def publish(self) -> None:
        """Move the staged copies into ``images/`` (a copy already there is identical: kept)."""
        for digest in self.digests:
            final = self.folder.parent / digest
            try:
                os.rename(self.folder / digest, final)
            except OSError:
                if not final.is_dir():
                    raise
                continue
            self.published.append(final)
        if self.published:
            fsync_path(self.folder.parent)

    def rollback(self, project: Project) -> None:
        """Remove the published copies that no case of the project references."""
        referenced = {
            Path(image.path).parts[1]
            for case in project.list_cases()
            for image in case.images
            if image.copied and len(Path(image.path).parts) > 2
        }
        for final in self.published:
            if final.name not in referenced:
                shutil.rmtree(final, ignore_errors=True)


def file_params(path: Path, **extra: Any) -> dict[str, Any]:
    """Provenance of a file read into the project: its resolved path, SHA-256 and ``extra``."""
    return {"file": str(Path(path).resolve()), "sha256": hash_path(Path(path))[0], **extra}


def _remove_stale_staging(images_dir: Path) -> None:
    """Remove staging folders of killed runs (their process is gone)."""
    for folder in images_dir.glob(f"{_STAGING_PREFIX}*"):
        pid = folder.name[len(_STAGING_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _stage_copies(project: Project) -> Iterator[_CopyStage]:
    images_dir = project.root / IMAGES_DIR
    images_dir.mkdir(exist_ok=True)
    _remove_stale_staging(images_dir)
    folder = images_dir / f"{_STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    folder.mkdir()
    try:
        yield _CopyStage(project.root, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------------------ the batch


def _check_scalar_image(volume: Volume, path: Path) -> None:
    """A 3D grid of real, finite, scalar voxels."""
    check_scalar_image(volume, f"image {path}")
    if volume.array.ndim != 3:
        msg = f"{path}: expected a 3D image (I, J, K) of scalar voxels; got shape {volume.array.shape}"
        raise InvalidInputError(msg)


class ImportBatch:
    """New cases and label versions of one import: checked and staged while reading, added at the end.

    Args:
        project: the open project.
        staged: the object store's staging area.
        author: who imports.
        copies: where image copies are staged (None: images are referenced in place).
    """

    def __init__(
        self, project: Project, staged: StagedObjects, author: str, copies: _CopyStage | None = None
    ) -> None:
        self.project = project
        self.staged = staged
        self.author = author
        self.copies = copies
        self.known = set(project.list_case_ids())
        self.new_cases: dict[str, NewCase] = {}
        self.labels: list[tuple[str, NewLabel]] = []
        self._grids: dict[str, tuple[tuple[int, int, int], np.ndarray]] = {}

    def grid_of(self, case_id: str) -> tuple[tuple[int, int, int], np.ndarray]:
        """Shape ``(I, J, K)`` and ``(4, 4)`` affine of an existing or newly read case."""
        if case_id not in self._grids:
            case = self.project.get_case(case_id)
            self._grids[case_id] = (tuple(case.shape), case.affine)  # type: ignore[assignment]
        return self._grids[case_id]

    def add_case(self, case_id: str, channels: Sequence[Path]) -> Volume:
        """Read a new case's images (channel 0, 1, ...) and record its grid; returns channel 0.

        Raises:
            InvalidInputError: an unsafe case id, or not a 3D scalar image.
            ConflictError: the case id is in the project or twice in the input.
            GeometryMismatchError: channels on different grids.
        """
        validate_case_id(case_id)
        if case_id in self.known or case_id in self.new_cases:
            msg = f"case {case_id!r} is already in the project (or twice in the input): nothing was added"
            raise ConflictError(msg)
        reference = None
        images = []
        for channel, path in enumerate(Path(p) for p in channels):
            volume = read_volume(path)
            _check_scalar_image(volume, path)
            if reference is None:
                reference = volume
            else:
                check_same_grid(
                    reference.spatial_shape,
                    reference.affine,
                    volume.spatial_shape,
                    volume.affine,
                    what=f"channel {channel} image {path}",
                )
            digest, size = hash_path(path)
            stored = str(path.resolve()) if self.copies is None else self.copies.copy(path, digest)
            images.append(ImageRecord(channel, stored, size, digest, copied=self.copies is not None))
        if reference is None:
            msg = f"case {case_id!r} has no image: expected at least one file"
            raise InvalidInputError(msg)
        self.new_cases[case_id] = NewCase(
            case_id,
            reference.spatial_shape,
            reference.affine,
            str(reference.array.dtype),
            tuple(images),
            self.author,
        )
        self._grids[case_id] = (reference.spatial_shape, reference.affine)
        return reference

    def add_label(
        self,
        case_id: str,
        labels: np.ndarray,
        *,
        source: str,
        classes: Sequence[str],
        tool: str,
        params: dict[str, Any],
    ) -> None:
        """Stage a label version of ``case_id`` (added with the rest of the batch, or not at all).

        Args:
            case_id: a case of the project or of this batch.
            labels: ``(I, J, K)`` schema values (0, 1..N, ignore) on the case's grid.
            source: a `segloop.core.provenance.Source` name.
            classes: the class names the version annotates.
            tool: what made it (recorded).
            params: its provenance (file, SHA-256, options), recorded.

        Raises:
            GeometryMismatchError: ``labels`` is not on the case's grid.
            InvalidInputError: an unknown source or class.
        """
        source = parse_source(str(source)).value
        schema = self.project.config.schema
        shape, affine = self.grid_of(case_id)
        if tuple(labels.shape) != tuple(shape):
            msg = f"label of case {case_id!r} has shape {labels.shape}; the case's grid is {shape}"
            raise GeometryMismatchError(msg)
        schema.indices_of(classes)
        labels = labels.astype(schema.dtype, copy=False)
        key = self.staged.put(labels, affine)
        counts = count_voxels(labels, schema)
        self.labels.append(
            (case_id, NewLabel(key, source, tuple(classes), counts, self.author, tool, params))
        )

    def _split_labels(self, report: ImportReport) -> tuple[dict[str, NewLabel], list[tuple[str, NewLabel]]]:
        """Each new case's first label, and the other versions that are not stored already."""
        existing = {
            (v.case_id, v.object_key, v.source, v.classes) for v in self.project.list_label_versions()
        }
        first: dict[str, NewLabel] = {}
        later = []
        for case_id, label in self.labels:
            if case_id in self.new_cases and case_id not in first:
                first[case_id] = label
            elif (case_id, label.object_key, label.source, label.classes) in existing:
                report.unchanged.append(case_id)
            else:
                existing.add((case_id, label.object_key, label.source, label.classes))
                later.append((case_id, label))
        return first, later

    def commit(self, report: ImportReport) -> None:
        """Publish the image copies and add every case and version in one transaction."""
        first, later = self._split_labels(report)
        cases = [
            NewCase(c.case_id, c.shape, c.affine, c.dtype, c.images, c.added_by, first.get(c.case_id))
            for c in self.new_cases.values()
        ]
        if not cases and not later:
            return
        if self.copies is not None:
            self.copies.publish()
        try:
            if cases:
                self.project.add_cases(cases, later)
            else:
                self.project.add_label_versions(later)
        except BaseException:
            if self.copies is not None:
                self.copies.rollback(self.project)
            raise
        report.added_cases = list(self.new_cases)
        touched = list(dict.fromkeys([*first, *(case_id for case_id, _ in later)]))
        keys = {(case_id, label.object_key, label.source) for case_id, label in [*first.items(), *later]}
        for case_id in touched:
            report.versions.extend(
                v
                for v in self.project.list_label_versions(case_id)
                if (case_id, v.object_key, v.source) in keys
            )


def run_import(
    project: Project,
    author: str,
    kind: str,
    fill: Callable[[ImportBatch, ImportReport], None],
    *,
    copy: bool = False,
    details: dict[str, Any] | None = None,
) -> ImportReport:
    """Run one all-or-nothing import: ``fill`` reads and stages, then everything is added at once.

    Args:
        project: the open project.
        author: who imports.
        kind: the event's name (``add``, ``exchange-import:nnunet``, ...).
        fill: reads the input into the batch (``add_case``, ``add_label``) and notes into the report;
            any error it raises leaves the project as it was.
        copy: copy new cases' images into the project.
        details: more fields of the logged event.

    Returns:
        The report (cases, versions, what was left out, seconds).
    """
    started = time.perf_counter()
    report = ImportReport()
    with contextlib.ExitStack() as stack:
        copies = stack.enter_context(_stage_copies(project)) if copy else None
        with project.objects.stage() as staged:
            batch = ImportBatch(project, staged, author, copies)
            fill(batch, report)
        batch.commit(report)
    report.seconds = time.perf_counter() - started
    project.log_event(
        kind,
        author,
        {
            "cases": report.added_cases,
            "versions": [v.id for v in report.versions],
            "notes": report.notes,
            **(details or {}),
        },
    )
    return report
