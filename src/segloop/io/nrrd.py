"""NRRD (.nrrd, .nhdr + data file) through pynrrd.

NRRD stores ``space directions`` (one vector per axis) and ``space origin`` in a named world space,
usually ``left-posterior-superior`` (Slicer, ITK). They are converted to the RAS+ affine here and
only here. A non-spatial axis (``list``/``vector`` kind, space direction ``none``) becomes the
leading channel axis. segloop writes LPS, as Slicer does, and gzip at level 1.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import nrrd
import numpy as np

from segloop.core.geometry import flip_ras_lps
from segloop.core.volume import Volume
from segloop.errors import CorruptFileError, UnsupportedFormatError

__all__ = ["read", "read_nrrd", "write", "write_nrrd"]

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


def _affine_from_header(header: dict[str, Any], spatial_axes: list[int], path: Path) -> np.ndarray:
    affine = np.eye(4)
    directions = header.get("space directions")
    if directions is not None:
        rows = np.asarray(directions, dtype=np.float64)
        affine[:3, :3] = rows[spatial_axes][:, :3].T
        affine[:3, 3] = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)[:3]
    elif "spacings" in header:
        spacings = np.asarray(header["spacings"], dtype=np.float64)[spatial_axes]
        affine[:3, :3] = np.diag(np.nan_to_num(spacings, nan=1.0))
    space = str(header.get("space", "right-anterior-superior")).lower()
    if space not in _SPACE_TO_RAS:
        msg = f"{path}: NRRD space {space!r} is not supported; expected one of {', '.join(_SPACE_TO_RAS)}"
        raise UnsupportedFormatError(msg)
    flip_x, flip_y = _SPACE_TO_RAS[space]
    return np.diag([flip_x, flip_y, 1.0, 1.0]) @ affine


def read_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a NRRD file: ``(array (I, J, K) or (C, I, J, K), RAS affine (4, 4), raw header)``."""
    try:
        data, header = nrrd.read(str(path), index_order="F")
    except nrrd.NRRDError as error:
        msg = f"{path}: not a readable NRRD file ({error})"
        raise CorruptFileError(msg) from error
    directions = header.get("space directions")
    if directions is not None:
        rows = np.asarray(directions, dtype=np.float64)
        spatial_axes = [i for i in range(data.ndim) if np.all(np.isfinite(rows[i]))]
    else:
        kinds = [str(k).lower() for k in header.get("kinds", ["domain"] * data.ndim)]
        spatial_axes = [i for i, kind in enumerate(kinds) if kind in ("domain", "space")]
    if data.ndim == 2 and len(spatial_axes) == 2:
        data, spatial_axes = data[:, :, np.newaxis], [0, 1]
        affine = _affine_from_header(header, spatial_axes, path)
        affine[:3, 2] = np.cross(affine[:3, 0], affine[:3, 1])
        affine[:3, 2] /= np.linalg.norm(affine[:3, 2])
        return data, affine, header
    other_axes = [i for i in range(data.ndim) if i not in spatial_axes]
    if len(spatial_axes) != 3 or len(other_axes) > 1:
        msg = f"{path}: expected 3 spatial axes and at most one list axis; got sizes {data.shape}"
        raise UnsupportedFormatError(msg)
    affine = _affine_from_header(header, spatial_axes, path)
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
    return Volume(data, affine, {"nrrd_space": header.get("space")})


def write(volume: Volume, path: Path) -> None:
    """Write ``volume`` as NRRD in LPS space (gzip level 1)."""
    write_nrrd(volume.array, volume.affine, path)
