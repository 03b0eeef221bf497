"""NIfTI-1 / NIfTI-2 (.nii, .nii.gz): nibabel parses and builds headers, ISA-L does the gzip.

Writing cuts the file into gzip members compressed in parallel (`segloop.io.gzip_blocks`): a
standard .nii.gz that every reader opens, which segloop also reads back in parallel. The voxel
array wraps the inflated buffer without a copy. Scaled data (``scl_slope``/``scl_inter``) stays
integer when slope and intercept are integers (CT stored as uint16 + intercept), else float32.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import isal_zlib

from segloop.core.volume import Volume
from segloop.errors import CorruptFileError
from segloop.io.gzip_blocks import compress_blocks, decompress_blocks

__all__ = ["GZIP_LEVEL", "read", "write"]

#: ISA-L compression level (0-3); on CT, level 2 is both faster and smaller than level 1 (benchmarks/io.py).
GZIP_LEVEL = 2
_THREADS = 2
_NIFTI1_HEADER_BYTES = 348
_NIFTI2_HEADER_BYTES = 540


def _read_buffer(path: Path) -> np.ndarray:
    """The file's bytes (inflated) as a writable uint8 array."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return np.frombuffer(bytearray(raw), dtype=np.uint8)
    try:
        return decompress_blocks(raw, threads=_THREADS)
    except (isal_zlib.error, EOFError, OSError) as error:
        msg = f"{path}: broken gzip stream ({error}); the file is truncated or corrupt"
        raise CorruptFileError(msg) from error


def _parse_header(buffer: np.ndarray, path: Path) -> nib.Nifti1Header:
    if len(buffer) < _NIFTI1_HEADER_BYTES:
        msg = f"{path}: expected a NIfTI header of at least 348 bytes; got {len(buffer)} bytes"
        raise CorruptFileError(msg)
    for order in "<>":
        size = struct.unpack_from(f"{order}i", buffer[:4])[0]
        if size == _NIFTI1_HEADER_BYTES:
            header_type, offset = nib.Nifti1Header, float(struct.unpack_from(f"{order}f", buffer[108:112])[0])
            break
        if size == _NIFTI2_HEADER_BYTES:
            header_type, offset = nib.Nifti2Header, float(struct.unpack_from(f"{order}q", buffer[168:176])[0])
            break
    else:
        msg = f"{path}: not a NIfTI file (header size field is not 348 or 540)"
        raise CorruptFileError(msg)
    end = max(int(offset), header_type.template_dtype.itemsize)
    return header_type.from_fileobj(io.BytesIO(buffer[:end].tobytes()))


def _scale(raw: np.ndarray, slope: float | None, intercept: float | None) -> np.ndarray:
    slope = 1.0 if slope is None else float(slope)
    intercept = 0.0 if intercept is None else float(intercept)
    if (slope, intercept) == (1.0, 0.0):
        return raw
    if slope.is_integer() and intercept.is_integer() and raw.dtype.kind in "iub":
        scaled = raw.astype(np.int64) * int(slope) + int(intercept)
        for dtype in (np.int16, np.int32):
            info = np.iinfo(dtype)
            if scaled.size == 0 or (scaled.min() >= info.min and scaled.max() <= info.max):
                return scaled.astype(dtype)
        return scaled
    return raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def read(path: Path) -> Volume:
    """Read a .nii or .nii.gz file; the array is in the file's voxel order (I, J, K)."""
    buffer = _read_buffer(path)
    header = _parse_header(buffer, path)
    dtype = header.get_data_dtype()
    shape = header.get_data_shape()
    offset = int(header.get_data_offset())
    count = int(np.prod(shape))
    if len(buffer) < offset + count * dtype.itemsize:
        msg = (
            f"{path}: the header promises {count * dtype.itemsize} bytes of voxels after byte {offset};"
            f" the file holds {len(buffer) - offset}: it is truncated"
        )
        raise CorruptFileError(msg)
    raw = buffer[offset : offset + count * dtype.itemsize].view(dtype).reshape(shape, order="F")
    if not dtype.isnative:
        raw = raw.astype(dtype.newbyteorder("="))
    array = _scale(raw, *header.get_slope_inter())
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    elif array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    elif array.ndim == 4:
        array = np.moveaxis(array, 3, 0)  # time / channel series -> (C, I, J, K)
    meta = {
        "nifti_sform_code": int(header["sform_code"]),
        "nifti_qform_code": int(header["qform_code"]),
        "xyz_unit": header.get_xyzt_units()[0],
    }
    return Volume(array, header.get_best_affine(), meta)


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


def write(volume: Volume, path: Path) -> None:
    """Write ``volume`` as NIfTI-1 (NIfTI-2 if a dimension exceeds 32767); .gz by suffix."""
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
    with open(path, "wb") as stream:
        if path.name.lower().endswith(".gz"):
            stream.writelines(compress_blocks(payload, level=GZIP_LEVEL, threads=_THREADS))
        else:
            stream.write(payload)
