"""Evaluation of label maps: Dice, HD95 and surface Dice per class with MONAI's metrics.

Conventions (one per edge case, the same for every metric):

- Classes are scored one-hot (class ``c`` vs everything else), so multi-class maps are correct.
- Ignored voxels (reference == ``n_classes``, the schema's ignore value, or an explicit
  ``ignore_mask``) are removed from both maps (set to "not this class") before any metric; for the
  surface metrics this cuts both surfaces at the same place.
- A class empty in both prediction and reference gets NaN for every metric ("nothing to score";
  use ``numpy.nanmean`` to average). A class present in only one of them gets Dice 0, surface
  Dice 0 and HD95 ``inf``.
- Distances are in mm (``spacing`` per array axis).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from segloop.errors import GeometryMismatchError, SegloopError

__all__ = ["dice_per_class", "evaluate_labels"]


def _keep_mask(reference: np.ndarray, n_classes: int, ignore_mask: np.ndarray | None) -> np.ndarray | None:
    keep = reference != n_classes if np.any(reference == n_classes) else None
    if ignore_mask is not None:
        if ignore_mask.shape != reference.shape:
            msg = f"ignore_mask shape {ignore_mask.shape} does not match reference shape {reference.shape}"
            raise GeometryMismatchError(msg)
        keep = ~ignore_mask if keep is None else keep & ~ignore_mask
    return keep


def _check(labels: np.ndarray, reference: np.ndarray, n_classes: int) -> None:
    if labels.shape != reference.shape:
        msg = f"prediction shape {labels.shape} does not match reference shape {reference.shape}"
        raise GeometryMismatchError(msg)
    if n_classes < 2:
        msg = f"n_classes counts background too and must be >= 2; got {n_classes}"
        raise SegloopError(msg)
    if labels.size and int(labels.max()) >= n_classes + 1:
        msg = f"prediction holds value {int(labels.max())}; expected 0..{n_classes - 1}"
        raise SegloopError(msg)


def dice_per_class(
    labels: np.ndarray, reference: np.ndarray, n_classes: int, *, ignore_mask: np.ndarray | None = None
) -> np.ndarray:
    """Dice of every foreground class from one confusion matrix (fast; used for validation).

    Args:
        labels: ``(I, J, K)`` predicted integer labels in ``0..n_classes-1``.
        reference: ``(I, J, K)`` reference labels; the value ``n_classes`` marks ignored voxels.
        n_classes: classes with background (a schema of N classes: N + 1).
        ignore_mask: optional extra ``(I, J, K)`` bool mask of voxels to leave out.

    Returns:
        ``(n_classes - 1,)`` float64 Dice of classes 1..n_classes-1; NaN where the class is empty in
        both maps.

    Examples:
        >>> dice_per_class(np.array([1, 2, 2, 0]), np.array([1, 2, 3, 2]), 3).tolist()
        [1.0, 0.6666666666666666]
    """
    labels, reference = np.asarray(labels), np.asarray(reference)
    _check(labels, reference, n_classes)
    keep = _keep_mask(reference, n_classes, ignore_mask)
    predicted = labels.reshape(-1) if keep is None else labels[keep]
    truth = reference.reshape(-1) if keep is None else reference[keep]
    predicted = np.minimum(predicted, n_classes).astype(np.int64)  # stray ignore values: not a class
    counts = np.bincount(truth.astype(np.int64) * (n_classes + 1) + predicted, minlength=(n_classes + 1) ** 2)
    confusion = counts.reshape(n_classes + 1, n_classes + 1)[:n_classes]
    true_positive = np.diag(confusion[:, :n_classes]).astype(np.float64)
    # reference size of a class (its row) + predicted size (its column)
    denominator = confusion.sum(1).astype(np.float64) + confusion[:, :n_classes].sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(denominator > 0, 2.0 * true_positive / denominator, np.nan)
    return dice[1:]


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Slices of the bounding box of ``mask`` grown by one voxel (clipped to the array)."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append(slice(max(int(hits[0]) - 1, 0), min(int(hits[-1]) + 2, mask.shape[axis])))
    return tuple(box)


def evaluate_labels(
    labels: np.ndarray,
    reference: np.ndarray,
    *,
    n_classes: int,
    spacing: Sequence[float],
    ignore_mask: np.ndarray | None = None,
    tolerance_mm: float = 2.0,
    classes: Sequence[int] | None = None,
) -> dict[int, dict[str, float]]:
    """Dice, HD95 (mm) and surface Dice at ``tolerance_mm`` of each class (edge cases: module doc).

    Uses ``monai.metrics.compute_dice``, ``compute_hausdorff_distance(percentile=95)`` and
    ``compute_surface_dice``, each on the bounding box of the class in either map (grown by one
    voxel: the distances are unchanged, the work is much smaller).

    Args:
        labels: ``(I, J, K)`` predicted labels in ``0..n_classes-1``.
        reference: ``(I, J, K)`` reference labels; ``n_classes`` marks ignored voxels.
        n_classes: classes with background (schema N + 1).
        spacing: voxel size in mm along I, J, K.
        ignore_mask: optional extra ``(I, J, K)`` bool mask of voxels to leave out.
        tolerance_mm: surface Dice tolerance in mm.
        classes: class values to score (default 1..n_classes-1).

    Returns:
        ``{class: {"dice": ..., "hd95_mm": ..., "surface_dice": ...}}`` (floats; NaN / inf as above).

    Examples:
        >>> ref = np.zeros((8, 8, 8), np.uint8); ref[2:6, 2:6, 2:6] = 1
        >>> scores = evaluate_labels(ref, ref, n_classes=3, spacing=(1.0, 1.0, 1.0))
        >>> scores[1]["dice"], scores[1]["hd95_mm"], scores[1]["surface_dice"], math.isnan(scores[2]["dice"])
        (1.0, 0.0, 1.0, True)
    """
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    labels, reference = np.asarray(labels), np.asarray(reference)
    _check(labels, reference, n_classes)
    if len(spacing) != labels.ndim:
        msg = f"spacing needs one value per array axis ({labels.ndim}); got {tuple(spacing)}"
        raise SegloopError(msg)
    keep = _keep_mask(reference, n_classes, ignore_mask)
    spacing_list = [float(s) for s in spacing]
    results: dict[int, dict[str, float]] = {}
    for value in classes if classes is not None else range(1, n_classes):
        predicted = labels == value
        truth = reference == value
        if keep is not None:
            predicted &= keep
            truth &= keep
        has_predicted, has_truth = bool(predicted.any()), bool(truth.any())
        if not has_predicted and not has_truth:
            results[value] = {"dice": math.nan, "hd95_mm": math.nan, "surface_dice": math.nan}
            continue
        if not (has_predicted and has_truth):
            results[value] = {"dice": 0.0, "hd95_mm": math.inf, "surface_dice": 0.0}
            continue
        box = _bounding_box(predicted | truth)

        def one_hot(mask: np.ndarray, box: tuple[slice, ...] = box) -> torch.Tensor:
            crop = torch.from_numpy(np.ascontiguousarray(mask[box]))
            return torch.stack([~crop, crop])[None].float()

        y_pred, y = one_hot(predicted), one_hot(truth)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI's own deprecation notes from inside its helpers
            dice = float(compute_dice(y_pred, y, include_background=False, ignore_empty=False)[0, 0])
            hd95 = float(compute_hausdorff_distance(y_pred, y, percentile=95, spacing=spacing_list)[0, 0])
            surface = float(
                compute_surface_dice(y_pred, y, [float(tolerance_mm)], spacing=spacing_list)[0, 0]
            )
        results[value] = {"dice": dice, "hd95_mm": hd95, "surface_dice": surface}
    return results
