"""NIfTI-1 / NIfTI-2 (.nii, .nii.gz) through nibabel, with ISA-L for the gzip layer.

nibabel parses and builds the header; the gzip stream is (de)compressed by ISA-L (``isal``), which
is several times faster than zlib and writes standard gzip files that every NIfTI reader opens.
Scaled data (``scl_slope``/``scl_inter``) is returned as integers when slope and intercept are
integers (CT stored as uint16 + intercept), else as float32.
"""

from __future__ import annotations

import struct
from pathlib import Path

import nibabel as nib
import numpy as np
from isal import igzip, igzip_threaded, isal_zlib

from segloop.core.volume import Volume
from segloop.errors import CorruptFileError

__all__ = ["GZIP_LEVEL", "read", "write"]

#: ISA-L compression level (0-3); on CT, level 2 is both faster and smaller than level 1 (benchmarks/io.py).
GZIP_LEVEL = 2
_GZIP_THREADS = 2
_NIFTI2_HEADER_SIZE = 540


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as stream:
        return stream.read(2) == b"\x1f\x8b"


def _decode_image(raw: bytes) -> nib.Nifti1Image | nib.Nifti2Image:
    if len(raw) < 348:
        msg = f"expected a NIfTI header of at least 348 bytes; got {len(raw)} bytes"
        raise CorruptFileError(msg)
    header_size = struct.unpack("<i", raw[:4])[0]
    if header_size not in (348, _NIFTI2_HEADER_SIZE):
        header_size = struct.unpack(">i", raw[:4])[0]
    image_type = nib.Nifti2Image if header_size == _NIFTI2_HEADER_SIZE else nib.Nifti1Image
    return image_type.from_bytes(raw)


def _scaled_array(image: nib.Nifti1Image) -> np.ndarray:
    proxy = image.dataobj
    raw = np.asarray(proxy.get_unscaled())
    slope, intercept = proxy.slope, proxy.inter
    if (slope, intercept) == (1.0, 0.0):
        return raw
    if float(slope).is_integer() and float(intercept).is_integer() and raw.dtype.kind in "iub":
        scaled = raw.astype(np.int64) * int(slope) + int(intercept)
        for dtype in (np.int16, np.int32):
            info = np.iinfo(dtype)
            if scaled.size == 0 or (scaled.min() >= info.min and scaled.max() <= info.max):
                return scaled.astype(dtype)
        return scaled
    return (raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)


def read(path: Path) -> Volume:
    """Read a .nii or .nii.gz file; the array is in the file's voxel order (I, J, K)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = igzip.decompress(raw)
        except (isal_zlib.error, EOFError, OSError) as error:
            msg = f"{path}: broken gzip stream ({error}); the file is truncated or corrupt"
            raise CorruptFileError(msg) from error
    image = _decode_image(raw)
    try:
        array = _scaled_array(image)
    except (OSError, ValueError) as error:
        msg = f"{path}: the header promises more voxel data than the file holds ({error})"
        raise CorruptFileError(msg) from error
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    elif array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    elif array.ndim == 4:
        array = np.moveaxis(array, 3, 0)  # time / channel series -> (C, I, J, K)
    header = image.header
    meta = {
        "nifti_sform_code": int(header["sform_code"]),
        "nifti_qform_code": int(header["qform_code"]),
        "xyz_unit": header.get_xyzt_units()[0],
    }
    return Volume(array, image.affine, meta)


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
    payload = image.to_bytes()
    if path.name.lower().endswith(".gz"):
        with igzip_threaded.open(path, "wb", compresslevel=GZIP_LEVEL, threads=_GZIP_THREADS) as out:
            out.write(payload)
    else:
        path.write_bytes(payload)
