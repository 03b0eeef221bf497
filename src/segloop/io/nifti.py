"""NIfTI-1 / NIfTI-2 (.nii, .nii.gz): nibabel parses and builds headers, ISA-L does the gzip.

Writing cuts the file into gzip members compressed in parallel (`segloop.io.gzip_blocks`): a
standard .nii.gz that every reader opens, which segloop also reads back in parallel. The voxel
array wraps the inflated buffer without a copy. Scaled data (``scl_slope``/``scl_inter``) stays
integer when slope and intercept are integers (CT stored as uint16 + intercept), else float32.

Reading checks the header before the voxels: the declared size against
`segloop.io.limits.max_image_bytes` (before inflating anything but the header), dim[0] in 1..7,
every dimension at least 1, the voxel offset, and a scaling that stays finite; the gzip data must
inflate to exactly the declared size. RGB, complex and other voxel types are read as the file
holds them (`segloop.io.checks.check_scalar_image` refuses them where one grey value is needed).
"""

from __future__ import annotations

import io
import logging
import math
import os
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import isal_zlib
from nibabel.spatialimages import HeaderDataError

from segloop.core.volume import Volume
from segloop.errors import CorruptFileError, UnsupportedFormatError
from segloop.io.checks import make_volume
from segloop.io.gzip_blocks import compress_blocks, decompress_blocks, inflate_head
from segloop.io.limits import check_declared_size, check_file_size, max_image_bytes
from segloop.io.scaling import finite_extremes, scaled_dtype

__all__ = ["GZIP_LEVEL", "decode", "encode", "read", "write"]

#: ISA-L compression level (0-3); on CT, level 2 is both faster and smaller than level 1 (benchmarks/io.py).
GZIP_LEVEL = 2
_THREADS = 2
_NIFTI1_HEADER_BYTES = 348
_NIFTI2_HEADER_BYTES = 540
#: nibabel's problem level from which a header check raises instead of fixing (its default).
_NIBABEL_ERROR_LEVEL = 40
_QUIET = logging.getLogger("segloop.io.nifti.header_fixes")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def _parse_header(head: bytes, path: str | Path) -> tuple[nib.Nifti1Header, int]:
    """The fixed header (extensions are skipped) and the first voxel's byte offset."""
    for order in "<>":
        size = struct.unpack_from(f"{order}i", head.ljust(4, b"\0"))[0]
        if size in (_NIFTI1_HEADER_BYTES, _NIFTI2_HEADER_BYTES):
            break
    else:
        msg = f"{path}: not a NIfTI file (expected the header size field 348 or 540; got other bytes)"
        raise CorruptFileError(msg)
    header_type = nib.Nifti1Header if size == _NIFTI1_HEADER_BYTES else nib.Nifti2Header
    if len(head) < size:
        msg = f"{path}: expected a NIfTI header of {size} bytes; the file holds {len(head)}: it is truncated"
        raise CorruptFileError(msg)
    ndim = struct.unpack_from(f"{order}h" if size == _NIFTI1_HEADER_BYTES else f"{order}q", head, 40)[0]
    if not 1 <= ndim <= 7:
        msg = f"{path}: expected dim[0] (the number of dimensions) between 1 and 7; got {ndim}"
        raise CorruptFileError(msg)
    fixed = head[:size] + b"\0" * 4  # "no extensions": they are not needed to read the voxels
    try:
        header = header_type.from_fileobj(io.BytesIO(fixed), endianness=order, check=False)
        header.check_fix(logger=_QUIET, error_level=_NIBABEL_ERROR_LEVEL)  # fixes logged nowhere
        offset = float(header["vox_offset"])
        header.get_data_dtype()
    except (HeaderDataError, ValueError, TypeError, KeyError, OverflowError) as error:
        msg = f"{path}: invalid NIfTI header ({str(error).splitlines()[0][:200]})"
        raise CorruptFileError(msg) from error
    if not (math.isfinite(offset) and size + 4 <= offset <= max_image_bytes()):
        msg = f"{path}: expected the voxel offset to lie after the {size + 4}-byte header; got {offset}"
        raise CorruptFileError(msg)
    return header, int(offset)


