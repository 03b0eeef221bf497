"""Use cases of `segloop exchange`: a project's cases and labels in other tools' layouts, and back.

Exports write a folder atomically (a temporary sibling renamed at the end: a failed export leaves
nothing). Imports read and check *every* file before the project changes: label files are staged in
the object store and published together, then the rows are added, so bad input (a label on another
grid, values or class names the schema lacks, a COCO result pointing nowhere) leaves the project
as it was. A label version identical to one the case already has (same content, source and
classes) is not added twice, so importing what was exported is harmless.

Provenance: every imported version records the tool, the source file and its SHA-256 and the
parameters (score threshold, post-processing radii, value maps).
"""

from __future__ import annotations

import json
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
    CorruptFileError,
    GeometryMismatchError,
    NotFoundError,
    SegloopError,
    UnsupportedFormatError,
)
from segloop.exchange import abdomenatlas, coco, image_folder, monailabel, nnunet
from segloop.exchange.values import invert_value_map, remap_labels, schema_values_of_names
from segloop.io import read_volume, write_volume
from segloop.io.atomic import atomic_directory
from segloop.loop.cases import hash_path, import_cases, read_mapped_labels
from segloop.loop.labels import compute_effective_label, count_voxels, read_schema_labels
from segloop.store import SOURCES, CaseRecord, ImageRecord, LabelVersionRecord, NewCase, NewLabel, Project
from segloop.store.objects import StagedObjects

__all__ = [
    "EXPORT_FORMATS",
    "IMPORT_FORMATS",
    "ExportReport",
    "ImportReport",
    "export_abdomenatlas",
    "export_coco_slices",
    "export_image_folder",
    "export_monailabel",
    "export_nnunet",
    "import_abdomenatlas",
    "import_coco_results",
    "import_image_folder",
    "import_monailabel",
    "import_nnunet_dataset",
    "import_nnunet_predictions",
]

EXPORT_FORMATS = ("nnunet", "coco-slices", "abdomenatlas", "monailabel", "image-folder")
IMPORT_FORMATS = (
    "nnunet",
    "nnunet-predictions",
    "coco-results",
    "abdomenatlas",
    "monailabel",
    "image-folder",
)
_HUMAN_SOURCES = ("original", "revised")


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


def _read_channels(case: CaseRecord) -> list[Volume]:
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


def _effective_labels(project: Project, case: CaseRecord, sources: Sequence[str] | None = None) -> Any:
    """The assembly of a case's versions (of ``sources`` only, when given), or None."""
    versions = project.list_label_versions(case.case_id)
    if sources is not None:
        versions = [v for v in versions if v.source in sources]
    return compute_effective_label(project, case, versions) if versions else None


def _newest(project: Project, case: CaseRecord, source: str) -> np.ndarray | None:
    versions = [v for v in project.list_label_versions(case.case_id) if v.source == source]
    return project.read_labels(versions[-1]) if versions else None


def _without_ignore(labels: np.ndarray, ignore_index: int) -> np.ndarray:
    """Labels for tools without an ignore label: ignore becomes background."""
    return np.where(labels == ignore_index, 0, labels).astype(labels.dtype)


def _select_cases(project: Project, case_ids: Sequence[str] | None) -> list[CaseRecord]:
    if case_ids is None:
        return project.list_cases()
    return [project.get_case(case_id) for case_id in case_ids]


