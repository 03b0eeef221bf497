"""A person's drawing simulated from a reference (`segloop.loop.strokes`, `segloop simulate`) on phantoms."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.core.volume import Volume
from segloop.errors import GeometryMismatchError, InvalidInputError, LabelValueError
from segloop.io import read_volume, write_volume
from segloop.loop import tools
from segloop.loop.strokes import draw_from_reference, read_reference, slices_of
from segloop.metrics import dice
from segloop.synthetic import make_ct_phantom
from tests.conftest import make_phantom_project

SHAPE = (40, 40, 20)


@pytest.fixture
def case(tmp_path):
    """A one-phantom project without labels, and the phantom's true labels (the reference)."""
    project = make_phantom_project(tmp_path, 1, SHAPE)
    return project, make_ct_phantom(SHAPE, seed=0).labels


def test_slices_of_keeps_the_reference_on_evenly_spread_slices_of_any_axis():
    reference = np.zeros((9, 6, 5), np.uint8)
    reference[2:8, 1:5, 1:4] = 1
    reference[4:6, 2:4, 2] = 2
    drawn = slices_of(reference, 0, 3)
    assert np.flatnonzero(drawn.any(axis=(1, 2))).tolist() == [2, 4, 7]
    assert np.array_equal(drawn[[2, 4, 7]], reference[[2, 4, 7]])
    assert not drawn[[0, 1, 3, 5, 6, 8]].any()
    assert reference[4:6, 2:4, 2].min() == 2  # the input is untouched


def test_slices_fill_back_to_the_reference(case):
    project, truth = case
    liver = truth.array == 1
    drawn = draw_from_reference(project, "c0", truth.array, "slices", count=5)
    assert np.flatnonzero(drawn.any(axis=(0, 1))).size == 5
    assert set(np.unique(drawn).tolist()) <= {0, 1, 2, 3, 4}
    result = tools.run(project, "c0", tools.Interpolate("liver", drawn == 1), author="test")
    assert dice(project.read_labels(result.version) == 1, liver) > 0.85


def test_scribbles_lie_inside_their_class_and_grow_into_the_organs(case):
    project, truth = case
    schema = project.config.schema
    seeds = draw_from_reference(project, "c0", truth.array, "scribbles", count=3)
    assert seeds.dtype == schema.dtype
    for value in range(1, len(schema.classes) + 1):
        assert (seeds == value).any() and (truth.array[seeds == value] == value).all()
    background = seeds == schema.ignore_index
    assert background.any() and not truth.array[background].any()
    result = tools.run(project, "c0", tools.Grow(seeds), author="test")
    grown = project.read_labels(result.version)
    assert dice(grown == 1, truth.array == 1) > 0.7  # 0.76 on this small phantom


def test_scribbles_along_another_axis_stay_on_that_axis(case):
    project, truth = case
    seeds = draw_from_reference(project, "c0", truth.array, "scribbles", count=2, plane=0)
    touched = np.flatnonzero(seeds.any(axis=(1, 2)))
    assert 0 < touched.size <= 2 * 4  # at most 2 slices per class, all cutting axis 0
    assert set(np.unique(seeds).tolist()) == {0, 1, 2, 3, 4, 5}  # every class and the background
    axial = draw_from_reference(project, "c0", truth.array, "scribbles", count=2)
    assert np.flatnonzero(axial.any(axis=(1, 2))).size > 2 * 4  # axial strokes run across axis 0


def test_bad_drawings_are_refused(case):
    project, truth = case
    with pytest.raises(InvalidInputError, match="unknown drawing 'paint'"):
        draw_from_reference(project, "c0", truth.array, "paint")
    with pytest.raises(InvalidInputError, match="at least 1; got 0"):
        draw_from_reference(project, "c0", truth.array, "slices", count=0)
    with pytest.raises(LabelValueError, match="no class voxel"):
        draw_from_reference(project, "c0", np.zeros(SHAPE, np.uint8), "scribbles")
    with pytest.raises(GeometryMismatchError, match=r"shape \(40, 40, 20\); got \(40, 40, 19\)"):
        draw_from_reference(project, "c0", truth.array[..., :19], "slices")
    with pytest.raises(LabelValueError):
        draw_from_reference(project, "c0", np.full(SHAPE, 9, np.uint8), "slices")


