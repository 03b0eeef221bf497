"""Serial sections to a volume: stack 2D images along K, set a volume's voxel size.

A stack of 2D images (serial EM sections, a folder of TIFF or PNG slices) becomes one ``(I, J, N)``
volume, as MemBrain-seg and IMOD expect a tomogram; file formats that store no voxel size (PNG)
get it from the user, in any length unit (`LENGTH_UNITS_MM`; Ångström for MRC).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segloop.core.volume import Volume
from segloop.errors import InvalidInputError

__all__ = ["LENGTH_UNITS_MM", "spacing_in_mm", "stack_slices", "with_spacing"]

#: Millimetres in one unit of each length unit people give voxel sizes in.
LENGTH_UNITS_MM = {"mm": 1.0, "um": 1e-3, "nm": 1e-6, "angstrom": 1e-7}


def spacing_in_mm(spacing: Sequence[float], unit: str) -> tuple[float, float, float]:
    """``spacing`` (3 positive numbers in ``unit``) in millimetres.

    Raises:
        InvalidInputError: not 3 positive finite numbers, or an unknown unit.

    Examples:
        >>> spacing_in_mm((2, 2, 3), "um")
        (0.002, 0.002, 0.003)
    """
    if unit not in LENGTH_UNITS_MM:
        msg = f"expected a length unit among {', '.join(LENGTH_UNITS_MM)}; got {unit!r}"
        raise InvalidInputError(msg)
    values = np.asarray(spacing, dtype=np.float64)
    if values.shape != (3,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        msg = f"expected a voxel size of 3 positive numbers X,Y,Z; got {list(spacing)}"
        raise InvalidInputError(msg)
    return tuple(float(v) * LENGTH_UNITS_MM[unit] for v in values)  # type: ignore[return-value]


def with_spacing(volume: Volume, spacing_mm: Sequence[float]) -> Volume:
    """``volume`` with voxel size ``spacing_mm`` along I, J, K (directions and origin kept).

    A ``meta["spacing_unit"] = "pixel"`` (a file that stored no voxel size) is dropped: the
    voxel size is now known.

    Examples:
        >>> v = Volume(np.zeros((2, 2, 3)), np.eye(4), {"spacing_unit": "pixel"})
        >>> r = with_spacing(v, (0.5, 0.5, 2.0))
        >>> r.spacing, r.meta
        ((0.5, 0.5, 2.0), {})
    """
    affine = volume.affine.copy()
    affine[:3, :3] = affine[:3, :3] / np.asarray(volume.spacing) * np.asarray(spacing_mm, dtype=np.float64)
    meta = {key: value for key, value in volume.meta.items() if key != "spacing_unit"}
    return Volume(volume.array, affine, meta)


def stack_slices(
    slices: Sequence[Volume], spacing_mm: Sequence[float] | None = None, *, names: Sequence[str] | None = None
) -> Volume:
    """Stack 2D images (each ``(I, J, 1)`` or ``(C, I, J, 1)``) along K, in the given order.

    Args:
        slices: one or more single-slice volumes of one shape, dtype and channel count.
        spacing_mm: voxel size ``(I, J, K)`` in mm of the result; None keeps the first slice's
            (its K spacing as its file gave it: PNG and 2D TIFF give none, so say it).
        names: what to call each slice in errors (file names); default its position.

    Returns:
        An ``(I, J, N)`` (or ``(C, I, J, N)``) volume on the first slice's grid, directions and origin.

    Raises:
        InvalidInputError: no slices, a slice with more than one K slice, or slices of different
            shapes or dtypes (each named with what was expected).

    Examples:
        >>> sections = [Volume(np.full((4, 5, 1), i, np.uint8), np.eye(4)) for i in range(3)]
        >>> tomogram = stack_slices(sections, (4e-6, 4e-6, 5e-5))
        >>> tomogram.array.shape, tomogram.array[0, 0].tolist(), tomogram.spacing[2]
        ((4, 5, 3), [0, 1, 2], 5e-05)
    """
    if not slices:
        msg = "expected at least one 2D image to stack; got none"
        raise InvalidInputError(msg)
    labels = list(names) if names is not None else [f"image {i + 1}" for i in range(len(slices))]
    first = slices[0]
    for label, volume in zip(labels, slices, strict=True):
        if volume.spatial_shape[2] != 1:
            msg = f"{label}: expected a 2D image (one slice) to stack; got shape {volume.spatial_shape}"
            raise InvalidInputError(msg)
        if volume.array.shape != first.array.shape or volume.array.dtype != first.array.dtype:
            msg = (
                f"{label}: expected {first.array.dtype} of shape {first.array.shape} as {labels[0]};"
                f" got {volume.array.dtype} of shape {volume.array.shape}"
            )
            raise InvalidInputError(msg)
    array = np.concatenate([volume.array for volume in slices], axis=-1)
    stacked = Volume(array, first.affine.copy(), dict(first.meta))
    return stacked if spacing_mm is None else with_spacing(stacked, spacing_mm)
