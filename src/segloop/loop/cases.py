"""Use cases on cases: create a project, add images (with labels), summarise, export labels."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segloop.core.geometry import align_to_grid, spacing_from_affine
from segloop.core.labels import LabelSchema
from segloop.core.names import validate_case_id
from segloop.core.provenance import Source, parse_source
from segloop.errors import (
    ConflictError,
    CorruptFileError,
    GeometryMismatchError,
    InvalidInputError,
    LabelValueError,
    NotFoundError,
)
from segloop.exchange.values import remap_labels
from segloop.io import read_volume, supported_suffixes, write_volume
from segloop.loop.imports import ImportBatch, ImportReport, file_params, run_import
from segloop.loop.labels import compute_effective_label, count_voxels, label_volume, read_schema_labels
from segloop.store import JobRecord, LabelVersionRecord, Project, ProjectConfig, RoundRecord
from segloop.store.integrity import hash_path
from segloop.store.overview import NO_SOURCE, CaseOverview, CaseSelection

__all__ = [
    "PAGE_ORDERS",
    "SUMMARY_SOURCES",
    "CasePage",
    "CaseSummary",
    "CaseTable",
    "ImportReport",
    "ProjectSummary",
    "case_id_from_path",
    "case_summary",
    "count_case_sources",
    "export_label",
    "filter_versions",
    "import_cases",
    "init_project",
    "list_case_page",
    "list_case_table",
    "parse_class_filter",
    "parse_source_filter",
    "read_class_names",
    "read_mapped_labels",
    "summarize_cases",
    "summarize_project",
    "tally_class_sources",
]

_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def init_project(
    root: Path,
    class_names: Sequence[str],
    *,
    modality: str = "CT",
    name: str | None = None,
    defaults: dict[str, Any] | None = None,
    pairs: Sequence[Sequence[str]] = (),
) -> Project:
    """Create a project folder with a label schema of ``class_names`` (indices 1..N).

    Args:
        root: the new project folder.
        class_names: class names in label-value order.
        modality: CT, MR, microscopy, EM, cryo-ET or other.
        name: the project's name (default: the folder's).
        defaults: the ``[defaults]`` table of `segloop.toml` (e.g. ``{"window": [400, 40]}``).
        pairs: left-right class pairs (``[("RightParotid", "LeftParotid")]``): training mirrors
            left-right by default, swapping them (`segloop.loop.training.train_config`).
    """
    schema = LabelSchema.from_names([n for n in class_names if n], pairs=pairs)
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
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        byte = error.object[error.start]
        msg = f"{path}: expected UTF-8 text (class names); got byte {byte:#04x} at offset {error.start}"
        raise CorruptFileError(msg) from error
    if path.suffix.lower() != ".json":
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        mapping = {int(k): str(v) for k, v in json.loads(text).items()}
    except (ValueError, AttributeError, TypeError) as error:
        msg = f'{path}: expected a JSON object mapping label values to names, like {{"1": "liver"}} ({error})'
        raise CorruptFileError(msg) from error
    if sorted(mapping) != list(range(1, len(mapping) + 1)):
        msg = f"{path}: label values must be 1..{len(mapping)} without gaps; got {sorted(mapping)[:10]}"
        raise CorruptFileError(msg)
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


def _case_from_pattern(path: Path, image_pattern: str) -> tuple[str, int]:
    """Case id (and channel 0) of an image named by ``image_pattern`` (``{case}_image``: seed 000's)."""
    from segloop.loop.meshes import compile_name_pattern

    stem = strip_suffix(path)
    match = compile_name_pattern(image_pattern, "")(None).fullmatch(stem)
    if match is None:
        msg = (
            f"image {path.name} does not match the image pattern {image_pattern!r} (its name without suffix)"
        )
        raise InvalidInputError(msg)
    return match["case"], 0


def _group_channels(
    image_paths: Sequence[Path], case_id: str | None, image_pattern: str | None = None
) -> dict[str, list[Path]]:
    """``{case id: [channel 0, channel 1, ...]}``; ids from file names unless ``case_id`` is given."""
    if case_id is not None:
        if len(image_paths) != 1:
            msg = f"a given case id names a single case; got {len(image_paths)} image paths"
            raise InvalidInputError(msg)
        return {validate_case_id(case_id): [image_paths[0]]}
    groups: dict[str, dict[int, Path]] = {}
    for path in image_paths:
        case, channel = _case_from_pattern(path, image_pattern) if image_pattern else case_id_from_path(path)
        validate_case_id(case)
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
            raise InvalidInputError(msg)
    return {case: [channels[i] for i in sorted(channels)] for case, channels in groups.items()}


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
    image_pattern: str | None = None,
    meshes_dir: Path | None = None,
    mesh_pattern: str = "{case}_{class}_mesh.stl",
    mesh_classes: Mapping[str, str] | None = None,
) -> ImportReport:
    """Add images (and their labels from ``labels_dir``) as new cases: all or nothing.

    Every image and label is read and checked before anything is written (`run_import`); labels
    go to the object store and all rows into the database in one transaction.

    Args:
        project: the open project.
        image_paths: image files or DICOM folders; ``x_0000``, ``x_0001`` are channels of case ``x``.
        labels_dir: folder with label files named by case id (``x.nii.gz``, ``x.seg.nrrd``).
        label_path: the label file of a single case (instead of ``labels_dir``).
        source: provenance of those labels (`segloop.core.provenance.Source`).
        classes: class names the labels annotate (default: all, or a .seg.nrrd's segments).
        case_id: the case id for a single image (instead of its file name).
        copy: copy images into the project instead of referencing them in place.
        allow_empty: accept label files with no foreground voxel.
        label_values: ``{file value: schema value}`` for labels in another convention (a binary
            mask image's 255, a sparse paint's 0 = not painted); default: schema values.
        author: who adds them.
        image_pattern: case ids from image names such as ``{case}_image`` (seed 000's
            ``101_image.nii.gz`` is case ``101``); default: the name, a ``_0000`` channel stripped.
        meshes_dir: folder of closed surface meshes (STL/OBJ/PLY, mm; LPS unless the file says RAS),
            one per case and class, voxelised on the case's grid as its label (`segloop.loop.meshes`);
            every case needs one (a mesh of each of ``classes`` when given). Not with ``labels_dir``.
        mesh_pattern: the meshes' names, ``{case}`` and ``{class}`` once each.
        mesh_classes: ``{class name in mesh names: schema class}`` (``leftkidney`` ->
            ``kidney_left``); other names must be classes.

    Raises:
        ConflictError, NotFoundError, InvalidInputError (GeometryMismatchError, LabelValueError,
        UnknownClassError, CorruptFileError, ...): see their messages; nothing is written then.
    """
    schema = project.config.schema
    source = parse_source(str(source)).value
    if not image_paths:
        msg = "no image paths given: expected image files or DICOM folders"
        raise InvalidInputError(msg)
    declared = tuple(classes) if classes else None
    if declared:
        schema.indices_of(declared)
    groups = _group_channels([Path(p) for p in image_paths], case_id, image_pattern)
    existing = set(project.list_case_ids()) & set(groups)
    if existing:
        msg = f"case ids already in the project: {', '.join(sorted(existing))} (nothing was added)"
        raise ConflictError(msg)
    if meshes_dir is not None:
        if labels_dir is not None or label_path is not None:
            msg = "labels come from meshes or from label files: expected --meshes-dir alone, got both"
            raise InvalidInputError(msg)
        return _import_meshes(
            project, groups, Path(meshes_dir), mesh_pattern, mesh_classes or {}, declared,
            source=source, copy=copy, author=author,
        )  # fmt: skip
    label_index = _index_labels(labels_dir) if labels_dir else {}
    if label_path is not None:
        if len(groups) != 1 or labels_dir is not None:
            msg = f"a single label file belongs to one case; got {len(groups)} cases (use a labels folder)"
            raise InvalidInputError(msg)
        if not Path(label_path).is_file():
            msg = f"label file {label_path} does not exist"
            raise NotFoundError(msg)
        label_index = {next(iter(groups)): Path(label_path)}

    def fill(batch: ImportBatch, report: ImportReport) -> None:
        report.unmatched_labels = sorted(set(label_index) - set(groups))
        for case, channels in groups.items():
            reference = batch.add_case(case, channels)
            if case not in label_index:
                continue
            path = label_index[case]
            if label_values is None:
                labels, segment_names = read_schema_labels(
                    path, schema, reference.spatial_shape, reference.affine
                )
            else:
                labels = read_mapped_labels(
                    path, schema, reference.spatial_shape, reference.affine, label_values
                )
                segment_names = None
            counts = count_voxels(labels, schema)
            if not allow_empty and sum(counts[n] for n in schema.names) == 0:
                msg = f"label {path} has no foreground voxel: expected at least one (or allow empty labels)"
                raise LabelValueError(msg)
            batch.add_label(
                case,
                labels,
                source=source,
                classes=declared or segment_names or schema.names,
                tool="segloop add",
                params=_label_params(path, label_values),
            )

    return run_import(project, author, "add", fill, copy=copy, details={"source": source})


