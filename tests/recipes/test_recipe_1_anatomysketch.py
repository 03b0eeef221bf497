"""Recipe 1 (seed 000, AnatomySketch): meshes in, COCO slices out and back, contours corrected, as written."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.io import read_volume
from segloop.loop.labels import compute_effective_label
from segloop.store import Project
from tests.conftest import SHARED_DATA
from tests.recipes.conftest import run_recipe

#: TotalSegmentator's values of the project's classes (liver, kidney_left, kidney_right, spleen).
TOTALSEG = {1: 5, 2: 3, 3: 2, 4: 1}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.mark.slow
def test_recipe_1_anatomysketch(tmp_path):
    run_recipe(1, tmp_path)
    project = Project.open(tmp_path / "as")
    data = SHARED_DATA / "totalsegmentator-examples"

    # the meshes voxelised back: case 101's organs against the label they were made from
    [imported] = project.list_label_versions("101")
    assert (imported.source, imported.tool) == ("original", "segloop add --meshes-dir")
    assert set(imported.classes) == {"liver", "kidney_left", "kidney_right", "spleen"}
    assert imported.params["meshes"]["kidney_left"]["file"] == "101_leftkidney_mesh.stl"
    reference = read_volume(data / "ct_full" / "label_totalseg_fast.nii.gz").array
    labels = project.read_labels(imported)
    for value, total_value in TOTALSEG.items():
        assert _dice(labels == value, reference == total_value) > 0.9

    # case 102: the prediction (COCO results), then the contour correction on top of it
    pseudo, sparse, revised = project.list_label_versions("102")
    assert (pseudo.source, pseudo.tool) == ("pseudo", "coco-results")
    assert (sparse.source, sparse.tool, sparse.classes) == ("sparse", "contours", ("liver",))
    assert (revised.source, revised.tool, revised.classes) == ("revised", "contours-replace", ("liver",))
    assert revised.parent_id == sparse.id
    assert sparse.params["annotated_slices"] == [10, 11, 15, 16]
    truth = read_volume(data / "ct_small" / "label_totalseg_fast.nii.gz").array
    predicted = project.read_labels(pseudo)
    corrected = compute_effective_label(project, project.get_case("102")).labels
    before, after = _dice(predicted == 1, truth == 5), _dice(corrected == 1, truth == 5)
    assert before < 0.97 and after > 0.98 and after > before + 0.02
    for value, total_value in TOTALSEG.items():
        assert _dice(predicted == value, truth == total_value) > 0.9
    changed = np.flatnonzero((corrected != predicted).any(axis=(0, 1)))
    assert changed.min() >= 10 and changed.max() <= 16  # between the selected slices only
    for value in (2, 3, 4):  # the other organs untouched
        np.testing.assert_array_equal(corrected == value, predicted == value)
