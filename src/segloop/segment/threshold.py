"""Intensity thresholds: a range, Otsu's threshold, and the presets users type in Slicer."""

from __future__ import annotations

import numpy as np

from segloop.errors import InvalidInputError
from segloop.segment.presets import THRESHOLD_PRESETS_HU

__all__ = ["THRESHOLD_PRESETS_HU", "threshold_otsu", "threshold_range"]


def threshold_range(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Voxels with ``low <= value <= high``.

    Args:
        image: ``(I, J, K)`` intensities.
        low: lowest value kept (same unit as ``image``).
        high: highest value kept.

    Returns:
        ``(I, J, K)`` bool mask.

    Examples:
        >>> threshold_range(np.array([-1000, -700, -400, 40]), -1024, -500).tolist()
        [True, True, False, False]
    """
    if not low <= high:
        msg = f"threshold range must have low <= high; got {low}..{high}"
        raise InvalidInputError(msg)
    return (image >= low) & (image <= high)


def threshold_otsu(image: np.ndarray, *, mask: np.ndarray | None = None, bins: int = 256) -> float:
    """Otsu's threshold of the intensities (within ``mask`` if given).

    Args:
        image: intensities of any shape.
        mask: optional bool array of the same shape: only these voxels count.
        bins: histogram bins.

    Returns:
        The threshold; voxels ``> threshold`` are the bright class.

    Examples:
        >>> threshold_otsu(np.array([0, 1, 2, 100, 101, 102])) < 100
        True
    """
    from skimage.filters import threshold_otsu as otsu

    values = image[mask] if mask is not None else image.ravel()
    if values.size == 0 or np.all(values == values.flat[0]):
        msg = "Otsu's threshold needs at least two different intensities; got a constant or empty image"
        raise InvalidInputError(msg)
    return float(otsu(values, nbins=bins))
