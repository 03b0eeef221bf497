"""Shared by the exchange use cases: reports, reading a case's images and labels, and the
all-or-nothing import batch (`ImportBatch`, `run_import`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segloop.core.geometry import check_same_grid
from segloop.core.volume import Volume
from segloop.errors import (
    ConflictError,
    NotFoundError,
    SegloopError,
)
from segloop.io import read_volume
from segloop.loop.cases import hash_path, read_mapped_labels
from segloop.loop.labels import compute_effective_label, count_voxels, read_schema_labels
from segloop.store import SOURCES, CaseRecord, ImageRecord, LabelVersionRecord, NewCase, NewLabel, Project
from segloop.store.objects import StagedObjects

HUMAN_SOURCES = ("original", "revised")


@dataclass
class ExportReport:
    """What an export wrote."""

    path: Path
    cases: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class ImportReport:
    """What an import added (new cases and label versions) and what it left out."""

    added_cases: list[str] = field(default_factory=list)
    versions: list[LabelVersionRecord] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


# --------------------------------------------------------------------------------------- helpers


def read_channels(case: CaseRecord) -> list[Volume]:
    """Every image channel of a case on its recorded grid (a multi-channel file gives several)."""
    channels = []
    for image in case.images:
        path = Path(image.path)
        if not path.exists():
            msg = f"image of case {case.case_id!r} is missing: expected {path} (moved? add it again)"
            raise NotFoundError(msg)
        volume = read_volume(path)
        check_same_grid(case.shape, case.affine, volume.spatial_shape, volume.affine, what=f"image {path}")
        arrays = [volume.array] if volume.array.ndim == 3 else list(volume.array)
        channels.extend(Volume(array, case.affine) for array in arrays)
    return channels


def effective_labels(project: Project, case: CaseRecord, sources: Sequence[str] | None = None) -> Any:
    """The assembly of a case's versions (of ``sources`` only, when given), or None."""
    versions = project.list_label_versions(case.case_id)
    if sources is not None:
        versions = [v for v in versions if v.source in sources]
    return compute_effective_label(project, case, versions) if versions else None


def newest_labels(project: Project, case: CaseRecord, source: str) -> np.ndarray | None:
    versions = [v for v in project.list_label_versions(case.case_id) if v.source == source]
    return project.read_labels(versions[-1]) if versions else None


def without_ignore(labels: np.ndarray, ignore_index: int) -> np.ndarray:
    """Labels for tools without an ignore label: ignore becomes background."""
    return np.where(labels == ignore_index, 0, labels).astype(labels.dtype)


def select_cases(project: Project, case_ids: Sequence[str] | None) -> list[CaseRecord]:
    if case_ids is None:
        return project.list_cases()
    return [project.get_case(case_id) for case_id in case_ids]


def read_labels_on_grid(
    path: Path,
    project: Project,
    shape: Sequence[int],
    affine: np.ndarray,
    mapping: Mapping[int, int] | None,
) -> np.ndarray:
    """A label file on a case's grid in schema values (through ``mapping`` when the file has its own)."""
    schema = project.config.schema
    if mapping is None:
        return read_schema_labels(path, schema, shape, affine)[0]
    return read_mapped_labels(path, schema, shape, affine, mapping)


def classes_of_mapping(mapping: Mapping[int, int] | None, project: Project) -> tuple[str, ...]:
    """Class names a value map covers (all classes when there is none)."""
    schema = project.config.schema
    if mapping is None:
        return schema.names
    values = set(mapping.values())
    return tuple(c.name for c in schema.classes if c.index in values)


def file_params(path: Path, **extra: Any) -> dict[str, Any]:
    return {"file": str(path.resolve()), "sha256": hash_path(path)[0], **extra}


class ImportBatch:
    """New cases and label versions of one import: staged while reading, added at the end."""

    def __init__(self, project: Project, staged: StagedObjects, author: str) -> None:
        self.project = project
        self.staged = staged
        self.author = author
        self.known = set(project.list_case_ids())
        self.new_cases: dict[str, NewCase] = {}
        self.labels: list[tuple[str, NewLabel]] = []
        self.grids: dict[str, tuple[tuple[int, int, int], np.ndarray]] = {}

    def grid_of(self, case_id: str) -> tuple[tuple[int, int, int], np.ndarray]:
        """Shape and affine of an existing or newly read case."""
        if case_id not in self.grids:
            case = self.project.get_case(case_id)
            self.grids[case_id] = (tuple(case.shape), case.affine)  # type: ignore[assignment]
        return self.grids[case_id]

    def add_case(self, case_id: str, image_path: Path) -> None:
        """Read a new case's image (one channel) to record its grid."""
        if case_id in self.known or case_id in self.new_cases:
            msg = f"case {case_id!r} is already in the project (or twice in the input): nothing was added"
            raise ConflictError(msg)
        volume = read_volume(image_path)
        if volume.array.ndim != 3:
            msg = f"{image_path}: expected a 3D image (I, J, K); got shape {volume.array.shape}"
            raise SegloopError(msg)
        digest, size = hash_path(image_path)
        self.new_cases[case_id] = NewCase(
            case_id,
            volume.spatial_shape,
            volume.affine,
            str(volume.array.dtype),
            (ImageRecord(0, str(image_path.resolve()), size, digest),),
            self.author,
        )
        self.grids[case_id] = (volume.spatial_shape, volume.affine)

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
        """Stage a label version of ``case_id`` (schema values on its grid)."""
        if source not in SOURCES:
            msg = f"unknown label source {source!r}: expected one of {', '.join(SOURCES)}"
            raise SegloopError(msg)
        schema = self.project.config.schema
        _, affine = self.grid_of(case_id)
        labels = labels.astype(schema.dtype, copy=False)
        key = self.staged.put(labels, affine)
        counts = count_voxels(labels, schema)
        self.labels.append(
            (case_id, NewLabel(key, source, tuple(classes), counts, self.author, tool, params))
        )

    def commit(self, report: ImportReport) -> None:
        """Add the new cases (each with its first label) and then the other versions."""
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
                later.append((case_id, label))
        if self.new_cases:
            cases = [
                NewCase(c.case_id, c.shape, c.affine, c.dtype, c.images, c.added_by, first.get(c.case_id))
                for c in self.new_cases.values()
            ]
            self.project.add_cases(cases)
            report.added_cases = list(self.new_cases)
            for case_id in first:
                report.versions.extend(self.project.list_label_versions(case_id))
        for case_id, label in later:
            report.versions.append(self.project.add_label_version(case_id, label))


def run_import(
    project: Project, author: str, kind: str, fill: Callable[[ImportBatch, ImportReport], None]
) -> ImportReport:
    started = time.perf_counter()
    report = ImportReport()
    with project.objects.stage() as staged:
        batch = ImportBatch(project, staged, author)
        fill(batch, report)
    batch.commit(report)
    report.seconds = time.perf_counter() - started
    project.log_event(
        f"exchange-import:{kind}",
        author,
        {"cases": report.added_cases, "versions": [v.id for v in report.versions], "notes": report.notes},
    )
    return report
