"""The static table of file formats: name, suffixes and the module that reads and writes them.

Choosing a format never imports the others; each format module has ``read(path) -> Volume`` and
``write(volume, path) -> None`` (``path`` is a temporary name chosen by `write_volume`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from segloop.errors import UnsupportedFormatError

__all__ = ["FORMATS", "Format", "choose_format", "get_format", "load_format_module"]


@dataclass(frozen=True)
class Format:
    """One supported file format."""

    name: str
    suffixes: tuple[str, ...]
    module: str
    description: str
    is_directory: bool = False


FORMATS: tuple[Format, ...] = (
    Format(
        "slicer-seg",
        (".seg.nrrd",),
        "segloop.io.slicer_seg",
        "3D Slicer segmentation (segment names, colours, label values; layered)",
    ),
    Format("nifti", (".nii.gz", ".nii"), "segloop.io.nifti", "NIfTI-1/2"),
    Format("nrrd", (".nrrd", ".nhdr"), "segloop.io.nrrd", "NRRD, attached or detached header"),
    Format("dicom", (), "segloop.io.dicom", "DICOM series folder", is_directory=True),
    Format("tiff", (".tif", ".tiff"), "segloop.io.tiff", "TIFF image or stack"),
    Format("png", (".png",), "segloop.io.raster", "PNG 2D image"),
    Format("jpeg", (".jpg", ".jpeg"), "segloop.io.raster", "JPEG 2D image (lossy)"),
    Format(
        "mrc",
        (".mrc", ".rec", ".map", ".st"),
        "segloop.io.mrc",
        "MRC / REC / MAP (cryo-EM, cryo-ET; voxel size in Å)",
    ),
)


def get_format(name: str) -> Format:
    """The format called ``name``; raises `UnsupportedFormatError` listing the known names."""
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    msg = f"unknown format {name!r}: expected one of {', '.join(f.name for f in FORMATS)}"
    raise UnsupportedFormatError(msg)


def choose_format(path: str | Path, *, is_directory: bool = False) -> Format:
    """The format of ``path`` by its suffix (longest match first); folders are DICOM series.

    Examples:
        >>> choose_format("case.seg.nrrd").name, choose_format("ct.nii.gz").name
        ('slicer-seg', 'nifti')
    """
    if is_directory:
        return get_format("dicom")
    name = Path(path).name.lower()
    matches = [(len(s), fmt) for fmt in FORMATS for s in fmt.suffixes if name.endswith(s)]
    if not matches:
        known = " ".join(s for fmt in FORMATS for s in fmt.suffixes)
        msg = f"{path}: unsupported file suffix; expected one of {known} or a DICOM folder"
        raise UnsupportedFormatError(msg)
    return max(matches, key=lambda match: match[0])[1]


def load_format_module(fmt: Format) -> ModuleType:
    """Import the module that reads and writes ``fmt``."""
    return importlib.import_module(fmt.module)
