"""One rule per idea: Dice of empty classes, binary entropy, bounding boxes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from segloop.core.geometry import bounding_box
from segloop.errors import GeometryMismatchError, LabelValueError
from segloop.metrics import binary_entropy, dice, dice_per_class


def test_a_class_empty_in_both_maps_has_no_dice_and_one_in_a_single_map_has_zero():
    labels = np.array([[1, 1, 0, 0]])
    reference = np.array([[1, 0, 0, 0]])
    scores = dice_per_class(labels, reference, 4)
    assert scores[0] == pytest.approx(2 / 3) and math.isnan(scores[1]) and math.isnan(scores[2])
    assert dice_per_class(np.array([2, 0]), np.array([0, 0]), 3)[1] == 0.0
    assert math.isnan(dice(np.zeros(4, bool), np.zeros(4, bool)))


def test_dice_per_class_leaves_out_ignore_voxels_and_checks_its_inputs():
    assert dice_per_class(np.array([1, 1]), np.array([1, 2]), 2).tolist() == [1.0]  # 2 = ignore
    assert dice_per_class(
        np.array([1, 1]), np.array([1, 0]), 2, ignore_mask=np.array([False, True])
    ).tolist() == [1.0]
    with pytest.raises(GeometryMismatchError):
        dice_per_class(np.zeros(3, int), np.zeros(4, int), 2)
    with pytest.raises(LabelValueError, match="value 5"):
        dice_per_class(np.array([5]), np.array([0]), 2)


def test_the_engine_and_the_evaluation_use_the_one_dice_rule():
    pytest.importorskip("monai")
    from segloop.engine.evaluate import evaluate_labels

    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1:4, 1:4, 1:4] = 1
    scores = evaluate_labels(labels, labels, n_classes=3, spacing=(1.0, 1.0, 1.0))
    fast = dice_per_class(labels, labels, 3)
    assert scores[1]["dice"] == fast[0] == 1.0
    assert math.isnan(scores[2]["dice"]) and math.isnan(fast[1])


def test_binary_entropy_is_symmetric_and_bounded():
    p = np.linspace(0, 1, 11)
    values = binary_entropy(p)
    np.testing.assert_allclose(values, values[::-1], atol=1e-6)
    assert values[5] == pytest.approx(1.0) and values[0] == values[-1] == 0.0 and values.dtype == np.float32


def test_bounding_box_is_none_for_empty_masks_and_clips_its_margin():
    mask = np.zeros((5, 6, 7), bool)
    assert bounding_box(mask) is None
    mask[0, 2:4, 6] = True
    assert bounding_box(mask) == (slice(0, 1), slice(2, 4), slice(6, 7))
    assert bounding_box(mask, margin=2) == (slice(0, 3), slice(0, 6), slice(4, 7))
    assert bounding_box(mask, margin=(0, 1, 0)) == (slice(0, 1), slice(1, 5), slice(6, 7))
