"""Use cases of the labeling tools: run one on a case and store the result as a new version.

Each run reads the case's image (channel 0) and the tool's input files, calls a pure function of
`segloop.segment`, and adds an immutable label version: ``draft`` for a tool's output, ``sparse``
for what a person drew (scribbles, contours on a few slices: unpainted voxels are *ignore*), the
draft's parent being that sparse version. Parameters and input-file hashes go into the version.
Nothing is written when the input is bad.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segloop.core.geometry import axis_of_plane
from segloop.core.volume import Volume
from segloop.errors import LabelValueError, NotFoundError, SegloopError
from segloop.loop.cases import hash_path
from segloop.loop.labels import compute_effective_label, count_voxels, read_schema_labels
from segloop.store import CaseRecord, LabelVersionRecord, NewLabel, Project

__all__ = [
    "current_class_mask",
    "export_mesh",
    "read_case_image",
    "run_contours",
    "run_fast_marching",
    "run_grow",
    "run_interpolate",
    "run_mesh",
    "run_postprocess",
    "run_threshold",
    "store_tool_labels",
]


def read_case_image(project: Project, case: CaseRecord) -> Volume:
    """The case's first image channel, verified by the store (SHA-256 and grid recorded when added)."""
    return project.read_image(case.case_id)


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
) -> LabelVersionRecord:
    """Store a tool's ``(I, J, K)`` schema labels as a new version of ``case``.

    Args:
        allow_empty: store labels without a voxel of their classes (a model that finds nothing
            says so; a tool that finds nothing is an error).

    Raises:
        LabelValueError: the labels hold no voxel of the classes they claim to annotate.
    """
    schema = project.config.schema
    counts = count_voxels(labels, schema)
    if not allow_empty and sum(counts[name] for name in classes) == 0:
        msg = f"{tool} produced an empty label for {', '.join(classes)}: nothing was stored"
        raise LabelValueError(msg)
    with project.objects.stage() as staged:
        key = staged.put(labels.astype(schema.dtype, copy=False), case.affine)
    label = NewLabel(key, source, tuple(classes), counts, author, tool, params, parent_id)
    return project.add_label_version(case.case_id, label)


def _store_class_draft(
    project: Project,
    case: CaseRecord,
    mask: np.ndarray,
    class_name: str,
    *,
    tool: str,
    params: dict[str, Any],
    author: str,
    parent_id: int | None = None,
) -> LabelVersionRecord:
    """Store a tool's mask of one class as a ``draft`` annotating only that class."""
    return store_tool_labels(
        project,
        case,
        _class_labels(project, mask, class_name),
        source="draft",
        classes=[class_name],
        tool=tool,
        params=params,
        author=author,
        parent_id=parent_id,
    )


def _class_labels(project: Project, mask: np.ndarray, class_name: str) -> np.ndarray:
    schema = project.config.schema
    labels = np.zeros(mask.shape, dtype=schema.dtype)
    labels[mask] = schema.index_of(class_name)
    return labels


def _input_params(path: Path) -> dict[str, str]:
    return {"file": str(Path(path).resolve()), "sha256": hash_path(Path(path))[0]}


def run_threshold(
    project: Project,
    case_id: str,
    *,
    class_name: str,
    low: float | None = None,
    high: float | None = None,
    otsu: bool = False,
    keep_largest: bool = False,
    min_size_voxels: int = 0,
    seed_points: Sequence[Sequence[int]] = (),
    author: str,
) -> LabelVersionRecord:
    """Threshold the image (a range, or above Otsu's threshold) and clean the islands.

    Islands: drop those under ``min_size_voxels``, then keep those under ``seed_points`` (voxel
    indices), or else the largest one if ``keep_largest``.
    """
    from segloop.segment.components import keep_components_at, keep_largest_component, remove_small_components
    from segloop.segment.threshold import threshold_otsu, threshold_range

    project.config.schema.index_of(class_name)
    case = project.get_case(case_id)
    image = read_case_image(project, case).array
    if otsu:
        low, high = threshold_otsu(image), float(image.max())
    if low is None or high is None:
        msg = "threshold needs a range (--range LOW,HIGH or --preset) or --otsu"
        raise SegloopError(msg)
    mask = threshold_range(image, low, high)
    if min_size_voxels:
        mask = remove_small_components(mask, min_size_voxels=min_size_voxels)
    if seed_points:
        mask = keep_components_at(mask, seed_points)
    elif keep_largest:
        mask = keep_largest_component(mask)
    params = {
        "low": float(low),
        "high": float(high),
        "otsu": otsu,
        "keep_largest": keep_largest,
        "min_size_voxels": min_size_voxels,
        "seed_points": [list(p) for p in seed_points],
    }
    return _store_class_draft(project, case, mask, class_name, tool="threshold", params=params, author=author)


