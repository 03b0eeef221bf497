"""Fill between slices: synthetic shapes with known truth, bad input, and OpenKBP organs."""

from __future__ import annotations

import itertools

import cc3d
import numpy as np
import pytest

from segloop.core.geometry import axis_of_plane
from segloop.errors import GeometryMismatchError, InvalidInputError, LabelValueError, SegloopError
from segloop.io import read_volume
from segloop.metrics import dice
from segloop.segment.interpolate import fill_between_slices, fill_between_slices_labels


def keep_slices(volume: np.ndarray, axis: int, slices) -> np.ndarray:
    sparse = np.zeros_like(volume)
    np.moveaxis(sparse, axis, 0)[slices] = np.moveaxis(volume, axis, 0)[slices]
    return sparse


def even_slices(mask: np.ndarray, axis: int, count: int = 7) -> np.ndarray:
    present = np.flatnonzero(np.moveaxis(mask, axis, 0).any(axis=(1, 2)))
    return np.unique(np.linspace(present[0], present[-1], count).round().astype(int))


def ellipsoid(shape, centre, semi_axes_mm, spacing_mm) -> np.ndarray:
    grid = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return (
        sum(((g - c) * s / a) ** 2 for g, c, a, s in zip(grid, centre, semi_axes_mm, spacing_mm, strict=True))
        <= 1.0
    )


def tilted_tube(shape=(90, 40, 60), radius=3.0, slope=1.2, first=5, last=55) -> np.ndarray:
    """A tube along axis 2 whose centre moves ``slope`` voxels along axis 0 per slice."""
    i, j, k = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    tube = (i - 10 - slope * k) ** 2 + (j - 20) ** 2 <= radius**2
    return tube & (k >= first) & (k <= last)


# ------------------------------------------------------------------------------------------ synthetic


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_ellipsoid_from_seven_slices(axis):
    spacing = [1.0, 1.0, 1.0]
    spacing[axis] = 2.5
    shape = [64, 60, 56]
    shape[axis] = 40
    semi = [26.0, 22.0, 20.0]
    semi[axis] = 45.0
    truth = ellipsoid(shape, [(n - 1) / 2 for n in shape], semi, spacing)
    slices = even_slices(truth, axis)
    sparse = keep_slices(truth, axis, slices)
    before = sparse.copy()
    filled = fill_between_slices(sparse, axis, spacing_mm=spacing)
    assert filled.dtype == bool and filled.shape == truth.shape
    assert np.array_equal(sparse, before)  # input untouched
    assert dice(filled, truth) >= 0.95
    stack, drawn = np.moveaxis(filled, axis, 0), np.moveaxis(sparse, axis, 0)
    assert np.array_equal(stack[slices], drawn[slices])  # drawn slices exact
    assert not stack[: slices[0]].any() and not stack[slices[-1] + 1 :].any()


def test_tilted_tube_whose_drawn_sections_do_not_overlap():
    truth = tilted_tube()
    slices = np.arange(5, 56, 10)
    stack = np.moveaxis(truth, 2, 0)
    # precondition: neighbouring drawn cross-sections are apart (12 voxels shift, 7 wide)
    assert all(not (stack[a] & stack[b]).any() for a, b in itertools.pairwise(slices))
    filled = fill_between_slices(keep_slices(truth, 2, slices), 2, spacing_mm=(1.0, 1.0, 1.0))
    assert filled[:, :, 5:56].any(axis=(0, 1)).all()  # no slice in the gaps is empty
    assert cc3d.connected_components(filled, connectivity=26).max() == 1
    assert dice(filled, truth) >= 0.8
    # the cross-sections keep their size along the path (no shrinking at mid-gap)
    areas = filled[:, :, 5:56].sum(axis=(0, 1))
    assert areas.min() >= 0.8 * truth[:, :, 30].sum()