def _scale(raw: np.ndarray, header: nib.Nifti1Header, path: str | Path) -> np.ndarray:
    """``raw * scl_slope + scl_inter`` in the narrowest exact dtype (see `segloop.io.scaling`).

    A slope of 0 means "not scaled" (the NIfTI standard), and so does NaN (nibabel's convention
    for headers it writes without scaling); an infinite slope or a non-finite intercept is corrupt.
    """
    slope, intercept = float(header["scl_slope"]), float(header["scl_inter"])
    if slope == 0 or math.isnan(slope) or (slope, intercept) == (1.0, 0.0):
        return raw
    if raw.dtype.kind not in "iuf":
        msg = f"{path}: scaling (scl_slope {slope}) applies to numbers; the voxels are {raw.dtype}"
        raise CorruptFileError(msg)
    extremes = finite_extremes(raw)
    dtype = scaled_dtype([extremes], [(slope, intercept)], integral=raw.dtype.kind in "iu", what=str(path))
    if dtype.kind == "i":
        return (raw.astype(np.int64) * int(slope) + int(intercept)).astype(dtype, copy=False)
    return raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _read_into(stream: io.RawIOBase, buffer: np.ndarray) -> int:
    """Fill ``buffer`` from ``stream`` (a read returns at most ~2 GiB); the count read."""
    view = memoryview(buffer)
    filled = 0
    while filled < len(buffer) and (count := stream.readinto(view[filled:])):
        filled += count
    return filled


def _declared_end(header: nib.Nifti1Header, offset: int, what: str) -> int:
    """The byte after the last voxel, refused above the cap (`check_declared_size`) before allocation."""
    return offset + check_declared_size(header.get_data_shape(), header.get_data_dtype().itemsize, what=what)


def _inflate_buffer(raw: bytes, what: str) -> tuple[nib.Nifti1Header, np.ndarray, int]:
    """Header, inflated bytes up to the last voxel and the voxel offset of gzip NIfTI bytes ``raw``.

    The declared size is checked against the cap before anything but the header is inflated.
    """
    check_file_size(len(raw), what=what)
    try:
        head = inflate_head(raw, _NIFTI2_HEADER_BYTES)
    except isal_zlib.error as error:
        msg = f"{what}: broken gzip stream ({error}); the file is truncated or corrupt"
        raise CorruptFileError(msg) from error
    header, offset = _parse_header(head, what)
    end = _declared_end(header, offset, what)
    return header, decompress_blocks(raw, expected=end, what=what, threads=_THREADS), offset


def _read_buffer(path: Path) -> tuple[nib.Nifti1Header, np.ndarray, int]:
    """Header, the file's bytes up to the last voxel (inflated) and the voxel offset.

    The declared size is checked against the cap before anything else is read or inflated.
    """
    what = str(path)
    with open(path, "rb", buffering=0) as stream:
        if stream.read(2) == b"\x1f\x8b":
            check_file_size(os.fstat(stream.fileno()).st_size, what=what)
            stream.seek(0)
            return _inflate_buffer(stream.readall(), what)
        stream.seek(0)
        header, offset = _parse_header(stream.read(_NIFTI2_HEADER_BYTES), what)
        end = _declared_end(header, offset, what)
        buffer = np.empty(end, dtype=np.uint8)
        stream.seek(0)
        count = _read_into(stream, buffer)
    _check_complete(count, end, offset, what)
    return header, buffer, offset


def _check_complete(count: int, end: int, offset: int, what: str) -> None:
    if count < end:
        msg = (
            f"{what}: the header promises {end - offset} bytes of voxels after byte {offset};"
            f" the file holds {max(count - offset, 0)}: it is truncated"
        )
        raise CorruptFileError(msg)


def read(path: Path) -> Volume:
    """Read a .nii or .nii.gz file; the array is in the file's voxel order (I, J, K).

    Raises:
        TooLargeError: the declared voxels exceed `segloop.io.limits.max_image_bytes` (checked
            before reading or inflating them).
        CorruptFileError: not NIfTI, a truncated or over-long file, an invalid header (dim[0]
            outside 1..7, a dimension below 1, an unknown datatype) or corrupt scaling.
    """
    return _volume(*_read_buffer(path), str(path))


def decode(data: bytes, *, what: str) -> Volume:
    """A NIfTI file held in memory (gzip or not), checked as `read` checks a file.

    Args:
        data: the file's bytes (an upload).
        what: the name used in messages (e.g. ``"uploaded label"``).

    Raises:
        TooLargeError, CorruptFileError, UnsupportedFormatError: as `read`.

    Example:
        >>> import numpy as np
        >>> decode(encode(Volume(np.ones((2, 3, 4), np.uint8), np.eye(4))), what="x").array.shape
        (2, 3, 4)
    """
    if data[:2] == b"\x1f\x8b":
        return _volume(*_inflate_buffer(data, what), what)
    header, offset = _parse_header(data[:_NIFTI2_HEADER_BYTES], what)
    end = _declared_end(header, offset, what)
    _check_complete(len(data), end, offset, what)
    return _volume(header, np.frombuffer(data, dtype=np.uint8, count=end), offset, what)


