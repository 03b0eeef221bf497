"""Recipe 2 (seed 001, 3D Slicer labeling) run as written, its outcome checked against the reference lungs."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from segloop.io import read_volume
from segloop.loop.labels import read_schema_labels
from segloop.metrics import dice
from segloop.store import Project
from tests.conftest import SHARED_DATA
from tests.recipes.conftest import run_recipe

CT = SHARED_DATA / "totalsegmentator-examples" / "ct_full"
LUNG_LOBES = (10, 11, 12, 13, 14)


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_recipe_2_slicer_labeling_on_the_totalsegmentator_ct(tmp_path):
    run_recipe(2, tmp_path)
    project = Project.open(tmp_path / "lungs")
    case = project.get_case("ct")
    lungs = np.isin(read_volume(CT / "label_totalseg_fast.nii.gz").array, LUNG_LOBES)
    versions = {v.id: v for v in project.list_label_versions("ct")}
    assert [(v.source, v.tool, v.parent_id) for v in versions.values()] == [
        ("draft", "threshold", None),
        ("sparse", "scribbles", None),
        ("draft", "grow-from-seeds", 2),
        ("sparse", "slices", None),
        ("draft", "fill-between-slices", 4),
        ("draft", "postprocess", 1),
    ]
    labels = {i: project.read_labels(v) for i, v in versions.items()}
    scores = {i: dice(labels[i] == 1, lungs) for i in (1, 3, 5, 6)}
    assert scores[1] > 0.93, scores  # threshold + islands under the two seeds: 0.953
    assert scores[3] > 0.88, scores  # grow from strokes on 3 slices: 0.927
    assert scores[5] > 0.85, scores  # fill between 3 slices: 0.885
    assert scores[6] > 0.93, scores  # the threshold closed by 3 mm: 0.955

    # the strokes stand in for a person's: on 3 axial slices, lung inside the lungs, background outside them
    scribbles = read_schema_labels(
        tmp_path / "scribbles.nrrd", project.config.schema, case.shape, case.affine
    )[0]
    assert np.flatnonzero((scribbles != 0).any(axis=(0, 1))).tolist() == [103, 106, 109]
    assert lungs[scribbles == 1].all() and not lungs[scribbles == 2].any()
    drawn = labels[2]  # the sparse version: the strokes, everything unpainted ignore
    assert np.array_equal(drawn == 1, scribbles == 1) and np.array_equal(drawn == 0, scribbles == 2)
    assert versions[3].params["seeds"]["sha256"] == _sha256(tmp_path / "scribbles.nrrd")

    # the drawn slices are the reference's lungs there, exactly
    slices = read_volume(tmp_path / "slices.nrrd").array
    assert np.array_equal(slices[..., [101, 106, 111]] == 1, lungs[..., [101, 106, 111]])
    assert not slices[..., 102:106].any()
    assert versions[5].params["annotated_slices"] == [101, 106, 111]

    # the export is version 6, voxel for voxel, with the schema's segment name
    exported = read_volume(tmp_path / "lungs.seg.nrrd")
    assert [s["name"] for s in exported.meta["segments"]] == ["lung"]
    back = read_schema_labels(tmp_path / "lungs.seg.nrrd", project.config.schema, case.shape, case.affine)[0]
    assert np.array_equal(back, labels[6])
