"""Voxel-grid geometry: spacing, RAS/LPS, and checking that two grids are the same."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segloop.errors import GeometryMismatchError, InvalidInputError

__all__ = [
    "AFFINE_TOLERANCE_MM",
    "affine_from_spacing",
    "align_to_grid",
    "axis_of_plane",
    "bounding_box",
    "check_same_grid",
    "embed_in_grid",
    "flip_ras_lps",
    "spacing_from_affine",
]

#: Largest difference (mm) between two affines' entries that still counts as the same grid.
AFFINE_TOLERANCE_MM = 1e-3

_RAS_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def flip_ras_lps(affine: np.ndarray) -> np.ndarray:
    """Convert a 4x4 affine between RAS+ and LPS+ world coordinates (the map is its own inverse).

    Examples:
        >>> flip_ras_lps(np.eye(4))[:3, :3].diagonal().tolist()
        [-1.0, -1.0, 1.0]
    """
    return _RAS_LPS @ np.asarray(affine, dtype=np.float64)


def affine_from_spacing(spacing: Sequence[float], origin: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """A diagonal affine: voxel size ``spacing`` (mm, per axis) and ``origin`` (mm).

    Examples:
        >>> affine_from_spacing((0.5, 0.5, 2.0)).diagonal().tolist()
        [0.5, 0.5, 2.0, 1.0]
    """
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = origin
    return affine


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm) along each voxel axis: the lengths of the affine's first three columns."""
    return tuple(float(s) for s in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))  # type: ignore[return-value]


def check_same_grid(
    shape_a: Sequence[int],
    affine_a: np.ndarray,
    shape_b: Sequence[int],
    affine_b: np.ndarray,
    *,
    what: str = "label",
    tolerance_mm: float = AFFINE_TOLERANCE_MM,
) -> None:
    """Raise `GeometryMismatchError` unless two voxel grids match.

    Args:
        shape_a: spatial shape ``(I, J, K)`` of the reference (the image).
        affine_a: ``(4, 4)`` affine of the reference.
        shape_b: spatial shape of the other array (``what``).
        affine_b: its affine.
        what: name of the other array, for the message.
        tolerance_mm: largest allowed absolute difference of affine entries.

    Examples:
        >>> check_same_grid((2, 2, 2), np.eye(4), (2, 2, 2), np.eye(4) + 1e-6)
    """
    if tuple(shape_a) != tuple(shape_b):
        msg = f"{what} grid shape {tuple(shape_b)} does not match the image shape {tuple(shape_a)}"
        raise GeometryMismatchError(msg)
    difference = float(np.max(np.abs(np.asarray(affine_a) - np.asarray(affine_b))))
    if difference > tolerance_mm:
        msg = (
            f"{what} affine differs from the image affine by up to {difference:.4g} mm"
            f" (tolerance {tolerance_mm} mm): expected {np.round(affine_a, 4).tolist()},"
            f" got {np.round(affine_b, 4).tolist()}"
        )
        raise GeometryMismatchError(msg)


def embed_in_grid(
    array: np.ndarray,
    affine: np.ndarray,
    target_shape: Sequence[int],
    target_affine: np.ndarray,
    *,
    what: str = "label",
    tolerance_mm: float = AFFINE_TOLERANCE_MM,
) -> np.ndarray:
    """Place an array lying on a sub- or super-grid of a target grid onto that grid.

    Slicer crops segmentations to their extent; such an array shares the image's axes and
    spacing and is shifted by whole voxels. Voxels outside the array become 0; parts of the array
    outside the target are dropped.

    Args:
        array: ``(I, J, K)`` array on the grid ``affine``.
        affine: its ``(4, 4)`` affine.
        target_shape: ``(I, J, K)`` of the target grid.
        target_affine: ``(4, 4)`` affine of the target grid.
        what: name of the array for messages.
        tolerance_mm: allowed difference of axis vectors (mm) and of the shift (in voxels / 1 mm).

    Returns:
        ``target_shape`` array of ``array``'s dtype.

    Raises:
        GeometryMismatchError: axes or spacing differ, or the shift is not whole voxels.

    Examples:
        >>> shifted = np.eye(4); shifted[:3, 3] = (1, 0, 0)
        >>> embed_in_grid(np.ones((1, 1, 1), np.uint8), shifted, (3, 1, 1), np.eye(4)).ravel().tolist()
        [0, 1, 0]
    """
    axes_difference = float(np.max(np.abs(np.asarray(affine)[:3, :3] - np.asarray(target_affine)[:3, :3])))
    if axes_difference > tolerance_mm:
        msg = (
            f"{what} axes/spacing differ from the image's by {axes_difference:.4g} mm: expected"
            f" {np.round(target_affine[:3, :3], 4).tolist()}, got {np.round(affine[:3, :3], 4).tolist()}"
        )
        raise GeometryMismatchError(msg)
    shift = np.linalg.solve(
        np.asarray(target_affine)[:3, :3], np.asarray(affine)[:3, 3] - target_affine[:3, 3]
    )
    offset = np.round(shift).astype(int)
    if np.max(np.abs(shift - offset)) > tolerance_mm:
        msg = f"{what} origin is shifted by {np.round(shift, 4).tolist()} voxels: expected whole voxels"
        raise GeometryMismatchError(msg)
    result = np.zeros(tuple(target_shape), dtype=array.dtype)
    source, target = [], []
    for axis in range(3):
        start = max(0, offset[axis])
        stop = min(target_shape[axis], offset[axis] + array.shape[axis])
        if stop <= start:
            return result
        target.append(slice(start, stop))
        source.append(slice(start - offset[axis], stop - offset[axis]))
    result[tuple(target)] = array[tuple(source)]
    return result


