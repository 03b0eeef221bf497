"""Seed 000 (AnatomySketch): meshes named per case and class as labels, contours out, edited contours back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segloop.errors import InvalidInputError, NotFoundError, UnknownClassError
from segloop.io import write_volume
from segloop.io.mesh import Mesh as SurfaceMesh
from segloop.io.mesh import write_mesh
from segloop.loop.cases import import_cases, init_project
from segloop.loop.labels import compute_effective_label
from segloop.loop.tools import Contours, case_contours, replace_class_slices, run, write_case_contours
from segloop.segment.mesh import mask_to_mesh
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom
from tests.conftest import snapshot_project

SHAPE = (24, 24, 12)
FILE_NAMES = {
    "liver": "liver",
    "spleen": "spleen",
    "kidney_left": "leftkidney",
    "kidney_right": "rightkidney",
}
NAME_MAP = {"leftkidney": "kidney_left", "rightkidney": "kidney_right"}


def _seed_folders(folder: Path, cases: tuple[str, ...] = ("101", "102")) -> dict[str, np.ndarray]:
    """``image/<case>_image.nii.gz`` and ``mesh/<case>_<class>_mesh.stl`` (exact voxel surfaces)."""
    truths = {}
    for seed, case in enumerate(cases):
        phantom = make_ct_phantom(SHAPE, seed=seed)
        write_volume(phantom.image, folder / "image" / f"{case}_image.nii.gz", overwrite=True)
        labels = phantom.labels.array
        for value, name in enumerate(PHANTOM_CLASSES, start=1):
            vertices, faces = mask_to_mesh(labels == value, phantom.image.affine, smoothing_iterations=0)
            write_mesh(
                SurfaceMesh(vertices, faces),
                folder / "mesh" / f"{case}_{FILE_NAMES[name]}_mesh.stl",
                overwrite=True,
            )
        truths[case] = labels
    return truths


@pytest.fixture
def project(tmp_path):
    return init_project(tmp_path / "proj", PHANTOM_CLASSES)


def _add(project, folder: Path, **options):
    return import_cases(
        project,
        sorted((folder / "image").iterdir()),
        image_pattern="{case}_image",
        meshes_dir=folder / "mesh",
        mesh_pattern="{case}_{class}_mesh.stl",
        mesh_classes=NAME_MAP,
        author="ann",
        **options,
    )


def test_meshes_named_the_seed_way_become_each_case_label(project, tmp_path):
    truths = _seed_folders(tmp_path / "data")
    other = init_project(tmp_path / "other", PHANTOM_CLASSES)
    [_, liver_only] = _add(other, tmp_path / "data", classes=["liver"]).versions
    assert liver_only.classes == ("liver",)
    np.testing.assert_array_equal(other.read_labels(liver_only), np.where(truths["102"] == 1, 1, 0))
    report = _add(project, tmp_path / "data")
    assert report.added_cases == ["101", "102"]
    for case, truth in truths.items():
        [version] = project.list_label_versions(case)
        assert (version.source, version.tool) == ("original", "segloop add --meshes-dir")
        assert set(version.classes) == set(PHANTOM_CLASSES)
        assert version.params["meshes"]["kidney_left"]["file"] == f"{case}_leftkidney_mesh.stl"
        np.testing.assert_array_equal(project.read_labels(version), truth)  # exact surfaces: voxel-exact


def test_a_missing_or_open_mesh_or_unmapped_class_adds_nothing(project, tmp_path):
    data = tmp_path / "data"
    _seed_folders(data)
    before = snapshot_project(project.root)
    (data / "mesh" / "102_spleen_mesh.stl").unlink()
    with pytest.raises(NotFoundError, match="'102' has no mesh of 'spleen'"):
        _add(project, data, classes=list(PHANTOM_CLASSES))
    for path in (data / "mesh").glob("102_*"):
        path.unlink()
    with pytest.raises(NotFoundError, match="'102' has no mesh"):
        _add(project, data)
    _seed_folders(data)
    with pytest.raises(UnknownClassError, match="leftkidney"):
        import_cases(
            project,
            sorted((data / "image").iterdir()),
            image_pattern="{case}_image",
            meshes_dir=data / "mesh",
        )
    opened = SurfaceMesh(
        np.array([[0, 0, 0], [30, 0, 0], [0, 30, 0], [0, 0, 30.0]]), np.array([[0, 1, 2], [0, 1, 3]])
    )
    write_mesh(opened, data / "mesh" / "102_liver_mesh.stl", overwrite=True)
    with pytest.raises(InvalidInputError, match="102_liver_mesh.stl.*not closed"):
        _add(project, data)
    with pytest.raises(InvalidInputError, match="does not match the image pattern"):
        import_cases(project, [data / "image" / "101_image.nii.gz"], image_pattern="{case}_ct")
    assert snapshot_project(project.root) == before


def test_contours_out_edited_slices_back_replace_only_that_class_between_them(project, tmp_path):
    truths = _seed_folders(tmp_path / "data", cases=("101",))
    _add(project, tmp_path / "data", source="pseudo")  # a prediction to correct
    truth = truths["101"]
    document = case_contours(project, "101", ["liver"], axis=2)
    liver_slices = sorted({p["slice"] for p in document["classes"]["liver"]})
    assert liver_slices == np.flatnonzero((truth == 1).any(axis=(0, 1))).tolist()
    written = write_case_contours(project, "101", tmp_path / "c.json", None, 2)
    assert json.loads((tmp_path / "c.json").read_text()) == written
    assert set(written["classes"]) == set(PHANTOM_CLASSES)

    first, last = liver_slices[1], liver_slices[-2]
    edited = dict(
        document, classes={"liver": [p for p in document["classes"]["liver"] if p["slice"] in (first, last)]}
    )
    result = run(project, "101", Contours(edited, fill_between=True, replace=True), author="ann")
    assert [v.source for v in result.versions] == ["sparse", "revised"]
    assert result.version.classes == ("liver",) and result.version.parent_id == result.versions[0].id
    after = compute_effective_label(project, project.get_case("101")).labels
    changed = np.flatnonzero((after != truth).any(axis=(0, 1)))
    assert changed.size and first <= changed.min() and changed.max() <= last  # only between the edited slices
    np.testing.assert_array_equal(after[..., :first], truth[..., :first])
    moved = after != truth  # only the liver moved: to or from it
    assert ((truth[moved] == 1) | (after[moved] == 1)).all()
    inside = slice(first, last + 1)
    dice = (
        2
        * ((after[..., inside] == 1) & (truth[..., inside] == 1)).sum()
        / ((after[..., inside] == 1).sum() + (truth[..., inside] == 1).sum())
    )
    assert dice > 0.8


def test_replace_class_slices_touches_only_the_given_slices():
    labels = np.zeros((4, 4, 3), np.uint8)
    labels[:2] = 1
    labels[2:] = 2
    mask = np.zeros(labels.shape, bool)
    mask[1:3, :, :] = True
    replace_class_slices(labels, mask, 1, 2, [1])
    assert (labels[..., 0] == np.repeat([1, 1, 2, 2], 4).reshape(4, 4)).all()  # slice 0 as it was
    assert labels[0, 0, 1] == 0 and labels[2, 0, 1] == 1 and labels[3, 0, 1] == 2  # mask wins over class 2
