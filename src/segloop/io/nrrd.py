"""NRRD (.nrrd, .nhdr + data file): pynrrd parses the header fields, segloop reads the voxels.

NRRD stores ``space directions`` (one vector per axis) and ``space origin`` in a named world space,
usually ``left-posterior-superior`` (Slicer, ITK). They are converted to the RAS+ affine here and
only here. A non-spatial axis (``list``/``vector`` kind, space direction ``none``) becomes the
leading channel axis. segloop writes LPS, as Slicer does, and gzip at level 1.

Reading trusts nothing in the file: the header is at most `MAX_HEADER_BYTES`; the declared size
(``sizes`` x ``type``) is checked against `segloop.io.limits.max_image_bytes` before any voxel is
read; gzip and bzip2 data are inflated to exactly the declared size (`inflate_exactly`), never
more. A detached header's data files (``data file: name``, ``LIST`` or a ``%d`` format with
min, max, step) must lie beside the header or below its folder: an absolute path, a ``..`` or a
symbolic link leaving the folder is refused without touching (or describing) the target.
The voxels are read here because pynrrd's reader opens any data file a header names and inflates
without a bound; its header parser is used as is.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import nrrd
import numpy as np

from segloop.core.geometry import flip_ras_lps
from segloop.core.names import path_inside
from segloop.core.volume import Volume
from segloop.errors import CorruptFileError, InvalidInputError, NotFoundError, UnsupportedFormatError
from segloop.io.checks import make_volume
from segloop.io.limits import check_declared_size, inflate_exactly

__all__ = ["MAX_HEADER_BYTES", "list_nrrd_files", "read", "read_nrrd", "write", "write_nrrd"]

#: Longest header read (Slicer's .seg.nrrd with hundreds of segments stays far below).
MAX_HEADER_BYTES = 16 << 20
_MAGIC_BYTES = 16
#: Most data files one detached header may name.
MAX_DATA_FILES = 100_000
_GZIP_LEVEL = 1
# Sign flips of the first two world axes that turn each NRRD space into RAS.
_SPACE_TO_RAS = {
    "left-posterior-superior": (-1.0, -1.0),
    "lps": (-1.0, -1.0),
    "right-anterior-superior": (1.0, 1.0),
    "ras": (1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0),
    "las": (-1.0, 1.0),
    "scanner-xyz": (1.0, 1.0),
    "3d-right-handed": (1.0, 1.0),
}
_ENCODINGS = {
    "raw": "raw",
    "gzip": "gzip",
    "gz": "gzip",
    "bzip2": "bzip2",
    "bz2": "bzip2",
    "ascii": "ascii",
    "text": "ascii",
    "txt": "ascii",
    "hex": "hex",
}
# NRRD type names (the NRRD specification's table) -> numpy kind and size.
_TYPES = {
    **dict.fromkeys(("signed char", "int8", "int8_t"), "i1"),
    **dict.fromkeys(("uchar", "unsigned char", "uint8", "uint8_t"), "u1"),
    **dict.fromkeys(("short", "short int", "signed short", "signed short int", "int16", "int16_t"), "i2"),
    **dict.fromkeys(("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"), "u2"),
    **dict.fromkeys(("int", "signed int", "int32", "int32_t"), "i4"),
    **dict.fromkeys(("uint", "unsigned int", "uint32", "uint32_t"), "u4"),
    **dict.fromkeys(
        (
            "longlong",
            "long long",
            "long long int",
            "signed long long",
            "signed long long int",
            "int64",
            "int64_t",
        ),
        "i8",
    ),
    **dict.fromkeys(
        ("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"), "u8"
    ),
    "float": "f4",
    "double": "f8",
}
_DATA_FILE_FIELDS = ("data file", "datafile")
#: Longest text one ASCII-encoded value may take (digits, sign, exponent and separators).
_MAX_TEXT_CHARS_PER_VALUE = 40
_FORMAT_NAME = re.compile(r"[^%]*%0?[1-9]?[0-9]?d[^%]*")
_HEADER_PARSE_ERRORS = (nrrd.NRRDError, ValueError, TypeError, IndexError, KeyError, StopIteration)


def _header_lines(stream: BinaryIO, path: Path) -> tuple[list[str], list[str]]:
    """The header's lines and the file names after ``data file: LIST``.

    Leaves ``stream`` at the first byte after the blank line that ends the header (the data of an
    attached header).
    """
    magic = stream.readline(_MAGIC_BYTES).decode("latin-1").rstrip()
    if not magic.startswith("NRRD"):
        msg = f"{path}: not a NRRD file (expected the magic line NRRD000N at its start)"
        raise CorruptFileError(msg)
    lines = [magic]
    listed: list[str] | None = None
    budget = MAX_HEADER_BYTES
    while True:
        raw = stream.readline(budget + 1)
        budget -= len(raw)
        if budget < 0:
            msg = f"{path}: expected a NRRD header under {MAX_HEADER_BYTES} bytes (a blank line ends it)"
            raise CorruptFileError(msg)
        line = raw.decode("utf-8", errors="replace").rstrip()
        if not raw or (not line and listed is None):
            break
        if listed is not None:
            if line:
                listed.append(line)
            continue
        lines.append(line)
        field, _, value = line.partition(":")
        if field.strip() in _DATA_FILE_FIELDS and value.strip().split()[:1] == ["LIST"]:
            listed = []  # the rest of the file lists the data files, one per line
    return lines, listed or []


def _parse_header(lines: list[str], path: Path) -> dict[str, Any]:
    try:
        with warnings.catch_warnings():  # pynrrd warns, then casts NaN into an integer field
            warnings.simplefilter("error", RuntimeWarning)
            header = nrrd.read_header(iter(lines))
    except (*_HEADER_PARSE_ERRORS, RuntimeWarning) as error:
        detail = (str(error).splitlines() or [type(error).__name__])[0]
        msg = f"{path}: malformed NRRD header ({detail[:200]})"
        raise CorruptFileError(msg) from error
    for field in ("dimension", "type", "encoding", "sizes"):
        if field not in header:
            msg = f"{path}: the NRRD header lacks the required field {field!r}"
            raise CorruptFileError(msg)
    return header


def _dtype(header: dict[str, Any], encoding: str, path: Path) -> np.dtype:
    code = _TYPES.get(str(header["type"]).lower())
    if code is None:
        msg = f"{path}: NRRD type {header['type']!r} is not supported; expected a numeric type"
        raise UnsupportedFormatError(msg)
    dtype = np.dtype(code)
    if dtype.itemsize == 1 or encoding == "ascii":
        return dtype
    endian = str(header.get("endian", "")).lower()
    if endian not in ("little", "big"):
        msg = f"{path}: expected the NRRD field endian (little or big) for {header['type']!r}; got {endian!r}"
        raise CorruptFileError(msg)
    return dtype.newbyteorder("<" if endian == "little" else ">")


def _data_file_names(value: str, listed: list[str], path: Path) -> list[str]:
    """The data file names a ``data file`` field gives (one name, ``LIST`` or a ``%d`` format)."""
    tokens = value.split()
    if tokens[:1] == ["LIST"]:
        names = listed
    elif len(tokens) in (4, 5) and "%" in tokens[0]:
        if _FORMAT_NAME.fullmatch(tokens[0]) is None:
            msg = f"{path}: expected one %d (optionally %0Nd) in the data file format; got {tokens[0]!r}"
            raise CorruptFileError(msg)
        try:
            first, last, step = (int(t) for t in tokens[1:4])
        except ValueError as error:
            msg = f"{path}: expected whole numbers min max step after the data file format; got {value!r}"
            raise CorruptFileError(msg) from error
        count = (last - first) // step + 1 if step else 0
        if count < 1 or count > MAX_DATA_FILES:
            msg = (
                f"{path}: the data file format gives {max(count, 0)} files ({first}..{last} step {step});"
                f" expected 1 to {MAX_DATA_FILES}"
            )
            raise CorruptFileError(msg)
        names = [tokens[0] % (first + k * step) for k in range(count)]
    else:
        names = [value]
    if not names or len(names) > MAX_DATA_FILES:
        msg = f"{path}: expected 1 to {MAX_DATA_FILES} data files; the header names {len(names)}"
        raise CorruptFileError(msg)
    return names


def _resolve_data_file(name: str, path: Path) -> Path:
    """The data file ``name`` inside the header's folder; refused (without looking at it) outside."""
    try:
        return path_inside(path.parent, name)
    except InvalidInputError as error:
        msg = (
            f"{path}: the header's data file {name[:100]!r} lies outside the header's folder;"
            " expected a file beside the header or below its folder"
        )
        raise InvalidInputError(msg) from error


