"""MRC / REC / MAP / ST volumes (cryo-EM maps, cryo-ET tomograms) through mrcfile.

Conventions converted here and nowhere else:

* MRC data is ``(sections, rows, columns)`` = ``(nz, ny, nx)`` with the standard axis map
  (MAPC, MAPR, MAPS) = (1, 2, 3); the array becomes ``(X, Y, Z)`` (other axis maps are permuted to
  X, Y, Z too). A single image becomes ``(X, Y, 1)``; stacks of volumes are refused.
* The voxel size is CELLA / (MX, MY, MZ) in Ångström and the origin is the header's ORIGIN in
  Ångström; both become millimetres (1 Å = 1e-7 mm) in a diagonal affine, X, Y, Z taken as R, A, S
  (MRC has no orientation). ``meta`` keeps ``voxel_size_angstrom`` and ``origin_angstrom``
  (x, y, z) as the header's float32 values printed shortest. A header without a cell (voxel size 0)
  reads as 1.0 per voxel with ``meta["spacing_unit"] = "pixel"``.

The writer stores int8, int16, uint16, float16 and float32 as such; mrcfile widens uint8 to uint16
(MRC mode 0 is read as signed by some programs and unsigned by others), bool becomes int8, and
wider integers or float64 are narrowed only when no value changes. The voxel size is computed in
float64 from CELLA / MX, so writing what was read restores the same float32 header numbers and
reading it again gives an identical affine.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import mrcfile
import mrcfile.utils
import numpy as np
from mrcfile.dtypes import HEADER_DTYPE

from segloop.core.volume import Volume
from segloop.errors import CorruptFileError, UnsupportedFormatError
from segloop.io.checks import make_volume
from segloop.io.limits import check_declared_size

__all__ = ["ANGSTROM_PER_MM", "read", "write"]

#: Ångström in one millimetre.
ANGSTROM_PER_MM = 1e7
_AXES = ("x", "y", "z")


def _shortest(value: np.floating) -> float:
    """A float32 header number as the shortest decimal that gives it back (1.1, not 1.100000024)."""
    return float(str(np.float32(value)))


def _check_header(path: Path) -> None:
    """Refuse a header whose data block would exceed the cap or whose extended header does not
    fit in the file, before mrcfile allocates either."""
    with open(path, "rb") as stream:
        head = stream.read(HEADER_DTYPE.itemsize)
        size = stream.seek(0, 2)
    if len(head) < HEADER_DTYPE.itemsize:
        msg = (
            f"{path}: expected an MRC header of {HEADER_DTYPE.itemsize} bytes; the file holds {len(head)}:"
            " it is truncated or corrupt"
        )
        raise CorruptFileError(msg)
    header = np.frombuffer(head, dtype=HEADER_DTYPE).reshape(()).view(np.recarray)
    if bytes(header.map)[:3] != b"MAP":
        msg = f"{path}: not an MRC file (the map id 'MAP ' is missing from byte 208); the file is corrupt"
        raise CorruptFileError(msg)
    try:
        order = mrcfile.utils.byte_order_from_machine_stamp(header.machst)
        header = header.view(HEADER_DTYPE.newbyteorder(order)).view(np.recarray)
        dtype = mrcfile.utils.data_dtype_from_header(header)
        shape = mrcfile.utils.data_shape_from_header(header)
    except ValueError as error:
        msg = f"{path}: cannot read as MRC ({error}); the file is truncated or corrupt"
        raise CorruptFileError(msg) from error
    extended = int(header.nsymbt)
    if not 0 <= extended <= size - HEADER_DTYPE.itemsize:
        msg = f"{path}: the MRC header declares an extended header of {extended} bytes; the file holds {size}"
        raise CorruptFileError(msg)
    check_declared_size(shape, dtype.itemsize, what=str(path))


def read(path: Path) -> Volume:
    """Read an MRC-family file as a volume in millimetres.

    Args:
        path: a .mrc, .rec, .map or .st file.

    Returns:
        A `Volume` with an ``(X, Y, Z)`` array in the file's dtype and a diagonal mm affine;
        ``meta["voxel_size_angstrom"]`` and ``meta["origin_angstrom"]`` are (x, y, z) floats.

    Raises:
        UnsupportedFormatError: a stack of volumes.
        CorruptFileError: the header is invalid or the data is shorter than the header says.
        TooLargeError: the declared voxels exceed `segloop.io.limits.max_image_bytes`.
    """
    _check_header(path)
    try:
        with warnings.catch_warnings():  # bytes after the declared data are ignored, not warned about
            warnings.simplefilter("ignore", RuntimeWarning)
            mrc = mrcfile.open(path, mode="r", permissive=False)
        with mrc:
            data = np.asarray(mrc.data)
            header = mrc.header
            cell = np.array([float(header.cella[a]) for a in _AXES])
            grid = np.array([int(header.mx), int(header.my), int(header.mz)])
            origin = np.array([float(header.origin[a]) for a in _AXES])
            axis_map = [int(header.mapc), int(header.mapr), int(header.maps)]
    except (ValueError, OSError, EOFError) as error:
        msg = f"{path}: cannot read as MRC ({error}); the file is truncated or corrupt"
        raise CorruptFileError(msg) from error
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3:
        msg = (
            f"{path}: expected one MRC image or volume; got a stack of shape {data.shape};"
            " split it into one file per volume"
        )
        raise UnsupportedFormatError(msg)
    if sorted(axis_map) != [1, 2, 3]:
        msg = f"{path}: expected MAPC/MAPR/MAPS to be a permutation of 1, 2, 3; got {axis_map}"
        raise CorruptFileError(msg)
    array = np.ascontiguousarray(np.transpose(data.T, np.argsort(axis_map)))
    meta: dict[str, Any] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        voxel_angstrom = np.where((grid > 0) & (cell > 0), cell / np.maximum(grid, 1), 0.0)
    meta["voxel_size_angstrom"] = tuple(_shortest(v) for v in voxel_angstrom)
    meta["origin_angstrom"] = tuple(_shortest(v) for v in origin)
    if np.all(voxel_angstrom > 0):
        spacing_mm = voxel_angstrom / ANGSTROM_PER_MM
    else:
        spacing_mm = np.ones(3)
        meta["spacing_unit"] = "pixel"
    affine = np.diag([*spacing_mm, 1.0])
    affine[:3, 3] = origin / ANGSTROM_PER_MM
    return make_volume(array, affine, meta, what=str(path))


def _storable(array: np.ndarray) -> np.ndarray:
    """``array`` in a dtype MRC stores, narrowed only when no value changes."""
    if array.dtype == bool:
        return array.astype(np.int8)
    if array.dtype in (np.int8, np.uint8, np.int16, np.uint16, np.float16, np.float32):
        return array
    candidates = (np.int16, np.uint16) if array.dtype.kind in "iu" else (np.float32,)
    for dtype in candidates if array.dtype.kind in "iuf" else ():
        narrowed = array.astype(dtype)
        if np.array_equal(narrowed, array):
            return narrowed
    msg = (
        f"MRC writing stores int8, int16, uint16, float16 or float32; got {array.dtype} values"
        " that do not fit without change; cast the array (e.g. astype(np.float32)) or write TIFF"
    )
    raise UnsupportedFormatError(msg)


def write(volume: Volume, path: Path) -> None:
    """Write ``volume`` as an MRC2014 volume (mode from the dtype, voxel size and origin in Å).

    Args:
        volume: a 3D ``(X, Y, Z)`` volume with a diagonal affine of positive voxel sizes.
        path: the file to create.

    Raises:
        UnsupportedFormatError: channels, a rotated or flipped affine, or an unstorable dtype.
    """
    if volume.array.ndim != 3:
        msg = (
            f"MRC writing takes one channel (X, Y, Z); got shape {volume.array.shape};"
            " write each channel as its own file"
        )
        raise UnsupportedFormatError(msg)
    linear = volume.affine[:3, :3]
    spacing_mm = np.diag(linear).copy()
    if np.any(spacing_mm <= 0) or np.any(np.abs(linear - np.diag(spacing_mm)) > 1e-6 * spacing_mm.max()):
        msg = (
            "MRC has no orientation: expected a diagonal affine with positive voxel sizes; got"
            f" {np.round(linear, 6).tolist()}; reorient or resample the volume, or write NIfTI"
        )
        raise UnsupportedFormatError(msg)
    data = np.ascontiguousarray(_storable(volume.array).T)  # (nz, ny, nx)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        grid = (int(mrc.header.mx), int(mrc.header.my), int(mrc.header.mz))
        if volume.meta.get("spacing_unit") == "pixel" and np.all(spacing_mm == 1.0):
            grid = (0, 0, 0)  # no cell: reads back as 1.0 per voxel in pixel units
        for axis, size_mm, n, origin_mm in zip(_AXES, spacing_mm, grid, volume.affine[:3, 3], strict=True):
            mrc.header.cella[axis] = size_mm * ANGSTROM_PER_MM * n
            mrc.header.origin[axis] = origin_mm * ANGSTROM_PER_MM