def test_two_tubes_moving_towards_each_other_stay_two():
    left = tilted_tube(shape=(120, 40, 40), slope=1.0, first=2, last=37)
    right = np.flip(left, axis=0)
    truth = left | right
    assert not (left & right).any()
    filled = fill_between_slices(keep_slices(truth, 2, [2, 14, 26, 37]), 2, spacing_mm=(1.0, 1.0, 1.0))
    assert cc3d.connected_components(filled, connectivity=26).max() == 2
    assert dice(filled, truth) >= 0.8


def test_branching_shape_stays_connected():
    # one blob on slice 0 splits into two blobs on slice 10 (they overlap the first one)
    mask = np.zeros((40, 40, 11), bool)
    mask[10:30, 12:28, 0] = True
    mask[8:18, 14:26, 10] = True
    mask[22:32, 14:26, 10] = True
    filled = fill_between_slices(mask, 2, spacing_mm=(1.0, 1.0, 2.0))
    assert cc3d.connected_components(filled, connectivity=26).max() == 1
    assert filled.any(axis=(0, 1)).all()


def test_annotated_empty_slice_ends_the_shape_halfway():
    mask = np.zeros((12, 12, 9), bool)
    mask[3:9, 3:9, [0, 4]] = True
    filled = fill_between_slices(mask, 2, spacing_mm=(1.0, 1.0, 1.0), annotated=[0, 4, 8])
    areas = filled.sum(axis=(0, 1)).tolist()
    assert areas[:5] == [36] * 5
    assert 0 < areas[5] < 36 and areas[6:] == [0, 0, 0]
    # without the empty slice the fill stops at slice 4
    assert fill_between_slices(mask, 2, spacing_mm=(1.0, 1.0, 1.0))[:, :, 5:].sum() == 0


def test_explicit_annotated_ignores_other_slices():
    mask = np.zeros((10, 10, 7), bool)
    mask[2:8, 2:8, [0, 6]] = True
    noisy = mask.copy()
    noisy[0, 0, 3] = True  # an untrusted voxel on a slice that was not drawn
    a = fill_between_slices(noisy, 2, spacing_mm=(1.0, 1.0, 1.0), annotated=[0, 6])
    b = fill_between_slices(mask, 2, spacing_mm=(1.0, 1.0, 1.0))
    assert np.array_equal(a, b) and not a[0, 0, 3]


def test_integer_and_fortran_ordered_input_give_the_same_result():
    truth = tilted_tube()
    sparse = keep_slices(truth, 2, [5, 20, 35, 55])
    reference = fill_between_slices(sparse, 2, spacing_mm=(1.0, 1.0, 1.0))
    as_int = fill_between_slices(sparse.astype(np.uint8), 2, spacing_mm=(1.0, 1.0, 1.0))
    fortran = fill_between_slices(np.asfortranarray(sparse), 2, spacing_mm=(1.0, 1.0, 1.0))
    assert np.array_equal(reference, as_int) and np.array_equal(reference, fortran)


def test_smoothing_keeps_drawn_slices_and_the_shape():
    spacing = (1.0, 1.0, 3.0)
    truth = ellipsoid((50, 50, 30), (24.5, 24.5, 14.5), (20.0, 16.0, 40.0), spacing)
    slices = even_slices(truth, 2)
    sparse = keep_slices(truth, 2, slices)
    smooth = fill_between_slices(sparse, 2, spacing_mm=spacing, smoothing_mm=2.0)
    assert np.array_equal(smooth[:, :, slices], truth[:, :, slices])
    assert dice(smooth, truth) >= 0.93
    with pytest.raises(InvalidInputError, match="smoothing_mm"):
        fill_between_slices(sparse, 2, spacing_mm=spacing, smoothing_mm=-1.0)


