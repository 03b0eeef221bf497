"""TIFF images and stacks through tifffile.

Conventions converted here and nowhere else:

* TIFF pages are ``(Y, X)`` (row, column); a 2D image becomes ``(X, Y, 1)``, a stack
  ``(Z, Y, X)`` becomes ``(X, Y, Z)``, and a sample or channel axis (tifffile's ``S`` or ``C``)
  becomes the leading channel axis ``(C, X, Y, Z)``. A generic page axis (``I`` or ``Q``) counts as
  Z when it is the only axis besides Y, X and the channels; time (``T``) and others are refused.
* Voxel size, in this order: the exact affine segloop stored in the shaped-metadata JSON
  description; ImageJ's ``unit`` (micron, um, µm, nm, mm, cm) with XResolution / YResolution and
  ``spacing`` for Z; ResolutionUnit inch or centimetre with XResolution / YResolution (Z is then
  assumed equal to X); else 1.0 per pixel and ``meta["spacing_unit"] = "pixel"``. Everything is
  converted to millimetres; TIFF has no origin or orientation, so the affine is diagonal.

The writer stores ``(Z, Y, X)`` pages (``(C, Z, Y, X)`` with channels; a one-slice volume as one
plain ``(Y, X)`` page, as 2D tools write it) with the affine in the
shaped-metadata description, so reading it back is exact, plus XResolution / YResolution in pixels
per centimetre for other readers (ImageJ/Fiji, napari). Compression is zlib (Deflate): lossless,
understood by every TIFF reader (libtiff, ImageJ, ITK), and label arrays shrink tens of times.
"""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import tifffile

from segloop.core.volume import Volume
from segloop.errors import CorruptFileError, UnsupportedFormatError
from segloop.io.checks import make_volume
from segloop.io.limits import check_declared_size, check_inflated_size

__all__ = ["read", "write"]

_MM_PER_UNIT = {
    "micron": 1e-3,
    "microns": 1e-3,
    "um": 1e-3,
    "µm": 1e-3,
    "nm": 1e-6,
    "mm": 1.0,
    "cm": 10.0,
}
_MM_PER_RESOLUTION_UNIT = {2: 25.4, 3: 10.0}  # TIFF ResolutionUnit: 2 inch, 3 centimetre
# TIFF Compression values whose decoders (without imagecodecs) inflate a whole block unbounded.
_UNBOUNDED_CODECS = {8: "gzip", 32946: "gzip", 50013: "gzip", 34925: "lzma"}
_READ_ERRORS = (
    tifffile.TiffFileError, ValueError, OSError, EOFError, IndexError, KeyError, TypeError, struct.error,
    zlib.error, ZeroDivisionError,
    AssertionError, RuntimeError,  # tifffile asserts, or finds an "incompatible keyframe", on broken pages
)  # fmt: skip
# tifffile logs what it skips in a broken file; segloop reports the file's error itself (one line).
logging.getLogger("tifffile").addHandler(logging.NullHandler())


