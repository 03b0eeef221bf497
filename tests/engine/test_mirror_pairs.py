"""Left-right mirroring that swaps paired classes: training samples and test-time augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segloop.engine.config import InferConfig, TrainConfig
from segloop.engine.data import Case, PatchSampler, prepare_case, swap_table
from segloop.engine.infer import predict
from segloop.errors import InvalidInputError
from tests.engine.conftest import tiny_config

N_CLASSES = 4  # background, right organ (1, on the image's low-I side), left organ (2), a middle one (3)
LATERAL = 0


def _lateral_case(shape=(24, 16, 6)) -> Case:
    """Bright blobs: class 1 at low I, class 2 at high I (a right / left pair), class 3 in the middle."""
    labels = np.zeros(shape, np.uint8)
    labels[3:7, 5:11, :] = 1
    labels[17:21, 5:11, :] = 2
    labels[10:14, 2:5, :] = 3
    image = np.where(labels > 0, 100, -500).astype(np.int16)
    return Case("lateral", image, labels, (1.0, 1.0, 3.0))


def _sampler(**changes) -> PatchSampler:
    config = tiny_config(flip_axes=(LATERAL,), batch_size=64, foreground_ratio=1.0, **changes)
    prepared = [prepare_case(_lateral_case(), config, N_CLASSES)]
    return PatchSampler(prepared, config, n_classes=N_CLASSES, patch_size=(24, 16), slice_axis=2, seed=0)


def _sides(labels: torch.Tensor, value: int) -> set[str]:
    """Where class ``value`` lies along I in each sample: 'low' and/or 'high' half."""
    found = set()
    for sample in labels:
        rows = torch.nonzero(sample == value)[:, 0]
        if rows.numel():
            found.add("low" if float(rows.float().mean()) < sample.shape[0] / 2 else "high")
    return found


def test_mirroring_with_pairs_keeps_each_class_on_its_side():
    _, labels = _sampler(lateral_axis=LATERAL, mirror_pairs=((1, 2),)).sample()
    assert _sides(labels, 1) == {"low"} and _sides(labels, 2) == {"high"}
    assert set(torch.unique(labels).tolist()) <= {0, 1, 2, 3, N_CLASSES}


def test_mirroring_without_pairs_flips_without_swapping():
    _, labels = _sampler(lateral_axis=LATERAL).sample()
    assert _sides(labels, 1) == {"low", "high"}  # some samples were mirrored, classes unchanged
    _, images_only = _sampler().sample()
    assert _sides(images_only, 1) == {"low", "high"}


def test_pairs_are_validated_in_one_line():
    with pytest.raises(InvalidInputError, match="lateral_axis"):
        tiny_config(mirror_pairs=((1, 2),))
    with pytest.raises(InvalidInputError, match="one pair at most"):
        tiny_config(lateral_axis=0, mirror_pairs=((1, 2), (2, 3)))
    with pytest.raises(InvalidInputError, match="mirror_pairs"):
        tiny_config(lateral_axis=0, mirror_pairs=((1, 1),))
    with pytest.raises(InvalidInputError, match=r"values in 1\.\.4"):
        swap_table(5, [(1, 5)])
    config = tiny_config(lateral_axis=0, mirror_pairs=((1, 2),))
    assert TrainConfig.from_dict(config.to_dict()) == config  # lists back to tuples of tuples


class _SideNet(torch.nn.Module):
    """Labels bright voxels by side: class 1 in the low-I half, class 2 in the high-I half (2D, I first)."""

    out_channels = N_CLASSES

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        bright = (batch[:, :1] > 0.5).float()
        low = (torch.arange(batch.shape[2]) < batch.shape[2] / 2).float().reshape(1, 1, -1, 1)
        logits = torch.cat([1 - bright, bright * low, bright * (1 - low), torch.zeros_like(bright)], 1)
        return 8.0 * logits


def _predict(tta: tuple[int, ...], **changes) -> np.ndarray:
    case = _lateral_case()
    config = tiny_config(slice_axis=2, patch_size=(32, 16), **changes)
    infer = InferConfig(tta_flips=tta)
    return predict(_SideNet(), case.image, case.spacing, config, infer, device="cpu").probabilities


def test_tta_swaps_the_mirrored_pass_back():
    plain = _predict(())
    paired = _predict((LATERAL,), lateral_axis=LATERAL, mirror_pairs=((1, 2),))
    np.testing.assert_allclose(paired.astype(np.float32), plain.astype(np.float32), atol=1e-3)
    unpaired = _predict((LATERAL,))  # mirrored without swapping: the right organ half called left
    bright = _lateral_case().labels == 1
    assert float(unpaired[1][bright].mean()) == pytest.approx(0.5, abs=0.01)
    assert float(plain[1][bright].mean()) > 0.99


def test_a_model_trained_mirrored_predicts_with_its_mirror_by_default():
    case = _lateral_case()
    mirrored = tiny_config(
        slice_axis=2, patch_size=(32, 16), flip_axes=(LATERAL,), lateral_axis=LATERAL, mirror_pairs=((1, 2),)
    )
    default = predict(_SideNet(), case.image, case.spacing, mirrored, InferConfig(), device="cpu")
    once = predict(_SideNet(), case.image, case.spacing, mirrored, InferConfig(tta_flips=()), device="cpu")
    plain = predict(_SideNet(), case.image, case.spacing, mirrored.replace(flip_axes=()), device="cpu")
    assert (default.passes, once.passes, plain.passes) == (2, 1, 1)
    flags = [InferConfig.from_tta_flag(flag).tta_flips for flag in (None, True, False)]
    assert flags == [None, (0,), ()]