def _read_exactly(stream: BinaryIO, output: np.ndarray, what: str) -> None:
    view = memoryview(output)
    filled = 0
    while filled < len(output):
        count = stream.readinto(view[filled:])
        if not count:
            msg = (
                f"{what}: the data ends after {filled} of {len(output)} declared bytes; the file is truncated"
            )
            raise CorruptFileError(msg)
        filled += count


def _check_nothing_left(stream: BinaryIO, what: str, size: int) -> None:
    if stream.read(1):
        msg = f"{what}: the data holds more than the {size} bytes the header declares"
        raise CorruptFileError(msg)


def _read_text(stream: BinaryIO, size: int, dtype: np.dtype, encoding: str, what: str) -> np.ndarray:
    """``size`` bytes of ``dtype`` values from ASCII numbers or hex digits (whitespace between)."""
    count = size // dtype.itemsize
    limit = count * _MAX_TEXT_CHARS_PER_VALUE if encoding == "ascii" else size * 3
    text = stream.read(limit + 1)
    if len(text) > limit:
        msg = f"{what}: the {encoding} data is longer than {count} values can be; the header declares {count}"
        raise CorruptFileError(msg)
    if encoding == "hex":
        try:
            values = np.frombuffer(bytes.fromhex(text.decode("ascii")), dtype=np.uint8)
        except (ValueError, UnicodeDecodeError) as error:
            msg = f"{what}: expected hexadecimal digits as NRRD hex data ({error})"
            raise CorruptFileError(msg) from error
    else:
        with warnings.catch_warnings():  # numpy warns, and stops, at the first unreadable number
            warnings.simplefilter("ignore", DeprecationWarning)
            parsed = np.fromstring(text, dtype=np.float64 if dtype.kind == "f" else np.int64, sep=" ")
        if parsed.size != count:
            msg = f"{what}: the ascii data holds {parsed.size} readable values; the header declares {count}"
            raise CorruptFileError(msg)
        values = parsed.astype(dtype).view(np.uint8)
    if values.size != size:
        msg = f"{what}: the {encoding} data holds {values.size} bytes; the header declares {size}"
        raise CorruptFileError(msg)
    return values


