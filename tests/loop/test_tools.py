"""`segloop segment ...`: each tool stores a new version with its parameters; bad input stores nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segloop.core import Volume
from segloop.io import read_volume, write_volume
from segloop.loop.cases import import_cases, init_project
from segloop.metrics import dice
from segloop.store import Project
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom
from tests.conftest import snapshot_project

SHAPE = (40, 40, 24)


@pytest.fixture
def phantom_project(tmp_path):
    phantom = make_ct_phantom(SHAPE, seed=3)
    image = write_volume(phantom.image, tmp_path / "data" / "p3_0000.nii.gz")
    project = init_project(tmp_path / "proj", PHANTOM_CLASSES)
    import_cases(project, [image])
    return project, phantom


def test_threshold_stores_a_draft_of_one_class_with_its_parameters(run_cli, phantom_project):
    project, phantom = phantom_project
    result = run_cli(
        "segment",
        project.root,
        "p3",
        "threshold",
        "--class",
        "kidney_left",
        "--range",
        "120,180",
        "--keep-largest",
    )
    assert result.code == 0, result.err
    [version] = project.list_label_versions("p3")
    assert (version.source, version.tool, version.classes) == ("draft", "threshold", ("kidney_left",))
    assert version.params["low"] == 120 and version.params["keep_largest"] is True
    labels = project.read_labels(version)
    truth = phantom.labels.array
    # both kidneys are 150 HU: the largest island is one of them
    assert max(dice(labels == 3, truth == 3), dice(labels == 3, truth == 4)) > 0.9


def test_postprocess_keeps_the_parent_source_and_links_it(run_cli, phantom_project, tmp_path):
    project, phantom = phantom_project
    noisy = phantom.labels.array.copy()
    noisy[1, 1, 1] = 1  # a speck of liver
    write_volume(phantom.labels.with_array(noisy), tmp_path / "pseudo" / "p3.nii.gz")
    other = write_volume(phantom.image, tmp_path / "d2" / "p3b.nii.gz")
    import_cases(
        project, [other], case_id="p3b", label_path=tmp_path / "pseudo" / "p3.nii.gz", source="pseudo"
    )
    result = run_cli(
        "segment", project.root, "p3b", "postprocess", "--close-mm", "1.5", "--open-mm", "1.5", "--largest"
    )
    assert result.code == 0, result.err
    parent, child = project.list_label_versions("p3b")
    assert child.parent_id == parent.id and child.source == "pseudo" and child.tool == "postprocess"
    cleaned = project.read_labels(child)
    assert cleaned[1, 1, 1] == 0
    assert dice(cleaned == 1, phantom.labels.array == 1) > 0.95
    assert all((cleaned == value).any() for value in range(1, 5))  # small kidneys survive the opening


def test_bad_tool_input_stores_nothing(run_cli, phantom_project, tmp_path):
    project, _ = phantom_project
    project.read_image("p3")  # the store caches the image's verified hash: not a tool's doing
    before = snapshot_project(project.root)
    cases = [
        (["threshold", "--class", "pancreas", "--range", "0,1"], "unknown class 'pancreas'"),
        (["threshold", "--class", "liver", "--range", "0"], "--range must be 2 comma-separated numbers"),
        (["threshold", "--class", "liver", "--range", "5000,6000"], "empty label"),
        (
            ["threshold", "--class", "liver", "--range", "-2000,-1500", "--seed", "1,1,1"],
            "not inside the mask",
        ),
        (["threshold", "--class", "liver", "--preset", "spleen"], "unknown preset 'spleen'"),
        (["threshold", "--class", "liver", "--range", "0,1", "--seed", "99,1,1"], "seed [99, 1, 1] is out"),
        (["threshold", "--class", "liver", "--range", "0,1", "--otsu"], "exactly one of --range"),
        (["postprocess", "--largest"], "no label version"),
    ]
    for args, message in cases:
        result = run_cli("segment", project.root, "p3", *args)
        assert result.code == 1, args
        assert message in result.err, (args, result.err)
        assert result.err.count("\n") == 1
    assert run_cli("segment", project.root, "nope", "threshold", "--class", "liver", "--otsu").code == 1
    assert snapshot_project(project.root) == before


def test_lungs_by_threshold_and_seeds_on_the_totalsegmentator_ct(run_cli, totalseg, tmp_path):
    """A loose check: the reference lungs are TotalSegmentator's own output, not manual labels."""
    labels = read_volume(totalseg / "ct_full" / "label_totalseg_fast.nii.gz").array
    names = json.loads((totalseg / "class_maps.json").read_text())["total"]
    lungs = np.isin(labels, [int(k) for k, name in names.items() if name.startswith("lung")])
    from segloop.segment.components import label_components

    components, _ = label_components(lungs)
    sizes = np.bincount(components.ravel())[1:]
    seeds = [np.argwhere(components == value)[0] for value in np.argsort(sizes)[::-1][:2] + 1]
    project = tmp_path / "lungs"
    assert run_cli("init", project, "--labels", "lung").code == 0
    assert run_cli("add", project, totalseg / "ct_full" / "image.nii.gz", "--case-id", "ct").code == 0
    seed_args = [arg for seed in seeds for arg in ("--seed", ",".join(map(str, seed)))]
    result = run_cli("segment", project, "ct", "threshold", "--class", "lung", "--preset", "lung", *seed_args)
    assert result.code == 0, result.err
    opened = Project.open(project)
    [version] = opened.list_label_versions("ct")
    assert dice(opened.read_labels(version) == 1, lungs) > 0.8