def _read_seeds(project: Project, case: CaseRecord, path: Path) -> np.ndarray:
    """Scribbles on the case grid: 0 unpainted, 1..N classes, N + 1 background.

    In a label map, background scribbles hold N + 1 (the value after the last class); in a
    .seg.nrrd, a segment named ``background`` is the background scribble.
    """
    schema = project.config.schema
    seeds, _ = read_schema_labels(
        path, schema, case.shape, case.affine, aliases={"background": schema.ignore_index}
    )
    return seeds


def run_grow(
    project: Project,
    case_id: str,
    *,
    seeds_path: Path,
    author: str,
) -> tuple[LabelVersionRecord, LabelVersionRecord]:
    """Grow multi-class scribbles into a full label map (Slicer's Grow from seeds).

    Returns:
        ``(sparse, draft)``: the scribbles as drawn, and the grown labels (parent: the scribbles).
    """
    from segloop.segment.grow import grow_from_seeds

    schema = project.config.schema
    case = project.get_case(case_id)
    seeds = _read_seeds(project, case, seeds_path)
    background = schema.ignore_index
    painted = [schema.name_of(int(v)) for v in np.unique(seeds) if 0 < v <= len(schema.classes)]
    if not painted:
        msg = f"{seeds_path} holds no class scribble: expected voxels with values 1..{len(schema.classes)}"
        raise LabelValueError(msg)
    image = read_case_image(project, case)
    grown = grow_from_seeds(image.array, seeds, spacing_mm=image.spacing)
    grown = np.where(grown == background, 0, grown).astype(schema.dtype)
    drawn = np.where(seeds == 0, schema.ignore_index, np.where(seeds == background, 0, seeds))
    params = {"seeds": _input_params(seeds_path)}
    sparse = store_tool_labels(
        project,
        case,
        drawn.astype(schema.dtype),
        source="sparse",
        classes=painted,
        tool="scribbles",
        params=params,
        author=author,
    )
    draft = store_tool_labels(
        project,
        case,
        grown,
        source="draft",
        classes=painted,
        tool="grow-from-seeds",
        params=params,
        author=author,
        parent_id=sparse.id,
    )
    return sparse, draft


def run_fast_marching(
    project: Project,
    case_id: str,
    *,
    seeds_path: Path,
    class_name: str,
    volume_fraction: float,
    author: str,
) -> LabelVersionRecord:
    """Grow one class from seed voxels (any non-zero voxel of the seed file) by fast marching."""
    from segloop.segment.grow import fast_marching

    project.config.schema.index_of(class_name)
    case = project.get_case(case_id)
    seeds = read_schema_labels(seeds_path, project.config.schema, case.shape, case.affine)[0] != 0
    if not seeds.any():
        msg = f"{seeds_path} holds no seed voxel: expected a 3D mask with at least one non-zero voxel"
        raise LabelValueError(msg)
    image = read_case_image(project, case)
    mask = fast_marching(image.array, seeds, spacing_mm=image.spacing, volume_fraction=volume_fraction)
    params = {"seeds": _input_params(seeds_path), "volume_fraction": volume_fraction}
    return _store_class_draft(
        project, case, mask, class_name, tool="fast-marching", params=params, author=author
    )


