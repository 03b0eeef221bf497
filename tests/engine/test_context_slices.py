"""2.5D input: neighbouring slices as channels, in the sampler, in prediction and through checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segloop.engine.config import InferConfig
from segloop.engine.data import Case, PatchSampler, compress_case, context_indices, prepare_case
from segloop.engine.infer import load_model, predict
from segloop.engine.networks import build_network
from segloop.engine.train import train
from segloop.errors import InvalidInputError
from tests.engine.conftest import N_CLASSES, tiny_config


def _slice_numbered(case: Case) -> Case:
    """The case with each voxel's image value = its slice index along axis 2 (labels kept)."""
    image = np.broadcast_to(np.arange(case.image.shape[2], dtype=np.int16), case.image.shape).copy()
    return Case(case.case_id, image, case.labels, case.spacing)


def _sampler(cases, **changes) -> PatchSampler:
    config = tiny_config(window=(1000.0, 500.0), intensity_augmentation=False, batch_size=16, **changes)
    prepared = [prepare_case(c, config, N_CLASSES) for c in cases]
    return PatchSampler(prepared, config, n_classes=N_CLASSES, patch_size=(32, 32), slice_axis=2, seed=0)


def test_context_indices_repeat_the_end_slices():
    assert context_indices(0, 2, 4).tolist() == [0, 0, 0, 1, 2]
    assert context_indices(np.array([[3]]), 1, 4).shape == (1, 1, 3)
    assert context_indices(np.array([1, 2]), 0, 4).tolist() == [[1], [2]]


@pytest.mark.parametrize("compressed", [False, True])
def test_sampled_channels_are_the_neighbouring_slices(cases, compressed):
    numbered = [_slice_numbered(c) for c in cases]
    if compressed:
        numbered = [compress_case(c, 2) for c in numbered]
    images, _ = _sampler(numbered, context_slices=2).sample()
    assert images.shape == (16, 5, 32, 32)
    slices = torch.round(images[:, :, 0, 0] * 1000.0).long()  # window 0..1000 -> slice index
    centre = slices[:, 2:3]
    expected = torch.clamp(centre + torch.arange(-2, 3), 0, cases[0].image.shape[2] - 1)
    assert torch.equal(slices, expected)
    # the centre channel and the labels are the samples of a one-slice sampler with the same seed
    single_images, single_labels = _sampler(numbered).sample()
    context_images, context_labels = _sampler(numbered, context_slices=2).sample()
    assert torch.equal(context_images[:, 2:3], single_images)
    assert torch.equal(context_labels, single_labels)


def test_context_slices_is_a_two_dimensional_option():
    with pytest.raises(InvalidInputError, match="context_slices"):
        tiny_config(dims=3, context_slices=1)
    with pytest.raises(InvalidInputError, match="context_slices"):
        tiny_config(context_slices=-1)
    assert tiny_config(context_slices=2).in_channels == 5


def test_prediction_stacks_the_neighbours_like_training(cases):
    config = tiny_config(context_slices=1, slice_axis=2, patch_size=(32, 32))
    torch.manual_seed(0)
    network = build_network(config, config.in_channels, N_CLASSES).eval()
    case = cases[0]
    prediction = predict(network, case.image, case.spacing, config, InferConfig(batch_size=5), device="cpu")
    volume = np.clip((case.image.astype(np.float32) + 160.0) / 400.0, 0.0, 1.0)  # the CT window
    slices = torch.from_numpy(np.moveaxis(volume, 2, 0).copy())
    stacked = slices[torch.from_numpy(context_indices(np.arange(slices.shape[0]), 1, slices.shape[0]))]
    with torch.no_grad():
        expected = torch.softmax(network(stacked), 1).movedim(0, -1)  # (C, I, J, K)
    np.testing.assert_allclose(prediction.probabilities.astype(np.float32), expected.numpy(), atol=2e-3)


def test_a_model_trained_with_context_predicts_with_context(cases, val_case, tmp_path):
    config = tiny_config(context_slices=1)
    result = train(
        config, cases, [val_case], n_classes=N_CLASSES, device="cpu", checkpoint_path=tmp_path / "m.pt"
    )
    model = load_model(result.checkpoint_path, "cpu")
    assert (model.in_channels, model.config.context_slices) == (3, 1)
    prediction = predict(model.network, val_case.image, val_case.spacing, model.config, device="cpu")
    assert prediction.labels.shape == val_case.image.shape
    with pytest.raises(InvalidInputError, match="channel"):  # weights of 3 channels do not fit 1 channel
        train(
            tiny_config(),
            cases,
            n_classes=N_CLASSES,
            device="cpu",
            checkpoint_path=tmp_path / "other.pt",
            init_weights=result.checkpoint_path,
        )
