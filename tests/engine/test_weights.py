"""Pretrained networks: SwinUNETR, and initial weights from a state dict or a MONAI bundle's model.pt."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from segloop.engine.checkpoint import read_checkpoint
from segloop.engine.config import TrainConfig
from segloop.engine.networks import build_network, size_divisor
from segloop.engine.train import train
from segloop.engine.weights import read_initial_weights, unwrap_state_dict
from segloop.errors import CorruptFileError, InvalidInputError
from tests.engine.conftest import N_CLASSES, tiny_config

SWIN = {"network": "swinunetr", "features": (12, 24, 48, 96, 192), "norm": "instance"}


def test_swinunetr_builds_2d_and_3d_on_sizes_of_multiples_of_32():
    config = TrainConfig(**SWIN)
    assert size_divisor(config) == 32
    net = build_network(config, 1, 3)
    assert tuple(net(torch.zeros(1, 1, 64, 96)).shape) == (1, 3, 64, 96)
    net3d = build_network(config.replace(dims=3), 1, 2).eval()
    with torch.no_grad():
        assert tuple(net3d(torch.zeros(1, 1, 64, 64, 64)).shape) == (1, 2, 64, 64, 64)


@pytest.mark.parametrize("features", [(16, 32, 64, 128, 256), (12, 24, 48, 96), (12, 24, 48, 96, 100)])
def test_swinunetr_features_must_double_from_a_multiple_of_12(features):
    with pytest.raises(InvalidInputError, match=r"features=.*\(f, 2f, 4f, 8f, 16f\)"):
        TrainConfig(network="swinunetr", features=features)


def test_swinunetr_needs_no_torchvision():
    """MONAI's swin_unetr imports torch, einops and MONAI blocks only: it builds with torchvision blocked."""
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torchvision':\n"
        "            raise ImportError('torchvision is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from segloop.engine.config import TrainConfig\n"
        "from segloop.engine.networks import build_network\n"
        f"build_network(TrainConfig(**{SWIN!r}), 1, 2)\n"
        "print('torchvision' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("wrap", ["plain", "model", "state_dict", "data_parallel"])
def test_a_state_dict_saved_by_torch_loads_as_initial_weights(tmp_path, wrap):
    config = tiny_config()
    torch.manual_seed(1)
    state = build_network(config, 1, N_CLASSES).state_dict()
    saved = {
        "plain": state,  # a MONAI bundle's models/model.pt: torch.save(net.state_dict())
        "model": {"model": state, "epoch": 3},
        "state_dict": {"state_dict": state},
        "data_parallel": {f"module.{k}": v for k, v in state.items()},
    }[wrap]
    torch.save(saved, tmp_path / "model.pt")
    loaded = read_initial_weights(tmp_path / "model.pt", config, n_classes=N_CLASSES)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_mismatched_weights_are_refused_in_one_line_naming_the_keys(tmp_path):
    config = tiny_config()
    other_classes = build_network(config, 1, N_CLASSES + 2).state_dict()
    torch.save(other_classes, tmp_path / "classes.pt")
    with pytest.raises(
        InvalidInputError, match=r"do not fit this unet network: \d+ of another shape \("
    ) as error:
        read_initial_weights(tmp_path / "classes.pt", config, n_classes=N_CLASSES)
    assert "\n" not in str(error.value) and f"({N_CLASSES + 2}," in str(error.value)
    swin = build_network(TrainConfig(**SWIN), 1, N_CLASSES).state_dict()
    torch.save(swin, tmp_path / "swin.pt")
    with pytest.raises(
        InvalidInputError, match=r"\d+ missing \(.*, \.\.\.\); \d+ unexpected \(swinViT"
    ) as error:
        read_initial_weights(tmp_path / "swin.pt", config, n_classes=N_CLASSES)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("payload", "message"),
    [([1, 2], "hold list"), ({"model": {"w": 1}}, "not only of tensors"), ({}, "not only of tensors")],
)
def test_files_without_a_state_dict_are_refused(tmp_path, payload, message):
    torch.save(payload, tmp_path / "w.pt")
    with pytest.raises(InvalidInputError, match=message):
        read_initial_weights(tmp_path / "w.pt", tiny_config(), n_classes=N_CLASSES)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CorruptFileError, match="MONAI bundle's model.pt"):
        read_initial_weights(tmp_path / "junk.pt", tiny_config(), n_classes=N_CLASSES)


def test_unwrap_keeps_names_without_a_common_module_prefix():
    state = {"module.a": torch.zeros(1), "b": torch.zeros(1)}
    assert list(unwrap_state_dict(state, "x.pt")) == ["module.a", "b"]


def test_training_starts_from_a_plain_state_dict(cases, tmp_path):
    config = tiny_config(epochs=1, learning_rate=1e-12)
    torch.manual_seed(5)
    state = build_network(config, 1, N_CLASSES).state_dict()
    torch.save(state, tmp_path / "model.pt")
    train(
        config,
        cases,
        n_classes=N_CLASSES,
        device="cpu",
        checkpoint_path=tmp_path / "m.pt",
        init_weights=tmp_path / "model.pt",
    )
    trained = read_checkpoint(tmp_path / "m.pt")["model_state"]
    weights = [k for k in state if "running_" not in k and "num_batches" not in k]
    assert weights and all(torch.allclose(state[k], trained[k], atol=1e-6) for k in weights)
