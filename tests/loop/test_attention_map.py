"""The attention map a reviewer opens beside the label (`attention_volume`, `segloop export --attention`)."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.errors import InvalidInputError, NotFoundError
from segloop.io import read_volume, write_volume
from segloop.loop.ranking import attention_volume, compute_attention
from segloop.metrics import binary_entropy
from tests.loop.test_ranking import SHAPE, add_prediction, blur_block, confident, start_model
from tests.loop.test_ranking import project as project

BOX_1 = (slice(2, 10), slice(2, 10), slice(2, 10))
BOX_2 = (slice(20, 26), slice(20, 26), slice(8, 14))


def test_heat_is_the_entropy_of_each_class_on_its_flagged_voxels():
    p = confident(np.zeros(SHAPE, np.uint8), 3)
    p = blur_block(p, 1, BOX_1, p=0.5)
    p = blur_block(p, 2, BOX_2, p=0.2)
    attention = compute_attention([p], [1, 2])
    assert attention.heat.dtype == np.float32 and attention.heat.shape == SHAPE
    assert np.array_equal(attention.heat > 0, attention.flagged)
    assert np.allclose(attention.heat[BOX_1], 1.0)  # p = 0.5: one bit
    assert np.allclose(attention.heat[BOX_2], binary_entropy(np.float32(0.2)), atol=1e-6)
    assert sum(c.attention for c in attention.classes) == pytest.approx(float(attention.heat.sum()), rel=1e-5)


def test_two_models_add_their_disagreement_to_the_heat():
    p = confident(np.zeros(SHAPE, np.uint8), 2)
    q = blur_block(p, 1, BOX_1, p=0.9)  # confident, but far from p's 0
    attention = compute_attention([q, p], [1])
    entropy = binary_entropy(np.float32(0.9))
    assert np.allclose(attention.heat[BOX_1], entropy + 0.45, atol=1e-5)  # std of (0.9, 0) is 0.45


def test_attention_volume_is_on_the_case_grid_and_round_trips_through_nifti(project, tmp_path):
    model = start_model(project)
    p = confident(np.zeros(SHAPE, np.uint8), project.config.schema.ignore_index)
    p = blur_block(p, 2, BOX_2)
    add_prediction(project, "c1", p, model_id=model)
    volume = attention_volume(project, "c1")
    case = project.get_case("c1")
    assert volume.spatial_shape == case.shape and np.allclose(volume.affine, case.affine)
    assert volume.meta["classes"] == [
        {"class": project.config.schema.name_of(2), "flagged_voxels": 216, "attention": 216.0}
    ]
    written = read_volume(write_volume(volume, tmp_path / "attention.nii.gz"))
    assert np.array_equal(written.array, volume.array) and np.allclose(written.affine, case.affine)


def test_attention_of_a_case_without_prediction_or_of_unknown_classes_is_refused(project):
    with pytest.raises(NotFoundError, match="c0.*no stored prediction.*segloop predict"):
        attention_volume(project, "c0")
    model = start_model(project)
    add_prediction(project, "c0", confident(np.zeros(SHAPE, np.uint8), 5), model_id=model)
    with pytest.raises(InvalidInputError):
        attention_volume(project, "c0", classes=["no_such_class"])
