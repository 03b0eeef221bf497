"""Intensity thresholds: a range, Otsu's threshold, and the presets users type in Slicer."""

from __future__ import annotations

import numpy as np

from segloop.errors import InvalidInputError

__all__ = ["THRESHOLD_PRESETS_HU", "threshold_otsu", "threshold_range"]

#: Ranges in Hounsfield units (inclusive). ``lung`` is the range of seed 001 (Slicer, -1024..-500).
THRESHOLD_PRESETS_HU: dict[str, tuple[float, float]] = {
    "lung": (-1024.0, -500.0),
    "air": (-1024.0, -900.0),
    "fat": (-190.0, -30.0),
    "soft-tissue": (-100.0, 300.0),
    "bone": (300.0, 3071.0),
}


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