def _volume(header: nib.Nifti1Header, buffer: np.ndarray, offset: int, what: str) -> Volume:
    """The volume of a parsed header and its (inflated) file bytes."""
    dtype = header.get_data_dtype()
    shape = header.get_data_shape()
    count = math.prod(shape)
    raw = buffer[offset : offset + count * dtype.itemsize].view(dtype).reshape(shape, order="F")
    if not dtype.isnative:
        raw = raw.astype(dtype.newbyteorder("="))
    array = _scale(raw, header, what)
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    elif array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    elif array.ndim == 4:
        array = np.moveaxis(array, 3, 0)  # time / channel series -> (C, I, J, K)
    elif array.ndim != 3:
        msg = f"{what}: expected a 2D, 3D or 4D NIfTI image; got shape {shape}"
        raise UnsupportedFormatError(msg)
    meta = {
        "nifti_sform_code": int(header["sform_code"]),
        "nifti_qform_code": int(header["qform_code"]),
        "xyz_unit": header.get_xyzt_units()[0],
    }
    try:
        affine = header.get_best_affine()
    except (HeaderDataError, ValueError, np.linalg.LinAlgError) as error:
        msg = f"{what}: the NIfTI header has no valid affine ({str(error).splitlines()[0][:200]})"
        raise CorruptFileError(msg) from error
    return make_volume(array, affine, meta, what=what)


def _fortran_copy(array: np.ndarray, tile: int = 32) -> np.ndarray:
    """``array`` in Fortran order (NIfTI's voxel order).

    A C-ordered volume needs a transposing copy; numpy's one-pass copy strides through memory and
    is about 4x slower than copying (tile x tile x K) blocks, which stay in cache.
    """
    if array.flags.f_contiguous or array.ndim < 3:
        return np.asfortranarray(array)
    out = np.empty(array.shape, dtype=array.dtype, order="F")
    for i in range(0, array.shape[0], tile):
        for j in range(0, array.shape[1], tile):
            out[i : i + tile, j : j + tile] = array[i : i + tile, j : j + tile]
    return out


def _payload(header: nib.Nifti1Header, array: np.ndarray) -> bytes:
    """Header and voxels of a single-file NIfTI (nibabel's ``to_bytes`` is 3x slower: it checks
    every value for scaling, which segloop never applies)."""
    header.set_data_dtype(array.dtype)
    header.set_data_shape(array.shape)
    header.set_slope_inter(1.0, 0.0)
    offset = header.single_vox_offset
    header.set_data_offset(offset)
    prefix = io.BytesIO()
    header.write_to(prefix)  # the header and the 4-byte "no extensions" flag
    voxels = _fortran_copy(array)
    return b"".join([prefix.getvalue().ljust(offset, b"\0"), memoryview(voxels.T).cast("B")])


def encode(volume: Volume, *, compress: bool = True, level: int = GZIP_LEVEL) -> bytes:
    """``volume`` as the bytes of a NIfTI-1 file (NIfTI-2 if a dimension exceeds 32767).

    Args:
        volume: the image or label; a ``(C, I, J, K)`` array becomes a 4D file.
        compress: gzip the bytes (block-parallel members, `segloop.io.gzip_blocks`).
        level: ISA-L compression level 0-3.
    """
    return b"".join(_encoded(volume, compress=compress, level=level))


def _encoded(volume: Volume, *, compress: bool, level: int) -> list[bytes]:
    array = volume.array
    if array.ndim == 4:
        array = np.moveaxis(array, 0, 3)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image_type = nib.Nifti2Image if max(array.shape) > 32767 else nib.Nifti1Image
    image = image_type(np.asanyarray(array), volume.affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_sform(volume.affine, code=1)
    image.set_qform(volume.affine, code=1)
    payload = _payload(image.header, array)
    return compress_blocks(payload, level=level, threads=_THREADS) if compress else [payload]


def write(volume: Volume, path: Path) -> None:
    """Write ``volume`` as NIfTI-1 (NIfTI-2 if a dimension exceeds 32767); .gz by suffix."""
    parts = _encoded(volume, compress=path.name.lower().endswith(".gz"), level=GZIP_LEVEL)
    with open(path, "wb") as stream:
        stream.writelines(parts)
