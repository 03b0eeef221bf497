"""2D image folders: PNG / TIFF images with label images of the same names (seed 004).

Images are added with `segloop.loop.cases.import_cases` (one case per file, the file name without
its suffix as case id); label images are paired by name from a labels folder. Their values follow
the file's convention, translated by a value map (`segloop.exchange.values`): a binary mask
``255=nucleus``, a sparse paint ``0=ignore,1=background,2=nucleus``. Labels go back out as label
images named like the originals, in the originals' format (JPEG, being lossy, becomes PNG).
"""

from __future__ import annotations

import numpy as np

from segloop.core.volume import Volume
from segloop.errors import UnsupportedFormatError

__all__ = ["LABEL_SUFFIXES", "label_file_name", "label_image"]

#: Suffixes a label image may be written in (lossless formats that hold integer values).
LABEL_SUFFIXES = (".png", ".tif", ".tiff", ".nii.gz", ".nii", ".nrrd")
_LOSSY = (".jpg", ".jpeg")


def label_file_name(image_name: str) -> str:
    """The label file name for an image file name: the same, with JPEG turned into PNG.

    Examples:
        >>> label_file_name("dna-0.png"), label_file_name("cells.JPG"), label_file_name("a.tif")
        ('dna-0.png', 'cells.png', 'a.tif')
    """
    lower = image_name.lower()
    for suffix in _LOSSY:
        if lower.endswith(suffix):
            return image_name[: -len(suffix)] + ".png"
    if not lower.endswith(LABEL_SUFFIXES):
        msg = f"{image_name}: label images are written as {', '.join(LABEL_SUFFIXES)}; got another format"
        raise UnsupportedFormatError(msg)
    return image_name


def label_image(labels: np.ndarray, affine: np.ndarray, *, max_value: int) -> Volume:
    """A label array as a volume in the smallest dtype a PNG / TIFF holds (uint8 or uint16).

    Args:
        labels: ``(I, J, K)`` integer labels (values 0..``max_value``).
        affine: the case's ``(4, 4)`` affine.
        max_value: the largest value the file may hold.
    """
    dtype = np.uint8 if max_value <= 255 else np.uint16
    return Volume(labels.astype(dtype, copy=False), affine)