def align_to_grid(
    array: np.ndarray,
    affine: np.ndarray,
    target_shape: Sequence[int],
    target_affine: np.ndarray,
    *,
    what: str = "label",
    tolerance_mm: float = AFFINE_TOLERANCE_MM,
) -> np.ndarray:
    """Return ``array`` in the voxel order of a target grid that covers the same voxels.

    Tools disagree on voxel order (a NIfTI written with the rows reversed, an LPS vs RAS
    writer): when the two grids differ only by flipped or permuted axes, the array is flipped and
    transposed to the target's order. Anything else raises, as `check_same_grid` does.

    Args:
        array: ``(I, J, K)`` array on the grid ``affine``.
        affine: its ``(4, 4)`` affine.
        target_shape: ``(I, J, K)`` of the target grid.
        target_affine: ``(4, 4)`` affine of the target grid.
        what: name of the array for messages.
        tolerance_mm: allowed difference of affine entries after alignment.

    Returns:
        A view of ``array`` of shape ``target_shape``.

    Examples:
        >>> flipped = np.diag([1.0, -1.0, 1.0, 1.0]); flipped[1, 3] = 2.0
        >>> align_to_grid(np.arange(3).reshape(1, 3, 1), flipped, (1, 3, 1), np.eye(4)).ravel().tolist()
        [2, 1, 0]
    """
    to_target = np.linalg.solve(np.asarray(target_affine), np.asarray(affine))[:3, :3]
    order = np.argmax(np.abs(to_target), axis=0)  # source axis j lies along target axis order[j]
    if sorted(order.tolist()) == [0, 1, 2]:
        signs = np.sign(to_target[order, [0, 1, 2]])
        aligned = array[tuple(slice(None, None, -1) if s < 0 else slice(None) for s in signs)]
        flipped_affine = np.asarray(affine, dtype=np.float64).copy()
        for axis in np.flatnonzero(signs < 0):
            flipped_affine[:3, 3] += flipped_affine[:3, axis] * (array.shape[axis] - 1)
            flipped_affine[:3, axis] *= -1
        inverse = np.argsort(order)
        aligned = np.transpose(aligned, inverse)
        new_affine = flipped_affine.copy()
        new_affine[:3, :3] = flipped_affine[:3, :3][:, inverse]
        array, affine = aligned, new_affine
    check_same_grid(target_shape, target_affine, array.shape, affine, what=what, tolerance_mm=tolerance_mm)
    return array


#: Anatomical plane -> the world (RAS) axis its slices are perpendicular to.
_PLANE_NORMALS = {"sagittal": 0, "coronal": 1, "axial": 2}


def axis_of_plane(affine: np.ndarray, plane: str) -> int:
    """The voxel axis whose slices are closest to an anatomical plane.

    Args:
        affine: ``(4, 4)`` RAS affine of the grid.
        plane: ``axial``, ``coronal`` or ``sagittal`` (or a voxel axis ``"0"``, ``"1"``, ``"2"``).

    Returns:
        The voxel axis (0, 1 or 2) to step along to move through slices of that plane.

    Examples:
        >>> axis_of_plane(np.eye(4), "axial"), axis_of_plane(np.eye(4)[[2, 0, 1, 3]], "axial")
        (2, 1)
    """
    if plane in ("0", "1", "2"):
        return int(plane)
    if plane not in _PLANE_NORMALS:
        msg = f"unknown plane {plane!r}: expected axial, coronal, sagittal or a voxel axis 0, 1, 2"
        raise InvalidInputError(msg)
    directions = np.abs(np.asarray(affine)[:3, :3]) / np.asarray(spacing_from_affine(affine))
    return int(np.argmax(directions[_PLANE_NORMALS[plane]]))


def bounding_box(mask: np.ndarray, margin: int | Sequence[int] = 0) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding every True voxel, grown by ``margin`` voxels (clipped).

    Args:
        mask: boolean array of any dimension.
        margin: voxels added on both sides, one number or one per axis.

    Returns:
        One ``slice`` per axis, or None for a mask without a True voxel.

    Examples:
        >>> bounding_box(np.array([[0, 1, 1, 0]], bool), margin=1)
        (slice(0, 1, None), slice(0, 4, None))
        >>> bounding_box(np.zeros((2, 2), bool)) is None
        True
    """
    mask = np.asarray(mask)
    margins = [int(margin)] * mask.ndim if isinstance(margin, int | np.integer) else [int(m) for m in margin]
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        start, stop = int(hits[0]) - margins[axis], int(hits[-1]) + 1 + margins[axis]
        box.append(slice(max(0, start), min(mask.shape[axis], stop)))
    return tuple(box)