def _read_piece(
    stream: BinaryIO, header: dict[str, Any], size: int, dtype: np.dtype, encoding: str, what: str
) -> np.ndarray:
    """One data file's (or the attached data's) ``size`` bytes, after line and byte skips."""
    line_skip = int(header.get("line skip", header.get("lineskip", 0)))
    byte_skip = int(header.get("byte skip", header.get("byteskip", 0)))
    if line_skip < 0 or byte_skip < -1 or (byte_skip == -1 and encoding != "raw"):
        msg = (
            f"{what}: expected line skip >= 0 and byte skip >= 0 (-1 only with raw data); got"
            f" {line_skip} and {byte_skip} with {encoding} data"
        )
        raise CorruptFileError(msg)
    for _ in range(line_skip):
        if not stream.readline(MAX_HEADER_BYTES):
            msg = f"{what}: the data ends within the {line_skip} lines the header says to skip"
            raise CorruptFileError(msg)
    if encoding in ("gzip", "bzip2"):
        check_declared_size((byte_skip + size,), 1, what=what)
        return inflate_exactly(stream, byte_skip + size, encoding, what=what)[byte_skip:]
    if encoding in ("ascii", "hex"):
        return _read_text(stream, size, dtype, encoding, what)
    if byte_skip == -1:
        end = stream.seek(0, os.SEEK_END)
        if end - stream.tell() < size:  # tell() is where the data may start
            msg = f"{what}: the file is shorter than the {size} bytes of data the header declares"
            raise CorruptFileError(msg)
        stream.seek(end - size)
    else:
        stream.seek(byte_skip, os.SEEK_CUR)
    output = np.empty(size, dtype=np.uint8)
    _read_exactly(stream, output, what)
    _check_nothing_left(stream, what, size)
    return output