def _import_meshes(
    project: Project,
    groups: Mapping[str, list[Path]],
    meshes_dir: Path,
    pattern: str,
    names: Mapping[str, str],
    required: tuple[str, ...] | None,
    *,
    source: str,
    copy: bool,
    author: str,
) -> ImportReport:
    """`import_cases` with labels voxelised from each case's meshes (all read and checked first)."""
    from segloop.loop.meshes import class_map_of, find_case_meshes, meshes_to_labels

    schema = project.config.schema
    meshes, unmatched = find_case_meshes(
        meshes_dir, list(groups), pattern, schema, class_map_of(schema, names), required
    )

    def fill(batch: ImportBatch, report: ImportReport) -> None:
        report.unmatched_labels = unmatched
        for case, channels in groups.items():
            reference = batch.add_case(case, channels)
            labels = meshes_to_labels(meshes[case], schema, reference.spatial_shape, reference.affine)
            files = {
                m.class_name: {"file": m.path.name, "sha256": hash_path(m.path)[0]} for m in meshes[case]
            }
            batch.add_label(
                case,
                labels,
                source=source,
                classes=required or tuple(m.class_name for m in meshes[case]),
                tool="segloop add --meshes-dir",
                params={"meshes": files, "mesh_pattern": pattern},
            )

    return run_import(project, author, "add", fill, copy=copy, details={"source": source, "meshes": True})


