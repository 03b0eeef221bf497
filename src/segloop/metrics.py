"""Overlap, size and uncertainty measures of masks, label maps and probabilities (pure numpy).

One rule for an empty class everywhere (validation, evaluation, reports, the simulated
annotator): a class absent from both the prediction and the reference has **no** Dice — NaN,
"nothing to score" — and is skipped in means (``numpy.nanmean``). A class present in only one of
them has Dice 0.
"""

from __future__ import annotations

import math

import numpy as np

from segloop.errors import GeometryMismatchError, InvalidInputError, LabelValueError

__all__ = ["binary_entropy", "check_label_maps", "dice", "dice_per_class", "ignore_keep_mask"]


def dice(mask: np.ndarray, reference: np.ndarray) -> float:
    """Dice coefficient ``2|A∩B| / (|A| + |B|)`` of two boolean masks (NaN when both are empty).

    Examples:
        >>> dice(np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool))
        0.6666666666666666
        >>> math.isnan(dice(np.zeros(3, bool), np.zeros(3, bool)))
        True
    """
    if mask.shape != reference.shape:
        msg = f"mask shape {mask.shape} does not match reference shape {reference.shape}"
        raise GeometryMismatchError(msg)
    mask, reference = mask.astype(bool, copy=False), reference.astype(bool, copy=False)
    total = int(mask.sum()) + int(reference.sum())
    if total == 0:
        return math.nan
    return 2.0 * int(np.logical_and(mask, reference).sum()) / total


def dice_per_class(
    labels: np.ndarray, reference: np.ndarray, n_classes: int, *, ignore_mask: np.ndarray | None = None
) -> np.ndarray:
    """Dice of every foreground class from one confusion matrix (fast enough for every epoch).

    Args:
        labels: ``(I, J, K)`` predicted integer labels in ``0..n_classes-1``.
        reference: ``(I, J, K)`` reference labels; the value ``n_classes`` marks ignored voxels.
        n_classes: classes with background (a schema of N classes: N + 1).
        ignore_mask: optional extra ``(I, J, K)`` bool mask of voxels to leave out.

    Returns:
        ``(n_classes - 1,)`` float64 Dice of classes 1..n_classes-1; NaN where the class is empty in
        both maps (module rule).

    Raises:
        GeometryMismatchError: arrays of different shapes.
        InvalidInputError: ``n_classes`` < 2.
        LabelValueError: ``labels`` holds a value above the ignore value.

    Examples:
        >>> dice_per_class(np.array([1, 2, 2, 0]), np.array([1, 2, 3, 2]), 3).tolist()
        [1.0, 0.6666666666666666]
    """
    labels, reference = np.asarray(labels), np.asarray(reference)
    check_label_maps(labels, reference, n_classes)
    keep = ignore_keep_mask(reference, n_classes, ignore_mask)
    predicted = labels.reshape(-1) if keep is None else labels[keep]
    truth = reference.reshape(-1) if keep is None else reference[keep]
    predicted = np.minimum(predicted, n_classes).astype(np.int64)  # stray ignore values: not a class
    counts = np.bincount(truth.astype(np.int64) * (n_classes + 1) + predicted, minlength=(n_classes + 1) ** 2)
    confusion = counts.reshape(n_classes + 1, n_classes + 1)[:n_classes]
    true_positive = np.diag(confusion[:, :n_classes]).astype(np.float64)
    # reference size of a class (its row) + predicted size (its column)
    denominator = confusion.sum(1).astype(np.float64) + confusion[:, :n_classes].sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(denominator > 0, 2.0 * true_positive / denominator, np.nan)
    return scores[1:]


def check_label_maps(labels: np.ndarray, reference: np.ndarray, n_classes: int) -> None:
    """Raise unless ``labels`` and ``reference`` share a shape and ``labels`` fits ``n_classes``."""
    if labels.shape != reference.shape:
        msg = f"prediction shape {labels.shape} does not match reference shape {reference.shape}"
        raise GeometryMismatchError(msg)
    if n_classes < 2:
        msg = f"n_classes counts background too and must be >= 2; got {n_classes}"
        raise InvalidInputError(msg)
    if labels.size and int(labels.max()) >= n_classes + 1:
        msg = f"prediction holds value {int(labels.max())}; expected 0..{n_classes - 1}"
        raise LabelValueError(msg)


def ignore_keep_mask(
    reference: np.ndarray, n_classes: int, ignore_mask: np.ndarray | None
) -> np.ndarray | None:
    """Voxels to score: not ``n_classes`` (ignore) in ``reference`` and not in ``ignore_mask``.

    Returns:
        ``(I, J, K)`` bool, or None when every voxel counts.
    """
    keep = reference != n_classes if np.any(reference == n_classes) else None
    if ignore_mask is not None:
        if ignore_mask.shape != reference.shape:
            msg = f"ignore_mask shape {ignore_mask.shape} does not match reference shape {reference.shape}"
            raise GeometryMismatchError(msg)
        keep = ~ignore_mask if keep is None else keep & ~ignore_mask
    return keep


def binary_entropy(probability: np.ndarray) -> np.ndarray:
    """Entropy of a class's probability against the rest, in bits (in [0, 1]).

    Args:
        probability: probabilities of one class, any shape and float dtype (or ``(C, ...)`` for
            every class at once: the function is element-wise).

    Returns:
        float32 of the same shape: 1 at p = 0.5, 0 at p = 0 or 1.

    Examples:
        >>> binary_entropy(np.array([0.0, 0.5, 1.0])).tolist()
        [0.0, 1.0, 0.0]
    """
    p = np.clip(np.asarray(probability, dtype=np.float32), 0.0, 1.0)
    q = 1.0 - p
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -(np.where(p > 0, p * np.log2(p), 0.0) + np.where(q > 0, q * np.log2(q), 0.0))
    return np.clip(entropy, 0.0, 1.0).astype(np.float32) + np.float32(0.0)