def _data_sources(header: dict[str, Any], listed: list[str], path: Path) -> list[Path] | None:
    """The data files of a detached header, each checked to lie in its folder; None if attached."""
    value = next((header[f] for f in _DATA_FILE_FIELDS if f in header), None)
    if value is None:
        return None
    sources = [_resolve_data_file(name, path) for name in _data_file_names(str(value), listed, path)]
    for source in sources:
        if not source.is_file():
            msg = f"{path}: the data file {source.name!r} named in the header is missing"
            raise NotFoundError(msg)
    return sources


def _read_voxels(stream: BinaryIO, header: dict[str, Any], listed: list[str], path: Path) -> np.ndarray:
    """The voxel array in NRRD axis order (fastest first: (I, J, K) or (C, I, J, K)), native byte order."""
    encoding = _ENCODINGS.get(str(header["encoding"]).lower())
    if encoding is None:
        known = ", ".join(_ENCODINGS)
        msg = f"{path}: NRRD encoding {header['encoding']!r} is not supported; expected one of {known}"
        raise UnsupportedFormatError(msg)
    sizes = [int(n) for n in np.atleast_1d(header["sizes"])]
    if int(header["dimension"]) != len(sizes):
        msg = f"{path}: the NRRD dimension is {header['dimension']} but sizes lists {len(sizes)} numbers"
        raise CorruptFileError(msg)
    dtype = _dtype(header, encoding, path)
    total = check_declared_size(sizes, dtype.itemsize, what=str(path))
    sources = _data_sources(header, listed, path)
    if sources is None:
        data = _read_piece(stream, header, total, dtype, encoding, str(path))
    else:
        if total % len(sources):
            msg = f"{path}: {total} bytes of voxels do not split evenly over {len(sources)} data files"
            raise CorruptFileError(msg)
        share = total // len(sources)
        pieces = []
        for source in sources:
            with open(source, "rb") as piece:
                pieces.append(_read_piece(piece, header, share, dtype, encoding, f"{path} ({source.name})"))
        data = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    array = data.view(dtype).reshape(sizes[::-1]).T
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def _space_directions(header: dict[str, Any], ndim: int, path: Path) -> np.ndarray | None:
    """``(ndim, 3)`` direction rows (NaN rows for ``none``), or None when the header has none."""
    directions = header.get("space directions")
    if directions is None:
        return None
    rows = np.asarray(directions, dtype=np.float64)
    if rows.ndim != 2 or rows.shape != (ndim, 3):
        msg = f"{path}: expected {ndim} space directions of 3 numbers (or none); got shape {rows.shape}"
        raise CorruptFileError(msg)
    return rows


def _spatial_axes(header: dict[str, Any], rows: np.ndarray | None, ndim: int, path: Path) -> list[int]:
    if rows is not None:
        return [i for i in range(ndim) if np.all(np.isfinite(rows[i]))]
    kinds = [str(k).lower() for k in header.get("kinds", ["domain"] * ndim)]
    if len(kinds) != ndim:
        msg = f"{path}: expected {ndim} kinds (one per axis); got {len(kinds)}"
        raise CorruptFileError(msg)
    return [i for i, kind in enumerate(kinds) if kind in ("domain", "space")]


def _affine_from_header(
    header: dict[str, Any], rows: np.ndarray | None, spatial_axes: list[int], path: Path
) -> np.ndarray:
    affine = np.eye(4)
    if rows is not None:
        origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64).ravel()
        if origin.shape != (3,) or not np.all(np.isfinite(origin)):
            msg = f"{path}: expected a space origin of 3 finite numbers; got {origin.tolist()[:6]}"
            raise CorruptFileError(msg)
        affine[:3, :3] = rows[spatial_axes].T
        affine[:3, 3] = origin
    elif "spacings" in header:
        spacings = np.asarray(header["spacings"], dtype=np.float64).ravel()
        if spacings.size <= max(spatial_axes):
            msg = f"{path}: expected one spacing per axis; got {spacings.size}"
            raise CorruptFileError(msg)
        affine[:3, :3] = np.diag(np.nan_to_num(spacings[spatial_axes], nan=1.0))
    space = str(header.get("space", "right-anterior-superior")).lower()
    if space not in _SPACE_TO_RAS:
        msg = f"{path}: NRRD space {space!r} is not supported; expected one of {', '.join(_SPACE_TO_RAS)}"
        raise UnsupportedFormatError(msg)
    flip_x, flip_y = _SPACE_TO_RAS[space]
    return np.diag([flip_x, flip_y, 1.0, 1.0]) @ affine