def _label_params(path: Path, label_values: Mapping[int, int] | None) -> dict[str, Any]:
    if not label_values:
        return file_params(path)
    return file_params(path, label_values={str(k): int(v) for k, v in label_values.items()})


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
        for version in sorted(versions, key=lambda v: parse_source(v.source).priority):
            for name in version.classes:
                sources[name] = version.source
        spacing = spacing_from_affine(case.affine)
        summaries.append(CaseSummary(case.case_id, case.shape, spacing, len(versions), sources))  # type: ignore[arg-type]
    return summaries


#: The columns of a summary, most trusted source first; `NO_SOURCE`: no version annotates the class.
SUMMARY_SOURCES: tuple[str, ...] = (
    *(s.value for s in sorted(Source, key=lambda s: -s.priority)),
    NO_SOURCE,
)


@dataclass(frozen=True)
class ProjectSummary:
    """What `segloop status` shows by default: counts, whatever the number of cases.

    Attributes:
        name: the project's name.
        n_cases: cases in the project.
        n_versions: label versions in the project.
        sources: per class (rows, schema order), cases by deciding source (every name of
            `SUMMARY_SOURCES`, zeros included).
        rounds: the newest rounds, oldest first (at most ``last_rounds``).
        n_rounds: every round's count.
        queue: the head of the newest recorded ranking: ``(case id, RankedEntry)``, rank 1 first.
        queue_length: cases in that ranking.
        jobs: unfinished jobs (running or interrupted), oldest first.
    """

    name: str
    n_cases: int
    n_versions: int
    sources: dict[str, dict[str, int]]
    rounds: tuple[RoundRecord, ...] = ()
    n_rounds: int = 0
    queue: tuple[tuple[str, Any], ...] = ()
    queue_length: int = 0
    jobs: tuple[JobRecord, ...] = ()


def tally_class_sources(
    n_cases: int, classes: Sequence[str], decided: Mapping[tuple[str, str], int]
) -> dict[str, dict[str, int]]:
    """Per class, cases by deciding source; the cases no version annotates count as `NO_SOURCE`.

    Args:
        n_cases: cases in the project.
        classes: the classes (rows), in order.
        decided: ``{(class, source): cases}`` (`Project.count_class_sources`).

    Example:
        >>> tally_class_sources(3, ["liver"], {("liver", "pseudo"): 2})["liver"]["none"]
        1
    """
    table = {}
    for name in classes:
        row = dict.fromkeys(SUMMARY_SOURCES, 0)
        for source in SUMMARY_SOURCES[:-1]:
            row[source] = decided.get((name, source), 0)
        row[NO_SOURCE] = n_cases - sum(row.values())
        table[name] = row
    return table


