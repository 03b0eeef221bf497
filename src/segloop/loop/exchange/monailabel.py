"""A MONAI Label datastore (labels/final -> revised, labels/original -> pseudo)."""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Sequence
from pathlib import Path

from segloop.core.provenance import Source
from segloop.exchange import monailabel
from segloop.exchange.values import schema_values_of_names
from segloop.io import write_volume
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
from segloop.store import Project

__all__ = ["export_monailabel", "import_monailabel"]


def export_monailabel(
    project: Project,
    out_dir: Path,
    *,
    case_ids: Sequence[str] | None = None,
    sources: Collection[str] = DEFAULT_SOURCES,
    overwrite: bool = False,
) -> ExportReport:
    """Write a MONAI Label datastore: ``<case>.nii.gz`` images, ``labels/final`` (the assembly of
    the ``original`` and ``revised`` versions, as far as ``sources`` names them),
    ``labels/original`` (the newest pseudo version, only when ``pseudo`` is among ``sources``) and
    ``datastore_v2.json`` with ``label_info`` and, per final label, the versions it was made of.
    *Ignore* is written as background.
    """
    started = time.perf_counter()
    schema = project.config.schema
    cases = select_cases(project, case_ids)
    human = {s for s in sources if Source(s).is_reference}
    entries: dict[str, dict[str, str]] = {}
    provenance: dict[str, dict[str, dict]] = {}
    extension = ".nii.gz"
    with atomic_directory(Path(out_dir), overwrite=overwrite) as temporary:
        for tag in (monailabel.FINAL_TAG, monailabel.ORIGINAL_TAG):
            (temporary / "labels" / tag).mkdir(parents=True)
        for case in cases:
            name = f"{case.case_id}{extension}"
            image = read_channels(project, case)[0]
            write_volume(image, output_path(temporary, name))
            tags: dict[str, str] = {}
            records: dict[str, dict] = {}
            final = effective_labels(project, case, human)
            if final is not None:
                labels = without_ignore(final.labels, schema.ignore_index)
                write_volume(
                    image.with_array(labels), output_path(temporary, "labels", monailabel.FINAL_TAG, name)
                )
                tags[monailabel.FINAL_TAG] = extension
                records[monailabel.FINAL_TAG] = sources_record(project, case, human)
            pseudo = newest_labels(project, case, Source.PSEUDO) if Source.PSEUDO in sources else None
            if pseudo is not None:
                labels = without_ignore(pseudo, schema.ignore_index)
                path = output_path(temporary, "labels", monailabel.ORIGINAL_TAG, name)
                write_volume(image.with_array(labels), path)
                tags[monailabel.ORIGINAL_TAG] = extension
            entries[case.case_id] = tags
            provenance[case.case_id] = records
        document = monailabel.make_datastore_json(
            entries, schema, name=project.config.name, provenance=provenance
        )
        (temporary / monailabel.DATASTORE_JSON).write_text(json.dumps(document, indent=2), encoding="utf-8")
    return ExportReport(Path(out_dir), [c.case_id for c in cases], {}, time.perf_counter() - started)


def import_monailabel(project: Project, root: Path, *, author: str) -> ImportReport:
    """Add a MONAI Label datastore: new images become cases; ``labels/final`` -> ``revised``,
    ``labels/original`` -> ``pseudo`` (values named by ``label_info`` when given). Other tags are
    reported and left out.
    """
    items = monailabel.list_datastore(Path(root))
    schema = project.config.schema
    tag_sources = {monailabel.FINAL_TAG: "revised", monailabel.ORIGINAL_TAG: "pseudo"}

    def fill(batch: ImportBatch, report: ImportReport) -> None:
        for item in items:
            if item.image_id not in batch.known:
                batch.add_case(item.image_id, [item.image])
            shape, affine = batch.grid_of(item.image_id)
            for tag, path in item.labels.items():
                if tag not in tag_sources:
                    report.notes.append(
                        f"{item.image_id}: label tag {tag!r} left out (final and original only)"
                    )
                    continue
                names = item.label_names.get(tag)
                mapping = None
                if names:
                    mapping = schema_values_of_names({"background": 0, **names}, schema)
                labels = read_labels_on_grid(path, project, shape, affine, mapping)
                batch.add_label(
                    item.image_id,
                    labels,
                    source=tag_sources[tag],
                    classes=classes_of_mapping(mapping, project),
                    tool=f"monailabel:{tag}",
                    params=file_params(path),
                )

    return run_import(project, author, "monailabel", fill)
