"""Volumes on the wire: NIfTI-1 gzip bytes out, checked uploads in, in-plane previews.

Every volume the API sends or receives is a ``.nii.gz`` on the case's grid, in the case's voxel
order (SERVE_API.md). Uploads are decoded by `segloop.io.nifti.decode`, which checks the size the
header declares against the cap before inflating anything but the header (a gzip bomb inflates to
at most its declared size); the request body itself is already bounded by the app's ``BodyLimit``.
"""

from __future__ import annotations

import math

import numpy as np
from isal import igzip

from segloop.core.geometry import align_to_grid, axis_of_plane
from segloop.core.volume import Volume
from segloop.errors import GeometryMismatchError
from segloop.io import nifti
from segloop.store import CaseRecord

__all__ = [
    "align_to_case_grid",
    "preview_volume",
    "read_nifti_upload",
    "volume_to_nifti_gz",
]


def volume_to_nifti_gz(
    volume: Volume | np.ndarray, affine: np.ndarray | None = None, *, dtype: np.dtype | str | None = None
) -> bytes:
    """The bytes of a ``.nii.gz`` holding ``volume`` (or ``array`` on ``affine``).

    Args:
        volume: a `Volume`, or an ``(I, J, K)`` array (then ``affine`` is required).
        affine: ``(4, 4)`` voxel-to-RAS affine of an array.
        dtype: the voxel type written (default: the array's; ``float16`` is widened to float32,
            which NIfTI viewers read).

    Example:
        >>> data = volume_to_nifti_gz(np.zeros((2, 2, 2), np.uint8), np.eye(4))
        >>> data[:2] == b"\\x1f\\x8b"
        True
    """
    if not isinstance(volume, Volume):
        if affine is None:
            msg = "an array needs its affine to be written as NIfTI"
            raise ValueError(msg)
        volume = Volume(volume, affine)
    array = volume.array
    wanted = np.dtype(dtype) if dtype is not None else array.dtype
    if wanted == np.float16:
        wanted = np.dtype(np.float32)
    if array.dtype != wanted:
        volume = volume.with_array(array.astype(wanted))
    # ONE gzip member (ISA-L level 2): browsers' DecompressionStream, which NiiVue inflates with, stops
    # at the end of the first member ("Junk found after end of compressed data"), so the block-parallel
    # members of `nifti.encode` (one per 4 MiB) would fail every image over 4 MiB in the editor
    return igzip.compress(nifti.encode(volume, compress=False), compresslevel=2, mtime=0)


def read_nifti_upload(data: bytes, *, what: str) -> Volume:
    """Decode an uploaded NIfTI (gzip or plain), bounded by the size its header declares.

    Args:
        data: the request body.
        what: the upload's name in messages (``"uploaded label"``).

    Raises:
        CorruptFileError: not NIfTI, corrupt or truncated gzip, an invalid header.
        TooLargeError: the declared voxels exceed `segloop.io.limits.max_image_bytes`.
    """
    return nifti.decode(bytes(data), what=what)


def align_to_case_grid(volume: Volume, case: CaseRecord, *, what: str) -> np.ndarray:
    """The ``(I, J, K)`` array of ``volume`` on ``case``'s grid, in the case's voxel order.

    The upload must cover the case's voxels: same shape and affine within
    `segloop.core.geometry.AFFINE_TOLERANCE_MM` (a writer that flipped or permuted the axes is
    put back in order, as `segloop.core.geometry.align_to_grid` does for label files).

    Raises:
        GeometryMismatchError: a channel axis, another shape or affine (the message names both).
    """
    if volume.array.ndim != 3:
        msg = f"{what} has shape {volume.array.shape}: expected case {case.case_id!r}'s {tuple(case.shape)}"
        raise GeometryMismatchError(msg)
    return align_to_grid(volume.array, volume.affine, case.shape, case.affine, what=what)


def preview_volume(volume: Volume, max_in_plane: int = 128) -> Volume:
    """``volume`` strided in its axial plane to at most ``max_in_plane`` voxels per axis.

    Every ``s``-th voxel is kept along the two in-plane axes (``s`` the smallest integer that
    fits); their affine columns are scaled by ``s`` and the origin stays, so voxel ``(i, j, k)`` of
    the preview lies where voxel ``(s*i, s*j, k)`` of the volume lies (a viewer shows both in
    the same world position).

    Args:
        volume: a 3D volume.
        max_in_plane: the most voxels kept along each in-plane axis.

    Example:
        >>> small = preview_volume(Volume(np.zeros((300, 200, 5)), np.eye(4)))
        >>> small.spatial_shape, small.affine.diagonal().tolist()
        ((100, 67, 5), [3.0, 3.0, 1.0, 1.0])
    """
    through = axis_of_plane(volume.affine, "axial")
    in_plane = [axis for axis in range(3) if axis != through]
    step = max(1, math.ceil(max(volume.spatial_shape[a] for a in in_plane) / max_in_plane))
    if step == 1:
        return volume
    index = tuple(slice(None, None, step) if axis in in_plane else slice(None) for axis in range(3))
    affine = volume.affine.copy()
    affine[:3, in_plane] *= step
    return Volume(np.ascontiguousarray(volume.array[index]), affine, dict(volume.meta))
