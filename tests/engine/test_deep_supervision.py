"""nnU-Net's deep supervision for DynUNet: extra heads trained, weighted 1, 1/2, ...; one output predicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segloop.engine.config import TrainConfig
from segloop.engine.infer import load_model, predict
from segloop.engine.losses import dice_ce_loss, supervised_loss
from segloop.engine.networks import build_network
from segloop.engine.train import train
from segloop.errors import InvalidInputError
from tests.engine.conftest import N_CLASSES, tiny_config


@pytest.mark.parametrize(
    "changes",
    [
        {"deep_supervision": 1},  # the default UNet has no deep-supervision heads
        {"network": "dynunet", "features": (4, 8, 16), "deep_supervision": 2},  # > levels - 2
        {"network": "dynunet", "deep_supervision": -1},
        {"network": "dynunet", "deep_supervision": True},
        {"network": "dynunet", "deep_supervision": "2"},
    ],
)
def test_deep_supervision_outside_dynunet_or_its_depth_is_refused(changes):
    with pytest.raises(InvalidInputError, match="deep_supervision=.* expected an int in 0..") as error:
        TrainConfig(**changes)
    assert "\n" not in str(error.value)


def test_the_network_trains_two_heads_more_and_predicts_with_one():
    config = TrainConfig(network="dynunet", features=(4, 8, 16, 32), deep_supervision=2)
    network = build_network(config, 1, 3)
    network.train()
    assert tuple(network(torch.zeros(2, 1, 16, 16)).shape) == (2, 3, 3, 16, 16)
    network.eval()
    assert tuple(network(torch.zeros(2, 1, 16, 16)).shape) == (2, 3, 16, 16)
    assert "deep_supervision" in config.architecture()


def test_the_loss_weights_heads_one_half_a_quarter_normalised_each_at_its_own_resolution():
    torch.manual_seed(0)
    labels = torch.randint(0, 4, (2, 8, 8))  # 3 = ignore
    heads = torch.randn(2, 3, 3, 8, 8)
    parts = [
        dice_ce_loss(heads[:, i, :, :: 2**i, :: 2**i], labels[:, :: 2**i, :: 2**i], ignore_index=3)
        for i in range(3)
    ]
    expected = (parts[0] + parts[1] / 2 + parts[2] / 4) / 1.75
    assert torch.isclose(supervised_loss(heads, labels, ignore_index=3), expected)
    assert torch.isclose(supervised_loss(heads[:, 0], labels, ignore_index=3), parts[0])


def test_a_deeply_supervised_model_trains_saves_loads_and_predicts(cases, val_case, tmp_path):
    config = tiny_config(network="dynunet", deep_supervision=1)
    path = tmp_path / "m.pt"
    result = train(config, cases, [val_case], n_classes=N_CLASSES, device="cpu", checkpoint_path=path)
    model = load_model(path, "cpu")
    prediction = predict(model.network, val_case.image, val_case.spacing, model.config, device="cpu")
    assert model.config.deep_supervision == 1
    assert result.best_metric is not None and np.isfinite(result.best_metric)
    assert prediction.labels.shape == val_case.image.shape
    assert np.all(np.isfinite(result.history[-1]["loss"]))


def test_every_2_to_the_i_th_voxel_of_an_upsampled_head_is_dynunets_own_coarse_head():
    torch.manual_seed(0)
    network = build_network(TrainConfig(network="dynunet", deep_supervision=2, features=(4, 8, 16, 32)), 1, 3)
    stacked = network.train()(torch.rand(2, 1, 32, 32))
    for level, native in enumerate(network.heads, start=1):
        assert torch.equal(stacked[:, level, :, :: 2**level, :: 2**level], native)
