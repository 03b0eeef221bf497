"""Overlap and size measures of masks and label maps (pure numpy)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from segloop.errors import GeometryMismatchError

__all__ = ["dice", "dice_per_class", "volume_ml"]


def dice(mask: np.ndarray, reference: np.ndarray) -> float:
    """Dice coefficient ``2|A∩B| / (|A| + |B|)`` of two boolean masks (1.0 when both are empty).

    Examples:
        >>> dice(np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool))
        0.6666666666666666
    """
    if mask.shape != reference.shape:
        msg = f"mask shape {mask.shape} does not match reference shape {reference.shape}"
        raise GeometryMismatchError(msg)
    mask, reference = mask.astype(bool, copy=False), reference.astype(bool, copy=False)
    total = int(mask.sum()) + int(reference.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(mask, reference).sum()) / total


def dice_per_class(
    labels: np.ndarray, reference: np.ndarray, classes: Iterable[int], *, ignore: np.ndarray | None = None
) -> dict[int, float]:
    """Dice of each class value between two label maps, leaving out ``ignore`` voxels.

    Args:
        labels: ``(I, J, K)`` integer labels to score.
        reference: ``(I, J, K)`` reference labels.
        classes: the class values to score.
        ignore: optional ``(I, J, K)`` bool mask of voxels left out.

    Examples:
        >>> dice_per_class(np.array([1, 2, 2]), np.array([1, 2, 0]), [1, 2])
        {1: 1.0, 2: 0.6666666666666666}
    """
    keep = slice(None) if ignore is None else ~ignore
    labels, reference = np.asarray(labels)[keep], np.asarray(reference)[keep]
    return {value: dice(labels == value, reference == value) for value in classes}


def volume_ml(mask: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Volume of a mask in millilitres (1 ml = 1000 mm³).

    Examples:
        >>> volume_ml(np.ones((10, 10, 10), bool), (1.0, 1.0, 1.0))
        1.0
    """
    return float(np.count_nonzero(mask)) * float(np.prod(spacing_mm)) / 1000.0