def run_interpolate(
    project: Project,
    case_id: str,
    *,
    class_name: str,
    slices_path: Path,
    plane: str = "axial",
    smoothing_mm: float = 0.0,
    author: str,
) -> tuple[LabelVersionRecord, LabelVersionRecord]:
    """Fill between a few drawn slices of one class (Slicer's Fill between slices).

    Returns:
        ``(sparse, draft)``: the drawn slices (other slices *ignore*) and the filled 3D mask.
    """
    from segloop.segment.interpolate import fill_between_slices

    schema = project.config.schema
    value = schema.index_of(class_name)
    case = project.get_case(case_id)
    labels, _ = read_schema_labels(slices_path, schema, case.shape, case.affine)
    drawn_mask = labels == value
    axis = axis_of_plane(case.affine, plane)
    annotated = np.flatnonzero(drawn_mask.any(axis=tuple(a for a in range(3) if a != axis)))
    spacing = tuple(float(s) for s in np.linalg.norm(case.affine[:3, :3], axis=0))
    filled = fill_between_slices(drawn_mask, axis, spacing_mm=spacing, smoothing_mm=smoothing_mm)
    drawn = np.full(case.shape, schema.ignore_index, dtype=schema.dtype)
    index = [slice(None)] * 3
    index[axis] = annotated
    drawn[tuple(index)] = np.where(drawn_mask[tuple(index)], value, 0)
    params = {
        "slices": _input_params(slices_path),
        "plane": plane,
        "axis": axis,
        "annotated_slices": annotated.tolist(),
        "smoothing_mm": smoothing_mm,
    }
    sparse = store_tool_labels(
        project,
        case,
        drawn,
        source="sparse",
        classes=[class_name],
        tool="slices",
        params=params,
        author=author,
    )
    draft = _store_class_draft(
        project,
        case,
        filled,
        class_name,
        tool="fill-between-slices",
        params=params,
        author=author,
        parent_id=sparse.id,
    )
    return sparse, draft


def run_postprocess(
    project: Project,
    case_id: str,
    *,
    close_mm: float = 0.0,
    open_mm: float = 0.0,
    keep_largest: bool = False,
    fill: bool = False,
    version_id: int | None = None,
    author: str,
) -> LabelVersionRecord:
    """Close → open → fill → keep the largest island of each class of the latest (or a given) version.

    The result keeps the parent's source (post-processed AI output is still ``pseudo``), except that
    a processed ``original`` becomes ``revised``: it is no longer the label as supplied.
    """
    from segloop.segment.morphology import postprocess_labels

    case = project.get_case(case_id)
    versions = project.list_label_versions(case_id)
    if not versions:
        msg = f"case {case_id!r} has no label version to post-process"
        raise NotFoundError(msg)
    parent = project.get_label_version(version_id) if version_id is not None else versions[-1]
    if parent.case_id != case_id:
        msg = f"label version {parent.id} belongs to case {parent.case_id!r}, not {case_id!r}"
        raise SegloopError(msg)
    schema = project.config.schema
    spacing = tuple(float(s) for s in np.linalg.norm(case.affine[:3, :3], axis=0))
    labels = postprocess_labels(
        project.read_labels(parent),
        spacing_mm=spacing,
        close_mm=close_mm,
        open_mm=open_mm,
        keep_largest=keep_largest,
        fill=fill,
        classes=schema.indices_of(parent.classes),
    )
    params = {"close_mm": close_mm, "open_mm": open_mm, "keep_largest": keep_largest, "fill_holes": fill}
    source = "revised" if parent.source == "original" else parent.source
    return store_tool_labels(
        project,
        case,
        labels,
        source=source,
        classes=parent.classes,
        tool="postprocess",
        params=params,
        author=author,
        parent_id=parent.id,
    )


def current_class_mask(project: Project, case: CaseRecord, class_name: str) -> np.ndarray:
    """The effective mask of one class of a case."""
    value = project.config.schema.index_of(class_name)
    assembly = compute_effective_label(project, case)
    if assembly is None or not (assembly.labels == value).any():
        msg = f"case {case.case_id!r} has no {class_name!r} voxel in its effective label"
        raise LabelValueError(msg)
    return assembly.labels == value


