"""Size caps on what a file may make segloop allocate, checked before anything is read.

Every reader computes the size its header declares (shape x bytes per voxel) and calls
`check_declared_size` before it reads, inflates or allocates the voxels, so a forged header or a
decompression bomb (a few MB of gzip that inflate to many GB) is refused with `TooLargeError`
instead of exhausting memory. Compressed data is then inflated by `inflate_exactly`, which never
produces more than the declared size (plus one byte to notice the excess).

The cap is `DEFAULT_MAX_IMAGE_BYTES` (2 GiB of decoded voxels) unless the environment variable
``SEGLOOP_MAX_IMAGE_BYTES`` gives another number of bytes; it is read at each call, so a server
or a test can change it without restarting.

Example:
    >>> check_declared_size((512, 512, 300), 2, what="ct.nii.gz")
    157286400
"""

from __future__ import annotations

import bz2
import lzma
import math
import os
import zlib
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np
from isal import isal_zlib

from segloop.errors import CorruptFileError, InvalidInputError, TooLargeError

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "MAX_IMAGE_BYTES_VARIABLE",
    "check_declared_size",
    "check_file_size",
    "check_inflated_size",
    "inflate_exactly",
    "max_image_bytes",
]

#: Decoded bytes one image may occupy unless ``SEGLOOP_MAX_IMAGE_BYTES`` says otherwise (2 GiB).
DEFAULT_MAX_IMAGE_BYTES = 2 << 30
#: The environment variable that overrides `DEFAULT_MAX_IMAGE_BYTES` (a positive integer, bytes).
MAX_IMAGE_BYTES_VARIABLE = "SEGLOOP_MAX_IMAGE_BYTES"
#: Compressed bytes read (and decoded bytes produced) per step of `inflate_exactly`.
_CHUNK_BYTES = 1 << 20


def max_image_bytes() -> int:
    """The cap on one image's decoded bytes: ``SEGLOOP_MAX_IMAGE_BYTES`` or 2 GiB.

    Raises:
        InvalidInputError: the variable is set but is not a positive integer.
    """
    text = os.environ.get(MAX_IMAGE_BYTES_VARIABLE, "").strip()
    if not text:
        return DEFAULT_MAX_IMAGE_BYTES
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        msg = f"{MAX_IMAGE_BYTES_VARIABLE} must be a positive whole number of bytes; got {text[:40]!r}"
        raise InvalidInputError(msg)
    return value


def _gib(size: int) -> str:
    return f"{size} bytes ({size / (1 << 30):.3g} GiB)"


def check_declared_size(shape: Sequence[int], itemsize: int, *, what: str) -> int:
    """Bytes of a ``shape`` array of ``itemsize``-byte values, refused before allocation.

    Args:
        shape: the dimensions a header declares (any length; Python integers, no overflow).
        itemsize: bytes per value (per voxel for structured RGB types).
        what: the file, for messages.

    Returns:
        The declared number of bytes.

    Raises:
        CorruptFileError: a dimension below 1 (an empty image is never a valid file).
        TooLargeError: the bytes exceed `max_image_bytes`.
    """
    dims = [int(n) for n in shape]
    if not dims or any(n < 1 for n in dims):
        msg = f"{what}: expected every image dimension to be at least 1; the header declares {tuple(dims)}"
        raise CorruptFileError(msg)
    declared = math.prod(dims) * int(itemsize)
    cap = max_image_bytes()
    if declared > cap:
        msg = (
            f"{what}: the header declares {tuple(dims)} values of {itemsize} byte{'s' * (itemsize != 1)} ="
            f" {_gib(declared)}, above the cap of {_gib(cap)} ({MAX_IMAGE_BYTES_VARIABLE})"
        )
        raise TooLargeError(msg)
    return declared


def check_file_size(size: int, *, what: str) -> None:
    """Refuse a file whose own size exceeds the cap (before reading it whole).

    Raises:
        TooLargeError: ``size`` exceeds `max_image_bytes`.
    """
    cap = max_image_bytes()
    if size > cap:
        msg = (
            f"{what}: the file holds {_gib(size)}, above the cap of {_gib(cap)} ({MAX_IMAGE_BYTES_VARIABLE})"
        )
        raise TooLargeError(msg)


# zlib window bits: 47 = 32 + 15, a gzip or a zlib header told apart from the data; -15 raw deflate.
_ZLIB_WBITS = {"gzip": 47, "deflate": -15}


class _Stream:
    """One compressed stream decoded in steps of bounded output (zlib/gzip by ISA-L, or bzip2)."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        if codec in _ZLIB_WBITS:
            self._decoder = isal_zlib.decompressobj(wbits=_ZLIB_WBITS[codec])
        else:
            self._decoder = bz2.BZ2Decompressor() if codec == "bzip2" else lzma.LZMADecompressor()
        self._tail = b""
        self.needs_input = True

    @property
    def eof(self) -> bool:
        """The stream's end marker has been decoded."""
        return bool(self._decoder.eof)

    @property
    def unused_data(self) -> bytes:
        """Input found after the end of the stream (the next gzip member, or padding)."""
        return bytes(self._decoder.unused_data)

    def decode(self, data: bytes, room: int) -> bytes:
        """Feed ``data`` (may be empty) and return at most ``room`` decoded bytes."""
        if self.codec in _ZLIB_WBITS:
            block = self._decoder.decompress(self._tail + data, room)
            self._tail = self._decoder.unconsumed_tail
            self.needs_input = not self._tail and len(block) < room
        else:
            block = self._decoder.decompress(data, room)
            self.needs_input = self._decoder.needs_input
        return block


