"""`segloop train --patch-size / --batch-size`: the training crop and batch (seed 004's CPU-sized runs).

A run that trains with them is recipe 5's test (`tests/recipes/test_recipe_5_semseg.py`)."""

from __future__ import annotations

import pytest

from segloop.errors import InvalidInputError
from segloop.loop.training import parse_patch_size, train_config
from segloop.store import Project
from tests.conftest import snapshot_project
from tests.loop.conftest import phantom_project


@pytest.fixture
def project(tmp_path):
    return phantom_project(tmp_path, n_cases=2, n_labeled=2)


@pytest.mark.parametrize("text", ["256", "256,x", "4,4", "1,2,3,4", "-8,8", "", "16.5,16"])
def test_a_bad_patch_size_names_what_was_expected(text):
    with pytest.raises(InvalidInputError, match="expected 2 or 3 whole numbers >= 8") as caught:
        parse_patch_size(text)
    assert repr(text) in str(caught.value)


def test_the_crop_and_batch_reach_the_config(project):
    config = train_config(project, patch_size=parse_patch_size("32, 24"), batch_size=3)
    assert (config.patch_size, config.batch_size, config.dims) == ((32, 24), 3, 2)


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--patch-size", "32"], "expected 2 or 3 whole numbers"),
        (["--patch-size", "32,32,32"], "patch_size"),  # 3 sizes for a 2D network
        (["--batch-size", "0"], "batch_size"),
    ],
)
def test_bad_crop_options_are_one_line_and_train_nothing(run_cli, project, options, said):
    before = snapshot_project(project.root)
    result = run_cli("train", project.root, "--epochs", "1", *options)
    assert result.code == 1 and result.err.startswith("error: ") and result.err.count("\n") == 1
    assert said in result.err and "Traceback" not in result.err
    assert snapshot_project(project.root) == before and Project.open(project.root).list_models() == []
