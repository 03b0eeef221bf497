"""Correction patches: extraction (offsets, padding, geometry, border), merge (seed 003), idempotency."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segloop.core import Volume
from segloop.core.geometry import spacing_from_affine
from segloop.errors import ConflictError, GeometryMismatchError, NotFoundError, SegloopError
from segloop.io import read_volume, write_volume
from segloop.loop.cases import import_cases, init_project
from segloop.loop.labels import compute_effective_label
from segloop.loop.patches import extract_patches, merge_patches, patch_affine
from segloop.loop.ranking import cleaning_radii, open_mask_iterations, rank_cases
from segloop.loop.tools import store_tool_labels
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom
from tests.conftest import snapshot_project
from tests.loop.test_ranking import add_prediction, blur_block, confident, start_model

SHAPE = (40, 40, 24)
LIVER, SPLEEN = 1, 2


@pytest.fixture
def project(tmp_path):
    phantom = make_ct_phantom(SHAPE, seed=2)
    affine = phantom.image.affine.copy()
    affine[:3, 3] = (-30.0, 12.5, 100.0)  # a non-trivial origin that must survive
    image = write_volume(Volume(phantom.image.array, affine), tmp_path / "data" / "p_0000.nii.gz")
    project = init_project(tmp_path / "proj", PHANTOM_CLASSES)
    import_cases(project, [image])
    case = project.get_case("p")
    pseudo = store_tool_labels(
        project, case, phantom.labels.array, source="pseudo", classes=PHANTOM_CLASSES, tool="model",
        params={}, author="ai",
    )  # fmt: skip
    return project, pseudo


def write_mask(path, mask, affine):
    return write_volume(Volume(mask.astype(np.uint8), affine), path, overwrite=True)


def effective(project):
    return compute_effective_label(project, project.get_case("p")).labels


def test_extract_writes_geometry_manifest_and_skeleton(project, tmp_path):
    project, pseudo = project
    out = tmp_path / "patches"
    [manifest] = extract_patches(
        project, out, case_id="p", centers=[(20, 20, 12)], size=16, border_voxels=3, author="me"
    )
    patch = manifest["patch"]
    assert patch == "p_patch1"
    assert manifest["offset"] == [12, 12, 4] and manifest["size"] == [16, 16, 16]
    assert manifest["parent_version_id"] == pseudo.id and manifest["version_ids"] == [pseudo.id]
    case = project.get_case("p")
    image = read_volume(out / "images" / f"{patch}.nrrd")
    label = read_volume(out / "labels" / f"{patch}.nrrd")
    expected_affine = patch_affine(case.affine, (12, 12, 4))
    np.testing.assert_allclose(image.affine, expected_affine, atol=1e-6)
    np.testing.assert_allclose(label.affine, expected_affine, atol=1e-6)
    # voxel (0, 0, 0) of the patch lies where voxel (12, 12, 4) of the case lies
    np.testing.assert_allclose(image.affine[:3, 3], (case.affine @ [12, 12, 4, 1])[:3], atol=1e-6)
    full = read_volume(case.images[0].path).array
    assert np.array_equal(image.array, full[12:28, 12:28, 4:20])
    labels = effective(project)
    ignore = project.config.schema.ignore_index
    assert (label.array[:3] == ignore).all() and (label.array[:, :, -3:] == ignore).all()
    assert np.array_equal(label.array[3:13, 3:13, 3:13], labels[15:25, 15:25, 7:17])
    assert (out / "corrections" / patch).is_dir() and (out / "corrections" / "README.txt").is_file()
    assert (
        json.loads((out / "manifests" / f"{patch}.json").read_text())["label_sha256"]
        == manifest["label_sha256"]
    )
    # a second extraction numbers on; ids are unique in the project
    [second] = extract_patches(project, out, case_id="p", centers=[(5, 5, 5)], size=16, author="me")
    assert second["patch"] == "p_patch2"


def test_extract_pads_near_borders_and_clips_small_volumes(project, tmp_path):
    project, _ = project
    [near, whole] = extract_patches(
        project, tmp_path / "out", case_id="p", centers=[(1, 38, 12), (20, 20, 12)], size=16,
        border_voxels=2, author="me",
    )  # fmt: skip
    assert near["offset"] == [-7, 30, 4] and near["size"] == [16, 16, 16]
    label = read_volume(tmp_path / "out" / "labels" / f"{near['patch']}.nrrd").array
    image = read_volume(tmp_path / "out" / "images" / f"{near['patch']}.nrrd").array
    ignore = project.config.schema.ignore_index
    assert (label[:7] == ignore).all() and (label[:, 10:] == ignore).all()  # padding is ignore
    full = read_volume(project.get_case("p").images[0].path).array
    assert (image[:7] == full.min()).all()
    assert np.array_equal(image[7:, :10], full[0:9, 30:40, 4:20])
    # no border on faces at the case's edge: row 7 (the case's first row) is reviewed
    assert np.array_equal(label[7:14, 2:8, 2:14], effective(project)[0:7, 32:38, 6:18])
    big = extract_patches(project, tmp_path / "out2", case_id="p", centers=[(3, 3, 3)], author="me")[0]
    assert big["offset"] == [0, 0, 0] and big["size"] == list(SHAPE)  # 160 clipped to the case
    assert whole["size"] == [16, 16, 16]


def test_bad_centres_write_nothing(project, tmp_path):
    project, _ = project
    before = snapshot_project(project.root)
    with pytest.raises(SegloopError, match=r"patch centre \[20, 40, 3\] is outside the volume"):
        extract_patches(project, tmp_path / "out", case_id="p", centers=[(1, 1, 1), (20, 40, 3)], author="me")
    with pytest.raises(SegloopError, match="patch centres need their case"):
        extract_patches(project, tmp_path / "out", centers=[(1, 1, 1)], author="me")
    with pytest.raises(SegloopError, match="either patch centres"):
        extract_patches(project, tmp_path / "out", case_id="p", author="me")
    assert not (tmp_path / "out").exists()
    assert snapshot_project(project.root) == before


def _extract(project, tmp_path, **options):
    settings = {"case_id": "p", "centers": [(20, 20, 12)], "size": 16, "border_voxels": 2, **options}
    [manifest] = extract_patches(project, tmp_path / "out", author="me", **settings)
    folder = tmp_path / "out" / "corrections" / manifest["patch"]
    return manifest, folder, np.asarray(manifest["affine"])


def test_merge_applies_seed_003_precedence_at_the_offset(project, tmp_path):
    project, pseudo = project
    manifest, folder, affine = _extract(project, tmp_path)
    before = effective(project)
    size = tuple(manifest["size"])
    add1, add2, remove, ignore = (np.zeros(size, bool) for _ in range(4))
    add1[4:6, 4:6, 4:6] = True  # liver here
    add2[6:8, 4:6, 4:6] = True  # a second Add file: unioned
    remove[4:10, 4:10, 4:10] = True  # remove covers both adds: Add wins
    ignore[5, 5, 5] = True  # Ignore wins over Add
    add1[0, 0, 0] = True  # in the 2-voxel border: dropped
    write_mask(folder / "Add_liver1.nrrd", add1, affine)
    write_mask(folder / "add_liver2.nrrd", add2, affine)
    write_mask(folder / "Remove1.nrrd", remove, affine)
    write_mask(folder / "Ignore1.nrrd", ignore, affine)
    report = merge_patches(project, tmp_path / "out" / "corrections", author="me")
    [version] = report.versions
    assert (version.source, version.parent_id, version.tool) == ("revised", pseudo.id, "patch-corrections")
    assert version.classes == PHANTOM_CLASSES
    [record] = version.params["patches"]
    assert record["patch"] == manifest["patch"] and record["offset"] == [12, 12, 4]
    labels = project.read_labels(version)
    ignore_value = project.config.schema.ignore_index
    o = np.array([12, 12, 4])
    region = labels[o[0] + 4 : o[0] + 10, o[1] + 4 : o[1] + 10, o[2] + 4 : o[2] + 10]
    expected = np.zeros((6, 6, 6), np.uint8)
    expected[0:4, 0:2, 0:2] = LIVER
    expected[1, 1, 1] = ignore_value
    assert np.array_equal(region, expected)
    # the version speaks for the reviewed voxels only: the patch minus its 2-voxel border
    reviewed = np.zeros(SHAPE, bool)
    reviewed[14:26, 14:26, 6:18] = True
    assert version.params["coverage"] == [{"offset": [12, 12, 4], "size": [16, 16, 16], "border_voxels": 2}]
    assert (labels[~reviewed] == ignore_value).all()
    changed = np.zeros(SHAPE, bool)
    changed[o[0] + 4 : o[0] + 10, o[1] + 4 : o[1] + 10, o[2] + 4 : o[2] + 10] = True
    assert np.array_equal(labels[reviewed & ~changed], before[reviewed & ~changed])
    assert any("border" in w for w in report.warnings)
    assert [r.status for r in report.patches] == ["merged"]
    after = effective(project)
    assert np.array_equal(after[reviewed], labels[reviewed])
    assert np.array_equal(after[~reviewed], before[~reviewed])  # outside: the prediction still decides
    assert after[12, 12, 4] == before[12, 12, 4]  # border voxel not merged


def test_merging_twice_adds_no_version_and_changed_files_are_outdated(project, tmp_path):
    project, _ = project
    manifest, folder, affine = _extract(project, tmp_path)
    mask = np.zeros(tuple(manifest["size"]), bool)
    mask[5:9, 5:9, 5:9] = True
    write_mask(folder / "Remove1.nrrd", mask, affine)
    first = merge_patches(project, folder.parent, author="me")
    count = len(project.list_label_versions("p"))
    again = merge_patches(project, folder.parent, author="me")
    assert again.versions == () and len(project.list_label_versions("p")) == count
    assert [(r.status, r.version_id) for r in again.patches] == [("already merged", first.versions[0].id)]
    # editing the corrections after the merge: the patch's label changed since extraction
    write_mask(folder / "Ignore1.nrrd", mask, affine)
    with pytest.raises(ConflictError, match=r"an earlier merge of this patch.*nothing was merged"):
        merge_patches(project, folder.parent, author="me")
    forced = merge_patches(project, folder.parent, force=True, author="me")
    [version] = forced.versions
    assert version.parent_id == first.versions[0].id


def test_outdated_parent_is_refused_naming_both_versions(project, tmp_path):
    project, pseudo = project
    manifest, folder, affine = _extract(project, tmp_path)
    mask = np.zeros(tuple(manifest["size"]), bool)
    mask[5:9, 5:9, 5:9] = True
    write_mask(folder / "Add_spleen.nrrd", mask, affine)
    theirs = effective(project)
    theirs[20, 20, 12] = LIVER  # a colleague's revision touches the patch
    other = store_tool_labels(
        project, project.get_case("p"), theirs, source="revised", classes=PHANTOM_CLASSES,
        tool="someone", params={}, author="colleague",
    )  # fmt: skip
    before = snapshot_project(project.root)
    message = f"cut from label version {pseudo.id}, but the case is now at version {other.id}"
    with pytest.raises(ConflictError, match=message) as error:
        merge_patches(project, folder.parent, author="me")
    assert "colleague" in str(error.value) and "nothing was merged" in str(error.value)
    assert snapshot_project(project.root) == before
    [version] = merge_patches(project, folder.parent, force=True, author="me").versions
    assert version.parent_id == other.id and version.params["force"] is True


def test_unknown_patch_and_wrong_shapes_merge_nothing(project, tmp_path):
    project, _ = project
    manifest, folder, affine = _extract(project, tmp_path)
    write_mask(folder / "Add_liver.nrrd", np.ones(tuple(manifest["size"]), bool), affine)
    (folder.parent / "p_patch99").mkdir()
    before = snapshot_project(project.root)
    with pytest.raises(NotFoundError, match=r"no patch p_patch99 was extracted.*known patches: p_patch1"):
        merge_patches(project, folder.parent, author="me")
    (folder.parent / "p_patch99").rmdir()
    write_mask(folder / "Remove1.nrrd", np.ones((16, 16, 15), bool), affine)
    with pytest.raises(GeometryMismatchError, match=r"patch p_patch1: .*\(16, 16, 15\) does not match"):
        merge_patches(project, folder.parent, author="me")
    shifted = affine.copy()
    shifted[:3, 3] += 5.0
    write_mask(folder / "Remove1.nrrd", np.ones((16, 16, 16), bool), shifted)
    with pytest.raises(GeometryMismatchError, match="patch p_patch1"):
        merge_patches(project, folder.parent, author="me")
    assert snapshot_project(project.root) == before
    with pytest.raises(NotFoundError, match="does not exist"):
        merge_patches(project, tmp_path / "nowhere", author="me")


def test_add_class_from_option_label_values_and_empty_folders(project, tmp_path):
    project, _ = project
    manifest, folder, affine = _extract(project, tmp_path)
    size = tuple(manifest["size"])
    mask = np.zeros(size, np.uint8)
    mask[4:6, 4:6, 4:6] = 1
    write_mask(folder / "Add1.nrrd", mask, affine)
    values = np.zeros(size, np.uint8)
    values[8:10, 8:10, 8:10] = 4  # label-valued: kidney_right
    write_volume(Volume(values, affine), folder / "Add2.nrrd")
    [_, empty_folder, _] = _extract(project, tmp_path, centers=[(30, 30, 12)])
    report = merge_patches(project, folder.parent, class_name="spleen", author="me")
    statuses = {r.patch: r.status for r in report.patches}
    assert statuses == {"p_patch1": "merged", "p_patch2": "skipped (no corrections)"}
    labels = project.read_labels(report.versions[0])
    o = manifest["offset"]
    assert (labels[o[0] + 4 : o[0] + 6, o[1] + 4 : o[1] + 6, o[2] + 4 : o[2] + 6] == SPLEEN).all()
    # with --class, Add files without a class name mean that class, label values included
    assert (labels[o[0] + 8 : o[0] + 10, o[1] + 8 : o[1] + 10, o[2] + 8 : o[2] + 10] == SPLEEN).all()
    assert empty_folder.is_dir()
    accepted = merge_patches(project, folder.parent, class_name="spleen", accept_empty=True, author="me")
    assert {r.patch: r.status for r in accepted.patches}["p_patch2"] == "merged"


def test_label_valued_add_without_class(project, tmp_path):
    project, _ = project
    manifest, folder, affine = _extract(project, tmp_path)
    values = np.zeros(tuple(manifest["size"]), np.uint8)
    values[4:6, 4:6, 4:6] = 4
    values[8:10, 8:10, 8:10] = 2
    write_volume(Volume(values, affine), folder / "Add1.nrrd")
    [version] = merge_patches(project, folder.parent, author="me").versions
    labels = project.read_labels(version)
    o = manifest["offset"]
    assert labels[o[0] + 5, o[1] + 5, o[2] + 5] == 4 and labels[o[0] + 9, o[1] + 9, o[2] + 9] == 2
    values[0, 0, 0] = project.config.schema.ignore_index
    write_volume(Volume(values, affine), folder / "Add1.nrrd", overwrite=True)
    with pytest.raises(SegloopError, match="ignore value"):
        merge_patches(project, folder.parent, author="me")


def test_merged_patches_stay_candidates_and_are_not_rescored(project, tmp_path):
    project, _ = project
    model = start_model(project)
    schema = project.config.schema
    p = confident(effective(project) * 0, schema.ignore_index)
    block = (slice(10, 30), slice(10, 30), slice(4, 20))
    p = blur_block(p, LIVER, block)
    add_prediction(project, "p", p, model_id=model)
    [before] = rank_cases(project, record=False)
    assert before.score == 20 * 20 * 16
    [auto] = extract_patches(project, tmp_path / "out", auto=1, size=8, border_voxels=0, author="me")
    assert auto["case"] == "p" and auto["reason"] == "uncertainty" and auto["center"] == [20, 20, 12]
    folder = tmp_path / "out" / "corrections" / auto["patch"]
    write_mask(folder / "Ignore1.nrrd", np.zeros((8, 8, 8), bool), np.asarray(auto["affine"]))
    merge_patches(project, folder.parent, author="me")
    [after] = rank_cases(project, record=False)
    flagged = np.zeros(SHAPE, bool)
    flagged[block] = True
    flagged[16:24, 16:24, 8:16] = False  # the reviewed patch is not scored again
    radii = cleaning_radii(spacing_from_affine(project.get_case("p").affine))  # the case's opening
    assert after.case_id == "p" and after.score == open_mask_iterations(flagged, radii).sum() > 0


def test_patches_of_a_2d_image(tmp_path):
    project = init_project(tmp_path / "flat", ["cell"])
    image = np.zeros((30, 20, 1), np.uint8)
    image[5:15, 5:15] = 200
    affine = np.diag([0.5, 0.5, 1.0, 1.0])
    path = write_volume(Volume(image, affine), tmp_path / "cells.nii.gz")
    import_cases(project, [path], case_id="cells")
    with pytest.raises(NotFoundError, match="has no label yet"):
        extract_patches(project, tmp_path / "out", case_id="cells", centers=[(2, 10, 0)], author="me")
    store_tool_labels(
        project, project.get_case("cells"), (image > 100).astype(np.uint8), source="draft", classes=["cell"],
        tool="threshold", params={}, author="me",
    )  # fmt: skip
    [manifest] = extract_patches(
        project,
        tmp_path / "out",
        case_id="cells",
        centers=[(2, 10, 0)],
        size=12,
        border_voxels=2,
        author="me",
    )
    assert manifest["offset"] == [-4, 4, 0] and manifest["size"] == [12, 12, 1]
    folder = tmp_path / "out" / "corrections" / manifest["patch"]
    add = np.zeros((12, 12, 1), bool)
    add[4:8, 4:8] = True  # one class: MemBrain-seg's binary Add needs no class name
    write_mask(folder / "Add1.nrrd", add, np.asarray(manifest["affine"]))
    [version] = merge_patches(project, folder.parent, author="me").versions
    assert project.read_labels(version).shape == (30, 20, 1) and version.classes == ("cell",)
    labels = compute_effective_label(project, project.get_case("cells")).labels
    assert (labels[0:4, 8:12, 0] == 1).all() and (labels[5:15, 5:15] == 1).all()
    assert (labels == 1).sum() == 100 + 16  # the thresholded cell plus the 4 x 4 added above it


def test_training_learns_the_reviewed_voxels_only(project, tmp_path):
    """Training assembles without pseudo versions: outside the patch nobody vouches for a voxel."""
    project, _ = project
    manifest, folder, affine = _extract(project, tmp_path)
    write_mask(folder / "Ignore1.nrrd", np.zeros(tuple(manifest["size"]), bool), affine)
    [version] = merge_patches(project, folder.parent, author="me").versions
    case = project.get_case("p")
    human = [v for v in project.list_label_versions("p") if v.source != "pseudo"]
    learned = compute_effective_label(project, case, human)
    reviewed = np.zeros(SHAPE, bool)
    reviewed[14:26, 14:26, 6:18] = True
    assert learned.ignore_mask[~reviewed].all() and not learned.ignore_mask[reviewed].any()
    assert np.array_equal(learned.labels[reviewed], effective(project)[reviewed])
    assert version.voxel_counts["ignore"] == reviewed.size - reviewed.sum()
