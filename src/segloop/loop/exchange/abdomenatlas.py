"""The AbdomenAtlas layout (seed 002)."""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Sequence
from pathlib import Path

from segloop.core.provenance import Source
from segloop.exchange import abdomenatlas
from segloop.exchange.values import schema_values_of_names
from segloop.io.atomic import atomic_directory
from segloop.loop.exchange.common import (
    DEFAULT_SOURCES,
    ExportReport,
    ImportBatch,
    ImportReport,
    classes_of_mapping,
    effective_labels,
    file_params,
    newest_labels,
    output_path,
    read_channels,
    read_labels_on_grid,
    run_import,
    select_cases,
    sources_record,
    without_ignore,
)
from segloop.loop.imports import hash_path
from segloop.store import Project

__all__ = ["PROVENANCE_JSON", "export_abdomenatlas", "import_abdomenatlas"]

#: segloop's record of what an export holds (the layout itself has no place for it).
PROVENANCE_JSON = "provenance.json"


def export_abdomenatlas(
    project: Project,
    out_dir: Path,
    *,
    case_ids: Sequence[str] | None = None,
    sources: Collection[str] = DEFAULT_SOURCES,
    overwrite: bool = False,
) -> ExportReport:
    """Write the AbdomenAtlas layout: per case ``ct.nii.gz``, ``original_label.nii.gz`` (original
    versions), ``pseudo_label.nii.gz`` (the newest pseudo version, only when ``pseudo`` is among
    ``sources``), ``segmentations/<class>.nii.gz`` (the effective label of ``sources``' versions,
    every class some version decides), ``labels.json`` naming values and ``provenance.json``
    (the sources and, per case, the versions used). *Ignore* is written as background: the
    layout has no ignore label.
    """
    started = time.perf_counter()
    schema = project.config.schema
    cases = select_cases(project, case_ids)
    provenance = {}
    with atomic_directory(Path(out_dir), overwrite=overwrite) as temporary:
        for case in cases:
            original = effective_labels(project, case, {Source.ORIGINAL} & set(sources))
            pseudo = newest_labels(project, case, Source.PSEUDO) if Source.PSEUDO in sources else None
            effective = effective_labels(project, case, sources)
            masks = {}
            if effective is not None:
                masks = {schema.name_of(v): effective.labels == v for v in sorted(effective.class_sources)}
            abdomenatlas.write_atlas_case(
                output_path(temporary, case.case_id),
                read_channels(project, case)[0],
                original_label=None
                if original is None
                else without_ignore(original.labels, schema.ignore_index),
                pseudo_label=None if pseudo is None else without_ignore(pseudo, schema.ignore_index),
                masks=masks,
            )
            provenance[case.case_id] = sources_record(project, case, sources)
        names = {str(c.index): c.name for c in schema.classes}
        (temporary / abdomenatlas.LABEL_NAMES_JSON).write_text(json.dumps(names, indent=2), encoding="utf-8")
        document = {"sources": sorted(str(s) for s in sources), "cases": provenance}
        (temporary / PROVENANCE_JSON).write_text(json.dumps(document, indent=2), encoding="utf-8")
    return ExportReport(Path(out_dir), [c.case_id for c in cases], {}, time.perf_counter() - started)


def import_abdomenatlas(
    project: Project, root: Path, *, author: str, segmentations_source: str = "revised"
) -> ImportReport:
    """Add AbdomenAtlas case folders: new cases from ``ct.nii.gz`` (existing ones get versions).

    ``original_label`` becomes an ``original`` version of the classes it holds, ``pseudo_label`` a
    ``pseudo`` version of every class, ``segmentations/*`` one ``segmentations_source`` version of
    the classes it has masks for (file names must be class names of the schema).
    """
    root = Path(root)
    cases = abdomenatlas.list_atlas_cases(root)
    names = abdomenatlas.read_label_names(root)
    mapping = None
    if names is not None:
        mapping = schema_values_of_names({"background": 0, **names}, project.config.schema)
    schema = project.config.schema

    def fill(batch: ImportBatch, report: ImportReport) -> None:
        for atlas_case in cases:
            if atlas_case.case_id not in batch.known:
                batch.add_case(atlas_case.case_id, [atlas_case.ct])
            shape, affine = batch.grid_of(atlas_case.case_id)
            if atlas_case.original_label is not None:
                labels = read_labels_on_grid(atlas_case.original_label, project, shape, affine, mapping)
                present = tuple(c.name for c in schema.classes if (labels == c.index).any())
                if present:
                    batch.add_label(
                        atlas_case.case_id,
                        labels,
                        source="original",
                        classes=present,
                        tool="abdomenatlas",
                        params=file_params(atlas_case.original_label),
                    )
            if atlas_case.pseudo_label is not None:
                labels = read_labels_on_grid(atlas_case.pseudo_label, project, shape, affine, mapping)
                batch.add_label(
                    atlas_case.case_id,
                    labels,
                    source="pseudo",
                    classes=classes_of_mapping(mapping, project),
                    tool="abdomenatlas",
                    params=file_params(atlas_case.pseudo_label),
                )
            if atlas_case.segmentations:
                labels, classes = abdomenatlas.read_segmentations(atlas_case, schema, shape, affine)
                folder = atlas_case.ct.parent / abdomenatlas.SEGMENTATIONS_DIR
                batch.add_label(
                    atlas_case.case_id,
                    labels,
                    source=segmentations_source,
                    classes=classes,
                    tool="abdomenatlas",
                    params={"folder": str(folder.resolve()), "sha256": hash_path(folder)[0]},
                )

    return run_import(project, author, "abdomenatlas", fill)
