"""Merge rules of corrections (seed 003 precedence) and the geometry of patches."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.core.corrections import (
    PatchBox,
    crop_with_padding,
    merge_corrections,
    parse_correction_name,
    patch_box,
    reviewed_mask,
)
from segloop.errors import GeometryMismatchError, SegloopError

IGNORE = 3


def test_precedence_is_ignore_over_add_over_remove_over_prediction():
    # voxel:        0  1  2  3  4  5  6  7
    labels = np.array([1, 1, 1, 1, 0, 0, 2, 2], np.uint8).reshape(1, 1, 8)
    remove = np.array([1, 1, 1, 0, 0, 0, 0, 1], bool).reshape(1, 1, 8)
    add = np.array([0, 2, 2, 0, 2, 2, 0, 0]).reshape(1, 1, 8)
    ignore = np.array([0, 0, 1, 1, 0, 1, 0, 0], bool).reshape(1, 1, 8)
    merged = merge_corrections(labels, ignore_index=IGNORE, add=add, remove=remove, ignore=ignore)
    # 0: removed; 1: removed then added; 2: removed, added, ignored; 3: ignored; 4: added;
    # 5: added then ignored; 6: prediction kept; 7: removed
    assert merged.ravel().tolist() == [0, 2, 3, 3, 2, 3, 2, 0]
    assert labels.ravel().tolist() == [1, 1, 1, 1, 0, 0, 2, 2]  # input untouched
    assert merged.dtype == labels.dtype


def test_remove_of_one_class_spares_the_neighbours():
    labels = np.array([1, 2, 1, 0], np.uint8).reshape(1, 1, 4)
    brush = np.ones((1, 1, 4), bool)
    merged = merge_corrections(labels, ignore_index=IGNORE, remove_by_class={1: brush})
    assert merged.ravel().tolist() == [0, 2, 0, 0]
    assert merge_corrections(labels, ignore_index=IGNORE, remove=brush).ravel().tolist() == [0, 0, 0, 0]


def test_merge_rejects_bad_masks():
    labels = np.zeros((2, 2, 2), np.uint8)
    with pytest.raises(GeometryMismatchError, match=r"add mask shape \(2, 2, 3\) differs"):
        merge_corrections(labels, ignore_index=IGNORE, add=np.zeros((2, 2, 3), int))
    with pytest.raises(SegloopError, match="classes 1..2"):
        merge_corrections(labels, ignore_index=IGNORE, add=np.full((2, 2, 2), 3))


@pytest.mark.parametrize(
    ("name", "kind", "class_name"),
    [
        ("Add1.nrrd", "Add", None),
        ("add2.nii.gz", "Add", None),
        ("Remove.nrrd", "Remove", None),
        ("IGNORE3.nrrd", "Ignore", None),
        ("Add_parotid_l.nrrd", "Add", "parotid_l"),
        ("Add_parotid_l2.nrrd", "Add", "parotid_l"),
        ("add_parotid_l_3.seg.nrrd", "Add", "parotid_l"),
        ("Remove_parotid_r-1.nrrd", "Remove", "parotid_r"),
        ("Add_1.nrrd", "Add", None),
    ],
)
def test_correction_names(name, kind, class_name):
    parsed = parse_correction_name(name, ["parotid_l", "parotid_r", "larynx"])
    assert (parsed.kind, parsed.class_name) == (kind, class_name)


def test_correction_names_other_files_and_unknown_classes():
    assert parse_correction_name("label.nrrd", ["liver"]) is None
    assert parse_correction_name("notes.txt", ["liver"]) is None
    with pytest.raises(SegloopError, match="names no known class after Add_"):
        parse_correction_name("Add_kidney.nrrd", ["liver"])


def test_patch_box_is_centred_and_clipped_to_small_volumes():
    assert patch_box((100, 100, 100), 160, (300, 300, 300)) == PatchBox((20, 20, 20), (160, 160, 160))
    # axes no longer than the size: the whole axis (2D images keep one slice)
    assert patch_box((64, 10, 0), 160, (128, 400, 1)) == PatchBox((0, -70, 0), (128, 160, 1))
    assert patch_box((3, 3, 3), (4, 5, 6), (10, 10, 10)) == PatchBox((1, 1, 0), (4, 5, 6))


def test_patch_centre_outside_the_volume_is_an_error():
    with pytest.raises(SegloopError, match=r"patch centre \[5, 10, 0\] is outside the volume"):
        patch_box((5, 10, 0), 4, (8, 10, 1))
    with pytest.raises(SegloopError, match="outside"):
        patch_box((-1, 0, 0), 4, (8, 8, 8))
    with pytest.raises(SegloopError, match="positive"):
        patch_box((1, 1, 1), 0, (8, 8, 8))


def test_crop_with_padding_near_borders_keeps_offsets():
    array = np.arange(5 * 4 * 1).reshape(5, 4, 1)
    box = PatchBox((-2, 1, 0), (4, 4, 1))
    patch = crop_with_padding(array, box, fill=-1)
    assert patch.shape == (4, 4, 1)
    assert (patch[:2] == -1).all() and (patch[:, 3] == -1).all()
    assert patch[2:, :3, 0].tolist() == array[0:2, 1:4, 0].tolist()
    case_slices, patch_slices = box.inside(array.shape)
    assert case_slices == (slice(0, 2), slice(1, 4), slice(0, 1))
    assert patch_slices == (slice(2, 4), slice(0, 3), slice(0, 1))


def test_reviewed_mask_has_a_border_only_on_inner_faces():
    box = PatchBox((10, 10, 10), (40, 40, 40))
    mask = reviewed_mask(box, (100, 100, 100), 16)
    assert mask.sum() == 8**3 and mask[16:24, 16:24, 16:24].all()
    # a patch reaching past the case: no border on the outer faces, padding not reviewed
    box = PatchBox((-5, 0, 0), (20, 10, 1))
    mask = reviewed_mask(box, (50, 10, 1), 3)
    assert mask[:, 0, 0].tolist() == [False] * 5 + [True] * 12 + [False] * 3
    assert mask[5, :, 0].all()  # axis 1 spans the whole case: no border
    with pytest.raises(SegloopError):
        reviewed_mask(box, (50, 10, 1), -1)
