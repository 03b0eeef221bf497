"""A MONAI Label datastore (labels/final -> revised, labels/original -> pseudo), and the labels
MONAI Label's clients send (3D Slicer's module: a label map and its ``label_info``).

A label file with a ``label_info`` holds the values its entries name by their order
(`segloop.exchange.monailabel.label_info_names`); one without holds schema values; a Slicer
``.seg.nrrd`` is read by segment name. The datastore import and the server's
``PUT /datastore/label`` read them with the one function `read_monailabel_label`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from segloop.core.labels import BACKGROUND_NAME, IGNORE_NAME, LabelSchema
from segloop.core.provenance import Source
from segloop.errors import InvalidInputError, SegloopError, UnknownClassError
from segloop.exchange import monailabel
from segloop.exchange.values import schema_value_of
from segloop.io import write_volume
from segloop.io.atomic import atomic_directory
from segloop.loop.cases import read_mapped_labels
from segloop.loop.exchange.common import (
    DEFAULT_SOURCES,
    ExportReport,
    ImportBatch,
    ImportReport,
    effective_labels,
    file_params,
    newest_labels,
    output_path,
    read_channels,
    run_import,
    select_cases,
    sources_record,
    without_ignore,
)
from segloop.loop.labels import read_schema_labels
from segloop.store import CaseRecord, Project

__all__ = [
    "export_monailabel",
    "import_monailabel",
    "read_monailabel_label",
    "read_uploaded_label",
    "segment_value_map",
]


def segment_value_map(names: Mapping[int, str], schema: LabelSchema) -> dict[int, int]:
    """``{value in the file: schema value}`` of a label's segment names by value.

    Args:
        names: ``{value: segment name}`` (`segloop.exchange.monailabel.label_info_names`); a name
            is a class, ``ignore`` or ``background``.
        schema: the project's classes.

    Raises:
        UnknownClassError: a name that is none of these (the message names the classes).
    """
    known = {*schema.names, IGNORE_NAME, BACKGROUND_NAME}
    unknown = [name for name in names.values() if name not in known]
    if unknown:
        msg = (
            f"segment {unknown[0][:60]!r} is not a class of this project: expected"
            f" {', '.join(schema.names)} or {IGNORE_NAME}; rename or delete it"
        )
        raise UnknownClassError(msg)
    return {value: schema_value_of(name, schema) for value, name in names.items()}


def read_monailabel_label(
    path: Path,
    schema: LabelSchema,
    shape: Sequence[int],
    affine: np.ndarray,
    names: Mapping[int, str] | None,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """A label file of MONAI Label's clients or datastore, in schema values on a case's grid.

    Args:
        path: the file: a ``.seg.nrrd`` (read by segment name, ``names`` unused), or a label map
            holding the values ``names`` gives, or schema values when ``names`` is None.
        schema: the project's classes.
        shape: the case's ``(I, J, K)``.
        affine: the case's ``(4, 4)`` affine.
        names: ``{value: segment name}`` from the label's ``label_info``, or None.

    Returns:
        ``(labels, classes)``: the ``(I, J, K)`` array in ``schema.dtype`` and the classes it
        annotates (those of its segments; every class for a label map without names).

    Raises:
        UnknownClassError: a segment whose name is not a class, ``ignore`` or ``background``.
        GeometryMismatchError: another grid than the case's.
        LabelValueError: a value no segment (or class) has.
    """
    if path.name.lower().endswith(".seg.nrrd") or names is None:
        labels, segments = read_schema_labels(path, schema, shape, affine)
        present = schema.names if segments is None else segments
    else:
        labels = read_mapped_labels(path, schema, shape, affine, segment_value_map(names, schema))
        present = tuple(names.values())
    return labels, tuple(name for name in schema.names if name in present)


def read_uploaded_label(
    project: Project, case: CaseRecord, file_name: str | None, stream: IO[bytes], label_info: Any
) -> tuple[np.ndarray, tuple[str, ...]]:
    """A label a MONAI Label client uploads for a case (`read_monailabel_label`).

    Args:
        project: the open project.
        case: the case it labels.
        file_name: the upload's file name (its suffix says the format: `monailabel.LABEL_EXTENSIONS`).
        stream: the upload's bytes.
        label_info: the request's ``params.label_info`` (Slicer's segments), or None.

    Returns:
        ``(labels, classes)`` as `read_monailabel_label` gives them.

    Raises:
        InvalidInputError: another file type, a malformed ``label_info``, another grid, values or
            segments outside the schema (the message names the case, not a temporary file).
    """
    where = f"uploaded label of case {case.case_id!r}"
    names = monailabel.label_info_names(label_info, where)
    lowered = (file_name or "").lower()
    suffix = next((s for s in monailabel.LABEL_EXTENSIONS if lowered.endswith(s)), None)
    if suffix is None:
        shown = Path(file_name or "").name[:80]
        msg = f"{where}: file {shown!r} is not a {', '.join(monailabel.LABEL_EXTENSIONS)} file"
        raise InvalidInputError(msg)
    schema = project.config.schema
    with tempfile.TemporaryDirectory(prefix="segloop-monailabel-") as folder:
        path = Path(folder) / f"label{suffix}"
        with open(path, "wb") as out:
            shutil.copyfileobj(stream, out)
        try:
            return read_monailabel_label(path, schema, case.shape, case.affine, names)
        except SegloopError as error:  # the message names the upload, not the temporary file
            text = str(error).replace(f"label {path} ", "").replace(f"{path}: ", "").replace(str(path), "it")
            raise type(error)(f"{where}: {text}") from None


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
    ``labels/original`` -> ``pseudo`` (values named by ``label_info`` when given, by the order of
    its entries: `read_monailabel_label`). Other tags are reported and left out.
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
                names = item.segment_names.get(tag)
                labels, classes = read_monailabel_label(path, schema, shape, affine, names)
                batch.add_label(
                    item.image_id,
                    labels,
                    source=tag_sources[tag],
                    classes=classes,
                    tool=f"monailabel:{tag}",
                    params=file_params(path),
                )

    return run_import(project, author, "monailabel", fill)
