"""`export --attention` and `train --network/--features/--init-weights`: outcomes and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from segloop.io import read_volume
from segloop.loop.ranking import attention_volume
from segloop.store import Project
from tests.loop.conftest import phantom_project
from tests.loop.test_ranking import add_prediction, blur_block, confident, start_model


@pytest.fixture
def project(tmp_path):
    return phantom_project(tmp_path, n_cases=2, n_labeled=1)


def test_export_attention_writes_the_map_on_the_case_grid(run_cli, project, tmp_path):
    case = project.get_case("c1")
    probabilities = confident(np.zeros(case.shape, np.uint8), project.config.schema.ignore_index)
    add_prediction(
        project, "c1", blur_block(probabilities, 1, (slice(2, 12),) * 3), model_id=start_model(project)
    )
    result = run_cli("export", project.root, "c1", "--attention", tmp_path / "att.nii.gz")
    assert result.code == 0, result.err
    written = read_volume(tmp_path / "att.nii.gz")
    assert written.spatial_shape == case.shape and np.allclose(written.affine, case.affine)
    assert np.array_equal(written.array, attention_volume(project, "c1").array)
    assert int((written.array > 0).sum()) == 1000 and "1000" in result.out
    again = run_cli("export", project.root, "c1", "--attention", tmp_path / "att.nii.gz")
    assert again.code == 1 and again.err.count("\n") == 1  # an existing file needs --force


def test_export_attention_without_prediction_or_output_is_one_line(run_cli, project, tmp_path):
    result = run_cli("export", project.root, "c0", "--attention", tmp_path / "att.nii.gz")
    assert result.code == 1 and "no stored prediction" in result.err and result.err.count("\n") == 1
    assert not (tmp_path / "att.nii.gz").exists()
    nothing = run_cli("export", project.root, "c0")
    assert nothing.code != 0 and "--attention" in nothing.err and "Traceback" not in nothing.err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--features", "16,x"], "features: expected at least 2 whole numbers"),
        (["--network", "resnet"], "network='resnet' is not valid"),
        (["--network", "swinunetr", "--features", "16,32,64,128,256"], r"(f, 2f, 4f, 8f, 16f)"),
    ],
)
def test_bad_network_options_are_one_line_and_record_nothing(run_cli, project, options, message):
    result = run_cli("train", project.root, "--epochs", "1", *options)
    assert result.code == 1 and message in result.err and result.err.count("\n") == 1
    assert Project.open(project.root).list_models() == []


def test_init_weights_of_another_network_name_the_keys(run_cli, project, tmp_path):
    import torch

    from segloop.engine.config import TrainConfig
    from segloop.engine.networks import build_network

    swin = TrainConfig(network="swinunetr", features=(12, 24, 48, 96, 192), norm="instance")
    torch.save(build_network(swin, 1, 3).state_dict(), tmp_path / "model.pt")
    result = run_cli("train", project.root, "--epochs", "1", "--init-weights", tmp_path / "model.pt")
    assert result.code == 1 and result.err.count("\n") == 1
    assert "do not fit this dynunet network" in result.err and "unexpected (swinViT" in result.err
    assert Project.open(project.root).list_models() == []