def test_export_of_a_tool_label_is_a_volume_on_the_case_grid(phantom_project, tmp_path):
    project, _ = phantom_project
    from segloop.loop import tools

    request = tools.Threshold("liver", value_range=(40, 80), keep_largest=True)
    version = tools.run(project, "p3", request, author="t").version
    assert isinstance(read_volume(project.objects.path_of(version.object_key)), Volume)


def _scribbles(labels: np.ndarray, background: int) -> np.ndarray:
    """A few strokes per organ (its eroded core on 3 slices) and a background shell."""
    from scipy import ndimage

    seeds = np.zeros_like(labels)
    for value in np.unique(labels[labels > 0]):
        core = ndimage.binary_erosion(labels == value, iterations=1)
        slices = np.flatnonzero(core.any(axis=(0, 1)))
        for k in slices[[len(slices) // 4, len(slices) // 2, 3 * len(slices) // 4]]:
            seeds[:, :, k][core[:, :, k]] = value
    shell = ndimage.binary_dilation(labels > 0, iterations=3) & ~ndimage.binary_dilation(
        labels > 0, iterations=1
    )
    seeds[shell] = background
    return seeds


def test_grow_stores_the_scribbles_as_sparse_and_the_result_as_their_draft_child(
    run_cli, phantom_project, tmp_path
):
    project, phantom = phantom_project
    background = project.config.schema.ignore_index
    seeds = _scribbles(phantom.labels.array, background)
    path = write_volume(phantom.labels.with_array(seeds), tmp_path / "scribbles.nii.gz")
    result = run_cli("segment", project.root, "p3", "grow", "--seeds", path)
    assert result.code == 0, result.err
    sparse, draft = project.list_label_versions("p3")
    assert (sparse.source, draft.source, draft.parent_id) == ("sparse", "draft", sparse.id)
    assert draft.params["seeds"]["sha256"] == sparse.params["seeds"]["sha256"]
    drawn = project.read_labels(sparse)
    assert np.all(drawn[seeds == 0] == background)  # unpainted: ignore
    assert np.all(drawn[seeds == background] == 0)  # background scribble: background
    grown = project.read_labels(draft)
    assert dice(grown == 1, phantom.labels.array == 1) > 0.9


def test_interpolate_from_seven_slices(run_cli, phantom_project, tmp_path):
    project, phantom = phantom_project
    liver = phantom.labels.array == 1
    slices = np.flatnonzero(liver.any(axis=(0, 1)))
    drawn = np.zeros_like(phantom.labels.array)
    chosen = np.linspace(slices[0], slices[-1], 7).round().astype(int)
    drawn[:, :, chosen] = np.where(liver[:, :, chosen], 1, 0)
    path = write_volume(phantom.labels.with_array(drawn), tmp_path / "slices.nii.gz")
    result = run_cli("segment", project.root, "p3", "interpolate", "--class", "liver", "--slices", path)
    assert result.code == 0, result.err
    sparse, draft = project.list_label_versions("p3")
    assert sparse.params["annotated_slices"] == chosen.tolist()
    assert dice(project.read_labels(draft) == 1, liver) > 0.9
    sparse_labels = project.read_labels(sparse)
    other = [k for k in range(SHAPE[2]) if k not in chosen]
    assert np.all(sparse_labels[:, :, other] == project.config.schema.ignore_index)


def test_mesh_round_trip_through_the_cli(run_cli, phantom_project, tmp_path):
    project, _ = phantom_project
    from segloop.loop import tools

    tools.run(project, "p3", tools.Threshold("liver", value_range=(40, 80), keep_largest=True), author="t")
    out = tmp_path / "liver.stl"
    assert run_cli("export-mesh", project.root, "p3", out, "--class", "liver", "--smoothing", "0").code == 0
    assert run_cli("segment", project.root, "p3", "mesh", "--class", "liver", "--stl", out).code == 0
    first, second = project.list_label_versions("p3")
    np.testing.assert_array_equal(project.read_labels(first), project.read_labels(second))
    assert run_cli("export-mesh", project.root, "p3", out, "--class", "liver").code == 1  # exists


def test_contours_in_mm_become_sparse_slices_and_a_filled_draft(run_cli, phantom_project, tmp_path):
    from segloop.segment.contours import make_polygon_document, mask_to_polygons

    project, phantom = phantom_project
    liver = phantom.labels.array == 1
    slices = np.flatnonzero(liver.any(axis=(0, 1)))
    chosen = np.linspace(slices[0], slices[-1], 6).round().astype(int)
    drawn = np.zeros_like(liver)
    drawn[:, :, chosen] = liver[:, :, chosen]
    polygons = mask_to_polygons(drawn, 2)
    document = make_polygon_document({"liver": polygons}, 2, affine=phantom.image.affine, coordinates="mm")
    path = tmp_path / "contours.json"
    path.write_text(json.dumps(document))
    result = run_cli("segment", project.root, "p3", "contours", "--polygons", path, "--fill-between")
    assert result.code == 0, result.err
    sparse, draft = project.list_label_versions("p3")
    assert (sparse.tool, draft.tool, draft.parent_id) == ("contours", "fill-between-slices", sparse.id)
    on_slices = project.read_labels(sparse)[:, :, chosen] == 1
    assert dice(on_slices, liver[:, :, chosen]) > 0.95
    assert dice(project.read_labels(draft) == 1, liver) > 0.9
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "axis": 2,
                "coordinates": "voxel",
                "classes": {"liver": [{"slice": 99, "points": [[0, 0], [0, 2], [2, 0]]}]},
            }
        )
    )
    result = run_cli("segment", project.root, "p3", "contours", "--polygons", bad)
    assert result.code == 1 and result.err.count("\n") == 1
    assert len(project.list_label_versions("p3")) == 2


def test_an_empty_label_is_stored_only_when_allowed(phantom_project):
    from segloop.errors import LabelValueError
    from segloop.loop.tools import store_tool_labels

    project, _ = phantom_project
    case = project.get_case("p3")
    empty = np.zeros(SHAPE, np.uint8)
    with pytest.raises(LabelValueError, match="empty label"):
        store_tool_labels(
            project, case, empty, source="draft", classes=["liver"], tool="t", params={}, author="a"
        )
    stored = store_tool_labels(
        project,
        case,
        empty,
        source="pseudo",
        classes=PHANTOM_CLASSES,
        tool="m",
        params={},
        author="a",
        allow_empty=True,
    )
    assert stored.voxel_counts["liver"] == 0