def count_case_sources(summaries: Sequence[CaseSummary], classes: Sequence[str]) -> dict[str, dict[str, int]]:
    """`tally_class_sources`'s table from per-case summaries (`summarize_cases`): the same rule in Python."""
    decided: dict[tuple[str, str], int] = {}
    for summary in summaries:
        for name in classes:
            source = summary.class_sources.get(name)
            if source is not None:
                decided[name, source] = decided.get((name, source), 0) + 1
    return tally_class_sources(len(summaries), classes, decided)


def parse_class_filter(project: Project, text: str | None) -> tuple[str, ...] | None:
    """Class names from a comma list (None: no filter); raises `UnknownClassError` naming the classes."""
    names = tuple(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))
    if not names:
        return None
    project.config.schema.indices_of(names)
    return names


def parse_source_filter(text: str | None) -> tuple[str, ...]:
    """Source names from a comma list (`SUMMARY_SOURCES`; empty: no filter).

    Raises:
        InvalidInputError: an unknown name (the message lists the known ones).
    """
    names = tuple(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))
    unknown = [n for n in names if n not in SUMMARY_SOURCES]
    if unknown:
        msg = f"unknown label source {unknown[0]!r}: expected one of {', '.join(SUMMARY_SOURCES)}"
        raise InvalidInputError(msg)
    return names


def summarize_project(
    project: Project,
    *,
    classes: Sequence[str] | None = None,
    last_rounds: int = 5,
    queue_head: int = 5,
) -> ProjectSummary:
    """The project at a glance (`ProjectSummary`): a constant number of queries, grouped in SQL.

    Args:
        project: the open project.
        classes: the class rows (default: every class of the schema).
        last_rounds: how many of the newest rounds to keep.
        queue_head: how many cases of the newest ranking to keep.
    """
    from segloop.loop.review import RankedEntry, ranking_strategy

    n_cases = project.count_cases()
    rows = tuple(project.config.schema.names if classes is None else classes)
    rounds = project.list_rounds()
    event_id = project.find_latest_ranking()
    queue_length, head = 0, []
    if event_id is not None:
        strategy = ranking_strategy(project, event_id)
        queue_length, entries = project.list_ranking(event_id, limit=queue_head)
        head = [(case_id, RankedEntry(rank, score, strategy)) for rank, case_id, score in entries]
    return ProjectSummary(
        name=project.config.name,
        n_cases=n_cases,
        n_versions=project.count_label_versions(),
        sources=tally_class_sources(n_cases, rows, project.count_class_sources()),
        rounds=tuple(rounds[-last_rounds:]) if last_rounds > 0 else (),
        n_rounds=len(rounds),
        queue=tuple(head),
        queue_length=queue_length,
        jobs=tuple(project.list_unfinished_jobs()),
    )


@dataclass(frozen=True)
class CaseTable:
    """A page of `segloop status`'s per-case table.

    Attributes:
        rows: the page, one `CaseSummary` per case (``class_sources`` of the shown classes).
        total: cases the filters select (the page is ``rows[offset:offset + limit]`` of them).
        classes: the shown classes.
    """

    rows: tuple[CaseSummary, ...]
    total: int
    classes: tuple[str, ...]


def list_case_table(
    project: Project,
    selection: CaseSelection = CaseSelection(),  # noqa: B008 (frozen: a safe default)
    *,
    offset: int = 0,
    limit: int | None = 50,
    order: str = "added",
    descending: bool = False,
) -> CaseTable:
    """A page of cases with the deciding source of each shown class: a constant number of queries.

    Args:
        project: the open project.
        selection: which cases; its ``classes`` are the shown columns (default: all) and what
            its ``sources`` look at.
        offset: cases skipped.
        limit: at most this many rows (None: all).
        order: `Project.select_case_ids`'s order.
        descending: reverse it.

    Raises:
        InvalidInputError: a negative offset or limit, or an unknown order.
    """
    if offset < 0 or (limit is not None and limit < 0):
        msg = f"offset and limit must be >= 0; got {offset} and {limit}"
        raise InvalidInputError(msg)
    shown = tuple(project.config.schema.names if selection.classes is None else selection.classes)
    total, ids = project.select_case_ids(
        selection, order=order, descending=descending, offset=offset, limit=limit
    )
    rows = tuple(case_summary(o, shown) for o in project.list_case_overviews(ids))
    return CaseTable(rows, total, shown)


