"""Use cases on cases: create a project, add images (with labels), summarise, export labels."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segloop.core.assembly import SOURCE_PRIORITY
from segloop.core.geometry import align_to_grid, check_same_grid
from segloop.core.labels import LabelSchema
from segloop.errors import ConflictError, GeometryMismatchError, LabelValueError, NotFoundError, SegloopError
from segloop.exchange.values import remap_labels
from segloop.io import read_volume, supported_suffixes, write_volume
from segloop.io.atomic import atomic_directory, atomic_file
from segloop.loop.labels import compute_effective_label, count_voxels, label_volume, read_schema_labels
from segloop.store import SOURCES, ImageRecord, NewCase, NewLabel, Project, ProjectConfig

__all__ = [
    "CaseSummary",
    "ImportReport",
    "case_id_from_path",
    "export_label",
    "import_cases",
    "init_project",
    "read_class_names",
    "read_mapped_labels",
    "summarize_cases",
]

_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_HASH_CHUNK_BYTES = 1 << 20


def init_project(
    root: Path,
    class_names: Sequence[str],
    *,
    modality: str = "CT",
    name: str | None = None,
    defaults: dict[str, Any] | None = None,
) -> Project:
    """Create a project folder with a label schema of ``class_names`` (indices 1..N).

    Args:
        root: the new project folder.
        class_names: class names in label-value order.
        modality: CT, MR, microscopy, EM, cryo-ET or other.
        name: the project's name (default: the folder's).
        defaults: the ``[defaults]`` table of `segloop.toml` (e.g. ``{"window": [400, 40]}``).
    """
    schema = LabelSchema.from_names([n for n in class_names if n])
    config = ProjectConfig(
        name=name or Path(root).resolve().name,
        schema=schema,
        modality=modality,
        defaults=dict(defaults or {}),
    )
    return Project.create(root, config)


def read_class_names(path: Path) -> list[str]:
    """Class names from a text file (one per line, in value order) or a JSON ``{"1": name}`` map."""
    if not path.is_file():
        msg = f"labels file {path} does not exist"
        raise NotFoundError(msg)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() != ".json":
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        mapping = {int(k): str(v) for k, v in json.loads(text).items()}
    except (ValueError, AttributeError, TypeError) as error:
        msg = f'{path}: expected a JSON object mapping label values to names, like {{"1": "liver"}} ({error})'
        raise SegloopError(msg) from error
    if sorted(mapping) != list(range(1, len(mapping) + 1)):
        msg = f"{path}: label values must be 1..{len(mapping)} without gaps; got {sorted(mapping)[:10]}"
        raise SegloopError(msg)
    return [mapping[value] for value in sorted(mapping)]


def strip_suffix(path: Path) -> str:
    """The file name without its format suffix (``x.nii.gz`` -> ``x``; folders unchanged)."""
    name = path.name
    for suffix in supported_suffixes():
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def case_id_from_path(path: Path) -> tuple[str, int]:
    """Case id and channel of an image path: nnU-Net's ``_0000`` channel suffix is stripped.

    Examples:
        >>> case_id_from_path(Path("imagesTr/liver_7_0001.nii.gz"))
        ('liver_7', 1)
        >>> case_id_from_path(Path("ct.nrrd"))
        ('ct', 0)
    """
    stem = strip_suffix(path)
    match = _CHANNEL_SUFFIX.match(stem)
    if match:
        return match["case"], int(match["channel"])
    return stem, 0


def hash_path(path: Path) -> tuple[str, int]:
    """SHA-256 and size in bytes of a file, or of a folder's files (names and contents, sorted)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    size = 0
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as stream:
            while chunk := stream.read(_HASH_CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
    return digest.hexdigest(), size


def read_mapped_labels(
    path: Path,
    schema: LabelSchema,
    shape: Sequence[int],
    affine: np.ndarray,
    value_map: Mapping[int, int],
) -> np.ndarray:
    """Read a label file whose values follow its own convention, in schema values on a case's grid.

    Args:
        path: the label file (any format `segloop.io` reads; axes may be flipped or permuted).
        schema: the project's classes.
        shape: the case's ``(I, J, K)``.
        affine: the case's ``(4, 4)`` affine.
        value_map: ``{file value: schema value}`` covering every value the file holds but 0,
            which is background unless the map names it (``{255: 1}`` for a binary mask,
            ``{0: ignore, 1: 0, 2: 1}`` for a sparse paint where 0 means "not painted").

    Raises:
        GeometryMismatchError: the grid differs from the case's.
        LabelValueError: a value the map does not name.
    """
    volume = read_volume(path)
    if volume.array.ndim != 3:
        msg = f"label {path} must be a 3D label map (I, J, K); got shape {volume.array.shape}"
        raise GeometryMismatchError(msg)
    aligned = align_to_grid(volume.array, volume.affine, shape, affine, what=f"label {path}")
    return remap_labels(aligned, {0: 0, **value_map}, dtype=schema.dtype, what=f"label {path}")


@dataclass
class ImportReport:
    """What `import_cases` did."""

    added: list[str] = field(default_factory=list)
    labeled: list[str] = field(default_factory=list)
    unmatched_labels: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _group_channels(image_paths: Sequence[Path], case_id: str | None) -> dict[str, dict[int, Path]]:
    if case_id is not None:
        if len(image_paths) != 1:
            msg = f"--case-id names a single case; got {len(image_paths)} image paths"
            raise SegloopError(msg)
        return {case_id: {0: image_paths[0]}}
    groups: dict[str, dict[int, Path]] = {}
    for path in image_paths:
        case, channel = case_id_from_path(path)
        if channel in groups.setdefault(case, {}):
            msg = f"duplicate case id {case!r}: {groups[case][channel]} and {path} (rename one)"
            raise ConflictError(msg)
        groups[case][channel] = path
    for case, channels in groups.items():
        if sorted(channels) != list(range(len(channels))):
            msg = (
                f"case {case!r} has channels {sorted(channels)}:"
                f" expected 0..{len(channels) - 1} (_0000, _0001, ...)"
            )
            raise SegloopError(msg)
    return groups


def _index_labels(labels_dir: Path) -> dict[str, Path]:
    if not labels_dir.is_dir():
        msg = f"labels folder {labels_dir} does not exist"
        raise NotFoundError(msg)
    index: dict[str, Path] = {}
    for path in sorted(labels_dir.iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file() and any(path.name.lower().endswith(s) for s in supported_suffixes()):
            index[strip_suffix(path)] = path
    return index


def _copy_into_project(project: Project, case_id: str, channel: int, source: Path) -> Path:
    suffix = source.name[len(strip_suffix(source)) :]
    target = project.root / "images" / f"{case_id}_{channel:04d}{suffix}"
    if source.is_dir():
        with atomic_directory(target) as temporary:
            shutil.copytree(source, temporary, dirs_exist_ok=True)
    else:
        with atomic_file(target) as temporary:
            shutil.copyfile(source, temporary)
    return target


def import_cases(
    project: Project,
    image_paths: Sequence[Path],
    *,
    labels_dir: Path | None = None,
    label_path: Path | None = None,
    source: str = "original",
    classes: Sequence[str] | None = None,
    case_id: str | None = None,
    copy: bool = False,
    allow_empty: bool = False,
    label_values: Mapping[int, int] | None = None,
    author: str = "unknown",
) -> ImportReport:
    """Add images (and their labels from ``labels_dir``) as new cases: all or nothing.

    Every image and label is read and checked before anything is written; labels go to the
    object store and all rows into the database in one transaction.

    Args:
        project: the open project.
        image_paths: image files or DICOM folders; ``x_0000``, ``x_0001`` are channels of case ``x``.
        labels_dir: folder with label files named by case id (``x.nii.gz``, ``x.seg.nrrd``).
        label_path: the label file of a single case (instead of ``labels_dir``).
        source: provenance of those labels, one of `segloop.store.SOURCES`.
        classes: class names the labels annotate (default: all, or a .seg.nrrd's segments).
        case_id: the case id for a single image (instead of its file name).
        copy: copy images into the project instead of referencing them in place.
        allow_empty: accept label files with no foreground voxel.
        label_values: ``{file value: schema value}`` for labels in another convention (a binary
            mask image's 255, a sparse paint's 0 = not painted); default: schema values.
        author: who adds them.

    Raises:
        ConflictError, NotFoundError, GeometryMismatchError, LabelValueError, UnknownClassError,
        CorruptFileError: see their messages; nothing is written then.
    """
    started = time.perf_counter()
    schema = project.config.schema
    if source not in SOURCES:
        msg = f"unknown label source {source!r}: expected one of {', '.join(SOURCES)}"
        raise SegloopError(msg)
    if not image_paths:
        msg = "no image paths given: expected image files or DICOM folders"
        raise SegloopError(msg)
    declared = tuple(classes) if classes else None
    if declared:
        schema.indices_of(declared)
    groups = _group_channels([Path(p) for p in image_paths], case_id)
    existing = set(project.list_case_ids()) & set(groups)
    if existing:
        msg = f"case ids already in the project: {', '.join(sorted(existing))} (nothing was added)"
        raise ConflictError(msg)
    label_index = _index_labels(labels_dir) if labels_dir else {}
    if label_path is not None:
        if len(groups) != 1 or labels_dir is not None:
            msg = f"--label gives the label of one case; got {len(groups)} cases (use --labels-dir)"
            raise SegloopError(msg)
        if not Path(label_path).is_file():
            msg = f"label file {label_path} does not exist"
            raise NotFoundError(msg)
        label_index = {next(iter(groups)): Path(label_path)}
    report = ImportReport(unmatched_labels=sorted(set(label_index) - set(groups)))
    new_cases = []
    with project.objects.stage() as staged:
        for case, channels in groups.items():
            images = []
            reference = None
            for channel, path in sorted(channels.items()):
                volume = read_volume(path)
                if volume.array.ndim != 3:
                    msg = f"{path}: expected a 3D image (I, J, K); got shape {volume.array.shape}"
                    raise SegloopError(msg)
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
                images.append(ImageRecord(channel, str(path.resolve()), size, digest))
            assert reference is not None  # every group has channel 0
            label = None
            if case in label_index:
                label_path = label_index[case]
                if label_values is None:
                    labels, segment_names = read_schema_labels(
                        label_path, schema, reference.spatial_shape, reference.affine
                    )
                else:
                    labels = read_mapped_labels(
                        label_path, schema, reference.spatial_shape, reference.affine, label_values
                    )
                    segment_names = None
                counts = count_voxels(labels, schema)
                if not allow_empty and sum(counts[n] for n in schema.names) == 0:
                    msg = (
                        f"label {label_path} has no foreground voxel:"
                        " expected at least one (or --allow-empty)"
                    )
                    raise LabelValueError(msg)
                key = staged.put(labels, reference.affine)
                label = NewLabel(
                    object_key=key,
                    source=source,
                    classes=declared or segment_names or schema.names,
                    voxel_counts=counts,
                    author=author,
                    tool="segloop add",
                    params=_label_params(label_path, label_values),
                )
                report.labeled.append(case)
            new_cases.append(
                NewCase(
                    case_id=case,
                    shape=reference.spatial_shape,
                    affine=reference.affine,
                    dtype=str(reference.array.dtype),
                    images=tuple(images),
                    added_by=author,
                    label=label,
                )
            )
    if copy:
        new_cases = [_with_copied_images(project, c) for c in new_cases]
    project.add_cases(new_cases)
    report.added = [c.case_id for c in new_cases]
    report.seconds = time.perf_counter() - started
    project.log_event("add", author, {"cases": report.added, "labeled": report.labeled, "source": source})
    return report


def _label_params(path: Path, label_values: Mapping[int, int] | None) -> dict[str, Any]:
    params: dict[str, Any] = {"file": str(path.resolve()), "sha256": hash_path(path)[0]}
    if label_values:
        params["label_values"] = {str(k): int(v) for k, v in label_values.items()}
    return params


def _with_copied_images(project: Project, case: NewCase) -> NewCase:
    images = tuple(
        ImageRecord(
            i.channel,
            str(_copy_into_project(project, case.case_id, i.channel, Path(i.path))),
            i.size_bytes,
            i.sha256,
            copied=True,
        )
        for i in case.images
    )
    return NewCase(case.case_id, case.shape, case.affine, case.dtype, images, case.added_by, case.label)


@dataclass(frozen=True)
class CaseSummary:
    """One row of `segloop status`: a case and, per class, the source that decides it."""

    case_id: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    n_versions: int
    class_sources: dict[str, str | None]


def summarize_cases(project: Project) -> list[CaseSummary]:
    """Per case: grid, number of label versions, and per class the most trusted source (or None)."""
    versions_by_case: dict[str, list] = {}
    for version in project.list_label_versions():
        versions_by_case.setdefault(version.case_id, []).append(version)
    summaries = []
    for case in project.list_cases():
        versions = versions_by_case.get(case.case_id, [])
        sources: dict[str, str | None] = dict.fromkeys(project.config.schema.names)
        for version in sorted(versions, key=lambda v: SOURCE_PRIORITY[v.source]):
            for name in version.classes:
                sources[name] = version.source
        spacing = tuple(float(s) for s in np.linalg.norm(case.affine[:3, :3], axis=0))
        summaries.append(CaseSummary(case.case_id, case.shape, spacing, len(versions), sources))  # type: ignore[arg-type]
    return summaries


def export_label(
    project: Project,
    case_id: str,
    out_path: Path,
    *,
    version_id: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a case's effective label (or one stored version) in the format of ``out_path``.

    Ignored voxels hold the schema's ignore value; a .seg.nrrd carries the class names and colours.
    """
    case = project.get_case(case_id)
    if version_id is not None:
        version = project.get_label_version(version_id)
        if version.case_id != case_id:
            msg = f"label version {version_id} belongs to case {version.case_id!r}, not {case_id!r}"
            raise SegloopError(msg)
        labels = project.read_labels(version)
    else:
        assembly = compute_effective_label(project, case)
        if assembly is None:
            msg = f"case {case_id!r} has no label version yet: nothing to export"
            raise NotFoundError(msg)
        labels = assembly.labels
    return write_volume(label_volume(project, case, labels), out_path, overwrite=overwrite)
