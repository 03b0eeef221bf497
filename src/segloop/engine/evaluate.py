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

from segloop.core.geometry import bounding_box
from segloop.errors import InvalidInputError
from segloop.metrics import check_label_maps, ignore_keep_mask

__all__ = ["evaluate_labels"]


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
    check_label_maps(labels, reference, n_classes)
    if len(spacing) != labels.ndim:
        msg = f"spacing needs one value per array axis ({labels.ndim}); got {tuple(spacing)}"
        raise InvalidInputError(msg)
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        msg = f"tolerance_mm must be a finite number >= 0; got {tolerance_mm}"
        raise InvalidInputError(msg)
    keep = ignore_keep_mask(reference, n_classes, ignore_mask)
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
        box = bounding_box(predicted | truth, margin=1)

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