def _read_labels(
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


def _classes_of_mapping(mapping: Mapping[int, int] | None, project: Project) -> tuple[str, ...]:
    """Class names a value map covers (all classes when there is none)."""
    schema = project.config.schema
    if mapping is None:
        return schema.names
    values = set(mapping.values())
    return tuple(c.name for c in schema.classes if c.index in values)


def _file_params(path: Path, **extra: Any) -> dict[str, Any]:
    return {"file": str(path.resolve()), "sha256": hash_path(path)[0], **extra}


class _Batch:
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


def _run_import(
    project: Project, author: str, kind: str, fill: Callable[[_Batch, ImportReport], None]
) -> ImportReport:
    started = time.perf_counter()
    report = ImportReport()
    with project.objects.stage() as staged:
        batch = _Batch(project, staged, author)
        fill(batch, report)
    batch.commit(report)
    report.seconds = time.perf_counter() - started
    project.log_event(
        f"exchange-import:{kind}",
        author,
        {"cases": report.added_cases, "versions": [v.id for v in report.versions], "notes": report.notes},
    )
    return report


# --------------------------------------------------------------------------------------- nnU-Net


def export_nnunet(
    project: Project,
    out_dir: Path,
    *,
    dataset_id: int,
    name: str | None = None,
    case_ids: Sequence[str] | None = None,
    overwrite: bool = False,
) -> ExportReport:
    """Write ``out_dir/DatasetXXX_<name>`` as an nnU-Net v2 raw dataset.

    Labelled cases (an effective label that is not all *ignore*) go to ``imagesTr``/``labelsTr``
    with *ignore* where nobody annotated (declared as ``"ignore"``, the highest value, when some
    label holds it); the others go to ``imagesTs``. Channels become ``_0000``, ``_0001``, ...; the
    project's modality names them (``CT`` selects nnU-Net's CT normalisation).
    """
    started = time.perf_counter()
    schema = project.config.schema
    folder = Path(out_dir) / nnunet.dataset_folder_name(dataset_id, name or project.config.name)
    cases = _select_cases(project, case_ids)
    n_training, n_test, with_ignore, channel_count = 0, 0, False, None
    with atomic_directory(folder, overwrite=overwrite) as temporary:
        for case in cases:
            channels = _read_channels(case)
            if channel_count is not None and len(channels) != channel_count:
                msg = f"case {case.case_id!r} has {len(channels)} channels, others {channel_count}"
                raise SegloopError(msg)
            channel_count = len(channels)
            assembly = _effective_labels(project, case)
            labels = None
            if assembly is not None and not assembly.ignore_mask.all():
                labels = Volume(assembly.labels, case.affine)
                with_ignore |= bool(assembly.ignore_mask.any())
                n_training += 1
            else:
                n_test += 1
            nnunet.write_case(temporary, case.case_id, channels, labels)
        modality = project.config.modality
        document = nnunet.make_dataset_json(
            schema,
            channel_names=[
                modality if modality == "CT" else f"{modality}_{i}" for i in range(channel_count or 1)
            ],
            num_training=n_training,
            with_ignore=with_ignore,
            name=project.config.name,
            description=f"exported by segloop from {project.root.resolve()}",
        )
        (temporary / nnunet.DATASET_JSON).write_text(json.dumps(document, indent=2), encoding="utf-8")
    return ExportReport(
        folder,
        [c.case_id for c in cases],
        {"training": n_training, "test": n_test, "ignore": with_ignore},
        time.perf_counter() - started,
    )


def _dataset_mapping(
    dataset: nnunet.NnunetDataset | None, project: Project, where: Path
) -> Mapping[int, int] | None:
    if dataset is None:
        return None
    try:
        return schema_values_of_names(dataset.labels, project.config.schema)
    except SegloopError as error:
        msg = f"{where}: its labels {dataset.labels} do not match the project's schema: {error}"
        raise type(error)(msg) from error


def import_nnunet_predictions(project: Project, folder: Path, *, author: str) -> ImportReport:
    """Add each ``<case>.nii.gz`` of an nnU-Net prediction folder as a ``pseudo`` version.

    The folder's ``dataset.json`` (nnU-Net copies it there) maps values to class names, which must
    be in the schema; without it the values are taken as schema values. Every file must name a
    case of the project.
    """
    folder = Path(folder)
    json_path = folder / nnunet.DATASET_JSON
    dataset = nnunet.read_dataset_json(json_path) if json_path.is_file() else None
    mapping = _dataset_mapping(dataset, project, json_path)
    files = nnunet.list_label_files(folder, dataset.file_ending if dataset else nnunet.FILE_ENDING)
    if not files:
        msg = f"{folder} holds no prediction files <case>{nnunet.FILE_ENDING}"
        raise NotFoundError(msg)
    unknown = sorted(set(files) - set(project.list_case_ids()))
    if unknown:
        msg = f"predictions of cases the project lacks: {', '.join(unknown[:5])} (nothing was added)"
        raise NotFoundError(msg)
    classes = _classes_of_mapping(mapping, project)

    def fill(batch: _Batch, report: ImportReport) -> None:
        for case_id, path in files.items():
            shape, affine = batch.grid_of(case_id)
            labels = _read_labels(path, project, shape, affine, mapping)
            batch.add_label(
                case_id, labels, source="pseudo", classes=classes, tool="nnU-Net", params=_file_params(path)
            )

    return _run_import(project, author, "nnunet-predictions", fill)


def import_nnunet_dataset(
    project: Project, dataset_dir: Path, *, author: str, source: str = "original"
) -> ImportReport:
    """Add the cases of an nnU-Net raw dataset: ``imagesTr`` with ``labelsTr``, and ``imagesTs``.

    Only single-channel datasets; the labels' names (``dataset.json``) must be in the schema, and
    ``ignore`` becomes the schema's ignore value.
    """
    dataset_dir = Path(dataset_dir)
    json_path = dataset_dir / nnunet.DATASET_JSON
    dataset = nnunet.read_dataset_json(json_path)
    mapping = _dataset_mapping(dataset, project, json_path)
    training = nnunet.list_raw_cases(dataset_dir / "imagesTr", dataset.file_ending)
    test_dir = dataset_dir / "imagesTs"
    test = nnunet.list_raw_cases(test_dir, dataset.file_ending) if test_dir.is_dir() else {}
    if any(len(channels) > 1 for channels in (training | test).values()):
        msg = (
            f"{dataset_dir}: segloop imports single-channel nnU-Net datasets; use `segloop add` for channels"
        )
        raise UnsupportedFormatError(msg)
    label_files = nnunet.list_label_files(dataset_dir / "labelsTr", dataset.file_ending)
    missing = sorted(set(training) - set(label_files))
    if missing:
        msg = f"{dataset_dir}/labelsTr lacks labels of {', '.join(missing[:5])}: nnU-Net needs one per case"
        raise NotFoundError(msg)
    classes = _classes_of_mapping(mapping, project)

    def fill(batch: _Batch, report: ImportReport) -> None:
        for case_id, channels in (training | test).items():
            batch.add_case(case_id, channels[0])
            if case_id in training:
                shape, affine = batch.grid_of(case_id)
                path = label_files[case_id]
                labels = _read_labels(path, project, shape, affine, mapping)
                batch.add_label(
                    case_id,
                    labels,
                    source=source,
                    classes=classes,
                    tool="nnU-Net raw",
                    params=_file_params(path),
                )

    return _run_import(project, author, "nnunet", fill)


# --------------------------------------------------------------------------------------- COCO


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
    overwrite: bool = False,
) -> ExportReport:
    """Write slices of the cases as JPGs with a COCO instance file (see `segloop.exchange.coco`).

    Labelled cases give the slices that hold a class (every slice with ``all_slices``); unlabelled
    cases give every slice with ``all_slices`` (for a 2D network to predict) and nothing otherwise.
    ``window`` is ``(width, level)`` in the stored units (OpenKBP stores HU + 1024: level 1044).
    """
    started = time.perf_counter()
    schema = project.config.schema
    categories = coco.make_categories({c.index: c.name for c in schema.classes}, split_thirds)
    colors = {c.index: c.color for c in schema.classes}
    entries: list[tuple[dict, list[dict]]] = []
    exported = []
    with atomic_directory(Path(out_dir), overwrite=overwrite) as temporary:
        for case in _select_cases(project, case_ids):
            assembly = _effective_labels(project, case)
            if assembly is None and not all_slices:
                continue
            slices = coco.make_case_slices(
                _read_channels(case)[0].array,
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
                f"{results_path} is a COCO results list: give the exported annotations/instances.json"
                " with --dataset for the images' provenance"
            )
            raise SegloopError(msg)
        dataset, dataset_path = results, results_path
    else:
        dataset = _read_json(Path(dataset_path))
    images, categories = coco.read_slice_provenance(dataset, str(dataset_path))
    schema = project.config.schema
    class_values = {category_id: schema.index_of(name) for category_id, name in categories.items()}
    detections = coco.read_detections(results, images, categories, str(results_path))
    volumes = coco.rasterize_detections(
        detections, images, class_values, score_threshold=score_threshold, dtype=schema.dtype
    )
    classes = tuple(c.name for c in schema.classes if c.index in set(class_values.values()))
    from segloop.segment.morphology import postprocess_labels

    def fill(batch: _Batch, report: ImportReport) -> None:
        for case_id, labels in volumes.items():
            shape, affine = batch.grid_of(case_id)
            if tuple(shape) != labels.shape:
                msg = f"COCO images of case {case_id!r} come from a {labels.shape} grid; the case is {shape}"
                raise GeometryMismatchError(msg)
        for case_id, labels in volumes.items():
            _, affine = batch.grid_of(case_id)
            spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
            cleaned = postprocess_labels(
                labels, spacing_mm=spacing, close_mm=close_mm, open_mm=open_mm, keep_largest=keep_largest
            )
            params = _file_params(
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

    return _run_import(project, author, "coco-results", fill)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        msg = f"{path} does not exist"
        raise NotFoundError(msg)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        msg = f"{path}: not valid JSON ({error})"
        raise CorruptFileError(msg) from error


# --------------------------------------------------------------------------------------- AbdomenAtlas


def export_abdomenatlas(
    project: Project, out_dir: Path, *, case_ids: Sequence[str] | None = None, overwrite: bool = False
) -> ExportReport:
    """Write the AbdomenAtlas layout: per case ``ct.nii.gz``, ``original_label.nii.gz`` (original
    versions), ``pseudo_label.nii.gz`` (the newest pseudo version), ``segmentations/<class>.nii.gz``
    (the effective label of every class some version decides), and ``labels.json`` naming values.
    *Ignore* is written as background: the layout has no ignore label.
    """
    started = time.perf_counter()
    schema = project.config.schema
    cases = _select_cases(project, case_ids)
    with atomic_directory(Path(out_dir), overwrite=overwrite) as temporary:
        for case in cases:
            original = _effective_labels(project, case, ("original",))
            pseudo = _newest(project, case, "pseudo")
            effective = _effective_labels(project, case)
            masks = {}
            if effective is not None:
                masks = {schema.name_of(v): effective.labels == v for v in sorted(effective.class_sources)}
            abdomenatlas.write_atlas_case(
                temporary / case.case_id,
                _read_channels(case)[0],
                original_label=None
                if original is None
                else _without_ignore(original.labels, schema.ignore_index),
                pseudo_label=None if pseudo is None else _without_ignore(pseudo, schema.ignore_index),
                masks=masks,
            )
        names = {str(c.index): c.name for c in schema.classes}
        (temporary / abdomenatlas.LABEL_NAMES_JSON).write_text(json.dumps(names, indent=2), encoding="utf-8")
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

    def fill(batch: _Batch, report: ImportReport) -> None:
        for atlas_case in cases:
            if atlas_case.case_id not in batch.known:
                batch.add_case(atlas_case.case_id, atlas_case.ct)
            shape, affine = batch.grid_of(atlas_case.case_id)
            if atlas_case.original_label is not None:
                labels = _read_labels(atlas_case.original_label, project, shape, affine, mapping)
                present = tuple(c.name for c in schema.classes if (labels == c.index).any())
                if present:
                    batch.add_label(
                        atlas_case.case_id,
                        labels,
                        source="original",
                        classes=present,
                        tool="abdomenatlas",
                        params=_file_params(atlas_case.original_label),
                    )
            if atlas_case.pseudo_label is not None:
                labels = _read_labels(atlas_case.pseudo_label, project, shape, affine, mapping)
                batch.add_label(
                    atlas_case.case_id,
                    labels,
                    source="pseudo",
                    classes=_classes_of_mapping(mapping, project),
                    tool="abdomenatlas",
                    params=_file_params(atlas_case.pseudo_label),
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

    return _run_import(project, author, "abdomenatlas", fill)


# --------------------------------------------------------------------------------------- MONAI Label


def export_monailabel(
    project: Project, out_dir: Path, *, case_ids: Sequence[str] | None = None, overwrite: bool = False
) -> ExportReport:
    """Write a MONAI Label datastore: ``<case>.nii.gz`` images, ``labels/final`` (the assembly of
    original and revised versions), ``labels/original`` (the newest pseudo version) and
    ``datastore_v2.json`` with ``label_info``. *Ignore* is written as background.
    """
    started = time.perf_counter()
    schema = project.config.schema
    cases = _select_cases(project, case_ids)
    entries: dict[str, dict[str, str]] = {}
    extension = ".nii.gz"
    with atomic_directory(Path(out_dir), overwrite=overwrite) as temporary:
        for tag in (monailabel.FINAL_TAG, monailabel.ORIGINAL_TAG):
            (temporary / "labels" / tag).mkdir(parents=True)
        for case in cases:
            image = _read_channels(case)[0]
            write_volume(image, temporary / f"{case.case_id}{extension}")
            tags: dict[str, str] = {}
            final = _effective_labels(project, case, _HUMAN_SOURCES)
            if final is not None:
                labels = _without_ignore(final.labels, schema.ignore_index)
                path = temporary / "labels" / monailabel.FINAL_TAG / f"{case.case_id}{extension}"
                write_volume(image.with_array(labels), path)
                tags[monailabel.FINAL_TAG] = extension
            pseudo = _newest(project, case, "pseudo")
            if pseudo is not None:
                labels = _without_ignore(pseudo, schema.ignore_index)
                path = temporary / "labels" / monailabel.ORIGINAL_TAG / f"{case.case_id}{extension}"
                write_volume(image.with_array(labels), path)
                tags[monailabel.ORIGINAL_TAG] = extension
            entries[case.case_id] = tags
        document = monailabel.make_datastore_json(entries, schema, name=project.config.name)
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

    def fill(batch: _Batch, report: ImportReport) -> None:
        for item in items:
            if item.image_id not in batch.known:
                batch.add_case(item.image_id, item.image)
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
                labels = _read_labels(path, project, shape, affine, mapping)
                batch.add_label(
                    item.image_id,
                    labels,
                    source=tag_sources[tag],
                    classes=_classes_of_mapping(mapping, project),
                    tool=f"monailabel:{tag}",
                    params=_file_params(path),
                )

    return _run_import(project, author, "monailabel", fill)


# --------------------------------------------------------------------------------------- 2D folders


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
    declared = classes or (_classes_of_mapping(value_map, project) if value_map is not None else None)
    added = import_cases(
        project,
        paths,
        labels_dir=labels_dir,
        source=source,
        classes=declared,
        copy=copy,
        label_values=value_map,
        author=author,
    )
    report = ImportReport(added_cases=added.added, seconds=added.seconds)
    for case_id in added.labeled:
        report.versions.extend(project.list_label_versions(case_id))
    if added.unmatched_labels:
        report.notes.append(f"label files without an image: {', '.join(added.unmatched_labels[:5])}")
    return report


def export_image_folder(
    project: Project,
    out_dir: Path,
    *,
    value_map: Mapping[int, int] | None = None,
    source: str | None = None,
    case_ids: Sequence[str] | None = None,
    overwrite: bool = False,
) -> ExportReport:
    """Write each case's label as a label image named like its image, in the image's format.

    Args:
        project: the open project.
        out_dir: the folder to create.
        value_map: ``{file value: schema value}`` used backwards (255=nucleus writes nucleus as
            255); unmapped background and *ignore* become 0.
        source: write the newest version of this source (``pseudo``: the predictions) instead of
            the effective label; cases without one are left out.
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
            raise SegloopError(msg)
        to_file = {0: 0, schema.ignore_index: 0, **inverse}
    written = []
    with atomic_directory(Path(out_dir), overwrite=overwrite) as temporary:
        for case in _select_cases(project, case_ids):
            if source is not None:
                labels = _newest(project, case, source)
            else:
                assembly = _effective_labels(project, case)
                labels = None if assembly is None else assembly.labels
            if labels is None:
                continue
            name = image_folder.label_file_name(Path(case.images[0].path).name)
            values = remap_labels(labels, to_file, dtype=np.uint16, what=f"labels of {case.case_id}")
            volume = image_folder.label_image(values, case.affine, max_value=max(to_file.values()))
            if name in {p.name for p in temporary.iterdir()}:
                msg = f"two cases would write {name}: images of the same name from different folders"
                raise ConflictError(msg)
            write_volume(volume, temporary / name)
            written.append(case.case_id)
    return ExportReport(Path(out_dir), written, {}, time.perf_counter() - started)
