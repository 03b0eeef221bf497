"""`segloop next`, `segloop patches extract|merge`, `segloop correct`, `segloop export --for`."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from segloop.core import Volume
from segloop.io import read_volume, write_volume
from segloop.loop.cases import import_cases, init_project
from segloop.loop.tools import store_tool_labels
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom
from tests.conftest import snapshot_project
from tests.loop.test_ranking import add_prediction, blur_block, confident, start_model

SHAPE = (24, 24, 12)


@pytest.fixture
def project(tmp_path):
    project = init_project(tmp_path / "proj", PHANTOM_CLASSES)
    images = []
    for seed in range(2):
        phantom = make_ct_phantom(SHAPE, seed=seed)
        images.append(write_volume(phantom.image, tmp_path / "data" / f"c{seed}.nii.gz"))
    import_cases(project, images)
    labels = make_ct_phantom(SHAPE, seed=0).labels.array
    store_tool_labels(
        project, project.get_case("c0"), labels, source="pseudo", classes=PHANTOM_CLASSES, tool="model",
        params={}, author="ai",
    )  # fmt: skip
    return project


def test_next_prints_the_queue_and_writes_priority_csv(run_cli, project, tmp_path):
    model = start_model(project)
    p = blur_block(confident(np.zeros(SHAPE, np.uint8), 5), 2, (slice(4, 14), slice(4, 14), slice(1, 11)))
    add_prediction(project, "c1", p, model_id=model)
    result = run_cli("next", project.root, "-n", "5", "--out", tmp_path / "priority.csv")
    assert result.code == 0, result.err
    assert "c1" in result.out and "spleen" in result.out and "run `segloop predict`" in result.out
    rows = list(csv.DictReader((tmp_path / "priority.csv").open()))
    expected = [("1", "c1", "spleen"), ("2", "c0", ";".join(PHANTOM_CLASSES))]
    assert [(r["rank"], r["case"], r["classes"]) for r in rows] == expected
    assert float(rows[0]["score"]) == 1000 and rows[1]["score"] == ""
    least = run_cli("next", project.root, "-n", "1", "--strategy", "least-recent")
    assert least.code == 0 and "c0" in least.out  # both were served in one event: project order
    bad = run_cli("next", project.root, "--strategy", "epistemic")
    assert bad.code == 1 and bad.err.startswith("error: unknown ranking strategy")


def test_patches_extract_and_merge(run_cli, project, tmp_path):
    out = tmp_path / "patches"
    bad = run_cli("patches", "extract", project.root, out, "--case", "c0", "--center", "30,1,1")
    assert bad.code == 1 and "outside the volume" in bad.err and not out.exists()
    assert bad.err.startswith("error: patch centre [30, 1, 1]")
    result = run_cli(
        "patches", "extract", project.root, out, "--case", "c0", "--center", "12,12,6", "--size", "10",
        "--border", "2",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "c0_patch1" in result.out and "offset [7, 7, 1]" in flat(result.out)
    label = read_volume(out / "labels" / "c0_patch1.nrrd")
    mask = np.zeros(label.spatial_shape, np.uint8)
    mask[3:7, 3:7, 3:7] = 1
    write_volume(Volume(mask, label.affine), out / "corrections" / "c0_patch1" / "Add1.nrrd")
    merged = run_cli(
        "patches", "merge", project.root, "--corrections-dir", out / "corrections", "--class", "liver"
    )
    assert merged.code == 0, merged.err
    assert "c0_patch1 (c0): merged, version 2" in flat(merged.out)
    [_, version] = project.list_label_versions("c0")
    assert (project.read_labels(version)[10:14, 10:14, 4:8] == 1).all()
    again = run_cli(
        "patches", "merge", project.root, "--corrections-dir", out / "corrections", "--class", "liver"
    )
    assert "already merged" in again.out and len(project.list_label_versions("c0")) == 2
    (out / "corrections" / "nope").mkdir()
    unknown = run_cli("patches", "merge", project.root, "--corrections-dir", out / "corrections")
    assert unknown.code == 1 and "no patch nope was extracted" in unknown.err


def flat(text: str) -> str:
    """Output without rich's line wrapping."""
    return " ".join(text.split())


def test_correct_with_a_label_or_masks(run_cli, project, tmp_path):
    case = project.get_case("c0")
    labels = make_ct_phantom(SHAPE, seed=0).labels.array.copy()
    labels[0, 0, 0] = 2
    path = write_volume(Volume(labels, case.affine), tmp_path / "fixed.nii.gz")
    result = run_cli("correct", project.root, "c0", "--label", path)
    assert result.code == 0, result.err
    assert "stored label version 2: revised" in flat(result.out) and "1 voxels changed" in flat(result.out)
    mask = np.zeros(SHAPE, np.uint8)
    mask[1, 1, 1] = 1
    add = write_volume(Volume(mask, case.affine), tmp_path / "a.nrrd")
    masks = run_cli("correct", project.root, "c0", "--add", add, "--class", "kidney_right")
    assert masks.code == 0 and "revised, kidney_right" in flat(masks.out)
    before = snapshot_project(project.root)
    both = run_cli("correct", project.root, "c0", "--label", path, "--add", add)
    assert both.code == 1 and "not both or neither" in both.err
    other = write_volume(Volume(labels[:, :, :6], case.affine), tmp_path / "other.nii.gz")
    grid = run_cli("correct", project.root, "c0", "--label", other)
    assert grid.code == 1 and "does not match" in grid.err
    assert snapshot_project(project.root) == before


def test_export_for_a_tool_and_the_plain_export(run_cli, project, tmp_path):
    result = run_cli("export", project.root, "c0", tmp_path / "slicer", "--for", "slicer")
    assert result.code == 0, result.err
    assert (tmp_path / "slicer" / "corrected.seg.nrrd").is_file() and "README.txt" in flat(result.out)
    plain = run_cli("export", project.root, "c0", tmp_path / "c0.nii.gz")
    assert plain.code == 0 and (tmp_path / "c0.nii.gz").is_file()
    bad = run_cli("export", project.root, "c0", tmp_path / "x", "--for", "amira")
    assert bad.code == 1 and "unknown tool 'amira'" in bad.err