def test_read_reference_maps_listed_values_and_drops_the_rest(case, tmp_path):
    project, truth = case
    other = truth.with_array((truth.array * 10).astype(np.uint8))  # liver 10, spleen 20, ...
    path = write_volume(other, tmp_path / "ref.nii.gz")
    mapped = read_reference(project, "c0", path, {10: 1, 30: 3})
    assert np.array_equal(mapped == 1, truth.array == 1) and np.array_equal(mapped == 3, truth.array == 3)
    assert set(np.unique(mapped).tolist()) == {0, 1, 3}
    shifted = truth.affine.copy()
    shifted[0, 3] += 5.0  # 5 mm off the case's grid
    moved = Volume(truth.array, shifted)
    with pytest.raises(GeometryMismatchError):
        read_reference(project, "c0", write_volume(moved, tmp_path / "moved.nii.gz"), {1: 1})


def test_cli_simulate_writes_what_the_tools_read(case, tmp_path, run_cli):
    project, truth = case
    reference = write_volume(truth, tmp_path / "ref.nii.gz")
    result = run_cli(
        "simulate", project.root, "c0", "scribbles", tmp_path / "s.nrrd", "--reference", reference
    )
    assert result.code == 0, result.err
    assert "scribbles drawn from" in result.out and "background" in result.out
    assert run_cli("segment", project.root, "c0", "grow", "--seeds", tmp_path / "s.nrrd").code == 0
    result = run_cli(
        "simulate", project.root, "c0", "scribbles", tmp_path / "s.seg.nrrd", "--reference", reference
    )
    assert result.code == 0, result.err
    segments = read_volume(tmp_path / "s.seg.nrrd").meta["segments"]
    assert [s["name"] for s in segments] == [*project.config.schema.names, "background"]
    assert run_cli("segment", project.root, "c0", "grow", "--seeds", tmp_path / "s.seg.nrrd").code == 0
    grown = project.list_label_versions("c0")
    assert grown[-1].tool == "grow-from-seeds" and grown[-2].voxel_counts == grown[-4].voxel_counts
    result = run_cli(
        "simulate", project.root, "c0", "slices", tmp_path / "l.seg.nrrd", "--reference", reference,
        "--values", "1=liver", "--slices", "4",
    )  # fmt: skip
    assert result.code == 0, result.err
    written = read_volume(tmp_path / "l.seg.nrrd")
    assert [s["name"] for s in written.meta["segments"]] == list(project.config.schema.names)
    args = [
        "segment",
        project.root,
        "c0",
        "interpolate",
        "--class",
        "liver",
        "--slices",
        tmp_path / "l.seg.nrrd",
    ]
    assert run_cli(*args).code == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--slices", "0"], "at least 1; got 0"),
        (["--values", "1=lungs"], "lungs"),
        (["--values", "one=liver"], "VALUE=NAME"),
        (["--axis", "oblique"], "unknown plane 'oblique'"),
    ],
)
def test_cli_simulate_bad_input_is_one_line_and_writes_nothing(case, tmp_path, run_cli, options, message):
    project, truth = case
    reference = write_volume(truth, tmp_path / "ref.nii.gz")
    out = tmp_path / "out.nrrd"
    result = run_cli("simulate", project.root, "c0", "slices", out, "--reference", reference, *options)
    assert result.code == 1 and message in result.err and len(result.err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_simulate_refuses_to_replace_a_file_without_force(case, tmp_path, run_cli):
    project, truth = case
    reference = write_volume(truth, tmp_path / "ref.nii.gz")
    out = tmp_path / "out.nrrd"
    out.write_bytes(b"keep")
    args = ["simulate", project.root, "c0", "slices", out, "--reference", reference]
    assert run_cli(*args).code == 1 and out.read_bytes() == b"keep"
    assert run_cli(*args, "--force").code == 0 and read_volume(out).array.any()