_CODEC_ERRORS = (isal_zlib.error, zlib.error, lzma.LZMAError, OSError, ValueError, EOFError)
_PADDING = b"\0 \t\r\n"


def inflate_exactly(
    source: BinaryIO, expected: int, codec: str, *, what: str, out: np.ndarray | None = None
) -> np.ndarray:
    """Decompress ``source`` into exactly ``expected`` bytes, never producing more.

    Concatenated streams (multi-member gzip, multi-stream bzip2) are read in turn; NUL and
    whitespace bytes between or after them are skipped. Memory: the ``expected`` bytes of the
    result plus about 2 MiB, whatever the data would inflate to.

    Args:
        source: compressed bytes, positioned at the first byte of the stream.
        expected: the decoded size the header declares (already checked against the cap).
        codec: ``"gzip"`` (gzip or zlib data) or ``"bzip2"``.
        what: the file, for messages.
        out: a ``(expected,)`` uint8 array to fill instead of a new one.

    Returns:
        A writable ``(expected,)`` uint8 array (``out`` when given).

    Raises:
        CorruptFileError: the data is not a valid stream, ends early, or decodes to more or fewer
            bytes than ``expected``.

    Example:
        >>> import gzip, io
        >>> inflate_exactly(io.BytesIO(gzip.compress(b"abc")), 3, "gzip", what="x").tobytes()
        b'abc'
    """
    output = np.empty(expected, dtype=np.uint8) if out is None else out
    filled = 0
    stream = _Stream(codec)
    pending = b""
    try:
        while True:
            data = b""
            if stream.needs_input:
                data, pending = pending or source.read(_CHUNK_BYTES), b""
                if not data:
                    break
            block = stream.decode(data, min(_CHUNK_BYTES, expected - filled + 1))
            if filled + len(block) > expected:
                msg = f"{what}: the {codec} data decodes to more than the {expected} bytes declared"
                raise CorruptFileError(msg)
            output[filled : filled + len(block)] = np.frombuffer(block, dtype=np.uint8)
            filled += len(block)
            if stream.eof:
                pending = stream.unused_data.lstrip(_PADDING)
                while not pending and (more := source.read(_CHUNK_BYTES)):
                    pending = more.lstrip(_PADDING)
                if not pending:
                    break
                stream = _Stream(codec)  # the next gzip member or bzip2 stream
    except _CODEC_ERRORS as error:
        msg = f"{what}: the {codec} data is corrupt ({error})"
        raise CorruptFileError(msg) from error
    if not stream.eof:
        msg = f"{what}: the {codec} data ends early after {filled} of {expected} bytes; the file is truncated"
        raise CorruptFileError(msg)
    if filled != expected:
        msg = f"{what}: the {codec} data decodes to {filled} bytes; the header declares {expected}"
        raise CorruptFileError(msg)
    return output


def check_inflated_size(
    data: bytes, limit: int, codec: str, *, what: str, over_limit: type[InvalidInputError] = CorruptFileError
) -> int:
    """Decode ``data`` in bounded steps, keeping nothing, and refuse it past ``limit`` bytes.

    For decoders that inflate a whole block at once (tifffile's zlib and lzma without
    imagecodecs): check each block first, so that a block cannot inflate past its declared size.

    Args:
        data: one compressed block (a TIFF strip or tile).
        limit: the most decoded bytes the block may hold.
        codec: ``"gzip"`` (zlib or gzip data), ``"deflate"`` (raw), ``"bzip2"`` or ``"lzma"``.
        what: the file, for messages.
        over_limit: the error for a block over ``limit``: `CorruptFileError` when ``limit`` is
            what the file declares, `TooLargeError` when it is the cap.

    Returns:
        The decoded size (at most ``limit``).

    Raises:
        CorruptFileError: the block is not valid data (or, by default, decodes past ``limit``).
    """
    stream = _Stream(codec)
    decoded = 0
    pending = memoryview(data)
    try:
        while not stream.eof:
            feed = b""
            if stream.needs_input:
                if not pending:
                    break
                feed, pending = bytes(pending[:_CHUNK_BYTES]), pending[_CHUNK_BYTES:]
            decoded += len(stream.decode(feed, min(_CHUNK_BYTES, limit - decoded + 1)))
            if decoded > limit:
                msg = f"{what}: a {codec} block decodes to more than {limit} bytes, the most it may hold"
                raise over_limit(msg)
    except _CODEC_ERRORS as error:
        msg = f"{what}: the {codec} data is corrupt ({error})"
        raise CorruptFileError(msg) from error
    return decoded