def list_nrrd_files(path: Path) -> list[Path]:
    """The files a NRRD image consists of: ``path``, then the data files its header names, in order.

    Raises:
        CorruptFileError: a malformed header.
        InvalidInputError: a data file outside the header's folder.
        NotFoundError: a data file the header names is missing.
    """
    with open(path, "rb") as stream:
        lines, listed = _header_lines(stream, path)
        header = _parse_header(lines, path)
    return [path, *(_data_sources(header, listed, path) or [])]


def read_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a NRRD file: ``(array (I, J, K) or (C, I, J, K), RAS affine (4, 4), raw header)``.

    Raises:
        CorruptFileError: a malformed header, or data shorter or longer than declared.
        TooLargeError: the declared size exceeds `segloop.io.limits.max_image_bytes`.
        InvalidInputError: a data file outside the header's folder.
        NotFoundError: a data file the header names is missing.
        UnsupportedFormatError: an encoding, type, space or axis layout segloop does not read.
    """
    with open(path, "rb") as stream:
        lines, listed = _header_lines(stream, path)
        header = _parse_header(lines, path)
        data = _read_voxels(stream, header, listed, path)
    rows = _space_directions(header, data.ndim, path)
    spatial_axes = _spatial_axes(header, rows, data.ndim, path)
    if data.ndim == 2 and len(spatial_axes) == 2:
        data, spatial_axes = data[:, :, np.newaxis], [0, 1]
        affine = _affine_from_header(header, rows, spatial_axes, path)
        normal = np.cross(affine[:3, 0], affine[:3, 1])
        affine[:3, 2] = normal / (np.linalg.norm(normal) or 1.0)
        return data, affine, header
    other_axes = [i for i in range(data.ndim) if i not in spatial_axes]
    if len(spatial_axes) != 3 or len(other_axes) > 1:
        msg = f"{path}: expected 3 spatial axes and at most one list axis; got sizes {data.shape}"
        raise UnsupportedFormatError(msg)
    affine = _affine_from_header(header, rows, spatial_axes, path)
    if other_axes:
        data = np.moveaxis(data, other_axes[0], 0)
    return data, affine, header


def write_nrrd(
    array: np.ndarray, affine: np.ndarray, path: Path, extra: dict[str, str] | None = None
) -> None:
    """Write ``array`` (I, J, K) or (C, I, J, K) with a RAS ``affine`` as LPS NRRD.

    ``extra`` holds ``key:=value`` fields (strings). A ``.nhdr`` path gets a detached header with a
    ``.raw.gz`` data file beside it; the data file is in place before the header appears.
    """
    lps = flip_ras_lps(affine)
    directions = lps[:3, :3].T
    kinds = ["domain"] * 3
    if array.ndim == 4:
        directions = np.vstack([np.full((1, 3), np.nan), directions])
        kinds = ["list", *kinds]
    header: dict[str, Any] = {
        "space": "left-posterior-superior",
        "space directions": directions,
        "space origin": lps[:3, 3],
        "kinds": kinds,
        "encoding": "gzip",
        **(extra or {}),
    }
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if path.suffix.lower() != ".nhdr":
        nrrd.write(str(path), np.asanyarray(array), header, compression_level=_GZIP_LEVEL)
        return
    # Detached header: pynrrd names the data file after the header, so write both under the final
    # name in a scratch folder, move the data file into place, then the header to ``path``.
    final_name = path.name.split("-", 2)[2] if path.name.startswith(".tmp-") else path.name
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        header_file = Path(scratch) / final_name
        nrrd.write(str(header_file), np.asanyarray(array), header, compression_level=_GZIP_LEVEL)
        for data_file in Path(scratch).iterdir():
            if data_file != header_file:
                os.replace(data_file, path.parent / data_file.name)
        os.replace(header_file, path)


def read(path: Path) -> Volume:
    """Read a .nrrd or .nhdr file as a `Volume` (RAS affine)."""
    data, affine, header = read_nrrd(path)
    return make_volume(data, affine, {"nrrd_space": header.get("space")}, what=str(path))


def write(volume: Volume, path: Path) -> None:
    """Write ``volume`` as NRRD in LPS space (gzip level 1)."""
    write_nrrd(volume.array, volume.affine, path)