def _to_xyz(data: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """Reorder tifffile's ``axes`` to ``(X, Y, Z)`` or ``(C, X, Y, Z)``."""
    channels = [a for a in axes if a in "CS"]
    extra = [a for a in axes if a not in "YXCS"]
    if "Y" not in axes or "X" not in axes or len(channels) > 1 or extra not in ([], ["Z"], ["I"], ["Q"]):
        msg = (
            f"{path}: expected TIFF axes Y, X with optional Z (or one page axis I/Q) and one"
            f" channel axis C/S; got {axes!r} with shape {data.shape} (a time series?);"
            " save one time point per file"
        )
        raise UnsupportedFormatError(msg)
    if not extra:
        data, axes, extra = data[np.newaxis], "Z" + axes, ["Z"]
    order = [axes.index(a) for a in (*channels, "X", "Y", extra[0])]
    return np.ascontiguousarray(np.transpose(data, order))


def _unit_mm(unit: object) -> float | None:
    if not isinstance(unit, str):
        return None
    name = unit.strip().lower().replace("\\u00b5", "µ").replace("μ", "µ")
    return _MM_PER_UNIT.get(name)


def _pixel_size(page: tifffile.TiffPage, tag: str) -> float | None:
    """Size of one pixel in the tag's resolution unit, or None when the tag is missing or zero."""
    value = page.tags.get(tag)
    if value is None:
        return None
    numerator, denominator = value.value
    return float(denominator) / float(numerator) if numerator and denominator else None


def _affine(tif: tifffile.TiffFile, meta: dict) -> np.ndarray:
    """Voxel-to-mm affine from segloop's metadata, ImageJ's, the resolution tags, or pixels."""
    if tif.is_shaped and tif.shaped_metadata and "affine" in tif.shaped_metadata[0]:
        return np.array(tif.shaped_metadata[0]["affine"], dtype=np.float64)
    page = tif.pages.first
    x_size, y_size = _pixel_size(page, "XResolution"), _pixel_size(page, "YResolution")
    imagej = tif.imagej_metadata or {}
    unit_mm = _unit_mm(imagej.get("unit"))
    if unit_mm is not None and x_size and y_size:
        z_size = float(imagej.get("spacing", x_size))
        return np.diag([x_size * unit_mm, y_size * unit_mm, z_size * unit_mm, 1.0])
    unit_mm = _MM_PER_RESOLUTION_UNIT.get(int(page.tags.valueof("ResolutionUnit", 1)))
    if unit_mm is not None and x_size and y_size:
        return np.diag([x_size * unit_mm, y_size * unit_mm, x_size * unit_mm, 1.0])
    meta["spacing_unit"] = "pixel"
    return np.eye(4)


def _expected_size(tif: tifffile.TiffFile) -> int | None:
    """Voxel count the shaped or ImageJ description promises, or None.

    A broken page chain otherwise reads short without an error.
    """
    if tif.is_shaped and tif.shaped_metadata and "shape" in tif.shaped_metadata[0]:
        return int(np.prod(tif.shaped_metadata[0]["shape"]))
    if tif.is_imagej and tif.imagej_metadata and "images" in tif.imagej_metadata:
        return int(tif.imagej_metadata["images"]) * int(np.prod(tif.pages.first.shape))
    return None


def _block_bytes(page: tifffile.TiffPage) -> int:
    """Most decoded bytes one strip or tile of ``page`` may hold."""
    if page.is_tiled:
        depth = max(int(page.tiledepth or 1), 1)
        return page.tilewidth * page.tilelength * depth * page.samplesperpixel * page.dtype.itemsize
    return int(page.nbytes)


def _check_sizes(tif: tifffile.TiffFile, series: tifffile.TiffPageSeries, path: Path) -> None:
    """Refuse a declared size above the cap, and compressed blocks that inflate past their size,
    before tifffile decodes anything (its zlib and lzma fallbacks inflate a block unbounded)."""
    if series.dtype is None:
        msg = f"{path}: the TIFF sample format is not supported (no numeric dtype)"
        raise UnsupportedFormatError(msg)
    check_declared_size(series.shape, series.dtype.itemsize, what=str(path))
    handle = tif.filehandle
    for page in series.pages:
        if page is None:
            continue
        codec = _UNBOUNDED_CODECS.get(int(page.keyframe.compression))
        if codec is None:
            continue
        limit = _block_bytes(page.keyframe)
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
            handle.seek(offset)
            check_inflated_size(handle.read(count), limit, codec, what=str(path))


def read(path: Path) -> Volume:
    """Read a TIFF image or stack (the file's first series).

    Args:
        path: a .tif / .tiff file.

    Returns:
        A `Volume` with an ``(X, Y, Z)`` or ``(C, X, Y, Z)`` array in the stored dtype and a
        millimetre affine; ``meta["spacing_unit"] == "pixel"`` when the file has no pixel size.

    Raises:
        UnsupportedFormatError: time series or other axes segloop cannot map.
        CorruptFileError: the file is not a readable TIFF, or a block inflates past its size.
        TooLargeError: the declared voxels exceed `segloop.io.limits.max_image_bytes`.
    """
    meta: dict = {}
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            _check_sizes(tif, series, path)
            data = series.asarray(maxworkers=1)
            affine = _affine(tif, meta)
            axes = series.axes
            expected = _expected_size(tif)
    except _READ_ERRORS as error:
        msg = f"{path}: cannot read as TIFF ({error}); the file is truncated or corrupt"
        raise CorruptFileError(msg) from error
    if expected is not None and data.size != expected:
        msg = (
            f"{path}: expected {expected} voxels from the TIFF description; the pages hold"
            f" {data.size}; the file is truncated or corrupt"
        )
        raise CorruptFileError(msg)
    return make_volume(_to_xyz(data, axes, path), affine, meta, what=str(path))


def write(volume: Volume, path: Path) -> None:
    """Write ``volume`` as a zlib-compressed TIFF of ``(Z, Y, X)`` pages with its exact affine.

    Args:
        volume: any numeric or boolean ``(I, J, K)`` or ``(C, I, J, K)`` volume.
        path: the file to create.
    """
    array = volume.array
    if array.ndim == 3 and array.shape[2] == 1:
        pages, axes = np.ascontiguousarray(array[:, :, 0].T), "YX"  # a 2D image stays one plain page
    elif array.ndim == 3:
        pages, axes = np.transpose(array, (2, 1, 0)), "ZYX"
    else:
        pages, axes = np.transpose(array, (0, 3, 2, 1)), "CZYX"
    resolution = None
    if volume.meta.get("spacing_unit") != "pixel":
        x_mm, y_mm, _ = volume.spacing
        resolution = (10.0 / x_mm, 10.0 / y_mm)  # pixels per centimetre
    tifffile.imwrite(
        path,
        np.ascontiguousarray(pages),
        photometric="minisblack",
        compression="zlib",
        resolution=resolution,
        resolutionunit="CENTIMETER" if resolution else None,
        metadata={"axes": axes, "affine": volume.affine.tolist()},
    )
