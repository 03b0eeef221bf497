"""Read and write `Volume`s in the formats of the field (one module per format, a static registry).

`read_volume` and `write_volume` are the only entry points a caller needs; the format is chosen by
suffix (or is given by name), and writes are atomic.
"""

from __future__ import annotations

import os
from pathlib import Path

from segloop.core.volume import Volume
from segloop.errors import CorruptFileError, InvalidInputError, NotFoundError, SegloopError, TooLargeError
from segloop.io.atomic import atomic_directory, atomic_file
from segloop.io.limits import MAX_IMAGE_BYTES_VARIABLE
from segloop.io.registry import FORMATS, Format, choose_format, get_format, load_format_module

__all__ = ["FORMATS", "Format", "read_volume", "supported_suffixes", "write_volume"]


def _resolve_format(path: Path, format_name: str | None, *, is_directory: bool) -> Format:
    return get_format(format_name) if format_name else choose_format(path, is_directory=is_directory)


def read_volume(path: str | os.PathLike, *, format_name: str | None = None) -> Volume:
    """Read an image or label file (or DICOM series folder) as a `Volume`.

    Args:
        path: file path, or a folder holding one DICOM series.
        format_name: a name from `FORMATS` to skip suffix detection.

    Raises:
        NotFoundError: ``path`` does not exist.
        UnsupportedFormatError: no format handles ``path``.
        CorruptFileError: the file exists but cannot be decoded (truncated, a broken header).
        TooLargeError: its declared size exceeds `segloop.io.limits.max_image_bytes` (nothing
            was allocated), or memory ran out.
        InvalidInputError: a detached data file outside the header's folder, an unreadable file.
    """
    path = Path(path)
    if not path.exists():
        msg = f"{path}: no such file or folder"
        raise NotFoundError(msg)
    if not (path.is_file() or path.is_dir()):  # a FIFO or device would block or never end
        msg = f"{path}: not a regular file or folder (a pipe, device or socket); expected an image file"
        raise InvalidInputError(msg)
    fmt = _resolve_format(path, format_name, is_directory=path.is_dir())
    module = load_format_module(fmt)
    try:
        volume = module.read(path)
    except SegloopError:
        raise
    except PermissionError as error:
        msg = f"{path}: permission denied; expected a file segloop may read"
        raise InvalidInputError(msg) from error
    except MemoryError as error:
        msg = f"{path}: not enough memory to read it (lower {MAX_IMAGE_BYTES_VARIABLE} to refuse it early)"
        raise TooLargeError(msg) from error
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, ArithmeticError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        msg = f"{path}: cannot read as {fmt.name} ({detail}); the file may be truncated or corrupt"
        raise CorruptFileError(msg) from error
    volume.meta.setdefault("format", fmt.name)
    return volume


def write_volume(
    volume: Volume,
    path: str | os.PathLike,
    *,
    format_name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``volume`` atomically (temporary name, fsync, rename).

    Args:
        volume: what to write.
        path: target file (or folder, for DICOM).
        format_name: a name from `FORMATS` to skip suffix detection.
        overwrite: replace an existing target instead of raising `ConflictError`.

    Returns:
        The path written.
    """
    path = Path(path)
    is_directory = format_name == "dicom" or path.suffix == ""  # a folder: a DICOM series
    fmt = _resolve_format(path, format_name, is_directory=is_directory)
    module = load_format_module(fmt)
    writer = atomic_directory if fmt.is_directory else atomic_file
    with writer(path, overwrite=overwrite) as temporary:
        module.write(volume, temporary)
    return path


def supported_suffixes() -> tuple[str, ...]:
    """Every file suffix some format reads, longest first."""
    return tuple(sorted({s for f in FORMATS for s in f.suffixes}, key=len, reverse=True))
