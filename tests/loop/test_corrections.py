"""Whole-case corrections (a corrected label, add/remove/ignore masks) and exports for other tools."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segloop.core import Volume
from segloop.errors import ConflictError, GeometryMismatchError, SegloopError, UnknownClassError
from segloop.io import read_volume, write_volume
from segloop.loop import corrections
from segloop.loop.cases import import_cases, init_project
from segloop.loop.labels import compute_effective_label
from segloop.loop.tool_exports import export_for_tool, itksnap_label_description
from segloop.loop.tools import store_tool_labels
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom
from tests.conftest import snapshot_project

SHAPE = (24, 24, 12)
LIVER, SPLEEN, KIDNEY_LEFT, KIDNEY_RIGHT = 1, 2, 3, 4


@pytest.fixture
def setup(tmp_path):
    phantom = make_ct_phantom(SHAPE, seed=5)
    image = write_volume(phantom.image, tmp_path / "data" / "k_0000.nii.gz")
    project = init_project(tmp_path / "proj", PHANTOM_CLASSES)
    import_cases(project, [image])
    pseudo = store_tool_labels(
        project, project.get_case("k"), phantom.labels.array, source="pseudo", classes=PHANTOM_CLASSES,
        tool="model", params={}, author="ai",
    )  # fmt: skip
    return project, pseudo, phantom


def correct_case_label(project, case_id, path, *, classes=None, force=False, author):
    """What `segloop correct --label` does: read the file, find its parent, apply it."""
    labels, names, provenance = corrections.read_corrected_label(project, case_id, path)
    parent = corrections.find_export_parent(project, case_id, [path])
    return corrections.apply_label(
        project, case_id, labels, classes or names, parent=parent, force=force, author=author,
        provenance=provenance,
    )  # fmt: skip


def correct_case_masks(project, case_id, *, force=False, author, **files):
    """What `segloop correct --add/--remove/--ignore/--corrections-dir` does."""
    found, read = corrections.read_correction_files(project, case_id, **files)
    parent = corrections.find_export_parent(project, case_id, [f.path for f in read])
    return corrections.apply(project, case_id, found, parent=parent, force=force, author=author)


def effective(project):
    return compute_effective_label(project, project.get_case("k")).labels


def test_seg_nrrd_maps_segments_by_name_not_value_or_order(setup, tmp_path):
    project, pseudo, phantom = setup
    truth = phantom.labels.array
    stored = np.zeros(SHAPE, np.uint8)
    stored[truth == SPLEEN] = 1  # the file's value 1 is the spleen, its first segment the kidney
    stored[truth == KIDNEY_LEFT] = 7
    segments = [
        {"id": "a", "name": "kidney_left", "color": (9, 9, 9), "label_value": 7, "layer": 0},
        {"id": "b", "name": "spleen", "color": (1, 2, 3), "label_value": 1, "layer": 0},
    ]
    path = write_volume(
        Volume(stored, phantom.labels.affine, {"segments": segments}), tmp_path / "fix.seg.nrrd"
    )
    result = correct_case_label(project, "k", path, author="me")
    version = result.version
    assert result.created and version.source == "revised" and version.parent_id == pseudo.id
    assert set(version.classes) == {"kidney_left", "spleen"}
    labels = project.read_labels(version)
    assert np.array_equal(labels == SPLEEN, truth == SPLEEN)
    assert np.array_equal(labels == KIDNEY_LEFT, truth == KIDNEY_LEFT)
    again = correct_case_label(project, "k", path, author="me")
    assert not again.created and again.version.id == version.id
    assert len(project.list_label_versions("k")) == 2


def test_unknown_segment_names_and_other_grids_store_nothing(setup, tmp_path):
    project, _, phantom = setup
    before = snapshot_project(project.root)
    segments = [{"id": "x", "name": "pancreas", "color": (1, 1, 1), "label_value": 1, "layer": 0}]
    bad = write_volume(
        Volume(phantom.labels.array.clip(0, 1), phantom.labels.affine, {"segments": segments}),
        tmp_path / "bad.seg.nrrd",
    )
    with pytest.raises(UnknownClassError, match="pancreas"):
        correct_case_label(project, "k", bad, author="me")
    small = write_volume(Volume(phantom.labels.array[:-1], phantom.labels.affine), tmp_path / "small.nii.gz")
    with pytest.raises(GeometryMismatchError, match=r"shape \(23, 24, 12\)"):
        correct_case_label(project, "k", small, author="me")
    with pytest.raises(GeometryMismatchError):
        correct_case_masks(project, "k", add=[small], class_name="liver", author="me")
    assert snapshot_project(project.root) == before


def test_masks_merge_with_precedence_and_annotate_only_touched_classes(setup, tmp_path):
    project, pseudo, phantom = setup
    affine = phantom.labels.affine
    before = effective(project)
    liver = np.argwhere(before == LIVER)[0]
    add = np.zeros(SHAPE, np.uint8)
    add[0:2, 0:2, 0:2] = 1
    remove = np.zeros(SHAPE, np.uint8)
    remove[tuple(liver)] = 1
    remove[0, 0, 0] = 1
    ignore = np.zeros(SHAPE, np.uint8)
    ignore[1, 1, 1] = 1
    paths = [write_volume(Volume(m, affine), tmp_path / f"{n}.nrrd") for n, m in
             (("a", add), ("r", remove), ("i", ignore))]  # fmt: skip
    result = correct_case_masks(
        project, "k", add=[paths[0]], remove=[paths[1]], ignore=[paths[2]], class_name="spleen", author="me"
    )
    version = result.version
    assert version.classes == ("spleen",)  # liver is untouched: --class makes Remove spare it
    assert version.parent_id == pseudo.id
    labels = effective(project)
    assert labels[0, 0, 0] == SPLEEN  # Add beats Remove
    assert labels[1, 1, 1] == project.config.schema.ignore_index  # Ignore beats Add
    assert labels[tuple(liver)] == LIVER
    plain = correct_case_masks(project, "k", remove=[paths[1]], author="me")
    assert plain.version.classes == ("liver", "spleen")  # a plain Remove clears whatever is there
    assert effective(project)[tuple(liver)] == 0 and effective(project)[0, 0, 0] == 0
    unchanged = correct_case_masks(project, "k", remove=[paths[1]], author="me")
    assert unchanged.version is None and unchanged.changed_voxels == 0
    with pytest.raises(SegloopError, match="no correction given"):
        correct_case_masks(project, "k", author="me")
    only_ignore = correct_case_masks(project, "k", ignore=[paths[2]], author="me")
    assert only_ignore.version.classes == () and only_ignore.created
    assert effective(project)[1, 1, 1] == project.config.schema.ignore_index


def test_original_classes_are_reported(setup, tmp_path):
    project, _, phantom = setup
    store_tool_labels(
        project, project.get_case("k"), phantom.labels.array, source="original", classes=["liver"], tool="t",
        params={}, author="expert",
    )  # fmt: skip
    mask = np.zeros(SHAPE, np.uint8)
    mask[0, 0, 0] = 1
    path = write_volume(Volume(mask, phantom.labels.affine), tmp_path / "Add_liver.nrrd")
    result = correct_case_masks(project, "k", add=[path], author="me")
    assert result.version.classes == ("liver",)
    assert "liver is decided by an original version" in result.warnings[0]


@pytest.mark.parametrize("tool", ["slicer", "itksnap", "mitk"])
def test_export_for_tools(setup, tmp_path, tool):
    project, pseudo, _ = setup
    out = tmp_path / tool
    written = export_for_tool(project, "k", tool, out)
    names = sorted(p.name for p in written)
    suffix = {"slicer": ".seg.nrrd", "itksnap": ".nii.gz", "mitk": ".nrrd"}[tool]
    assert f"label{suffix}" in names and f"corrected{suffix}" in names
    assert "README.txt" in names and "segloop-export.json" in names and (out / "corrections").is_dir()
    manifest = json.loads((out / "segloop-export.json").read_text())
    assert manifest["case"] == "k" and manifest["parent_version_id"] == pseudo.id
    image = read_volume(out / ("image.nii.gz" if tool == "itksnap" else "image.nrrd"))
    np.testing.assert_allclose(image.affine, project.get_case("k").affine, atol=1e-6)
    label = read_volume(out / f"corrected{suffix}")
    if tool == "slicer":
        names = [s["name"] for s in label.meta["segments"]]
        assert names == [*PHANTOM_CLASSES, "ignore"]
    else:
        assert np.array_equal(label.array, effective(project))
    if tool == "itksnap":
        text = (out / "labels.txt").read_text()
        assert '"Clear Label"' in text and '"kidney_left"' in text
    if tool == "mitk":
        stack = json.loads((out / "corrected.mitklabel.json").read_text())
        assert stack["groups"][0]["_file"] == "./corrected.nrrd"
        assert [lab["value"] for lab in stack["groups"][0]["labels"]] == [1, 2, 3, 4, 5]
    with pytest.raises(SegloopError, match="exists already"):
        export_for_tool(project, "k", tool, out)
    export_for_tool(project, "k", tool, out, overwrite=True)
    (out / "corrections" / "Add1.nrrd").write_bytes(b"work")
    with pytest.raises(ConflictError, match="holds corrections"):
        export_for_tool(project, "k", tool, out, overwrite=True)
    with pytest.raises(SegloopError, match="unknown tool"):
        export_for_tool(project, "k", "amira", tmp_path / "x")


def test_itksnap_description_lists_classes_and_ignore(setup):
    project, _, _ = setup
    lines = [
        line for line in itksnap_label_description(project.config.schema).splitlines() if line[:1] != "#"
    ]
    assert lines[0].split()[0] == "0" and lines[-1].endswith('"ignore"') and lines[-1].split()[0] == "5"
    assert [line.split()[0] for line in lines] == ["0", "1", "2", "3", "4", "5"]


def test_corrections_from_a_stale_export_are_refused(setup, tmp_path):
    project, pseudo, _ = setup
    out = tmp_path / "slicer"
    export_for_tool(project, "k", "slicer", out)
    corrected = read_volume(out / "corrected.seg.nrrd")
    array = corrected.array.copy()
    array[0, 0, 0] = SPLEEN
    write_volume(Volume(array, corrected.affine, corrected.meta), out / "corrected.seg.nrrd", overwrite=True)
    mask = np.zeros(SHAPE, np.uint8)
    mask[2, 2, 2] = 1
    write_volume(Volume(mask, corrected.affine), out / "corrections" / "Add_kidney_right1.nrrd")
    colleague = correct_case_masks(project, "k", corrections_dir=out / "corrections", author="colleague")
    assert colleague.version.classes == ("kidney_right",)  # the export was current: accepted
    before = snapshot_project(project.root)
    with pytest.raises(ConflictError, match=r"changed since the corrected label was read: .* now at version"):
        correct_case_label(project, "k", out / "corrected.seg.nrrd", author="me")
    assert snapshot_project(project.root) == before
    forced = correct_case_label(project, "k", out / "corrected.seg.nrrd", force=True, author="me")
    # the parent is the version deciding most of the classes it annotates (the pseudo label: 3 of 4)
    assert forced.created and forced.version.parent_id == pseudo.id and forced.version.params["force"]


def test_forced_export_onto_a_link_replaces_the_link_and_leaves_no_temporary(run_cli, setup, tmp_path):
    """issue 18: `export --for slicer LINK --force`, LINK a symbolic link to a folder."""
    project, _, _ = setup
    real = tmp_path / "elsewhere"
    export_for_tool(project, "k", "slicer", real)
    link = tmp_path / "exports" / "k"
    link.parent.mkdir()
    link.symlink_to(real, target_is_directory=True)
    result = run_cli("export", project.root, "k", link, "--for", "slicer", "--force")
    assert result.code == 0, result.err
    assert link.is_dir() and not link.is_symlink() and (link / "corrected.seg.nrrd").is_file()
    assert [p.name for p in link.parent.iterdir()] == ["k"]  # no .tmp-… left beside it
    assert (real / "segloop-export.json").is_file()  # what the link pointed at is not deleted


def test_a_correction_file_linking_outside_its_folder_is_refused(tmp_path):
    from segloop.errors import InvalidInputError

    folder = tmp_path / "corrections"
    folder.mkdir()
    secret = tmp_path / "secret.nrrd"
    secret.write_text("not for segloop")
    (folder / "Add_liver1.nrrd").symlink_to(secret)
    with pytest.raises(InvalidInputError, match="leaves"):
        corrections.list_correction_files(folder, PHANTOM_CLASSES)
    (folder / "Add_liver1.nrrd").unlink()
    (folder / "inner.nrrd").write_text("x")
    (folder / "Add_liver2.nrrd").symlink_to("inner.nrrd")  # a link inside the folder is fine
    files, others = corrections.list_correction_files(folder, PHANTOM_CLASSES)
    assert [f.path.name for f in files] == ["Add_liver2.nrrd"] and [p.name for p in others] == ["inner.nrrd"]
