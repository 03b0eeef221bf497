from __future__ import annotations

import math

import numpy as np
import pytest

from segloop.engine.evaluate import evaluate_labels
from segloop.errors import GeometryMismatchError
from segloop.metrics import dice_per_class


def _cube(shape=(20, 20, 20), box=((5, 15), (5, 15), (5, 15)), value=1):
    labels = np.zeros(shape, np.uint8)
    labels[tuple(slice(a, b) for a, b in box)] = value
    return labels


def test_identical_maps_score_perfectly_and_empty_classes_are_nan():
    reference = _cube()
    scores = evaluate_labels(reference, reference, n_classes=3, spacing=(1.0, 1.0, 1.0))
    assert scores[1] == {"dice": 1.0, "hd95_mm": 0.0, "surface_dice": 1.0}
    assert all(math.isnan(v) for v in scores[2].values())


def test_shifted_cube_has_known_dice_and_spacing_aware_hd95():
    reference = _cube()
    shifted = _cube(box=((7, 17), (5, 15), (5, 15)))  # 2 voxels along I
    scores = evaluate_labels(shifted, reference, n_classes=2, spacing=(3.0, 1.0, 1.0), tolerance_mm=1.0)
    assert scores[1]["dice"] == pytest.approx(0.8)
    assert scores[1]["hd95_mm"] == pytest.approx(6.0)  # 2 voxels x 3 mm
    assert 0.0 < scores[1]["surface_dice"] < 1.0
    loose = evaluate_labels(shifted, reference, n_classes=2, spacing=(3.0, 1.0, 1.0), tolerance_mm=6.0)
    assert loose[1]["surface_dice"] == pytest.approx(1.0)


def test_multi_class_maps_are_scored_one_hot():
    reference = _cube() + _cube(box=((0, 3), (0, 3), (0, 3)), value=2)
    swapped = np.where(reference == 1, 2, np.where(reference == 2, 1, 0)).astype(np.uint8)
    scores = evaluate_labels(swapped, reference, n_classes=3, spacing=(1.0, 1.0, 1.0))
    assert scores[1]["dice"] == 0.0 and scores[2]["dice"] == 0.0
    assert dice_per_class(reference, reference, 3).tolist() == [1.0, 1.0]


def test_class_in_only_one_map_gets_zero_dice_and_infinite_hd95():
    reference = _cube()
    scores = evaluate_labels(np.zeros_like(reference), reference, n_classes=2, spacing=(1.0, 1.0, 1.0))
    assert scores[1] == {"dice": 0.0, "hd95_mm": math.inf, "surface_dice": 0.0}
    assert dice_per_class(np.zeros_like(reference), reference, 2).tolist() == [0.0]


def test_ignored_voxels_are_left_out_of_every_metric():
    reference = _cube()
    prediction = reference.copy()
    prediction[15:, 5:15, 5:15] = 1  # an over-segmentation ...
    reference_with_ignore = reference.copy()
    reference_with_ignore[15:] = 2  # ... entirely inside voxels the reference ignores (value n_classes)
    scores = evaluate_labels(prediction, reference_with_ignore, n_classes=2, spacing=(1.0, 1.0, 1.0))
    assert scores[1]["dice"] == 1.0 and scores[1]["hd95_mm"] == 0.0
    assert dice_per_class(prediction, reference_with_ignore, 2).tolist() == [1.0]
    mask = np.zeros(reference.shape, bool)
    mask[15:] = True
    assert (
        evaluate_labels(prediction, reference, n_classes=2, spacing=(1, 1, 1), ignore_mask=mask)[1]["dice"]
        == 1.0
    )


def test_dice_per_class_matches_evaluate_labels(rng):
    reference = rng.integers(0, 4, (12, 12, 6)).astype(np.uint8)
    prediction = np.where(rng.random(reference.shape) < 0.7, reference, rng.integers(0, 4, reference.shape))
    fast = dice_per_class(prediction, reference, 4)
    full = evaluate_labels(prediction, reference, n_classes=4, spacing=(1.0, 1.0, 2.0))
    assert np.allclose(fast, [full[c]["dice"] for c in (1, 2, 3)])


def test_shape_mismatch_is_an_error():
    with pytest.raises(GeometryMismatchError):
        dice_per_class(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), 2)
