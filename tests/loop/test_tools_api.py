"""`segloop.loop.tools.run`: typed requests with arrays in, versions out; no file is needed."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.core import Volume
from segloop.errors import GeometryMismatchError, InvalidInputError, LabelValueError
from segloop.io import write_volume
from segloop.loop import corrections, tools
from segloop.loop.cases import import_cases, init_project
from segloop.loop.imports import hash_path
from segloop.metrics import dice
from segloop.store import ImageRecord, NewCase, Project
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom
from tests.conftest import snapshot_project
from tests.loop.test_tools import _scribbles

SHAPE = (32, 32, 16)
LIVER = 1


@pytest.fixture
def setup(tmp_path):
    phantom = make_ct_phantom(SHAPE, seed=4)
    image = write_volume(phantom.image, tmp_path / "data" / "a_0000.nii.gz")
    project = init_project(tmp_path / "proj", PHANTOM_CLASSES)
    import_cases(project, [image])
    project.read_image("a")  # the store caches the image's verified hash: not a tool's doing
    return project, phantom


def test_the_registry_and_the_presets_are_tables():
    assert tools.TOOLS["grow"] is tools.Grow and tools.TOOLS["postprocess"] is tools.Postprocess
    assert "lung" in tools.THRESHOLD_PRESETS_HU
    steps = tools.Postprocess.from_presets(["close", "open", "largest", "fill"])
    assert steps.morphology_kwargs() == {"close_mm": 2.0, "open_mm": 2.0, "keep_largest": True, "fill": True}
    with pytest.raises(InvalidInputError, match=r"unknown post-processing \['smooth'\]"):
        tools.Postprocess.from_presets(["close", "smooth"])


def test_grow_from_a_seed_array_stores_the_scribbles_and_the_grown_draft(setup):
    project, phantom = setup
    truth = phantom.labels.array
    seeds = _scribbles(truth, project.config.schema.ignore_index)
    result = tools.run(project, "a", tools.Grow(seeds), author="ana", provenance={"note": "by hand"})
    sparse, draft = result.versions
    assert result.version is draft and draft.parent_id == sparse.id
    assert (sparse.source, sparse.tool, draft.source, draft.tool) == (
        "sparse",
        "scribbles",
        "draft",
        "grow-from-seeds",
    )
    assert draft.params["seeds_sha256"] == sparse.params["seeds_sha256"] and draft.params["note"] == "by hand"
    assert dice(project.read_labels(draft) == LIVER, truth == LIVER) > 0.8


def test_interpolate_and_correct_with_arrays_only(setup):
    project, phantom = setup
    liver = phantom.labels.array == LIVER
    drawn = np.zeros_like(liver)
    slices = np.flatnonzero(liver.any(axis=(0, 1)))[::2]
    drawn[:, :, slices] = liver[:, :, slices]
    draft = tools.run(project, "a", tools.Interpolate("liver", drawn, axis=2), author="ana").version
    assert draft.params["annotated_slices"] == slices.tolist()
    assert dice(project.read_labels(draft) == LIVER, liver) > 0.85
    add = np.zeros(SHAPE, bool)
    add[0, 0, 0] = True
    fixed = corrections.apply(
        project, "a", corrections.Corrections(add=add, class_name="liver"), parent=draft.id, author="ana"
    )
    assert (
        fixed.created and fixed.version.classes == ("liver",) and fixed.version.params["based_on"] == draft.id
    )


def test_bad_requests_store_nothing(setup):
    project, _ = setup
    before = snapshot_project(project.root)
    with pytest.raises(GeometryMismatchError, match=r"seed map has shape \(2, 2, 2\)"):
        tools.run(project, "a", tools.Grow(np.zeros((2, 2, 2), np.uint8)), author="x")
    with pytest.raises(LabelValueError, match="no class scribble"):
        tools.run(project, "a", tools.Grow(np.zeros(SHAPE, np.uint8)), author="x")
    with pytest.raises(InvalidInputError, match="exactly one of"):
        tools.run(project, "a", tools.Threshold("liver"), author="x")
    with pytest.raises(InvalidInputError, match="LOW <= HIGH"):
        tools.run(project, "a", tools.Threshold("liver", value_range=(5, -5)), author="x")
    with pytest.raises(InvalidInputError, match="volume fraction"):
        tools.run(project, "a", tools.FastMarching("liver", np.ones(SHAPE, bool), 2.0), author="x")
    with pytest.raises(InvalidInputError, match="faces index vertices"):
        tools.run(project, "a", tools.Mesh("liver", np.zeros((3, 3)), np.array([[0, 1, 7]])), author="x")
    with pytest.raises(InvalidInputError, match="unknown tool request"):
        tools.run(project, "a", object(), author="x")  # type: ignore[arg-type]
    assert snapshot_project(project.root) == before


@pytest.mark.parametrize("kind", ["nan", "rgb", "complex"])
def test_a_tool_on_an_image_that_is_not_one_finite_number_per_voxel_is_one_line(
    setup, tmp_path, kind, monkeypatch
):
    project, phantom = setup
    array = phantom.image.array.astype(np.float32)
    if kind == "nan":
        array[3, 3, 3] = np.nan
    elif kind == "complex":
        array = array.astype(np.complex64)
    else:
        array = np.stack([array] * 3)  # (3, I, J, K): three channels
    path = tmp_path / f"{kind}.npy"
    np.save(path, array)
    digest, size = hash_path(path)
    # a case stored before imports checked images (the store takes what it is given)
    project.add_cases(
        [
            NewCase(
                kind,
                SHAPE,
                phantom.image.affine,
                str(array.dtype),
                (ImageRecord(0, str(path), size, digest),),
                "x",
            )
        ]
    )
    monkeypatch.setattr(
        Project, "read_image", lambda self, case_id, channel=0: Volume(array, phantom.image.affine)
    )
    with pytest.raises(InvalidInputError) as error:
        tools.run(project, kind, tools.Threshold("liver", otsu=True), author="x")
    assert "\n" not in str(error.value) and f"image of case {kind!r}" in str(error.value)
