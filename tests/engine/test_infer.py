from __future__ import annotations

import numpy as np
import pytest
import torch

from segloop.engine.config import InferConfig
from segloop.engine.infer import load_model, predict
from segloop.engine.networks import build_network
from segloop.engine.train import train
from segloop.errors import NotFoundError, SegloopError
from tests.engine.conftest import N_CLASSES, tiny_config


@pytest.fixture(scope="module")
def model_2d(cases, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.pt"
    train(
        tiny_config(dropout=0.2, norm="batch"), cases, n_classes=N_CLASSES, device="cpu", checkpoint_path=path
    )
    return load_model(path, "cpu")


def test_load_model_returns_the_resolved_config_in_eval_mode(model_2d):
    assert model_2d.config.slice_axis == 2 and model_2d.config.patch_size == (20, 20)  # 5/8 of 32² slices
    assert model_2d.n_classes == N_CLASSES and not model_2d.network.training
    with pytest.raises(NotFoundError, match="does not exist"):
        load_model("/nonexistent/model.pt", "cpu")


def test_predict_shapes_and_dtypes(model_2d, val_case):
    prediction = predict(model_2d.network, val_case.image, val_case.spacing, model_2d.config, device="cpu")
    assert prediction.labels.shape == val_case.image.shape and prediction.labels.dtype == np.uint8
    assert prediction.probabilities.shape == (N_CLASSES, *val_case.image.shape)
    assert prediction.probabilities.dtype == np.float16 and prediction.entropy.dtype == np.float16
    assert prediction.disagreement is None and prediction.passes == 1
    assert prediction.probabilities.flags.c_contiguous and prediction.labels.flags.c_contiguous
    sums = prediction.probabilities.astype(np.float32).sum(0)
    assert np.allclose(sums, 1.0, atol=1e-2)
    assert np.array_equal(prediction.labels, prediction.probabilities.astype(np.float32).argmax(0)) or (
        np.mean(prediction.labels == prediction.probabilities.argmax(0)) > 0.99  # float16 ties
    )


def test_entropy_lies_in_zero_one(model_2d, val_case):
    prediction = predict(model_2d.network, val_case.image, val_case.spacing, model_2d.config, device="cpu")
    assert float(prediction.entropy.min()) >= 0.0 and float(prediction.entropy.max()) <= 1.0
    assert float(prediction.entropy.max()) > 0.0


def test_flip_tta_averages_passes_and_gives_disagreement(model_2d, val_case):
    infer_config = InferConfig(tta_flips=(0, 1, 2))  # axis 2 is the slice axis: skipped in 2D
    prediction = predict(
        model_2d.network, val_case.image, val_case.spacing, model_2d.config, infer_config, device="cpu"
    )
    assert prediction.passes == 4
    assert prediction.disagreement.shape == val_case.image.shape
    assert float(prediction.disagreement.max()) > 0.0


def test_mc_dropout_leaves_batch_norm_statistics_and_modes_untouched(model_2d, val_case):
    network = model_2d.network
    before = {k: v.clone() for k, v in network.state_dict().items()}
    modes = [m.training for m in network.modules()]
    infer_config = InferConfig(mc_dropout_samples=3)
    prediction = predict(
        network, val_case.image, val_case.spacing, model_2d.config, infer_config, device="cpu"
    )
    after = network.state_dict()
    assert any("running_mean" in k for k in before)
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats, num_batches_tracked
    assert [m.training for m in network.modules()] == modes
    assert prediction.passes == 3 and float(prediction.disagreement.max()) > 0.0  # dropout really sampled


def test_mc_dropout_on_a_network_without_dropout_fails_clearly(val_case):
    config = tiny_config(slice_axis=2)
    network = build_network(config, 1, N_CLASSES)
    with pytest.raises(SegloopError, match="no dropout"):
        predict(
            network, val_case.image, val_case.spacing, config, InferConfig(mc_dropout_samples=2), device="cpu"
        )


def test_prediction_with_a_target_spacing_comes_back_on_the_input_grid(cases, val_case, tmp_path):
    config = tiny_config(target_spacing=(2.0, 2.0, 3.0), epochs=1)
    train(config, cases, n_classes=N_CLASSES, device="cpu", checkpoint_path=tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt", "cpu")
    odd = val_case.image[:30, :29]  # not a multiple of the network's size divisor
    prediction = predict(model.network, odd, val_case.spacing, model.config, device="cpu")
    assert prediction.labels.shape == odd.shape
    assert prediction.probabilities.shape == (N_CLASSES, *odd.shape)


def test_three_dimensional_sliding_window_prediction(cases, val_case, tmp_path):
    config = tiny_config(dims=3, patch_size=(16, 16, 16), epochs=1, steps_per_epoch=1)
    train(config, cases, n_classes=N_CLASSES, device="cpu", checkpoint_path=tmp_path / "m.pt")
    model = load_model(tmp_path / "m.pt", "cpu")
    infer_config = InferConfig(tta_flips=(0,), batch_size=4)
    prediction = predict(
        model.network, val_case.image, val_case.spacing, model.config, infer_config, device="cpu"
    )
    assert prediction.probabilities.shape == (N_CLASSES, 32, 32, 16) and prediction.passes == 2


def test_predict_rejects_bad_images_and_unresolved_configs(model_2d):
    with pytest.raises(SegloopError, match=r"\(I, J, K\)"):
        predict(model_2d.network, np.zeros((4, 4)), (1.0, 1.0), model_2d.config, device="cpu")
    with pytest.raises(SegloopError, match="unresolved"):
        predict(model_2d.network, np.zeros((8, 8, 8)), (1.0, 1.0, 1.0), tiny_config(), device="cpu")
