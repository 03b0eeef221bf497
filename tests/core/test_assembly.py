"""Assembly rules (seed 002): original > revised > sparse > draft > pseudo, per class."""

import numpy as np
import pytest

from segloop.core.assembly import LabelLayer, assemble_labels
from segloop.errors import SegloopError

N, IGNORE = 2, 3  # classes 1 (liver), 2 (spleen); ignore = 3


def _layer(values, source, classes, version_id):
    return LabelLayer(np.array(values, dtype=np.uint8).reshape(1, 1, -1), source, classes, version_id)


def _assemble(*layers):
    result = assemble_labels(layers, n_classes=N, ignore_index=IGNORE)
    return result.labels.ravel().tolist(), result.ignore_mask.ravel().tolist(), result.class_sources


def test_a_revised_class_replaces_the_ai_voxels_of_that_class_only():
    pseudo = _layer([1, 1, 2, 2, 0], "pseudo", (1, 2), 10)
    revised = _layer([0, 1, 1, 0, 0], "revised", (1,), 11)
    labels, ignore, sources = _assemble(pseudo, revised)
    # liver comes from the revision; spleen keeps the AI voxels the revision did not claim
    assert labels == [0, 1, 1, 2, 0]
    assert not any(ignore)
    assert sources == {1: 11, 2: 10}


def test_original_beats_revised_whatever_the_order_they_were_added():
    original = _layer([1, 0, 0, 0, 0], "original", (1, 2), 1)
    revised = _layer([0, 1, 0, 0, 2], "revised", (1, 2), 2)
    assert _assemble(original, revised)[0] == [1, 0, 0, 0, 0]
    assert _assemble(revised, original)[0] == [1, 0, 0, 0, 0]


def test_newer_version_of_the_same_source_wins():
    old = _layer([1, 1, 0, 0, 0], "revised", (1, 2), 1)
    new = _layer([0, 0, 1, 0, 0], "revised", (1, 2), 2)
    assert _assemble(old, new)[0] == [0, 0, 1, 0, 0]


def test_classes_nobody_annotated_make_background_unknown():
    only_liver = _layer([1, 1, 0, 0, 0], "original", (1,), 1)
    labels, ignore, sources = _assemble(only_liver)
    # spleen is annotated by nobody: background may hide spleen, so it is ignored
    assert labels == [1, 1, IGNORE, IGNORE, IGNORE]
    assert ignore == [False, False, True, True, True]
    assert sources == {1: 1}


def test_sparse_scribbles_speak_only_where_painted():
    pseudo = _layer([1, 1, 2, 2, 0], "pseudo", (1, 2), 1)
    scribble = _layer([IGNORE, 0, IGNORE, 1, IGNORE], "sparse", (1, 2), 2)
    labels, ignore, _ = _assemble(pseudo, scribble)
    # painted background clears the AI liver at index 1; painted liver replaces spleen at 3
    assert labels == [1, 0, 2, 1, 0]
    assert not any(ignore)


def test_sparse_alone_ignores_everything_unpainted():
    scribble = _layer([IGNORE, 0, 2, 1, IGNORE], "sparse", (1, 2), 1)
    labels, ignore, _ = _assemble(scribble)
    assert labels == [IGNORE, 0, 2, 1, IGNORE]
    assert ignore == [True, False, False, False, True]


def test_explicit_ignore_in_a_revision_masks_the_ai_until_a_class_is_assigned():
    pseudo = _layer([1, 1, 2, 0, 0], "pseudo", (1, 2), 1)
    revised = _layer([1, IGNORE, 2, IGNORE, 0], "revised", (1, 2), 2)
    labels, ignore, _ = _assemble(pseudo, revised)
    assert labels == [1, IGNORE, 2, IGNORE, 0]
    assert ignore == [False, True, False, True, False]
    original = _layer([0, 1, 0, 0, 0], "original", (1,), 3)
    assert _assemble(pseudo, revised, original)[0] == [0, 1, 2, IGNORE, 0]


def test_inputs_are_not_modified():
    pseudo = _layer([1, 1, 2, 0, 0], "pseudo", (1, 2), 1)
    before = pseudo.labels.copy()
    _assemble(pseudo, _layer([0, 0, 0, 0, 1], "revised", (1,), 2))
    np.testing.assert_array_equal(pseudo.labels, before)


def test_bad_layers_are_rejected():
    with pytest.raises(SegloopError, match="at least one"):
        assemble_labels([], n_classes=N, ignore_index=IGNORE)
    with pytest.raises(SegloopError, match="share one grid"):
        _assemble(_layer([0, 1], "pseudo", (1,), 1), _layer([0, 1, 0], "pseudo", (1,), 2))
    with pytest.raises(SegloopError, match="unknown label source 'ai'"):
        _assemble(_layer([0, 1], "ai", (1,), 1))
