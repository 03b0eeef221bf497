"""A version with a coverage (the voxels a person reviewed) speaks only there (issue 12 #6)."""

import numpy as np
import pytest

from segloop.core.assembly import LabelLayer, assemble_labels
from segloop.core.corrections import PatchBox, coverage_from_params, coverage_mask
from segloop.errors import GeometryMismatchError, InvalidInputError

N, IGNORE = 2, 3  # classes 1 (liver), 2 (spleen); ignore = 3


def _layer(values, source, classes, version_id, coverage=None):
    labels = np.array(values, dtype=np.uint8).reshape(1, 1, -1)
    mask = None if coverage is None else np.array(coverage, bool).reshape(1, 1, -1)
    return LabelLayer(labels, source, classes, version_id, mask)


def _assemble(*layers):
    result = assemble_labels(layers, n_classes=N, ignore_index=IGNORE)
    return result.labels.ravel().tolist(), result.class_sources


def test_a_revision_with_coverage_keeps_the_earlier_label_outside():
    pseudo = _layer([1, 1, 2, 2, 0, 1], "pseudo", (1, 2), 1)
    # reviewed voxels 1..3 only; outside it holds ignore (what a patch merge stores)
    patch = _layer([3, 0, 1, 2, 3, 3], "revised", (1, 2), 2, [0, 1, 1, 1, 0, 0])
    labels, sources = _assemble(pseudo, patch)
    assert labels == [1, 0, 1, 2, 0, 1]
    assert sources == {1: 2, 2: 2}


def test_explicit_ignore_inside_the_coverage_only():
    pseudo = _layer([1, 1, 1, 1], "pseudo", (1, 2), 1)
    patch = _layer([3, 3, 1, 3], "revised", (1, 2), 2, [0, 1, 1, 0])
    assert _assemble(pseudo, patch)[0] == [1, 3, 1, 1]


def test_without_the_pseudo_source_the_unreviewed_outside_is_ignore():
    """Training leaves pseudo versions out: outside the patches nobody speaks for any class."""
    patch = _layer([3, 0, 1, 3], "revised", (1, 2), 2, [0, 1, 1, 0])
    assert _assemble(patch)[0] == [3, 0, 1, 3]
    earlier_person = _layer([2, 2, 2, 2], "draft", (1, 2), 1)
    assert _assemble(earlier_person, patch)[0] == [2, 0, 1, 2]  # a person's draft still decides there


def test_coverage_of_another_shape_is_refused():
    layer = LabelLayer(np.zeros((1, 1, 3), np.uint8), "revised", (1,), 1, np.ones((1, 1, 2), bool))
    with pytest.raises(GeometryMismatchError, match="coverage"):
        assemble_labels([layer], n_classes=N, ignore_index=IGNORE)


def test_coverage_masks_are_the_patches_minus_their_inner_borders():
    inner = PatchBox((2, 2, 0), (6, 6, 1))
    at_edge = PatchBox((-2, 0, 0), (4, 4, 1))
    mask = coverage_mask([(inner, 1), (at_edge, 1)], (10, 10, 1))[:, :, 0]
    expected = np.zeros((10, 10), bool)
    expected[3:7, 3:7] = True  # inner patch: one voxel off every face
    expected[0:1, 0:3] = True  # at the case's edge: no border on the outer faces
    assert np.array_equal(mask, expected)
    params = {"coverage": [{"offset": [2, 2, 0], "size": [6, 6, 1], "border_voxels": 1}]}
    assert coverage_from_params(params, (10, 10, 1)).sum() == 16
    with pytest.raises(InvalidInputError, match="coverage"):
        coverage_from_params({"coverage": [{"offset": [1, 2]}]}, (10, 10, 1))