def test_adjacent_annotated_slices_and_large_frames():
    mask = np.zeros((200, 180, 4), bool)
    mask[20:180, 30:170, [0, 1]] = True
    mask[40:150, 30:150, 3] = True
    filled = fill_between_slices(mask, 2, spacing_mm=(0.8, 0.8, 2.5))
    assert np.array_equal(filled[:, :, [0, 1, 3]], mask[:, :, [0, 1, 3]])
    assert mask[:, :, 3].sum() < filled[:, :, 2].sum() < mask[:, :, 1].sum()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"axis": 3}, SegloopError, "axis must be 0, 1 or 2"),
        ({"axis": True}, SegloopError, "axis must be 0, 1 or 2"),
        ({"spacing_mm": (1.0, 1.0)}, GeometryMismatchError, "spacing_mm"),
        ({"spacing_mm": (1.0, 0.0, 1.0)}, GeometryMismatchError, "spacing_mm"),
        ({"annotated": [3]}, SegloopError, "at least 2"),
        ({"annotated": [0, 9]}, GeometryMismatchError, r"annotated slices \[9\]"),
        ({"annotated": [0.5, 3]}, SegloopError, "integer slice indices"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    mask = np.zeros((6, 6, 8), bool)
    mask[1:4, 1:4, [0, 5]] = True
    arguments = {"axis": 2, "spacing_mm": (1.0, 1.0, 1.0), **kwargs}
    with pytest.raises(error, match=match):
        fill_between_slices(mask, arguments.pop("axis"), **arguments)


def test_bad_masks():
    with pytest.raises(GeometryMismatchError, match="3D"):
        fill_between_slices(np.zeros((4, 4), bool), 0, spacing_mm=(1.0, 1.0, 1.0))
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[1, 1, [0, 3]] = 2
    with pytest.raises(LabelValueError, match="fill_between_slices_labels"):
        fill_between_slices(labels, 2, spacing_mm=(1.0, 1.0, 1.0))
    one_slice = np.zeros((4, 4, 4), bool)
    one_slice[1, 1, 2] = True
    with pytest.raises(InvalidInputError, match=r"1 annotated slice\(s\) along axis 2 \(slice 2\)"):
        fill_between_slices(one_slice, 2, spacing_mm=(1.0, 1.0, 1.0))


# --------------------------------------------------------------------------------------- label maps


def test_labels_fill_each_class_and_keep_drawn_voxels():
    spacing = (1.0, 1.0, 2.0)
    big = ellipsoid((40, 40, 25), (14, 19.5, 12), (12.0, 14.0, 26.0), spacing)
    small = ellipsoid((40, 40, 25), (29, 19.5, 12), (7.0, 9.0, 20.0), spacing) & ~big
    truth = big.astype(np.uint8) + 2 * small.astype(np.uint8)
    sparse = np.zeros_like(truth)
    for value, organ in ((1, big), (2, small)):
        for k in even_slices(organ, 2, 5):
            sparse[:, :, k][organ[:, :, k]] = value
    filled = fill_between_slices_labels(sparse, 2, spacing_mm=spacing)
    assert filled.dtype == np.uint8
    drawn = sparse > 0
    assert np.array_equal(filled[drawn], sparse[drawn])
    assert dice(filled == 1, big) >= 0.9 and dice(filled == 2, small) >= 0.85
    # one class alone equals the mask function
    alone = fill_between_slices_labels(sparse, 2, spacing_mm=spacing, classes=[2])
    assert np.array_equal(alone == 2, fill_between_slices(sparse == 2, 2, spacing_mm=spacing))
    # ... and the class left out is kept exactly as it was
    assert np.array_equal(alone == 1, sparse == 1)


def test_labels_conflicts_go_to_the_deeper_class():
    labels = np.zeros((20, 10, 5), np.uint16)
    labels[2:10, 2:8, 0] = 1  # class 1 moves right ...
    labels[10:18, 2:8, 4] = 1
    labels[11:19, 2:8, 0] = 2  # ... into class 2's place, which stays
    labels[11:19, 2:8, 4] = 2
    filled = fill_between_slices_labels(labels, 2, spacing_mm=(1.0, 1.0, 1.0))
    middle = filled[:, 5, 2]
    assert set(middle.tolist()) == {0, 1, 2}
    assert (filled[12:17, 2:8, 1:4] == 2).all()  # class 2's core is never taken


def test_labels_shared_annotated_slices():
    labels = np.zeros((10, 10, 9), np.uint8)
    labels[2:8, 2:8, [0, 4]] = 1
    labels[2:8, 2:8, 8] = 2
    labels[2:8, 2:8, 2] = 2  # lies on a slice that is not annotated: ignored
    filled = fill_between_slices_labels(labels, 2, spacing_mm=(1.0, 1.0, 1.0), annotated=[0, 4, 8])
    assert (filled[:, :, 1:4] == 1).sum() == 3 * 36
    assert np.array_equal(filled[:, :, [0, 4, 8]], labels[:, :, [0, 4, 8]])
    assert (filled[:, :, 5:8] > 0).any()  # class 1 ends and class 2 begins halfway


def test_labels_errors():
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1:3, 1:3, [0, 5]] = 1
    labels[4, 4, 2] = 2
    with pytest.raises(InvalidInputError, match="class 2 holds 1 annotated slice"):
        fill_between_slices_labels(labels, 2, spacing_mm=(1.0, 1.0, 1.0))
    assert (fill_between_slices_labels(labels, 2, spacing_mm=(1, 1, 1), classes=[1]) == 2).sum() == 1
    with pytest.raises(LabelValueError, match="integer label map"):
        fill_between_slices_labels(labels.astype(float), 2, spacing_mm=(1.0, 1.0, 1.0))
    with pytest.raises(LabelValueError, match="positive integers"):
        fill_between_slices_labels(labels, 2, spacing_mm=(1.0, 1.0, 1.0), classes=[0])
    with pytest.raises(LabelValueError, match="non-negative"):
        fill_between_slices_labels(-labels.astype(np.int16), 2, spacing_mm=(1.0, 1.0, 1.0))
    with pytest.raises(InvalidInputError, match="no class to fill"):
        fill_between_slices_labels(np.zeros((4, 4, 4), np.uint8), 2, spacing_mm=(1.0, 1.0, 1.0))
    with pytest.raises(GeometryMismatchError, match="3D"):
        fill_between_slices_labels(np.zeros((4, 4), np.uint8), 1, spacing_mm=(1.0, 1.0, 1.0))


