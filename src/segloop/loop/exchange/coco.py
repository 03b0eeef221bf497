"""COCO 2D slices (seed 000's dataset_generate) and COCO results back to 3D pseudo labels."""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from segloop.core.geometry import spacing_from_affine
from segloop.errors import CorruptFileError, InvalidInputError, NotFoundError, TooLargeError
from segloop.exchange import coco
from segloop.io.atomic import atomic_directory
from segloop.loop.exchange.common import (
    DEFAULT_SOURCES,
    ExportReport,
    ImportBatch,
    ImportReport,
    effective_labels,
    file_params,
    read_channels,
    run_import,
    select_cases,
)
from segloop.store import Project

__all__ = ["LONG_SIDE_RANGE", "MAX_JSON_BYTES", "export_coco_slices", "import_coco_results"]

#: Largest COCO file read (JSON expands about tenfold in memory when parsed).
MAX_JSON_BYTES = 1 << 30
#: Pixels of a slice image's longer side: at least a thumbnail, at most 16 times the default.
LONG_SIDE_RANGE = (16, 8192)


def export_coco_slices(
    project: Project,
    out_dir: Path,
    *,
    plane: str = "axial",
    window: tuple[float, float] = coco.DEFAULT_WINDOW,
    long_side: int = coco.LONG_SIDE_PIXELS,
    all_slices: bool = False,
    split_thirds: Sequence[str] = (),
    case_ids: Sequence[str] | None = None,
    sources: Collection[str] = DEFAULT_SOURCES,
    overwrite: bool = False,
) -> ExportReport:
    """Write slices of the cases as JPGs with a COCO instance file (see `segloop.exchange.coco`).

    Cases labelled by versions of ``sources`` (default: labels people made) give the slices that
    hold a class (every slice with ``all_slices``); the other cases give every slice with
    ``all_slices`` (for a 2D network to predict) and nothing otherwise. ``window`` is
    ``(width, level)`` in the stored units (OpenKBP stores HU + 1024: level 1044). The settings
    in the COCO file record the sources.
    """
    started = time.perf_counter()
    low, high = LONG_SIDE_RANGE
    if not low <= long_side <= high:
        msg = f"the slice images' longer side must be {low}..{high} pixels; got {long_side}"
        raise InvalidInputError(msg)
    schema = project.config.schema
    categories = coco.make_categories({c.index: c.name for c in schema.classes}, split_thirds)
    colors = {c.index: c.color for c in schema.classes}
    entries: list[tuple[dict, list[dict]]] = []
    exported = []
    with atomic_directory(Path(out_dir), overwrite=overwrite) as temporary:
        for case in select_cases(project, case_ids):
            assembly = effective_labels(project, case, sources)
            if assembly is None and not all_slices:
                continue
            slices = coco.make_case_slices(
                read_channels(project, case)[0].array,
                None if assembly is None else assembly.labels,
                case.affine,
                case_id=case.case_id,
                categories=categories,
                colors=colors,
                ignore_value=schema.ignore_index,
                plane=plane,
                window=window,
                long_side=long_side,
                all_slices=all_slices,
            )
            coco.write_slice_images(temporary, slices)
            entries.extend((s.entry, s.annotations) for s in slices)
            if slices:
                exported.append(case.case_id)
        settings = {
            "project": project.config.name,
            "plane": plane,
            "window": list(window),
            "long_side": long_side,
            "all_slices": all_slices,
            "split_thirds": list(split_thirds),
            "sources": sorted(str(s) for s in sources),
        }
        document = coco.make_document(
            entries, categories, description=f"{project.config.name}: {plane} slices", settings=settings
        )
        coco.write_document(temporary, document)
    return ExportReport(
        Path(out_dir),
        exported,
        {"images": len(document["images"]), "annotations": len(document["annotations"])},
        time.perf_counter() - started,
    )


def import_coco_results(
    project: Project,
    results_path: Path,
    *,
    dataset_path: Path | None = None,
    score_threshold: float = 0.3,
    close_mm: float = 2.0,
    open_mm: float = 2.0,
    keep_largest: bool = True,
    author: str,
) -> ImportReport:
    """COCO results on exported slices -> a 3D label map per case -> post-processing -> ``pseudo``.

    Args:
        project: the open project.
        results_path: a COCO results list (``[{"image_id", "category_id", "segmentation",
            "score"}]``) or a full COCO file on the exported images.
        dataset_path: the exported ``annotations/instances.json`` (image provenance); not needed
            when ``results_path`` is a full COCO file segloop exported.
        score_threshold: results scoring below are dropped (seed 000's ``ct_score`` 0.3).
        close_mm: closing radius (0: none); seed 000's post-processing is close, open, largest.
        open_mm: opening radius (0: none).
        keep_largest: keep the largest connected piece of each class.
        author: who imports.
    """
    results_path = Path(results_path)
    results = _read_json(results_path)
    if dataset_path is None:
        if not (isinstance(results, dict) and "images" in results):
            msg = (
                f"{results_path} is a COCO results list: expected also the exported"
                " annotations/instances.json that holds the images' provenance"
            )
            raise InvalidInputError(msg)
        dataset, dataset_path = results, results_path
    else:
        dataset = _read_json(Path(dataset_path))
    case_shapes = {case.case_id: case.shape for case in project.list_cases()}
    images, categories = coco.read_slice_provenance(dataset, str(dataset_path), case_shapes)
    schema = project.config.schema
    class_values = {category_id: schema.index_of(name) for category_id, name in categories.items()}
    detections = coco.read_detections(results, images, categories, str(results_path))
    volumes = coco.rasterize_detections(
        detections, images, class_values, score_threshold=score_threshold, dtype=schema.dtype
    )
    classes = tuple(c.name for c in schema.classes if c.index in set(class_values.values()))
    from segloop.segment.morphology import postprocess_labels

    def fill(batch: ImportBatch, report: ImportReport) -> None:
        for case_id, labels in volumes.items():
            _, affine = batch.grid_of(case_id)
            spacing = spacing_from_affine(affine)
            cleaned = postprocess_labels(
                labels, spacing_mm=spacing, close_mm=close_mm, open_mm=open_mm, keep_largest=keep_largest
            )
            params = file_params(
                results_path,
                dataset=str(Path(dataset_path).resolve()),
                score_threshold=score_threshold,
                close_mm=close_mm,
                open_mm=open_mm,
                keep_largest=keep_largest,
            )
            batch.add_label(
                case_id, cleaned, source="pseudo", classes=classes, tool="coco-results", params=params
            )
        cases_seen = {images[d.image_id].case_id for d in detections}
        for case_id in sorted(cases_seen - set(volumes)):
            report.notes.append(f"{case_id}: no result at or above score {score_threshold}")

    return run_import(project, author, "coco-results", fill)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        msg = f"{path} does not exist"
        raise NotFoundError(msg)
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        msg = f"{path} holds {size} bytes: expected a COCO file of at most {MAX_JSON_BYTES} bytes"
        raise TooLargeError(msg)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        msg = f"{path}: not valid JSON ({error})"
        raise CorruptFileError(msg) from error
