"""`tools.preview` computes what `tools.run` stores, storing nothing; `tools.class_contours` round-trips."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from segloop.errors import ConflictError, InvalidInputError
from segloop.io import write_volume
from segloop.loop import tools
from segloop.loop.cases import import_cases, init_project
from segloop.metrics import dice
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom
from tests.conftest import liver_scribbles, snapshot_project

SHAPE = (32, 32, 16)
LIVER, KIDNEY_LEFT, KIDNEY_RIGHT = 1, 3, 4


@pytest.fixture
def setup(tmp_path):
    phantom = make_ct_phantom(SHAPE, seed=4)
    image = write_volume(phantom.image, tmp_path / "data" / "a_0000.nii.gz")
    project = init_project(tmp_path / "proj", PHANTOM_CLASSES)
    import_cases(project, [image])
    project.read_image("a")  # the store caches the image's verified hash: not a tool's doing
    return project, phantom


def test_grow_preview_is_the_draft_run_stores_and_stores_nothing(setup):
    project, phantom = setup
    truth = phantom.labels.array
    request = tools.Grow(liver_scribbles(truth, project.config.schema.ignore_index))
    before = snapshot_project(project.root)
    shown = tools.preview(project, "a", request)
    assert snapshot_project(project.root) == before and project.list_label_versions("a") == []
    assert shown.shape == SHAPE and shown.dtype == np.uint8
    assert set(np.unique(shown).tolist()) == {0, LIVER}  # the background scribble's class is 0
    assert dice(shown == LIVER, truth == LIVER) > 0.85
    sparse, draft = tools.run(project, "a", request, author="ana").versions
    np.testing.assert_array_equal(shown, project.read_labels(draft))
    assert sparse.source == "sparse"  # the scribbles are stored, not previewed


def test_threshold_with_a_click_keeps_only_the_island_clicked(setup):
    project, phantom = setup
    truth = phantom.labels.array
    click = [int(v) for v in np.argwhere(ndimage.binary_erosion(truth == KIDNEY_LEFT))[0]]
    # both kidneys are 150 HU: without a click the range takes both
    request = tools.Threshold("kidney_left", value_range=(110, 190), min_size_voxels=5, seeds=(tuple(click),))
    shown = tools.preview(project, "a", request) == KIDNEY_LEFT
    assert dice(shown, truth == KIDNEY_LEFT) > 0.8 and not (shown & (truth == KIDNEY_RIGHT)).any()
    both = tools.preview(
        project, "a", tools.Threshold("kidney_left", value_range=(110, 190), min_size_voxels=5)
    )
    assert (both & (truth == KIDNEY_RIGHT)).any()
    assert project.list_label_versions("a") == []
    [stored] = tools.run(project, "a", request, author="ana").versions
    np.testing.assert_array_equal(project.read_labels(stored) == KIDNEY_LEFT, shown)


def test_a_click_outside_the_image_or_on_nothing_is_refused(setup):
    project, _ = setup
    with pytest.raises(InvalidInputError, match="outside the image"):
        tools.preview(project, "a", tools.Threshold("liver", value_range=(40, 80), seeds=((99, 0, 0),)))
    with pytest.raises(InvalidInputError, match="not inside the mask"):  # the corner is air
        tools.preview(project, "a", tools.Threshold("liver", value_range=(40, 80), seeds=((0, 0, 0),)))


def test_contours_of_a_class_on_three_slices_reinterpolate_it(setup):
    project, phantom = setup
    truth = phantom.labels.array
    case = project.get_case("a")
    tools.store_tool_labels(
        project, case, truth, source="original", classes=PHANTOM_CLASSES, tool="t", params={}, author="t"
    )
    liver = truth == LIVER
    present = np.flatnonzero(liver.any(axis=(0, 1)))
    picked = np.round(np.linspace(present[0], present[-1], 3)).astype(int).tolist()
    documents = [tools.class_contours(project, "a", "liver", "axial", k) for k in picked]
    assert all(d["axis"] == 2 and d["coordinates"] == "voxel" for d in documents)
    polygons = [p for d in documents for p in d["classes"]["liver"]]
    assert sorted({p["slice"] for p in polygons}) == picked
    middle = [p for p in polygons if p["slice"] == picked[1]]
    outline = liver[:, :, picked[1]] & ~ndimage.binary_erosion(liver[:, :, picked[1]])
    assert 4 <= sum(len(p["points"]) for p in middle) < np.count_nonzero(outline) / 2  # control points
    document = {**documents[0], "classes": {"liver": polygons}}
    request = tools.Contours(polygons=document, class_name="liver", fill_between=True)
    filled = tools.preview(project, "a", request) == LIVER
    assert dice(filled, liver) > 0.9
    draft = tools.run(project, "a", request, author="ana").version
    np.testing.assert_array_equal(project.read_labels(draft) == LIVER, filled)


def test_contours_of_a_version_an_empty_slice_and_bad_slices(setup):
    project, phantom = setup
    assert tools.class_contours(project, "a", "liver", 2, 0)["classes"] == {"liver": []}  # no label yet
    first = tools.run(
        project,
        "a",
        tools.Grow(liver_scribbles(phantom.labels.array, project.config.schema.ignore_index)),
        author="a",
    )
    middle = SHAPE[2] // 2
    now = tools.class_contours(project, "a", "liver", "axial", middle, version=first.version.id)
    assert now == tools.class_contours(project, "a", "liver", 2, middle)  # the draft is the effective label
    with pytest.raises(InvalidInputError, match=r"slice 16 lies outside axis 2 .* expected 0\.\.15"):
        tools.class_contours(project, "a", "liver", "axial", 16)
    with pytest.raises(InvalidInputError, match="unknown plane"):
        tools.class_contours(project, "a", "liver", "oblique", 1)


def test_a_stale_expected_head_stores_nothing(setup):
    project, phantom = setup
    request = tools.Grow(liver_scribbles(phantom.labels.array, project.config.schema.ignore_index))
    first = tools.run(project, "a", request, author="ana", expected_head=None)
    head = first.version.id
    before = snapshot_project(project.root)
    with pytest.raises(ConflictError, match="changed since"):
        tools.run(project, "a", request, author="bo", parent=None, expected_head=None)
    assert snapshot_project(project.root) == before
    again = tools.run(project, "a", request, author="bo", parent=head, expected_head=head)
    assert again.versions[0].parent_id == head
