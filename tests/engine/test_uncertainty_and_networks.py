from __future__ import annotations

import numpy as np
import pytest
import torch

from segloop.engine.config import TrainConfig
from segloop.engine.device import resolve_device
from segloop.engine.networks import build_network
from segloop.engine.uncertainty import disagreement, voxel_entropy
from segloop.errors import SegloopError


def test_voxel_entropy_is_zero_for_certain_and_one_for_uniform_voxels(rng):
    probabilities = np.zeros((4, 3))
    probabilities[1, 0] = 1.0  # certain
    probabilities[:, 1] = 0.25  # uniform
    probabilities[:2, 2] = 0.5  # two-way tie: log 2 / log 4
    assert np.allclose(voxel_entropy(probabilities), [0.0, 1.0, 0.5], atol=1e-6)
    random = rng.dirichlet(np.ones(5), size=100).T
    values = voxel_entropy(random)
    assert values.dtype == np.float32 and values.min() >= 0.0 and values.max() <= 1.0


def test_uncertainty_functions_keep_tensors_as_tensors_and_do_not_modify_inputs():
    probabilities = torch.softmax(torch.randn(3, 4, 4), 0)
    copy = probabilities.clone()
    assert isinstance(voxel_entropy(probabilities), torch.Tensor)
    assert torch.equal(probabilities, copy)


def test_disagreement_is_zero_when_samples_agree():
    same = np.tile(np.array([[0.2], [0.8]])[None], (3, 1, 1))
    assert np.allclose(disagreement(same), 0.0)
    assert np.allclose(disagreement(np.array([[[0.0], [1.0]], [[1.0], [0.0]]])), 0.5)


@pytest.mark.parametrize("network", ["unet", "dynunet"])
@pytest.mark.parametrize("dims", [2, 3])
def test_build_network_gives_logits_of_every_class(network, dims):
    config = TrainConfig(dims=dims, network=network, features=(4, 8, 16), dropout=0.1)
    net = build_network(config, 1, 3)
    output = net(torch.zeros((1, 1) + (16,) * dims))
    assert output.shape == (1, 3) + (16,) * dims


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(SegloopError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(SegloopError, match="no CUDA GPU"):
            resolve_device("cuda")
