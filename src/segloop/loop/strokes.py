"""A person's strokes simulated from a reference label: drawn slices and scribbles.

The labeling tools take what a person draws: a few slices of a class (``segloop segment CASE
interpolate --slices``) or scribbles of each class and the background (``segloop segment CASE grow
--seeds``). To try the tools, or a recipe, on data that has a reference label but no person at
hand, these functions draw *from the reference* what a person would: the reference's classes on a
few slices spread evenly over the structure, or strokes inside each class and a ring of
background around them on a few slices (`segloop.synthetic.make_scribbles`). They stand in for a
person; the reference itself never enters the project.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from segloop.core.geometry import align_to_grid, axis_of_plane, spacing_from_affine
from segloop.errors import GeometryMismatchError, InvalidInputError, LabelValueError
from segloop.exchange.values import remap_labels
from segloop.io import read_volume
from segloop.loop.labels import read_schema_labels
from segloop.loop.simulate import evenly_spaced_slices
from segloop.store import Project
from segloop.synthetic import make_scribbles

__all__ = ["STROKE_KINDS", "draw_from_reference", "read_reference", "slices_of"]


def _drawn_slices(reference: np.ndarray, axis: int, count: int) -> list[int]:
    if count < 1:
        msg = f"the number of slices must be at least 1; got {count}"
        raise InvalidInputError(msg)
    chosen = evenly_spaced_slices(reference != 0, axis, count)
    if not chosen:
        msg = "the reference holds no class voxel: expected a label with at least one class"
        raise LabelValueError(msg)
    return chosen


def slices_of(reference: np.ndarray, axis: int, count: int) -> np.ndarray:
    """The reference's labels on ``count`` slices spread evenly over its classes, 0 elsewhere.

    Args:
        reference: ``(I, J, K)`` label array (0 background, >0 classes).
        axis: the voxel axis the slices cut (0-2).
        count: how many slices (first and last slice of the classes included when count >= 2).

    Returns:
        An array like ``reference``: its values on the chosen slices, 0 on every other slice.

    Examples:
        >>> r = np.zeros((4, 4, 9), np.uint8); r[1:3, 1:3, 2:7] = 1
        >>> np.flatnonzero(slices_of(r, 2, 3).any(axis=(0, 1))).tolist()
        [2, 4, 6]
    """
    chosen = _drawn_slices(reference, axis, count)
    drawn = np.zeros_like(reference)
    index: list[Any] = [slice(None)] * reference.ndim
    index[axis] = chosen
    drawn[tuple(index)] = reference[tuple(index)]
    return drawn


STROKE_KINDS = ("slices", "scribbles")


def read_reference(
    project: Project, case_id: str, path: Path, values: Mapping[int, int] | None = None
) -> np.ndarray:
    """A reference label file in schema values on the case's grid.

    Args:
        project: the project.
        case_id: the case the reference belongs to.
        path: the label file.
        values: ``{file value: schema value}``; values it does not list are background (a reference
            of many classes, such as TotalSegmentator's, reduced to the project's). None: the file
            holds schema values (or is a ``.seg.nrrd`` with the schema's segment names).

    Raises:
        GeometryMismatchError: the grid differs from the case's.
        LabelValueError: values outside the schema (``values`` None).
    """
    schema = project.config.schema
    case = project.get_case(case_id)
    if values is None:
        return read_schema_labels(Path(path), schema, case.shape, case.affine)[0]
    volume = read_volume(path)
    if volume.array.ndim != 3:
        msg = f"reference {path} must be a 3D label map (I, J, K); got shape {volume.array.shape}"
        raise GeometryMismatchError(msg)
    aligned = align_to_grid(volume.array, volume.affine, case.shape, case.affine, what=f"reference {path}")
    present = (int(v) for v in np.unique(aligned))
    mapping = {value: int(values.get(value, 0)) for value in present}
    return remap_labels(aligned, mapping, dtype=schema.dtype, what=f"reference {path}")


def draw_from_reference(
    project: Project,
    case_id: str,
    reference: np.ndarray,
    kind: str,
    *,
    count: int = 3,
    plane: str | int = "axial",
) -> np.ndarray:
    """What a person would draw on a case, simulated from its reference (schema values).

    Args:
        project: the project.
        case_id: the case.
        reference: ``(I, J, K)`` reference in schema values on the case's grid (*ignore* is
            taken as background).
        kind: ``slices``: the reference's classes on ``count`` slices spread evenly over them, 0
            elsewhere (input of `segloop.loop.tools.Interpolate`); ``scribbles``: per class, on
            ``count`` slices over the middle 20-80 % of it, a stroke along its eroded centre line,
            and a background ring 6-8 mm around the classes there, holding the schema's N + 1
            (input of `segloop.loop.tools.Grow`; `segloop.synthetic.make_scribbles`).
        count: how many slices are drawn (per class, for scribbles).
        plane: ``axial``, ``coronal``, ``sagittal`` or a voxel axis 0-2 the slices cut.

    Returns:
        The ``(I, J, K)`` drawing in ``schema.dtype``.

    Raises:
        InvalidInputError: an unknown kind or plane, or ``count`` < 1.
        GeometryMismatchError: the reference is not on the case's grid.
        LabelValueError: the reference holds no class, or values outside the schema.
    """
    if kind not in STROKE_KINDS:
        msg = f"unknown drawing {kind!r}: expected one of {', '.join(STROKE_KINDS)}"
        raise InvalidInputError(msg)
    schema = project.config.schema
    case = project.get_case(case_id)
    if reference.shape != tuple(case.shape):
        msg = f"the reference must have the case's shape {tuple(case.shape)}; got {reference.shape}"
        raise GeometryMismatchError(msg)
    schema.check_values(reference, what="the reference")
    reference = np.where(reference == schema.ignore_index, 0, reference).astype(schema.dtype)
    axis = axis_of_plane(case.affine, str(plane))
    if kind == "slices":
        return slices_of(reference, axis, count)
    _drawn_slices(reference, axis, count)  # the same checks: a class present, count >= 1
    spacing = spacing_from_affine(case.affine)
    in_plane_last = (*(float(spacing[a]) for a in range(3) if a != axis), float(spacing[axis]))
    seeds = make_scribbles(
        np.moveaxis(reference, axis, 2), in_plane_last, slices=count, background=schema.ignore_index
    )
    return np.moveaxis(seeds, 2, axis).astype(schema.dtype)