#: The orders of `list_case_page`: the store's, and those of the newest recorded ranking.
PAGE_ORDERS = ("added", "id", "versions", "rank", "uncertainty")


@dataclass(frozen=True)
class CasePage:
    """A page of the dashboard's case list.

    Attributes:
        rows: ``(CaseSummary, RankedEntry or None)`` per case: its sources and its place in the
            newest recorded ranking.
        total: cases the selection keeps.
    """

    rows: tuple[tuple[CaseSummary, Any], ...]
    total: int


def list_case_page(
    project: Project,
    selection: CaseSelection = CaseSelection(),  # noqa: B008 (frozen: a safe default)
    *,
    order: str = "added",
    descending: bool = False,
    offset: int = 0,
    limit: int = 200,
) -> CasePage:
    """A page of cases in ``order`` with their place in the newest recorded ranking.

    A constant number of queries whatever the project's size. ``rank`` and ``uncertainty`` (the
    score) follow the newest recorded ranking; cases it does not rank (or scores None) come last
    in the order they were added, whatever the direction.

    Raises:
        InvalidInputError: an unknown order, or a negative offset or limit.
    """
    from segloop.loop.review import RankedEntry, ranking_strategy

    if order not in PAGE_ORDERS:
        msg = f"unknown case order {order!r}: expected one of {', '.join(PAGE_ORDERS)}"
        raise InvalidInputError(msg)
    if offset < 0 or limit < 0:
        msg = f"offset and limit must be >= 0; got {offset} and {limit}"
        raise InvalidInputError(msg)
    event_id = project.find_latest_ranking()
    total, ids = project.select_case_ids(
        selection,
        order="score" if order == "uncertainty" else order,
        descending=descending,
        offset=offset,
        limit=limit,
        ranking=event_id,
    )
    ranked: dict[str, tuple[int, float | None]] = {}
    strategy = ""
    if event_id is not None and ids:
        ranked = project.find_ranked(event_id, ids)
        strategy = ranking_strategy(project, event_id)
    shown = tuple(project.config.schema.names if selection.classes is None else selection.classes)
    rows = tuple(
        (case_summary(o, shown), RankedEntry(*ranked[o.case_id], strategy) if o.case_id in ranked else None)
        for o in project.list_case_overviews(ids)
    )
    return CasePage(rows, total)


def case_summary(overview: CaseOverview, classes: Sequence[str]) -> CaseSummary:
    """The `CaseSummary` of a stored `CaseOverview`, for ``classes``."""
    return CaseSummary(
        overview.case_id,
        overview.shape,
        spacing_from_affine(overview.affine),
        overview.n_versions,
        {name: overview.class_sources.get(name) for name in classes},
    )


def filter_versions(
    versions: Sequence[LabelVersionRecord],
    *,
    classes: Sequence[str] | None = None,
    sources: Sequence[str] = (),
    limit: int | None = None,
) -> tuple[list[LabelVersionRecord], int]:
    """The versions `segloop show` lists: ``(newest that match, oldest first; how many matched)``.

    Args:
        versions: a case's versions, oldest first.
        classes: keep versions annotating one of these classes (None: any).
        sources: keep versions of these sources (empty: any).
        limit: keep the newest ``limit`` of the matching ones (None: all).

    Example:
        >>> filter_versions([], classes=["liver"], limit=3)
        ([], 0)
    """
    wanted = set(classes or ())
    matched = [
        v
        for v in versions
        if (classes is None or wanted & set(v.classes)) and (not sources or v.source in sources)
    ]
    shown = matched if limit is None else matched[len(matched) - limit :] if limit else []
    return shown, len(matched)


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
            raise NotFoundError(msg)
        labels = project.read_labels(version)
    else:
        assembly = compute_effective_label(project, case)
        if assembly is None:
            msg = f"case {case_id!r} has no label version yet: nothing to export"
            raise NotFoundError(msg)
        labels = assembly.labels
    return write_volume(label_volume(project, case, labels), out_path, overwrite=overwrite)
