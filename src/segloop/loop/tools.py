"""The labeling tools as one use case: a typed request in, new label versions out.

`run` takes a project, a case and one request (`Threshold`, `Grow`, `FastMarching`,
`Interpolate`, `Contours`, `Mesh`, `Postprocess`: arrays and numbers, no file paths), calls a
pure function of `segloop.segment` on the case's image (channel 0) and stores immutable label
versions: ``draft`` for a tool's output, ``sparse`` for what a person drew (scribbles, contours on
a few slices: unpainted voxels are *ignore*), the draft's parent being that sparse version.
The request's parameters and the SHA-256 of its input arrays go into the versions. Everything is
computed and checked before anything is stored; bad input stores nothing. `preview` computes the
same versions and returns the label they make without storing anything (the editor shows it
before the person accepts it); `class_contours` gives a class's outlines on one slice as a polygon
document that a `Contours` request takes back (AnatomySketch's edit-and-reinterpolate).

`TOOLS` (name -> request class), `THRESHOLD_PRESETS_HU` and `POSTPROCESS_PRESETS` are the tables
every face lists. Reading the inputs from files is the faces' job; the ``read_*`` adapters here
do it for them (`read_seeds`, `read_class_slices`, `read_polygon_document`).

Example:
    >>> sorted(TOOLS)
    ['contours', 'fast-marching', 'grow', 'interpolate', 'mesh', 'postprocess', 'threshold']
    >>> Postprocess.from_presets(["close", "largest"]).morphology_kwargs()
    {'close_mm': 2.0, 'open_mm': 0.0, 'keep_largest': True, 'fill': False}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from segloop.core.geometry import axis_of_plane, spacing_from_affine
from segloop.core.provenance import Source
from segloop.core.volume import Volume
from segloop.errors import (
    CorruptFileError,
    GeometryMismatchError,
    InvalidInputError,
    LabelValueError,
    NotFoundError,
)
from segloop.io.checks import check_scalar_image
from segloop.loop.labels import compute_effective_label, count_voxels, editable_label, read_schema_labels
from segloop.segment.threshold import THRESHOLD_PRESETS_HU
from segloop.store import CaseRecord, LabelVersionRecord, NewLabel, Project, compute_label_key
from segloop.store.project import ANY_HEAD

__all__ = [
    "POSTPROCESS_PRESETS",
    "THRESHOLD_PRESETS_HU",
    "TOOLS",
    "Contours",
    "FastMarching",
    "Grow",
    "Interpolate",
    "Mesh",
    "Postprocess",
    "Threshold",
    "ToolResult",
    "case_contours",
    "class_contours",
    "class_mesh",
    "current_class_mask",
    "export_mesh",
    "preview",
    "read_case_image",
    "read_class_slices",
    "read_polygon_document",
    "read_seeds",
    "replace_class_slices",
    "run",
    "store_tool_labels",
    "write_case_contours",
]

#: Post-processing steps by name (``predict --postprocess close,largest``) → `Postprocess` fields.
POSTPROCESS_PRESETS: dict[str, dict[str, Any]] = {
    "close": {"close_mm": 2.0},
    "open": {"open_mm": 2.0},
    "largest": {"largest": True},
    "fill": {"fill_holes": True},
}


# -- requests ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """Threshold the image into one class, then clean its islands.

    Attributes:
        class_name: the class to label.
        value_range: ``(low, high)`` inclusive, in the image's units.
        preset: a name of `THRESHOLD_PRESETS_HU` instead of a range.
        otsu: keep voxels above Otsu's threshold instead of a range.
        keep_largest: keep the largest island (when no seed is given).
        min_size_voxels: drop islands smaller than this first.
        seeds: ``(i, j, k)`` voxels: keep the islands under them.
    """

    name: ClassVar[str] = "threshold"
    class_name: str
    value_range: tuple[float, float] | None = None
    preset: str | None = None
    otsu: bool = False
    keep_largest: bool = False
    min_size_voxels: int = 0
    seeds: tuple[tuple[int, int, int], ...] = ()


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class Grow:
    """Grow multi-class scribbles into a full label map (Slicer's Grow from seeds).

    Attributes:
        seeds: ``(I, J, K)`` integers: 0 unpainted, 1..N the classes, N + 1 background.
    """

    name: ClassVar[str] = "grow"
    seeds: np.ndarray


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class FastMarching:
    """Grow one class from seed voxels by fast marching until it fills a fraction of the image.

    Attributes:
        class_name: the class to label.
        seeds: ``(I, J, K)`` mask, non-zero at the seeds.
        volume_fraction: the target size as a fraction of the image (0..1].
    """

    name: ClassVar[str] = "fast-marching"
    class_name: str
    seeds: np.ndarray
    volume_fraction: float = 0.05


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class Interpolate:
    """Fill one class between a few drawn slices (Slicer's Fill between slices).

    Attributes:
        class_name: the class drawn.
        slices: ``(I, J, K)`` mask of the class; the slices holding any voxel are the drawn ones.
        axis: ``axial``, ``coronal``, ``sagittal`` or a voxel axis 0-2.
        smooth_mm: smoothing of the filled result (mm).
    """

    name: ClassVar[str] = "interpolate"
    class_name: str
    slices: np.ndarray
    axis: str | int = "axial"
    smooth_mm: float = 0.0


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class Contours:
    """Polygons drawn on slices → those slices labelled (one ``sparse`` version per class).

    Attributes:
        polygons: a polygon document (`segloop.segment.contours.read_polygons`).
        class_name: only this class of the document (default: all).
        fill_between: also fill each class between its slices (a ``draft`` per class).
        smooth_mm: smoothing of the filled result (mm).
        replace: AnatomySketch's InterpolationPlus: rebuild each class of the document from its
            edited slices on top of the case's current label, between its first and last edited
            slice (only on the drawn slices without ``fill_between``); the class elsewhere and
            the other classes stay as they are. Stored as one ``revised`` version of those
            classes (after their ``sparse`` drawn slices) instead of ``draft`` versions.
    """

    name: ClassVar[str] = "contours"
    polygons: Mapping[str, Any]
    class_name: str | None = None
    fill_between: bool = False
    smooth_mm: float = 0.0
    replace: bool = False


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class Mesh:
    """A closed triangle surface voxelised into one class.

    Attributes:
        class_name: the class to label.
        vertices: ``(V, 3)`` vertex positions, RAS+ mm (`segloop.io.mesh.read_mesh` gives them).
        faces: ``(F, 3)`` vertex indices of the triangles.
    """

    name: ClassVar[str] = "mesh"
    class_name: str
    vertices: np.ndarray
    faces: np.ndarray


@dataclass(frozen=True)
class Postprocess:
    """Close → open → fill → keep the largest island of each class of a version (seed 000's order).

    Attributes:
        close_mm: closing radius (mm; 0: none).
        open_mm: opening radius (mm; 0: none).
        fill_holes: fill cavities per class.
        largest: keep the largest island per class.
        version: the version to process (default: the case's newest).
    """

    name: ClassVar[str] = "postprocess"
    close_mm: float = 0.0
    open_mm: float = 0.0
    fill_holes: bool = False
    largest: bool = False
    version: int | None = None

    @classmethod
    def from_presets(cls, names: Sequence[str]) -> Postprocess:
        """The steps named in `POSTPROCESS_PRESETS` (``["close", "largest"]``) combined.

        Raises:
            InvalidInputError: an unknown name.
        """
        unknown = sorted(set(names) - set(POSTPROCESS_PRESETS))
        if unknown:
            msg = f"unknown post-processing {unknown}: expected some of {', '.join(POSTPROCESS_PRESETS)}"
            raise InvalidInputError(msg)
        fields: dict[str, Any] = {}
        for name in names:
            fields.update(POSTPROCESS_PRESETS[name])
        return cls(**fields)

    def morphology_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `segloop.segment.morphology.postprocess_labels`."""
        return {
            "close_mm": float(self.close_mm),
            "open_mm": float(self.open_mm),
            "keep_largest": self.largest,
            "fill": self.fill_holes,
        }


ToolRequest = Threshold | Grow | FastMarching | Interpolate | Contours | Mesh | Postprocess

#: Every tool by name: the request class that asks for it.
TOOLS: dict[str, type] = {
    request.name: request
    for request in (Threshold, Grow, FastMarching, Interpolate, Contours, Mesh, Postprocess)
}


@dataclass(frozen=True)
class ToolResult:
    """What a tool stored.

    Attributes:
        case_id: the case.
        versions: the new versions, in the order stored (a sparse version before its draft).
    """

    case_id: str
    versions: tuple[LabelVersionRecord, ...]

    @property
    def version(self) -> LabelVersionRecord:
        """The last version stored: the tool's output, the one to look at and correct next."""
        return self.versions[-1]


@dataclass(frozen=True)
class _Planned:
    """A version computed but not stored; ``parent`` < 0 refers to an earlier planned version."""

    labels: np.ndarray
    source: str
    classes: tuple[str, ...]
    tool: str
    params: dict[str, Any]
    parent: int | None = None
    allow_empty: bool = False


# -- shared parts --------------------------------------------------------------------------------


def read_case_image(project: Project, case: CaseRecord) -> Volume:
    """The case's first image channel, as tools, training and reports compute on it.

    Returns:
        The `Volume` verified by the store (SHA-256 and grid recorded when added).

    Raises:
        InvalidInputError: it does not hold one real, finite value per voxel (a project made
            before imports checked this may hold RGB or NaN images).
    """
    image = project.read_image(case.case_id)
    check_scalar_image(image, f"image of case {case.case_id!r}")
    return image


def store_tool_labels(
    project: Project,
    case: CaseRecord,
    labels: np.ndarray,
    *,
    source: str,
    classes: Sequence[str],
    tool: str,
    params: dict[str, Any],
    author: str,
    parent_id: int | None = None,
    allow_empty: bool = False,
    expected_head: int | object | None = ANY_HEAD,
) -> LabelVersionRecord:
    """Store a tool's ``(I, J, K)`` schema labels as a new version of ``case``.

    Args:
        allow_empty: store labels without a voxel of their classes (a model that finds nothing
            says so; a tool that finds nothing is an error).
        expected_head: the case's newest version id the caller read (None: it had none), checked
            in the insert's transaction (`Project.add_label_version`); default: not checked.

    Raises:
        LabelValueError: the labels hold no voxel of the classes they claim to annotate.
        ConflictError: the case's newest version is no longer ``expected_head``.
    """
    schema = project.config.schema
    counts = count_voxels(labels, schema)
    if not allow_empty and sum(counts[name] for name in classes) == 0:
        msg = f"{tool} produced an empty label for {', '.join(classes)}: nothing was stored"
        raise LabelValueError(msg)
    with project.objects.stage() as staged:
        key = staged.put(labels.astype(schema.dtype, copy=False), case.affine)
    label = NewLabel(key, source, tuple(classes), counts, author, tool, params, parent_id)
    return project.add_label_version(case.case_id, label, expected_head=expected_head)


def _class_labels(project: Project, mask: np.ndarray, class_name: str) -> np.ndarray:
    schema = project.config.schema
    labels = np.zeros(mask.shape, dtype=schema.dtype)
    labels[mask] = schema.index_of(class_name)
    return labels


def _on_grid(array: Any, case: CaseRecord, what: str) -> np.ndarray:
    """``array`` as a C-ordered ndarray on the case's grid (seeds decoded from NIfTI come in
    Fortran order, which costs grow a third more CPU on 256x256x128; the result is the same)."""
    array = np.ascontiguousarray(array)
    if array.shape != tuple(case.shape):
        msg = f"{what} has shape {array.shape}: expected case {case.case_id!r}'s grid {tuple(case.shape)}"
        raise GeometryMismatchError(msg)
    return array


def _slice_axis(case: CaseRecord, axis: str | int) -> int:
    """The voxel axis (0-2) of a plane name (``axial``...) or of a voxel axis given as a number."""
    if isinstance(axis, str):
        return axis_of_plane(case.affine, axis)
    if isinstance(axis, bool) or axis not in (0, 1, 2):
        msg = f"the slice axis must be a plane name or a voxel axis 0-2; got {axis!r}"
        raise InvalidInputError(msg)
    return int(axis)


def _digest(array: np.ndarray) -> str:
    return compute_label_key(np.ascontiguousarray(array))


# -- the tools -----------------------------------------------------------------------------------


def _threshold(project: Project, case: CaseRecord, request: Threshold) -> list[_Planned]:
    from segloop.segment.components import keep_components_at, keep_largest_component, remove_small_components
    from segloop.segment.threshold import threshold_otsu, threshold_range

    project.config.schema.index_of(request.class_name)
    chosen = [request.value_range is not None, request.preset is not None, request.otsu]
    if sum(chosen) != 1:
        msg = f"threshold needs exactly one of a value range, a preset or Otsu's threshold; got {sum(chosen)}"
        raise InvalidInputError(msg)
    if request.preset is not None and request.preset not in THRESHOLD_PRESETS_HU:
        msg = f"unknown preset {request.preset!r}: expected one of {', '.join(THRESHOLD_PRESETS_HU)}"
        raise InvalidInputError(msg)
    image = read_case_image(project, case).array
    seeds = [tuple(int(v) for v in point) for point in request.seeds]
    for point in seeds:
        if len(point) != 3 or not all(0 <= v < n for v, n in zip(point, case.shape, strict=True)):
            msg = f"seed {list(point)} is outside the image: expected voxel indices below {list(case.shape)}"
            raise InvalidInputError(msg)
    if request.otsu:
        low, high = threshold_otsu(image), float(image.max())
    elif request.preset is not None:
        low, high = THRESHOLD_PRESETS_HU[request.preset]
    else:
        low, high = (float(v) for v in request.value_range)  # type: ignore[union-attr]
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        msg = f"a threshold range must be two finite numbers LOW <= HIGH; got {low}, {high}"
        raise InvalidInputError(msg)
    mask = threshold_range(image, low, high)
    if request.min_size_voxels:
        mask = remove_small_components(mask, min_size_voxels=request.min_size_voxels)
    if seeds:
        mask = keep_components_at(mask, seeds)
    elif request.keep_largest:
        mask = keep_largest_component(mask)
    params = {
        "low": float(low),
        "high": float(high),
        "preset": request.preset,
        "otsu": request.otsu,
        "keep_largest": request.keep_largest,
        "min_size_voxels": request.min_size_voxels,
        "seed_points": [list(p) for p in seeds],
    }
    labels = _class_labels(project, mask, request.class_name)
    return [_Planned(labels, Source.DRAFT, (request.class_name,), "threshold", params)]


def _grow(project: Project, case: CaseRecord, request: Grow) -> list[_Planned]:
    from segloop.segment.grow import grow_from_seeds

    schema = project.config.schema
    seeds = _on_grid(request.seeds, case, "the seed map")
    background = schema.ignore_index
    schema.check_values(seeds, what="the seed map")
    present = np.unique(seeds[seeds != 0])  # scribbles are few: unique of them only
    painted = tuple(schema.name_of(int(v)) for v in present if v <= len(schema.classes))
    if not painted:
        msg = f"the seed map holds no class scribble: expected voxels with values 1..{len(schema.classes)}"
        raise LabelValueError(msg)
    image = read_case_image(project, case)
    seeds = seeds.astype(schema.dtype, copy=False)
    grown = grow_from_seeds(image.array, seeds, spacing_mm=image.spacing)
    grown = np.where(grown == background, 0, grown).astype(schema.dtype)
    drawn = np.where(seeds == 0, schema.ignore_index, np.where(seeds == background, 0, seeds))
    params = {"seeds_sha256": _digest(seeds)}
    return [
        _Planned(drawn.astype(schema.dtype), Source.SPARSE, painted, "scribbles", params),
        _Planned(grown, Source.DRAFT, painted, "grow-from-seeds", params, parent=-1),
    ]


def _fast_marching(project: Project, case: CaseRecord, request: FastMarching) -> list[_Planned]:
    from segloop.segment.grow import fast_marching

    project.config.schema.index_of(request.class_name)
    seeds = _on_grid(request.seeds, case, "the seed mask") != 0
    if not seeds.any():
        msg = "the seed mask holds no seed voxel: expected at least one non-zero voxel"
        raise LabelValueError(msg)
    if not 0 < request.volume_fraction <= 1:
        msg = f"the volume fraction must lie in (0, 1]; got {request.volume_fraction}"
        raise InvalidInputError(msg)
    image = read_case_image(project, case)
    mask = fast_marching(
        image.array, seeds, spacing_mm=image.spacing, volume_fraction=request.volume_fraction
    )
    params = {"seeds_sha256": _digest(seeds), "volume_fraction": request.volume_fraction}
    labels = _class_labels(project, mask, request.class_name)
    return [_Planned(labels, Source.DRAFT, (request.class_name,), "fast-marching", params)]


def _interpolate(project: Project, case: CaseRecord, request: Interpolate) -> list[_Planned]:
    from segloop.segment.interpolate import fill_between_slices

    schema = project.config.schema
    value = schema.index_of(request.class_name)
    drawn_mask = _on_grid(request.slices, case, "the drawn slices") != 0
    axis = _slice_axis(case, request.axis)
    annotated = np.flatnonzero(drawn_mask.any(axis=tuple(a for a in range(3) if a != axis)))
    if annotated.size == 0:
        msg = f"no slice of {request.class_name!r} is drawn: expected voxels of the class on a few slices"
        raise LabelValueError(msg)
    filled = fill_between_slices(
        drawn_mask, axis, spacing_mm=spacing_from_affine(case.affine), smoothing_mm=request.smooth_mm
    )
    drawn = np.full(case.shape, schema.ignore_index, dtype=schema.dtype)
    index: list[Any] = [slice(None)] * 3
    index[axis] = annotated
    drawn[tuple(index)] = np.where(drawn_mask[tuple(index)], value, 0)
    params = {
        "slices_sha256": _digest(drawn_mask),
        "plane": request.axis,
        "axis": axis,
        "annotated_slices": annotated.tolist(),
        "smoothing_mm": request.smooth_mm,
    }
    classes = (request.class_name,)
    return [
        _Planned(drawn, Source.SPARSE, classes, "slices", params),
        _Planned(_class_labels(project, filled, request.class_name), Source.DRAFT, classes,
                 "fill-between-slices", params, parent=-1),
    ]  # fmt: skip


def _contours(project: Project, case: CaseRecord, request: Contours) -> list[_Planned]:
    from segloop.segment.contours import read_polygons
    from segloop.segment.interpolate import fill_between_slices

    schema = project.config.schema
    parsed = read_polygons(request.polygons, case.shape, case.affine)
    names = [request.class_name] if request.class_name else list(parsed.classes)
    for name in names:
        schema.index_of(name)
        if name not in parsed.classes:
            msg = f"the polygons have no class {name!r}: they have {', '.join(parsed.classes)}"
            raise InvalidInputError(msg)
    masks = {name: mask for name, mask in parsed.to_masks(case.shape).items() if name in names}
    spacing = spacing_from_affine(case.affine)
    document = json.dumps(request.polygons, sort_keys=True, default=str).encode()
    params = {
        "polygons_sha256": hashlib.sha256(document).hexdigest(),
        "axis": parsed.axis,
        "smoothing_mm": request.smooth_mm,
    }
    planned: list[_Planned] = []
    replaced = np.array(editable_label(project, case)[1]) if request.replace else None
    for name in names:
        slices = sorted({int(p["slice"]) for p in parsed.classes[name]})
        drawn = np.full(case.shape, schema.ignore_index, dtype=schema.dtype)
        index: list[Any] = [slice(None)] * 3
        index[parsed.axis] = slices
        drawn[tuple(index)] = np.where(masks[name][tuple(index)], schema.index_of(name), 0)
        class_params = {**params, "annotated_slices": slices}
        planned.append(_Planned(drawn, Source.SPARSE, (name,), "contours", class_params))
        filled = masks[name]
        if request.fill_between:
            filled = fill_between_slices(
                masks[name], parsed.axis, spacing_mm=spacing, smoothing_mm=request.smooth_mm, annotated=slices
            )
        if replaced is not None:
            span = slices if not request.fill_between else list(range(slices[0], slices[-1] + 1))
            replace_class_slices(replaced, filled, schema.index_of(name), parsed.axis, span)
        elif request.fill_between:
            labels = _class_labels(project, filled, name)
            planned.append(
                _Planned(labels, Source.DRAFT, (name,), "fill-between-slices", class_params, parent=-1)
            )
    if replaced is not None:
        replace_params = {**params, "fill_between": request.fill_between, "annotated_slices": {
            name: sorted({int(p["slice"]) for p in parsed.classes[name]}) for name in names}}  # fmt: skip
        planned.append(
            _Planned(replaced, Source.REVISED, tuple(names), "contours-replace", replace_params, parent=-1)
        )
    return planned


def replace_class_slices(
    labels: np.ndarray, mask: np.ndarray, value: int, axis: int, slices: Sequence[int]
) -> None:
    """Put ``mask`` as class ``value`` into ``labels`` on ``slices`` only, in place.

    On those slices the class's old voxels become background and ``mask`` wins over any other
    class; every other slice, and the other classes' voxels off the mask, stay as they were.

    Args:
        labels: ``(I, J, K)`` schema values, changed in place.
        mask: ``(I, J, K)`` bool, the class's new shape.
        value: the class's label value.
        axis: the voxel axis the slices are taken along.
        slices: the slice indices to rebuild.

    Examples:
        >>> labels = np.array([[[1, 2, 1]]]); mask = np.array([[[False, True, True]]])
        >>> replace_class_slices(labels, mask, 1, 2, [0, 1]); labels.tolist()
        [[[0, 1, 1]]]
    """
    index: list[Any] = [slice(None)] * 3
    index[axis] = list(slices)
    part, new = labels[tuple(index)], mask[tuple(index)]
    part[part == value] = 0
    part[new] = value
    labels[tuple(index)] = part


def _mesh(project: Project, case: CaseRecord, request: Mesh) -> list[_Planned]:
    from segloop.segment.mesh import mesh_to_mask

    project.config.schema.index_of(request.class_name)
    vertices = np.asarray(request.vertices, dtype=np.float64)
    faces = np.asarray(request.faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        msg = f"a mesh needs (V, 3) vertices and (F, 3) faces; got {vertices.shape} and {faces.shape}"
        raise InvalidInputError(msg)
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        msg = f"mesh faces index vertices 0..{len(vertices) - 1}; got {faces.min()}..{faces.max()}"
        raise InvalidInputError(msg)
    if not np.isfinite(vertices).all():
        msg = "mesh vertices must be finite positions in mm; got NaN or infinite ones"
        raise InvalidInputError(msg)
    mask = mesh_to_mask(vertices, faces, case.shape, case.affine)
    params = {"vertices_sha256": _digest(vertices), "faces_sha256": _digest(faces.astype(np.int64))}
    labels = _class_labels(project, mask, request.class_name)
    return [_Planned(labels, Source.DRAFT, (request.class_name,), "mesh", params)]


def _postprocess(project: Project, case: CaseRecord, request: Postprocess) -> list[_Planned]:
    from segloop.segment.morphology import postprocess_labels

    versions = project.list_label_versions(case.case_id)
    if not versions:
        msg = f"case {case.case_id!r} has no label version to post-process"
        raise NotFoundError(msg)
    parent = project.get_label_version(request.version) if request.version is not None else versions[-1]
    if parent.case_id != case.case_id:
        msg = f"label version {parent.id} belongs to case {parent.case_id!r}, not {case.case_id!r}"
        raise InvalidInputError(msg)
    schema = project.config.schema
    labels = postprocess_labels(
        project.read_labels(parent),
        spacing_mm=spacing_from_affine(case.affine),
        classes=schema.indices_of(parent.classes),
        **request.morphology_kwargs(),
    )
    params = {
        "close_mm": request.close_mm,
        "open_mm": request.open_mm,
        "keep_largest": request.largest,
        "fill_holes": request.fill_holes,
    }
    # post-processed AI output is still pseudo; a processed original is no longer the label as supplied
    source = Source.REVISED if parent.source == Source.ORIGINAL else parent.source
    return [_Planned(labels, source, parent.classes, "postprocess", params, parent=parent.id)]


_RUNNERS: dict[type, Callable[[Project, CaseRecord, Any], list[_Planned]]] = {
    Threshold: _threshold,
    Grow: _grow,
    FastMarching: _fast_marching,
    Interpolate: _interpolate,
    Contours: _contours,
    Mesh: _mesh,
    Postprocess: _postprocess,
}


def _plan(project: Project, case_id: str, request: ToolRequest) -> tuple[CaseRecord, list[_Planned]]:
    """The case and the versions ``request`` makes of it, computed and checked, nothing stored.

    Raises:
        InvalidInputError: not a request of `TOOLS`, or bad parameters.
        LabelValueError: a version would hold no voxel of its classes (the tool found nothing).
    """
    runner = _RUNNERS.get(type(request))
    if runner is None:
        msg = f"unknown tool request {type(request).__name__}: expected one of {', '.join(TOOLS)}"
        raise InvalidInputError(msg)
    case = project.get_case(case_id)
    planned = runner(project, case, request)
    schema = project.config.schema
    for item in planned:
        counts = count_voxels(item.labels, schema)
        if not item.allow_empty and sum(counts[name] for name in item.classes) == 0:
            msg = f"{item.tool} produced an empty label for {', '.join(item.classes)}: nothing was stored"
            raise LabelValueError(msg)
    return case, planned


def preview(project: Project, case_id: str, request: ToolRequest) -> np.ndarray:
    """The label a tool would produce on a case, computed as `run` computes it; nothing is stored.

    The tool's output is the versions `run` would store that no other version of the same run
    derives from (the grown draft, not the scribbles it grew from; each class's filled draft of
    a contour document), their classes' voxels put together in the order stored.

    Args:
        project: the open project.
        case_id: the case.
        request: what to run (a request of `TOOLS`).

    Returns:
        ``(I, J, K)`` array of the schema's dtype on the case's grid: the output classes' values,
        0 elsewhere (no *ignore* value: what a sparse version leaves unpainted is 0 here).

    Raises:
        The errors of `run` (nothing stored by either).
    """
    case, planned = _plan(project, case_id, request)
    schema = project.config.schema
    derived = {position + item.parent for position, item in enumerate(planned) if (item.parent or 0) < 0}
    result = np.zeros(tuple(case.shape), dtype=schema.dtype)
    for position, item in enumerate(planned):
        if position in derived:
            continue
        for value in schema.indices_of(item.classes):
            result[item.labels == value] = value
    return result


def run(
    project: Project,
    case_id: str,
    request: ToolRequest,
    *,
    author: str,
    parent: int | None = None,
    expected_head: int | object | None = ANY_HEAD,
    provenance: Mapping[str, Any] | None = None,
) -> ToolResult:
    """Run one tool on a case and store its versions.

    Args:
        project: the open project.
        case_id: the case.
        request: what to run (a request of `TOOLS`).
        author: recorded on the versions.
        parent: the version the person worked from, recorded as the parent of the first version
            stored (a post-processed version's parent is always the version processed).
        expected_head: the case's newest version id when the person read the label they drew on
            (None: the case had none); when given, a case changed since is refused, checked in
            the same transaction as the first version's insert. Default: not checked.
        provenance: more parameters to record (e.g. the input files and their SHA-256).

    Returns:
        The `ToolResult`: the stored versions, a sparse version before the draft made from it.

    Raises:
        NotFoundError: an unknown case or version.
        InvalidInputError: bad parameters, an image that is not one real finite value per voxel.
        GeometryMismatchError: an input array not on the case's grid.
        LabelValueError: the tool found nothing (nothing is stored).
        ConflictError: the case changed since ``expected_head`` (nothing is stored).
    """
    from segloop.loop.corrections import check_parent

    project.get_case(case_id)
    if parent is not None and project.get_label_version(parent).case_id != case_id:
        msg = f"label version {parent} is not a version of case {case_id!r}"
        raise InvalidInputError(msg)
    if expected_head is not ANY_HEAD:  # refused before the tool's work; the insert checks it again
        check_parent(case_id, project.list_label_versions(case_id), expected_head, force=False)  # type: ignore[arg-type]
    case, planned = _plan(project, case_id, request)
    stored: list[LabelVersionRecord] = []
    extra = dict(provenance or {})
    for position, item in enumerate(planned):
        if item.parent is not None and item.parent < 0:
            parent_id: int | None = stored[position + item.parent].id
        elif item.parent is not None:
            parent_id = item.parent
        else:
            parent_id = parent if position == 0 else None
        stored.append(
            store_tool_labels(
                project,
                case,
                item.labels,
                source=str(item.source),
                classes=item.classes,
                tool=item.tool,
                params={**item.params, **extra},
                author=author,
                parent_id=parent_id,
                allow_empty=item.allow_empty,
                expected_head=expected_head if position == 0 else ANY_HEAD,
            )
        )
    return ToolResult(case_id, tuple(stored))


# -- masks and meshes of the current label ------------------------------------------------------------


def current_class_mask(project: Project, case: CaseRecord, class_name: str) -> np.ndarray:
    """The effective mask of one class of a case."""
    value = project.config.schema.index_of(class_name)
    assembly = compute_effective_label(project, case)
    if assembly is None or not (assembly.labels == value).any():
        msg = f"case {case.case_id!r} has no {class_name!r} voxel in its effective label"
        raise LabelValueError(msg)
    return assembly.labels == value


def class_contours(
    project: Project,
    case_id: str,
    class_name: str,
    axis: str | int,
    index: int,
    version: int | None = None,
    *,
    tolerance_voxels: float = 0.5,
) -> dict[str, Any]:
    """The outlines of one class on one slice, as a polygon document a `Contours` request takes back.

    AnatomySketch's InterpolationPlus: the editor shows a class's contours on a few slices, the
    person drags, adds or deletes control points, and sends the edited polygons back as
    ``Contours(polygons=..., class_name=..., fill_between=True)`` to re-interpolate the class.

    Args:
        project: the open project.
        case_id: the case.
        class_name: the class (a schema name).
        axis: ``axial``, ``coronal``, ``sagittal`` or a voxel axis 0-2.
        index: the slice along that axis.
        version: a label version of the case (default: its current effective label).
        tolerance_voxels: Douglas-Peucker tolerance of the control points (voxels; 0 keeps every
            vertex of the traced outline). Simplified outlines lie inside the traced ones: 0.5
            keeps a 32-voxel-wide organ re-interpolated from 3 slices at Dice 0.92 with about 8
            points per outline, where 1.0 gives 0.88 with 6.

    Returns:
        A polygon document (`segloop.segment.contours`): ``{"axis": 0-2, "coordinates": "voxel",
        "classes": {class_name: [{"slice": index, "points": [[u, v], ...]}, ...]}}``, outer
        outlines and holes (even-odd); no polygon when the class is absent from the slice.

    Raises:
        NotFoundError: an unknown case or version.
        InvalidInputError: an unknown class or axis, a slice outside the image, a version of
            another case.
    """
    from segloop.segment.contours import make_polygon_document, mask_to_polygons

    case = project.get_case(case_id)
    value = project.config.schema.index_of(class_name)
    axis = _slice_axis(case, axis)
    count = case.shape[axis]
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or not 0 <= index < count:
        msg = f"slice {index!r} lies outside axis {axis} of case {case_id!r}: expected 0..{count - 1}"
        raise InvalidInputError(msg)
    labels = _labels_of(project, case, version)
    layer = np.take(labels, [int(index)], axis=axis) == value  # one slice thick, axes kept
    polygons = mask_to_polygons(layer, axis, tolerance_voxels=tolerance_voxels)
    return make_polygon_document({class_name: [{**p, "slice": int(index)} for p in polygons]}, axis)


def _labels_of(project: Project, case: CaseRecord, version: int | None) -> np.ndarray:
    """A version's labels of the case (checked to be the case's), or its effective label."""
    if version is not None:
        record = project.get_label_version(version)
        if record.case_id != case.case_id:
            msg = f"label version {version} belongs to case {record.case_id!r}, not {case.case_id!r}"
            raise InvalidInputError(msg)
        return project.read_labels(record)
    assembly = compute_effective_label(project, case)
    return assembly.labels if assembly is not None else np.zeros(case.shape, np.uint8)


def case_contours(
    project: Project,
    case_id: str,
    class_names: Sequence[str] | None = None,
    axis: str | int = "axial",
    version: int | None = None,
    *,
    tolerance_voxels: float = 0.5,
) -> dict[str, Any]:
    """The outlines of classes on every slice that holds them, for correction (seed 000's ``.ctr``).

    A person edits some slices' polygons and sends those slices back as ``Contours(polygons=...,
    fill_between=True, replace=True)``, which rebuilds the edited classes between the edited
    slices on top of the current label (AnatomySketch's InterpolationPlus).

    Args:
        project: the open project.
        case_id: the case.
        class_names: the classes (default: every class of the schema present in the label).
        axis: ``axial``, ``coronal``, ``sagittal`` or a voxel axis 0-2.
        version: a label version of the case (default: its current effective label).
        tolerance_voxels: Douglas-Peucker tolerance of the control points (`class_contours`).

    Returns:
        A polygon document ``{"axis": 0-2, "coordinates": "voxel", "classes": {name: [{"slice",
        "points"}, ...]}}`` (outer outlines and holes, even-odd), classes in schema order.

    Raises:
        NotFoundError: an unknown case or version.
        InvalidInputError: an unknown class or axis, a version of another case.
        LabelValueError: a class asked for has no voxel in the label.
    """
    from segloop.segment.contours import make_polygon_document, mask_to_polygons

    case = project.get_case(case_id)
    schema = project.config.schema
    axis = _slice_axis(case, axis)
    labels = _labels_of(project, case, version)
    present = [n for n in schema.names if (labels == schema.index_of(n)).any()]
    names = list(class_names) if class_names else present
    classes = {}
    for name in names:
        mask = labels == schema.index_of(name)
        if not mask.any():
            msg = f"case {case_id!r} has no {name!r} voxel in its label: expected a class it holds"
            raise LabelValueError(msg)
        classes[name] = mask_to_polygons(mask, axis, tolerance_voxels=tolerance_voxels)
    return make_polygon_document(classes, axis)


def write_case_contours(
    project: Project,
    case_id: str,
    path: Path,
    class_names: Sequence[str] | None = None,
    axis: str | int = "axial",
    version: int | None = None,
    *,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write `case_contours` to ``path`` as JSON (atomically; an existing file only with ``overwrite``)."""
    from segloop.io.atomic import atomic_file

    document = case_contours(project, case_id, class_names, axis, version)
    with atomic_file(path, overwrite=overwrite) as temporary:
        temporary.write_text(json.dumps(document), encoding="utf-8")
    return document


def class_mesh(
    project: Project, case_id: str, class_name: str, *, smoothing_iterations: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """The smoothed surface of one class of a case's effective label: ``(vertices RAS mm, faces)``."""
    from segloop.segment.mesh import mask_to_mesh

    case = project.get_case(case_id)
    mask = current_class_mask(project, case, class_name)
    return mask_to_mesh(mask, case.affine, smoothing_iterations=smoothing_iterations)


def export_mesh(
    project: Project,
    case_id: str,
    class_name: str,
    out_path: Path,
    *,
    smoothing_iterations: int = 10,
    overwrite: bool = False,
) -> Path:
    """Write the surface of one class of a case's effective label (RAS mm; LPS on disk like Slicer)."""
    from segloop.io.mesh import Mesh as SurfaceMesh
    from segloop.io.mesh import write_mesh

    vertices, faces = class_mesh(project, case_id, class_name, smoothing_iterations=smoothing_iterations)
    return write_mesh(SurfaceMesh(vertices, faces), out_path, overwrite=overwrite)


# -- adapters for the faces: inputs read from files ----------------------------------------------------


def read_seeds(project: Project, case_id: str, path: Path) -> np.ndarray:
    """A scribble file as a `Grow` seed map on the case's grid.

    In a label map, background scribbles hold N + 1 (the value after the last class); in a
    ``.seg.nrrd``, a segment named ``background`` is the background scribble.
    """
    schema = project.config.schema
    case = project.get_case(case_id)
    aliases = {"background": schema.ignore_index}
    return read_schema_labels(Path(path), schema, case.shape, case.affine, aliases=aliases)[0]


def read_class_slices(
    project: Project, case_id: str, path: Path, class_name: str | None = None
) -> np.ndarray:
    """A label file's voxels of ``class_name`` (None: any non-zero voxel) as a mask on the case's grid."""
    schema = project.config.schema
    case = project.get_case(case_id)
    labels = read_schema_labels(Path(path), schema, case.shape, case.affine)[0]
    return labels == schema.index_of(class_name) if class_name is not None else labels != 0


def read_polygon_document(path: Path) -> dict[str, Any]:
    """A JSON polygon document (`Contours.polygons`)."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        msg = f"polygon file {path} does not exist"
        raise NotFoundError(msg) from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        msg = f"{path}: expected a JSON polygon document; got invalid JSON ({error})"
        raise CorruptFileError(msg) from error
    if not isinstance(document, dict):
        msg = f"{path}: expected a JSON object (a polygon document); got {type(document).__name__}"
        raise InvalidInputError(msg)
    return document
