"""Recipe 4 (MemBrain-seg, seed 003): ISBI's serial sections as an MRC tomogram, 160³ patches with a
16-voxel ignore border, Add/Remove/Ignore corrections merged back, 3D training on the patches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segloop.io import read_volume
from segloop.metrics import dice
from segloop.store import Project
from tests.conftest import SHARED_DATA
from tests.recipes.conftest import run_recipe

ISBI = SHARED_DATA / "isbi2012-em-membranes"
IGNORE = 2  # schema: 0 background, 1 membrane, 2 ignore


@pytest.mark.slow
def test_recipe_4_membrain_patches(tmp_path: Path):
    output = " ".join(run_recipe(4, tmp_path).stdout.split())
    assert output.count("size [160, 160, 30] (the whole axis 2: the case is shorter than 160)") == 2
    assert "voxel size 40 x 40 x 500 Å" in output  # segloop info reads the MRC header back

    # the MRC tomogram: the 30 sections in order, ISBI's 4 x 4 x 50 nm voxel size in Å, round trip exact
    tomogram = read_volume(tmp_path / "tomo.mrc")
    sections = [read_volume(path).array[..., 0] for path in sorted((ISBI / "images").glob("*.png"))]
    np.testing.assert_array_equal(tomogram.array, np.stack(sections, axis=-1))
    assert tomogram.meta["voxel_size_angstrom"] == (40.0, 40.0, 500.0)
    assert tomogram.spacing == pytest.approx((4e-6, 4e-6, 5e-5))
    truth = read_volume(tmp_path / "reference.mrc").array == 0  # ISBI: 0 = membrane

    project = Project.open(tmp_path / "em")
    pseudo, revised, prediction = project.list_label_versions()
    assert (pseudo.source, revised.source, prediction.source) == ("pseudo", "revised", "pseudo")
    assert revised.parent_id == pseudo.id and revised.tool == "patch-corrections"
    start = project.read_labels(pseudo)
    stored = project.read_labels(revised)

    # patches: 160 wide, the whole 30-section axis deep; 16-voxel ignore border on inside faces only
    coverage = np.zeros(truth.shape, bool)
    unsure = np.zeros(truth.shape, bool)
    manifests = sorted((tmp_path / "patches" / "manifests").glob("*.json"))
    assert [p["patch"] for p in revised.params["patches"]] == [m.stem for m in manifests]
    for n, path in enumerate(manifests):
        manifest = json.loads(path.read_text())
        assert manifest["size"] == [160, 160, 30] and manifest["border_voxels"] == 16
        (i, j, _), label = manifest["offset"], read_volume(tmp_path / "patches" / manifest["files"]["label"])
        image = read_volume(tmp_path / "patches" / manifest["files"]["image"])
        assert label.array.shape == image.array.shape == (160, 160, 30)
        np.testing.assert_array_equal(image.array, tomogram.array[i : i + 160, j : j + 160])
        np.testing.assert_allclose(label.affine[:3, 3], tomogram.affine[:3, :3] @ [i, j, 0])
        border = np.ones((160, 160, 30), bool)
        border[16:-16, 16:-16, :] = False  # the top and bottom faces are the volume's own: no border
        assert np.all(label.array[border] == IGNORE)
        np.testing.assert_array_equal(label.array[~border], start[i : i + 160, j : j + 160][~border])
        coverage[i + 16 : i + 144, j + 16 : j + 144, :] = True
        if n == 0:
            unsure[i + 72 : i + 88, j + 72 : j + 88, :8] = True

    # merged: voxel-exact the reference inside the reviewed part, Ignore where marked, nothing outside
    inside = coverage & ~unsure
    np.testing.assert_array_equal(stored[inside], truth[inside].astype(stored.dtype))
    assert np.all(stored[unsure] == IGNORE)
    assert np.all(stored[~coverage] == IGNORE)  # a patch revision vouches for nothing outside
    changed = int(np.count_nonzero((start != stored) & coverage))
    print(f"recipe 4: {changed} voxels corrected in {coverage.sum()} reviewed")

    # 3D training on the patches only (the pseudo start teaches nothing), then the whole tomogram
    (model,) = project.list_models()
    assert model.config["dims"] == 3 and model.label_version_ids == (revised.id,)
    predicted = project.read_labels(prediction) == 1
    outside = ~coverage
    score, score_start = dice(predicted[outside], truth[outside]), dice(start[outside] == 1, truth[outside])
    print(f"recipe 4: membrane Dice outside the patches {score:.3f} (stand-in start {score_start:.3f})")
    print(f"recipe 4: predicted membrane fraction {predicted.mean():.3f}, reference {truth.mean():.3f}")
    trivial = dice(np.ones(int(outside.sum()), bool), truth[outside])  # every voxel called membrane
    print(f"recipe 4: Dice of calling every voxel membrane {trivial:.3f}")
    assert score > trivial + 0.05, (score, trivial)
    exported = read_volume(tmp_path / "membranes.mrc")
    assert exported.meta["voxel_size_angstrom"] == (40.0, 40.0, 500.0)
    np.testing.assert_array_equal(exported.array[coverage & ~unsure] == 1, truth[coverage & ~unsure])
