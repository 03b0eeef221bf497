"""2D image folders (seed 004): PNG/TIFF images and label images."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np

from segloop.errors import ConflictError, InvalidInputError, NotFoundError
from segloop.exchange import image_folder
from segloop.exchange.values import invert_value_map, remap_labels
from segloop.io import write_volume
from segloop.io.atomic import atomic_directory
from segloop.loop.cases import import_cases
from segloop.loop.exchange.common import (
    DEFAULT_SOURCES,
    ExportReport,
    ImportReport,
    classes_of_mapping,
    effective_labels,
    output_path,
    select_cases,
)
from segloop.store import Project

__all__ = ["export_image_folder", "import_image_folder"]


def import_image_folder(
    project: Project,
    images: Sequence[Path],
    *,
    labels_dir: Path | None = None,
    value_map: Mapping[int, int] | None = None,
    source: str = "original",
    classes: Sequence[str] | None = None,
    copy: bool = False,
    author: str,
) -> ImportReport:
    """Add 2D images (files, or a folder of them) with label images of the same names.

    Args:
        project: the open project.
        images: image files, or one folder holding them.
        labels_dir: folder of label images named like the images.
        value_map: ``{file value: schema value}`` (see `segloop.exchange.values.parse_value_map`),
            e.g. 255 -> nucleus, or a sparse paint's 0 -> ignore.
        source: provenance of the labels (``sparse`` for paint where 0 means "not painted").
        classes: classes the labels annotate (default: those the value map names, else all).
        copy: copy the images into the project.
        author: who imports.
    """
    paths = [Path(p) for p in images]
    if len(paths) == 1 and paths[0].is_dir():
        suffixes = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
        paths = sorted(p for p in paths[0].iterdir() if p.is_file() and p.name.lower().endswith(suffixes))
        if not paths:
            msg = f"{images[0]} holds no PNG, TIFF or JPEG image"
            raise NotFoundError(msg)
    declared = classes or (classes_of_mapping(value_map, project) if value_map is not None else None)
    return import_cases(
        project,
        paths,
        labels_dir=labels_dir,
        source=source,
        classes=declared,
        copy=copy,
        label_values=value_map,
        author=author,
    )


def export_image_folder(
    project: Project,
    out_dir: Path,
    *,
    value_map: Mapping[int, int] | None = None,
    sources: Collection[str] = DEFAULT_SOURCES,
    case_ids: Sequence[str] | None = None,
    overwrite: bool = False,
) -> ExportReport:
    """Write each case's label as a label image named like its image, in the image's format.

    Args:
        project: the open project.
        out_dir: the folder to create.
        value_map: ``{file value: schema value}`` used backwards (255=nucleus writes nucleus as
            255); unmapped background and *ignore* become 0.
        sources: the label sources whose versions make the written label (default: labels
            people made; ``{"pseudo"}``: the newest predictions); cases without one are left out.
        case_ids: the cases (default: all with a label).
        overwrite: replace an existing ``out_dir``.
    """
    started = time.perf_counter()
    schema = project.config.schema
    to_file = {0: 0, schema.ignore_index: 0, **{c.index: c.index for c in schema.classes}}
    if value_map is not None:
        inverse = invert_value_map(value_map)
        unnamed = [c.name for c in schema.classes if c.index not in inverse]
        if unnamed:
            msg = f"the value map names no file value for {', '.join(unnamed)}: add e.g. {unnamed[0]}=<value>"
            raise InvalidInputError(msg)
        to_file = {0: 0, schema.ignore_index: 0, **inverse}
    written = []
    with atomic_directory(Path(out_dir), overwrite=overwrite) as temporary:
        for case in select_cases(project, case_ids):
            assembly = effective_labels(project, case, sources)
            if assembly is None:
                continue
            name = image_folder.label_file_name(Path(case.images[0].path).name)
            values = remap_labels(assembly.labels, to_file, dtype=np.uint16, what=f"labels of {case.case_id}")
            volume = image_folder.label_image(values, case.affine, max_value=max(to_file.values()))
            if name in {p.name for p in temporary.iterdir()}:
                msg = f"two cases would write {name}: images of the same name from different folders"
                raise ConflictError(msg)
            write_volume(volume, output_path(temporary, name))
            written.append(case.case_id)
    return ExportReport(Path(out_dir), written, {}, time.perf_counter() - started)
