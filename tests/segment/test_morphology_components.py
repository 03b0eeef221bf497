"""Morphology (mm radii, neutral borders), islands and thresholds against scipy's definitions."""

import numpy as np
import pytest
from scipy import ndimage

from segloop.errors import InvalidInputError
from segloop.segment.components import (
    keep_components_at,
    keep_largest_component,
    remove_small_components,
)
from segloop.segment.morphology import (
    ball_offsets,
    close_mask_mm,
    dilate_mask,
    erode_mask,
    fill_holes,
    open_mask_mm,
    postprocess_labels,
)
from segloop.segment.threshold import THRESHOLD_PRESETS_HU, threshold_otsu, threshold_range


def _element(radius_mm, spacing):
    offsets = ball_offsets(radius_mm, spacing)
    reach = np.abs(offsets).max(axis=0)
    element = np.zeros(tuple(2 * reach + 1), bool)
    element[tuple((offsets + reach).T)] = True
    return element


def _blobs(rng, shape=(30, 28, 20)):
    noise = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    return noise > 0.05


# radii chosen to use both the shifted-copy path (<= 27 offsets) and the distance-map path
@pytest.mark.parametrize(
    ("radius_mm", "spacing"),
    [(1.0, (1, 1, 1)), (0.8, (0.8, 0.8, 2.5)), (2.0, (0.8, 0.8, 2.5)), (3.1, (1.0, 1.5, 2.0))],
)
def test_dilation_and_erosion_equal_scipy_with_neutral_borders(rng, radius_mm, spacing):
    mask = _blobs(rng)
    element = _element(radius_mm, spacing)
    np.testing.assert_array_equal(
        dilate_mask(mask, radius_mm, spacing), ndimage.binary_dilation(mask, element)
    )
    np.testing.assert_array_equal(
        erode_mask(mask, radius_mm, spacing), ndimage.binary_erosion(mask, element, border_value=1)
    )
    np.testing.assert_array_equal(
        close_mask_mm(mask, radius_mm, spacing),
        ndimage.binary_erosion(ndimage.binary_dilation(mask, element), element, border_value=1),
    )
    np.testing.assert_array_equal(
        open_mask_mm(mask, radius_mm, spacing),
        ndimage.binary_dilation(ndimage.binary_erosion(mask, element, border_value=1), element),
    )


def test_closing_does_not_shave_a_mask_that_touches_the_border():
    mask = np.zeros((10, 10, 10), bool)
    mask[:4] = True
    np.testing.assert_array_equal(close_mask_mm(mask, 3.0, (1, 1, 1)), mask)
    np.testing.assert_array_equal(
        erode_mask(np.ones((5, 5, 5), bool), 2.0, (1, 1, 1)), np.ones((5, 5, 5), bool)
    )


def test_morphology_of_an_empty_mask_is_empty_and_inputs_are_untouched(rng):
    assert not dilate_mask(np.zeros((4, 4, 4), bool), 2.0, (1, 1, 1)).any()
    mask = _blobs(rng)
    before = mask.copy()
    close_mask_mm(mask, 2.0, (1, 1, 1))
    np.testing.assert_array_equal(mask, before)
    with pytest.raises(InvalidInputError, match="radius must be finite and >= 0 mm; got -1"):
        dilate_mask(mask, -1, (1, 1, 1))


def test_fill_holes_fills_cavities_but_not_open_dents():
    mask = np.zeros((9, 9, 9), bool)
    mask[1:8, 1:8, 1:8] = True
    mask[3:6, 3:6, 3:6] = False  # a closed cavity
    mask[4, 4, 6:9] = False  # ... opened to the outside by a channel? no: channel ends inside the wall
    mask[0:3, 4, 4] = False  # a dent from the outside
    filled = fill_holes(mask)
    np.testing.assert_array_equal(filled, ndimage.binary_fill_holes(mask))


def test_islands(rng):
    mask = np.zeros((20, 20, 20), bool)
    mask[1:4, 1:4, 1:4] = True  # 27 voxels
    mask[10:16, 10:16, 10:16] = True  # 216 voxels
    mask[18, 18, 18] = True
    assert keep_largest_component(mask).sum() == 216
    assert keep_components_at(mask, [(2, 2, 2)]).sum() == 27
    assert keep_components_at(mask, [(2, 2, 2), (18, 18, 18)]).sum() == 28
    assert remove_small_components(mask, min_size_voxels=27).sum() == 243
    with pytest.raises(InvalidInputError, match="not inside the mask"):
        keep_components_at(mask, [(0, 0, 0)])
    with pytest.raises(InvalidInputError, match="outside the volume"):
        keep_components_at(mask, [(0, 0, 40)])


def test_keep_largest_matches_scipy_on_noise(rng):
    mask = rng.random((40, 40, 40)) > 0.7
    components, _ = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    np.testing.assert_array_equal(keep_largest_component(mask), components == sizes.argmax())


def test_postprocess_is_close_open_largest_per_class():
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[2:6, 2:6, 2:6] = 1
    labels[4, 4, 4] = 0  # a hole closing fills
    labels[9, 9, 9] = 1  # an island `largest` drops
    labels[7:11, 1:5, 1:5] = 2
    result = postprocess_labels(labels, spacing_mm=(1, 1, 1), close_mm=1.0, open_mm=1.0, keep_largest=True)
    assert result[4, 4, 4] == 1 and result[9, 9, 9] == 0
    assert (result == 2).sum() > 0


def test_thresholds():
    image = np.array([-1000, -600, -400, 50, 700])
    low, high = THRESHOLD_PRESETS_HU["lung"]
    assert threshold_range(image, low, high).tolist() == [True, True, False, False, False]
    assert 20 <= threshold_otsu(np.array([0, 10, 20, 600, 700, 800])) < 600
    with pytest.raises(InvalidInputError, match="low <= high"):
        threshold_range(image, 5, 1)
    with pytest.raises(InvalidInputError, match="two different intensities"):
        threshold_otsu(np.zeros(5))


def test_a_ball_wider_than_the_cap_is_refused_before_allocating():
    from segloop.segment.morphology import MAX_REACH_VOXELS, ball_offsets

    assert len(ball_offsets(MAX_REACH_VOXELS, (1.0, 1.0, 1.0))) > 0
    with pytest.raises(InvalidInputError, match="reaches 1000 voxels"):
        ball_offsets(500.0, (0.5, 0.5, 2.0))
    with pytest.raises(InvalidInputError, match="finite"):
        ball_offsets(float("nan"), (1.0, 1.0, 1.0))


def test_postprocessing_refuses_radii_that_would_skip_a_step_silently():
    from segloop.segment.morphology import postprocess_labels

    labels = np.zeros((4, 4, 4), np.uint8)
    for radii in ({"close_mm": float("nan")}, {"open_mm": float("inf")}, {"close_mm": -1.0}):
        with pytest.raises(InvalidInputError, match="radii must be finite"):
            postprocess_labels(labels, spacing_mm=(1, 1, 1), **radii)
