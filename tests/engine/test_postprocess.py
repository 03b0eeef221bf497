"""Post-processing: each class keeps its largest component, decided on the validation cases."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.engine.checkpoint import read_checkpoint
from segloop.engine.config import TrainConfig
from segloop.engine.data import Case
from segloop.engine.infer import load_model, predict
from segloop.engine.postprocess import choose_keep_largest, count_components, keep_largest_component
from segloop.engine.train import train
from segloop.errors import InvalidInputError
from tests.engine.conftest import N_CLASSES, tiny_config


def test_each_class_keeps_its_largest_26_connected_component():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[0:3, 0:3, 0:3] = 1
    labels[3, 3, 3] = 1  # touches the block by a corner: the same component (26-connectivity)
    labels[8:10, 8:10, 8:10] = 1  # a second, smaller piece
    labels[6, 0, 0] = labels[9, 0, 0] = 2  # two single voxels of class 2
    kept = keep_largest_component(labels, [1])
    assert int((kept == 1).sum()) == 28 and (kept[8:10, 8:10, 8:10] == 0).all()
    np.testing.assert_array_equal(kept == 2, labels == 2)  # not asked: untouched
    assert int((labels == 1).sum()) == 36  # the input is left as it was
    assert count_components(keep_largest_component(labels, [1, 2]) == 2) == 1
    assert count_components(np.zeros((3, 3, 3), bool)) == 0


def test_a_class_keeps_it_only_if_its_references_are_one_piece_and_dice_does_not_drop():
    plain = np.array([[0.80, 0.50, 0.70, np.nan], [0.60, 0.50, 0.70, np.nan]])
    kept = np.array([[0.85, 0.50, 0.90, np.nan], [0.60, 0.40, 0.90, np.nan]])
    one_piece = np.array([[True, True, True, True], [True, True, False, True]])
    # class 1 gains, class 2 loses, class 3 gains but one reference has two pieces, class 4 unscored
    assert choose_keep_largest(plain, kept, one_piece) == (1,)


def test_training_decides_on_the_validation_cases_and_prediction_applies_it(cases, val_case, tmp_path):
    split = val_case.labels.copy()
    split[0:2, 0:2, 0:2] = 1  # class 1's reference now has a second piece in a corner
    two_pieces = Case("split", val_case.image, split, val_case.spacing)
    config = tiny_config(epochs=2)
    result = train(
        config, cases, [two_pieces], n_classes=N_CLASSES, device="cpu", checkpoint_path=tmp_path / "m.pt"
    )
    decided = result.config.keep_largest
    assert isinstance(decided, tuple) and 1 not in decided
    assert read_checkpoint(tmp_path / "m.pt")["config"]["keep_largest"] == list(decided)
    assert read_checkpoint(tmp_path / "m.pt")["requested_config"]["keep_largest"] is None

    off = train(config.replace(keep_largest=()), cases, [val_case], n_classes=N_CLASSES, device="cpu",
                checkpoint_path=tmp_path / "off.pt")  # fmt: skip
    assert off.config.keep_largest == ()

    model = load_model(tmp_path / "m.pt", "cpu")
    image = np.asarray(val_case.image)
    every = model.config.replace(keep_largest=(1, 2, 3, 4))
    plain = predict(
        model.network, image, val_case.spacing, model.config.replace(keep_largest=()), device="cpu"
    )
    post = predict(model.network, image, val_case.spacing, every, device="cpu")
    assert max(count_components(plain.labels == v) for v in range(1, N_CLASSES)) > 1  # a 2-epoch model
    assert all(count_components(post.labels == v) <= 1 for v in range(1, N_CLASSES))
    np.testing.assert_array_equal(post.probabilities, plain.probabilities)  # labels only
    changed = post.labels != plain.labels
    assert (post.labels[changed] == 0).all()  # removed pieces become background


def test_keep_largest_must_name_distinct_classes():
    with pytest.raises(InvalidInputError, match="keep_largest"):
        TrainConfig(keep_largest=(0,))
    with pytest.raises(InvalidInputError, match="keep_largest"):
        TrainConfig(keep_largest=(2, 2))
    assert TrainConfig.from_dict(TrainConfig(keep_largest=(1, 3)).to_dict()).keep_largest == (1, 3)
