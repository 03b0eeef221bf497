"""PNG and JPEG 2D images through Pillow.

Conventions converted here and nowhere else:

* Pillow's pixels are ``(Y, X)`` (row, column); an image becomes ``(X, Y, 1)``, and a colour image
  ``(Y, X, C)`` becomes ``(C, X, Y, 1)`` (RGB, RGBA, LA).
* Modes: L and P give uint8 (palette indices kept as values, the palette in ``meta["palette"]``),
  1 gives uint8 0/1, I;16 uint16, I int32. Other modes (CMYK, ...) are refused.
* Pixel size: the exact affine segloop stored as JSON in the PNG text chunk ``segloop:affine`` (or
  the JPEG comment ``segloop:affine=...``); else the dpi (25.4 / dpi mm per pixel, Z taken equal to
  X); else 1.0 per pixel and ``meta["spacing_unit"] = "pixel"``.

The PNG writer takes uint8, uint16 and bool (written as a 1-bit image, read back as uint8 0/1)
and stores the affine in the text chunk, so reading it back is exact, plus the dpi for other
readers. The JPEG writer takes uint8 grey or RGB at quality 95; JPEG is lossy, so only the affine
(kept in the comment) survives a round trip exactly, not the pixel values.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from segloop.core.volume import Volume
from segloop.errors import CorruptFileError, TooLargeError, UnsupportedFormatError
from segloop.io.checks import make_volume
from segloop.io.limits import check_declared_size, check_file_size

__all__ = ["read", "write"]

_AFFINE_KEY = "segloop:affine"
_GREY_MODES = {
    "1": np.uint8,
    "L": np.uint8,
    "P": np.uint8,
    "I": np.int32,
    "I;16": np.uint16,
    "I;16L": np.uint16,
    "I;16B": np.uint16,
    "I;16N": np.uint16,
}
_COLOUR_MODES = ("LA", "RGB", "RGBA")
#: What Pillow raises on a truncated or garbled file besides OSError (its parsers have no one type).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error)
_PNG_MODES = {
    (np.dtype(np.uint8), 1): "L",
    (np.dtype(np.uint16), 1): "I;16",
    (np.dtype(bool), 1): "1",
    (np.dtype(np.uint8), 2): "LA",
    (np.dtype(np.uint8), 3): "RGB",
    (np.dtype(np.uint8), 4): "RGBA",
}


def _stored_affine(image: Image.Image) -> str | None:
    text = getattr(image, "text", {}).get(_AFFINE_KEY)
    comment = image.info.get("comment", b"")
    prefix = f"{_AFFINE_KEY}=".encode()
    if text is None and isinstance(comment, bytes) and comment.startswith(prefix):
        text = comment[len(prefix) :].decode("ascii")
    return text


def _affine(image: Image.Image, path: Path, meta: dict[str, Any]) -> np.ndarray:
    """Voxel-to-mm affine from segloop's stored JSON, the dpi, or 1.0 per pixel."""
    stored = _stored_affine(image)
    if stored is not None:
        try:
            return np.array(json.loads(stored), dtype=np.float64).reshape(4, 4)
        except ValueError as error:
            msg = f"{path}: expected a 4x4 JSON matrix in {_AFFINE_KEY}; got {stored[:80]!r}"
            raise CorruptFileError(msg) from error
    dpi = image.info.get("dpi")
    if dpi is not None and float(dpi[0]) > 0 and float(dpi[1]) > 0:
        x_mm, y_mm = 25.4 / float(dpi[0]), 25.4 / float(dpi[1])
        return np.diag([x_mm, y_mm, x_mm, 1.0])
    meta["spacing_unit"] = "pixel"
    return np.eye(4)


