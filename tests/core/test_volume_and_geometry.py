import numpy as np
import pytest

from segloop.core import Volume, check_same_grid, flip_ras_lps
from segloop.core.geometry import embed_in_grid
from segloop.errors import GeometryMismatchError, SegloopError


def test_volume_rejects_2d_arrays_with_a_reshape_hint():
    with pytest.raises(SegloopError, match=r"reshape a 2D image to \(I, J, 1\)"):
        Volume(np.zeros((4, 4)), np.eye(4))


def test_volume_rejects_a_singular_affine():
    with pytest.raises(SegloopError, match="invertible"):
        Volume(np.zeros((2, 2, 2)), np.diag([1.0, 0.0, 1.0, 1.0]))


def test_volume_spacing_and_channels():
    volume = Volume(np.zeros((3, 4, 5, 6)), np.diag([0.5, 2.0, 3.0, 1.0]))
    assert volume.spatial_shape == (4, 5, 6)
    assert volume.spacing == (0.5, 2.0, 3.0)
    assert volume.n_channels == 3


def test_flip_ras_lps_is_its_own_inverse(rng):
    affine = np.eye(4)
    affine[:3] = rng.normal(size=(3, 4))
    np.testing.assert_array_equal(flip_ras_lps(flip_ras_lps(affine)), affine)


def test_check_same_grid_names_shapes():
    with pytest.raises(
        GeometryMismatchError, match=r"shape \(2, 2, 3\) does not match the image shape \(2, 2, 2\)"
    ):
        check_same_grid((2, 2, 2), np.eye(4), (2, 2, 3), np.eye(4))


def test_check_same_grid_tolerates_float32_noise_but_not_a_shift():
    check_same_grid((2, 2, 2), np.eye(4), (2, 2, 2), np.eye(4) + 1e-5)
    shifted = np.eye(4)
    shifted[0, 3] = 0.5
    with pytest.raises(GeometryMismatchError, match="differs from the image affine by up to 0.5 mm"):
        check_same_grid((2, 2, 2), np.eye(4), (2, 2, 2), shifted)


def test_embed_in_grid_places_a_cropped_array_and_drops_what_falls_outside():
    crop = np.arange(1, 9, dtype=np.uint8).reshape(2, 2, 2)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    crop_affine = affine.copy()
    crop_affine[:3, 3] = affine[:3, :3] @ np.array([3, -1, 0])
    result = embed_in_grid(crop, crop_affine, (4, 3, 2), affine)
    assert result.shape == (4, 3, 2)
    np.testing.assert_array_equal(result[3, 0], crop[0, 1])
    assert int(result.sum()) == int(crop[0, 1].sum())


def test_embed_in_grid_rejects_half_voxel_shifts_and_other_spacing():
    affine = np.eye(4)
    half = np.eye(4)
    half[0, 3] = 0.5
    with pytest.raises(GeometryMismatchError, match="whole voxels"):
        embed_in_grid(np.ones((1, 1, 1)), half, (2, 2, 2), affine)
    with pytest.raises(GeometryMismatchError, match="spacing differ"):
        embed_in_grid(np.ones((1, 1, 1)), np.diag([2.0, 1, 1, 1]), (2, 2, 2), affine)
