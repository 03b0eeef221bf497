from __future__ import annotations

import json
import subprocess
import sys

import pytest

from segloop.engine.config import InferConfig, TrainConfig
from segloop.errors import SegloopError


def test_train_config_round_trips_through_json():
    config = TrainConfig(
        dims=3, patch_size=(32, 32, 16), target_spacing=(1.0, 1.0, 2.0), validation_case_ids=("a",)
    )
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_infer_config_round_trips_through_json():
    config = InferConfig(tta_flips=(0, 1), mc_dropout_samples=4, overlap=0.5)
    assert InferConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"dims": 4}, "dims=4"),
        ({"network": "resnet"}, "network='resnet'"),
        ({"dims": 3, "patch_size": (64, 64)}, "patch_size"),
        ({"dims": 2, "patch_size": (64, 64, 64)}, "patch_size"),
        ({"epochs": None, "time_budget_min": None}, "epochs"),
        ({"modality": "PET"}, "modality"),
        ({"foreground_ratio": 1.5}, "foreground_ratio"),
        ({"dropout": 1.0}, "dropout"),
        ({"window": (0.0, 40.0)}, "window"),
        ({"network": "dynunet", "features": (8, 16)}, "features"),
        ({"cpu_bfloat16": "yes"}, "cpu_bfloat16='yes'"),
        ({"amp": 1}, "amp=1"),
    ],
)
def test_train_config_rejects_bad_values_with_one_line(changes, field):
    with pytest.raises(SegloopError, match=r"expected") as error:
        TrainConfig(**changes)
    assert field in str(error.value)
    assert "\n" not in str(error.value)


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(SegloopError, match="no field epoch_count"):
        TrainConfig.from_dict({"epoch_count": 3})


def test_infer_config_rejects_bad_values():
    with pytest.raises(SegloopError, match="tta_flips"):
        InferConfig(tta_flips=(3,))
    with pytest.raises(SegloopError, match="overlap"):
        InferConfig(overlap=1.0)


def test_importing_the_engine_and_its_config_does_not_import_torch():
    code = "import sys, segloop.engine, segloop.engine.config; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