def read(path: Path) -> Volume:
    """Read a PNG or JPEG image.

    Args:
        path: a .png, .jpg or .jpeg file.

    Returns:
        A `Volume` with an ``(X, Y, 1)`` array (``(C, X, Y, 1)`` for colour) and a millimetre
        affine (see the module docstring for dtypes and pixel size).

    Raises:
        UnsupportedFormatError: a mode other than 1, L, P, I;16, I, LA, RGB, RGBA.
        CorruptFileError: the file is not a decodable image.
        TooLargeError: the declared pixels exceed `segloop.io.limits.max_image_bytes` (or
            Pillow's decompression-bomb guard); checked before decoding.
    """
    meta: dict[str, Any] = {}
    check_file_size(path.stat().st_size, what=str(path))
    try:
        # from memory: a forged chunk length then reads what the file holds, not what it claims
        with Image.open(io.BytesIO(path.read_bytes())) as image:
            width, height = image.size
            bands = len(image.getbands())
            itemsize = 4 if image.mode in ("I", "F") else 2 if image.mode.startswith("I;16") else 1
            check_declared_size((width, height, bands), itemsize, what=str(path))
            image.load()
            mode = image.mode
            if mode not in _GREY_MODES and mode not in _COLOUR_MODES:
                known = ", ".join([*_GREY_MODES, *_COLOUR_MODES])
                msg = f"{path}: expected an image of mode {known}; got {mode}; convert to RGB or L"
                raise UnsupportedFormatError(msg)
            pixels = np.asarray(image)
            affine = _affine(image, path, meta)
            if mode == "P":
                meta["palette"] = image.getpalette()
    except Image.DecompressionBombError as error:
        msg = f"{path}: {error}; store images this large as TIFF"
        raise TooLargeError(msg) from error
    except _DECODE_ERRORS as error:
        msg = f"{path}: cannot decode the image ({error}); the file is truncated or corrupt"
        raise CorruptFileError(msg) from error
    if mode in _GREY_MODES:
        array = pixels.astype(_GREY_MODES[mode], copy=False).T[:, :, np.newaxis]
    else:
        array = np.transpose(pixels, (2, 1, 0))[..., np.newaxis]
    return make_volume(np.ascontiguousarray(array), affine, meta, what=str(path))


def _pixels_and_mode(volume: Volume, is_jpeg: bool) -> tuple[np.ndarray, str]:
    """``(Y, X)`` or ``(Y, X, C)`` pixels and the Pillow mode to store them in."""
    name = "JPEG" if is_jpeg else "PNG"
    if volume.spatial_shape[2] != 1:
        msg = (
            f"{name} holds one 2D image; got {volume.spatial_shape[2]} slices (shape"
            f" {volume.array.shape}); write TIFF for stacks or keep one slice (array[..., k:k+1])"
        )
        raise UnsupportedFormatError(msg)
    plane = volume.array[..., 0]
    pixels = plane.T if plane.ndim == 2 else np.transpose(plane, (2, 1, 0))
    mode = _PNG_MODES.get((pixels.dtype, volume.n_channels))
    if mode is None or (is_jpeg and mode not in ("L", "RGB")):
        expected = "uint8 grey or RGB" if is_jpeg else "uint8/uint16/bool grey or uint8 LA/RGB/RGBA"
        msg = (
            f"{name} writing needs {expected}; got {pixels.dtype} with {volume.n_channels}"
            " channel(s); cast the array or write TIFF, which keeps any dtype"
        )
        raise UnsupportedFormatError(msg)
    return np.ascontiguousarray(pixels), mode


def write(volume: Volume, path: Path) -> None:
    """Write a one-slice volume as PNG or JPEG (chosen by ``path``'s suffix).

    Args:
        volume: ``(X, Y, 1)`` or ``(C, X, Y, 1)``; dtypes as in the module docstring.
        path: the file to create (.png, .jpg or .jpeg).

    Raises:
        UnsupportedFormatError: several slices, or a dtype / channel count the format cannot hold.
    """
    is_jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    pixels, mode = _pixels_and_mode(volume, is_jpeg)
    image = Image.fromarray(pixels)  # the mode follows from dtype and channel count
    palette = volume.meta.get("palette")
    if mode == "L" and not is_jpeg and isinstance(palette, list):
        image.putpalette(palette)
    x_mm, y_mm, _ = volume.spacing
    has_size = volume.meta.get("spacing_unit") != "pixel"
    affine_json = json.dumps(volume.affine.tolist())
    if is_jpeg:
        dpi = (round(25.4 / x_mm), round(25.4 / y_mm))
        options: dict[str, Any] = {"quality": 95, "comment": f"{_AFFINE_KEY}={affine_json}"}
        if has_size and all(1 <= d <= 65535 for d in dpi):  # JFIF density is a 16-bit integer
            options["dpi"] = dpi
        image.save(path, format="JPEG", **options)
        return
    text = PngImagePlugin.PngInfo()
    text.add_text(_AFFINE_KEY, affine_json)
    options = {"pnginfo": text}
    if has_size and all(1 <= 1000 / s < 2**32 for s in (x_mm, y_mm)):  # pHYs: pixels per metre
        options["dpi"] = (25.4 / x_mm, 25.4 / y_mm)
    image.save(path, format="PNG", **options)