# ---------------------------------------------------------------------------------------- real data

#: Dice floors per organ from 7 evenly spaced axial slices. Measured over all 34 OpenKBP cases
#: (mean / minimum): brainstem 0.933 / 0.867, spinal cord 0.863 / 0.763, right parotid 0.919 /
#: 0.867, left parotid 0.917 / 0.846, esophagus 0.883 / 0.802, larynx 0.976 / 0.929, mandible
#: 0.809 / 0.670 (ITK's morphological contour interpolator on the same input: 0.911, 0.514, 0.877,
#: 0.872, 0.592, 0.947, 0.703). The floors sit a little under the minimum of the cases tested here.
OPENKBP_FLOORS = {1: 0.85, 2: 0.75, 3: 0.85, 4: 0.83, 5: 0.78, 6: 0.92, 7: 0.65}
OPENKBP_CASES = ("openkbp_pt_4", "openkbp_pt_61", "openkbp_pt_100", "openkbp_pt_222")


@pytest.mark.parametrize("case", OPENKBP_CASES)
def test_openkbp_organs_from_seven_axial_slices(openkbp, case):
    volume = read_volume(openkbp / "labelsTr" / f"{case}.nii.gz")
    labels = np.asarray(volume.array)
    axis = axis_of_plane(volume.affine, "axial")
    sparse_all = np.zeros_like(labels)
    for value, floor in OPENKBP_FLOORS.items():
        organ = labels == value
        sparse = keep_slices(organ, axis, even_slices(organ, axis))
        sparse_all[sparse] = value
        filled = fill_between_slices(sparse, axis, spacing_mm=volume.spacing)
        assert dice(filled, organ) >= floor, f"organ {value}: Dice {dice(filled, organ):.3f} < {floor}"
    # all organs at once: conflicts cost at most a little
    together = fill_between_slices_labels(sparse_all, axis, spacing_mm=volume.spacing)
    for value, floor in OPENKBP_FLOORS.items():
        assert dice(together == value, labels == value) >= floor - 0.02
