"""The checks an image must pass before segloop computes on it: one real, finite value per voxel.

Readers return what a file holds (an RGB PNG as 3 channels, a complex NIfTI as complex64, NaN
voxels as NaN); the entry points that take an image as a case's image, a tool's input or a
training sample call `check_scalar_image`, so that a colour photograph, a complex MR
reconstruction or a volume with NaN holes is refused with one line instead of silently producing
NaN losses, all-background thresholds or a traceback deep inside a tool.

Example:
    >>> import numpy as np
    >>> from segloop.core.volume import Volume
    >>> check_scalar_image(Volume(np.zeros((2, 2, 1)), np.eye(4)), "image x.png")
    >>> check_scalar_image(np.full((2, 2, 1), np.nan), "image y.nii")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    segloop.errors.InvalidInputError: image y.nii: expected finite voxel values; got 4 NaN ...
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segloop.core.volume import Volume
from segloop.errors import CorruptFileError, InvalidInputError, SegloopError

__all__ = ["check_scalar_image", "make_volume"]

#: Voxels checked for finiteness per step (bounds the temporary boolean mask to 16 MiB).
_STEP_VOXELS = 1 << 24


def _count_non_finite(values: np.ndarray) -> tuple[int, int, tuple[int, ...] | None]:
    """(NaN count, infinite count, index of the first non-finite voxel) of a float array.

    Works through slabs along the last axis (views, no copy), so the temporary masks stay small.
    """
    nan = inf = 0
    first = None
    plane = max(1, values[..., 0].size) if values.ndim and values.shape[-1] else 1
    step = max(1, _STEP_VOXELS // plane)
    for start in range(0, values.shape[-1] if values.ndim else 1, step):
        part = values[..., start : start + step] if values.ndim else values
        bad = ~np.isfinite(part)
        if not bad.any():
            continue
        nan_part = int(np.count_nonzero(np.isnan(part)))
        nan += nan_part
        inf += int(np.count_nonzero(bad)) - nan_part
        if first is None:
            index = np.argwhere(bad)[0]
            index[-1] += start
            first = tuple(int(i) for i in index)
    return nan, inf, first


def check_scalar_image(image: Volume | np.ndarray, what: str) -> None:
    """Refuse an image that does not hold one real, finite number per voxel.

    Args:
        image: a `Volume` (or its array): ``(I, J, K)``, or ``(1, I, J, K)`` with one channel.
        what: how to name the image in the message (e.g. ``"image ct.nii.gz"``).

    Raises:
        InvalidInputError: one line naming what came: several channels (RGB, vector or
            multi-echo voxels), a structured voxel type (NIfTI RGB24), complex values, a
            non-numeric dtype, or NaN / infinite values (their count and the first voxel).
    """
    array = np.asanyarray(image.array if isinstance(image, Volume) else image)
    dtype = array.dtype
    if dtype.fields is not None or dtype.subdtype is not None:
        msg = (
            f"{what}: expected one number per voxel; got {dtype.itemsize}-byte voxels of fields"
            f" {tuple(dtype.names or ())} (RGB or vector data); convert it to one grey channel"
        )
        raise InvalidInputError(msg)
    if dtype.kind == "c":
        msg = f"{what}: expected real voxel values; got complex {dtype}; store the magnitude (abs) instead"
        raise InvalidInputError(msg)
    if dtype.kind not in "biuf":
        msg = f"{what}: expected numeric voxel values; got dtype {dtype}"
        raise InvalidInputError(msg)
    if array.ndim == 4 and array.shape[0] != 1:
        msg = (
            f"{what}: expected one value per voxel (a greyscale image); got {array.shape[0]} channels"
            f" of shape {array.shape[1:]} (RGB, vector or multi-echo data); convert it to one grey"
            " channel or store each channel as its own image"
        )
        raise InvalidInputError(msg)
    if dtype.kind == "f":
        nan, inf, first = _count_non_finite(array)
        if nan or inf:
            msg = (
                f"{what}: expected finite voxel values; got {nan} NaN and {inf} infinite voxels"
                f" (the first at index {first}); fill or mask them before using the image"
            )
            raise InvalidInputError(msg)


def make_volume(array: np.ndarray, affine: np.ndarray, meta: dict[str, Any], *, what: str) -> Volume:
    """``Volume(array, affine, meta)`` for a reader: a grid the file describes badly (a NaN or
    singular affine, an array of the wrong rank) is the file's fault, so it raises `CorruptFileError`.

    Args:
        array: the voxels as read.
        affine: the ``(4, 4)`` affine built from the header.
        meta: format details.
        what: the file, for messages.
    """
    try:
        return Volume(array, affine, meta)
    except SegloopError as error:
        msg = f"{what}: the header describes no valid voxel grid ({error})"
        raise CorruptFileError(msg) from error
