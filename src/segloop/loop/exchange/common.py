"""Shared by the exchange use cases: the export report, reading a case's images and labels, and
the one rule for which label sources an export writes. Imports run through
`segloop.loop.imports` (the pipeline `segloop add` uses too)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segloop.core.assembly import Assembly
from segloop.core.names import path_inside
from segloop.core.provenance import HUMAN_SOURCES, Source
from segloop.core.volume import Volume
from segloop.loop.cases import read_mapped_labels
from segloop.loop.imports import ImportBatch, ImportReport, file_params, run_import
from segloop.loop.labels import compute_effective_label, read_schema_labels, select_versions
from segloop.store import CaseRecord, Project

__all__ = [
    "DEFAULT_SOURCES",
    "ExportReport",
    "ImportBatch",
    "ImportReport",
    "classes_of_mapping",
    "effective_labels",
    "file_params",
    "newest_labels",
    "output_path",
    "read_channels",
    "read_labels_on_grid",
    "run_import",
    "select_cases",
    "sources_record",
    "without_ignore",
]

#: What an export writes unless asked otherwise: labels people made (no model predictions).
DEFAULT_SOURCES: frozenset[Source] = HUMAN_SOURCES


@dataclass
class ExportReport:
    """What an export wrote."""

    path: Path
    cases: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def output_path(folder: Path, *parts: str) -> Path:
    """``folder / parts`` for a file an export writes; refuses names that leave ``folder``.

    Case ids are validated when they enter the project; this guards projects made before that.
    """
    return path_inside(folder, *parts)


def read_channels(project: Project, case: CaseRecord) -> list[Volume]:
    """Every image channel of a case, verified by the store (a multi-channel file gives several)."""
    channels = []
    for image in case.images:
        volume = project.read_image(case.case_id, image.channel)
        arrays = [volume.array] if volume.array.ndim == 3 else list(volume.array)
        channels.extend(Volume(array, case.affine) for array in arrays)
    return channels


def effective_labels(project: Project, case: CaseRecord, sources: Collection[str]) -> Assembly | None:
    """The assembly of a case's versions of ``sources``, or None when it has none."""
    versions = select_versions(project.list_label_versions(case.case_id), sources)
    return compute_effective_label(project, case, versions) if versions else None


def sources_record(project: Project, case: CaseRecord, sources: Collection[str]) -> dict[str, Any]:
    """Provenance of what an export wrote for a case: the versions used and their sources."""
    versions = select_versions(project.list_label_versions(case.case_id), sources)
    return {"versions": [v.id for v in versions], "sources": sorted({v.source for v in versions})}


def newest_labels(project: Project, case: CaseRecord, source: str) -> np.ndarray | None:
    """The label array of the case's newest version of ``source``, or None."""
    versions = select_versions(project.list_label_versions(case.case_id), {source})
    return project.read_labels(versions[-1]) if versions else None


def without_ignore(labels: np.ndarray, ignore_index: int) -> np.ndarray:
    """Labels for tools without an ignore label: ignore becomes background."""
    return np.where(labels == ignore_index, 0, labels).astype(labels.dtype)


def select_cases(project: Project, case_ids: Sequence[str] | None) -> list[CaseRecord]:
    """The cases ``case_ids`` (all when None), each checked to exist."""
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
