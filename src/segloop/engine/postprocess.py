"""Post-processing of predicted labels: keep each class's largest connected component.

nnU-Net's post-processing, decided the same way: a class keeps only its largest 3D component (26-
connectivity; the rest of its voxels become background) when that does not lower its validation
Dice. One more guard than nnU-Net's: the class's reference must be one piece in every validation
case holding it, so a class of several organs (both kidneys as one class, metastases) is never cut
down to one of them because a validation prediction happened to be one piece already.

Components come from `segloop.segment.components` (connected-components-3d on each class's
bounding box: a few milliseconds per class on a 128³ grid).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from segloop.core.geometry import bounding_box
from segloop.metrics import dice_per_class
from segloop.segment.components import keep_largest_component as largest_of_mask
from segloop.segment.components import label_components

__all__ = [
    "choose_keep_largest",
    "count_components",
    "keep_largest_component",
    "largest_component_scores",
]


def count_components(mask: np.ndarray) -> int:
    """The number of 26-connected components of an ``(I, J, K)`` bool mask (0 when empty).

    Examples:
        >>> m = np.zeros((6, 6, 6), bool); m[0, 0, 0] = m[1, 1, 1] = m[4, 4, 4] = True
        >>> count_components(m)
        2
    """
    box = bounding_box(mask)
    return 0 if box is None else label_components(np.ascontiguousarray(mask[box], dtype=bool))[1]


def keep_largest_component(labels: np.ndarray, values: Iterable[int]) -> np.ndarray:
    """``labels`` with each class of ``values`` cut down to its largest 26-connected component.

    Args:
        labels: ``(I, J, K)`` integer labels.
        values: class values to post-process; the removed voxels become background (0).

    Returns:
        A new array of ``labels``'s shape and dtype (``labels`` itself is left as it is).

    Examples:
        >>> a = np.zeros((8, 8, 8), np.uint8); a[0:3, 0:3, 0:3] = 1; a[6, 6, 6] = 1; a[7, 0, 0] = 2
        >>> b = keep_largest_component(a, [1])
        >>> int((b == 1).sum()), int(b[6, 6, 6]), int(b[7, 0, 0])
        (27, 0, 2)
    """
    result = np.array(labels, copy=True)
    for value in values:
        mask = result == value
        result[mask & ~largest_of_mask(mask)] = 0
    return result


def choose_keep_largest(plain: np.ndarray, kept: np.ndarray, one_piece: np.ndarray) -> tuple[int, ...]:
    """The classes whose prediction should keep its largest component, from validation scores.

    Args:
        plain: ``(cases, classes)`` Dice of the predictions as they are (NaN: class absent from both).
        kept: ``(cases, classes)`` Dice after `keep_largest_component` on every class.
        one_piece: ``(cases, classes)`` bool: the reference of that class is at most one component.

    Returns:
        Class values (column index + 1) where some validation case scores the class, every
        reference is one piece, and the mean Dice kept is not below the mean Dice as predicted.

    Examples:
        >>> plain = np.array([[0.8, 0.5, np.nan], [0.7, 0.6, np.nan]])
        >>> kept = np.array([[0.9, 0.5, np.nan], [0.7, 0.4, np.nan]])
        >>> choose_keep_largest(plain, kept, np.ones((2, 3), bool))
        (1,)
    """
    plain, kept, one_piece = np.asarray(plain, float), np.asarray(kept, float), np.asarray(one_piece, bool)
    chosen = []
    for index in range(plain.shape[1]):
        scored = ~np.isnan(plain[:, index])
        if not scored.any() or not one_piece[:, index].all():
            continue
        if np.mean(kept[scored, index]) >= np.mean(plain[scored, index]):
            chosen.append(index + 1)
    return tuple(chosen)


def largest_component_scores(
    labels: np.ndarray, reference: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """One validation case's inputs of `choose_keep_largest`: its ``kept`` and ``one_piece`` rows.

    Args:
        labels: ``(I, J, K)`` predicted labels.
        reference: ``(I, J, K)`` reference labels (``n_classes`` marks ignored voxels).
        n_classes: classes with background.

    Returns:
        ``(n_classes - 1,)`` Dice after `keep_largest_component` on every class, and
        ``(n_classes - 1,)`` bool: the reference of the class is at most one component.
    """
    values = range(1, n_classes)
    kept = dice_per_class(keep_largest_component(labels, values), reference, n_classes)
    one_piece = np.array([count_components(reference == value) <= 1 for value in values])
    return kept, one_piece