def run_mesh(
    project: Project, case_id: str, *, class_name: str, mesh_path: Path, author: str
) -> LabelVersionRecord:
    """Voxelise a closed surface (STL/OBJ/PLY, in the case's physical space) into one class."""
    from segloop.io.mesh import read_mesh
    from segloop.segment.mesh import mesh_to_mask

    project.config.schema.index_of(class_name)
    case = project.get_case(case_id)
    mesh = read_mesh(mesh_path)
    mask = mesh_to_mask(mesh.vertices, mesh.faces, case.shape, case.affine)
    params = {"mesh": _input_params(mesh_path)}
    return _store_class_draft(project, case, mask, class_name, tool="mesh", params=params, author=author)


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
    from segloop.io.mesh import Mesh, write_mesh
    from segloop.segment.mesh import mask_to_mesh

    case = project.get_case(case_id)
    mask = current_class_mask(project, case, class_name)
    vertices, faces = mask_to_mesh(mask, case.affine, smoothing_iterations=smoothing_iterations)
    return write_mesh(Mesh(vertices, faces), out_path, overwrite=overwrite)


def run_contours(
    project: Project,
    case_id: str,
    *,
    polygons_path: Path,
    class_name: str | None = None,
    fill_between: bool = False,
    smoothing_mm: float = 0.0,
    author: str,
) -> list[LabelVersionRecord]:
    """Polygons drawn on slices (a JSON polygon document) → one ``sparse`` version per class.

    The drawn slices are labelled (inside the polygons: the class; elsewhere: background), all
    other slices are *ignore*. With ``fill_between`` each class is also filled between its slices
    into a ``draft`` whose parent is that sparse version.
    """
    import json

    from segloop.segment.contours import read_polygons
    from segloop.segment.interpolate import fill_between_slices

    schema = project.config.schema
    case = project.get_case(case_id)
    try:
        document = json.loads(Path(polygons_path).read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        msg = f"polygon file {polygons_path} does not exist"
        raise NotFoundError(msg) from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        msg = f"{polygons_path}: not valid JSON ({error})"
        raise SegloopError(msg) from error
    parsed = read_polygons(document, case.shape, case.affine)
    names = [class_name] if class_name else list(parsed.classes)
    for name in names:
        schema.index_of(name)
        if name not in parsed.classes:
            msg = f"{polygons_path} has no polygons for class {name!r}: it has {', '.join(parsed.classes)}"
            raise SegloopError(msg)
    masks = {name: mask for name, mask in parsed.to_masks(case.shape).items() if name in names}
    spacing = tuple(float(s) for s in np.linalg.norm(case.affine[:3, :3], axis=0))
    planned = []  # compute everything before storing anything
    for name in names:
        slices = sorted({int(p["slice"]) for p in parsed.classes[name]})
        drawn = np.full(case.shape, schema.ignore_index, dtype=schema.dtype)
        index = [slice(None)] * 3
        index[parsed.axis] = slices
        drawn[tuple(index)] = np.where(masks[name][tuple(index)], schema.index_of(name), 0)
        filled = None
        if fill_between:
            filled = fill_between_slices(
                masks[name], parsed.axis, spacing_mm=spacing, smoothing_mm=smoothing_mm, annotated=slices
            )
        planned.append((name, slices, drawn, filled))
    params = {"polygons": _input_params(polygons_path), "axis": parsed.axis, "smoothing_mm": smoothing_mm}
    stored = []
    for name, slices, drawn, filled in planned:
        sparse = store_tool_labels(
            project,
            case,
            drawn,
            source="sparse",
            classes=[name],
            tool="contours",
            params={**params, "annotated_slices": slices},
            author=author,
        )
        stored.append(sparse)
        if filled is not None:
            stored.append(
                _store_class_draft(
                    project,
                    case,
                    filled,
                    name,
                    tool="fill-between-slices",
                    params={**params, "annotated_slices": slices},
                    author=author,
                    parent_id=sparse.id,
                )
            )
    return stored
