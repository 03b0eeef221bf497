"""Adding cases: pairing, provenance, immutability, and bad input that changes nothing."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segloop.core import Volume
from segloop.errors import (
    ConflictError,
    CorruptFileError,
    GeometryMismatchError,
    LabelValueError,
    NotFoundError,
    UnknownClassError,
)
from segloop.io import read_volume, write_volume
from segloop.loop.cases import case_id_from_path, export_label, import_cases, init_project, summarize_cases
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom
from tests.conftest import snapshot_project

SHAPE = (16, 16, 8)


def _cohort(folder: Path, n: int = 3, labeled: int = 2) -> list[Path]:
    images = []
    for index in range(n):
        phantom = make_ct_phantom(SHAPE, seed=index)
        images.append(write_volume(phantom.image, folder / "imagesTr" / f"c{index}_0000.nii.gz"))
        if index < labeled:
            write_volume(phantom.labels, folder / "labelsTr" / f"c{index}.nii.gz")
    return images


@pytest.fixture
def project(tmp_path):
    return init_project(tmp_path / "proj", PHANTOM_CLASSES)


def test_case_ids_strip_the_nnunet_channel_suffix_only():
    assert case_id_from_path(Path("x_0000.nii.gz")) == ("x", 0)
    assert case_id_from_path(Path("case_12.nii.gz")) == ("case_12", 0)
    assert case_id_from_path(Path("dicom_folder")) == ("dicom_folder", 0)


def test_add_pairs_images_with_labels_and_records_provenance(project, tmp_path):
    images = _cohort(tmp_path / "data")
    report = import_cases(project, images, labels_dir=tmp_path / "data" / "labelsTr", author="ann")
    assert report.added_cases == ["c0", "c1", "c2"]
    assert report.labeled == ["c0", "c1"]
    [version] = project.list_label_versions("c0")
    assert (version.source, version.author, version.tool) == ("original", "ann", "segloop add")
    assert version.classes == PHANTOM_CLASSES
    assert version.params["file"].endswith("c0.nii.gz")
    truth = make_ct_phantom(SHAPE, seed=0).labels.array
    np.testing.assert_array_equal(project.read_labels(version), truth)
    assert version.voxel_counts["liver"] == int((truth == 1).sum())
    case = project.get_case("c2")
    assert case.images[0].path == str(images[2].resolve()) and not case.images[0].copied
    assert len(case.images[0].sha256) == 64
    summaries = {s.case_id: s for s in summarize_cases(project)}
    assert summaries["c0"].class_sources["liver"] == "original"
    assert summaries["c2"].class_sources["liver"] is None


def test_partial_annotations_declare_their_classes_and_ignore_the_rest(project, tmp_path):
    images = _cohort(tmp_path / "data", n=1, labeled=1)
    import_cases(project, images, labels_dir=tmp_path / "data" / "labelsTr", classes=["liver"])
    exported = read_volume(export_label(project, "c0", tmp_path / "eff.nii.gz")).array
    truth = make_ct_phantom(SHAPE, seed=0).labels.array
    ignore = project.config.schema.ignore_index
    assert np.all(exported[truth == 1] == 1)
    # the spleen was not declared: its voxels and all background are unknown
    assert np.all(exported[truth != 1] == ignore)


def test_copy_puts_images_inside_the_project(project, tmp_path):
    images = _cohort(tmp_path / "data", n=1, labeled=0)
    import_cases(project, images, copy=True)
    [image] = project.get_case("c0").images
    assert image.copied and not Path(image.path).is_absolute()
    assert Path(image.path).parts[0] == "images"
    assert (project.root / image.path).read_bytes() == images[0].read_bytes()


def test_export_writes_a_slicer_segmentation_with_class_names(project, tmp_path):
    images = _cohort(tmp_path / "data", n=1, labeled=1)
    import_cases(project, images, labels_dir=tmp_path / "data" / "labelsTr")
    volume = read_volume(export_label(project, "c0", tmp_path / "c0.seg.nrrd"))
    assert [s["name"] for s in volume.meta["segments"]] == list(PHANTOM_CLASSES)
    np.testing.assert_array_equal(volume.array, make_ct_phantom(SHAPE, seed=0).labels.array)
    with pytest.raises(ConflictError):
        export_label(project, "c0", tmp_path / "c0.seg.nrrd")


def test_a_seg_nrrd_label_is_mapped_by_name_and_uncropped(project, tmp_path):
    phantom = make_ct_phantom(SHAPE, seed=0)
    image = write_volume(phantom.image, tmp_path / "data" / "c0.nii.gz")
    spleen = phantom.labels.array == 2
    lo = np.argwhere(spleen).min(axis=0)
    hi = np.argwhere(spleen).max(axis=0) + 1
    crop = spleen[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.uint8) * 7
    affine = phantom.image.affine.copy()
    affine[:3, 3] = affine[:3, :3] @ lo
    segments = [{"name": "spleen", "color": (0, 255, 0), "label_value": 7, "layer": 0}]
    write_volume(Volume(crop, affine, {"segments": segments}), tmp_path / "labels" / "c0.seg.nrrd")
    import_cases(project, [image], labels_dir=tmp_path / "labels", source="revised")
    [version] = project.list_label_versions("c0")
    assert version.classes == ("spleen",)
    labels = project.read_labels(version)
    np.testing.assert_array_equal(labels == 2, spleen)
    assert set(np.unique(labels).tolist()) == {0, 2}


def _write_label(folder: Path, name: str, array: np.ndarray, affine: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), folder / name)


def _bad_inputs(tmp_path: Path, images: list[Path]):
    """(description, image paths, labels dir, classes, expected error, message fragment)."""
    affine = make_ct_phantom(SHAPE, seed=0).image.affine
    good = make_ct_phantom(SHAPE, seed=0).labels.array
    cases = []
    folder = tmp_path / "bad-shape"
    _write_label(folder, "c0.nii.gz", np.zeros((16, 16, 9), np.uint8), affine)
    cases.append(("shape", folder, None, GeometryMismatchError, r"shape \(16, 16, 9\) does not match"))
    folder = tmp_path / "bad-affine"
    shifted = affine.copy()
    shifted[2, 3] += 5.0
    _write_label(folder, "c0.nii.gz", good, shifted)
    cases.append(
        ("affine", folder, None, GeometryMismatchError, "differs from the image affine by up to 5 mm")
    )
    folder = tmp_path / "bad-values"
    _write_label(folder, "c0.nii.gz", (good * 3).astype(np.uint8), affine)
    cases.append(("values", folder, None, LabelValueError, "outside the schema"))
    folder = tmp_path / "empty"
    _write_label(folder, "c0.nii.gz", np.zeros_like(good), affine)
    cases.append(("empty", folder, None, LabelValueError, "no foreground voxel"))
    folder = tmp_path / "corrupt"
    folder.mkdir()
    data = (tmp_path / "data" / "labelsTr" / "c0.nii.gz").read_bytes()
    (folder / "c0.nii.gz").write_bytes(data[: len(data) // 2])
    cases.append(("corrupt", folder, None, CorruptFileError, "truncated"))
    cases.append(
        (
            "class",
            tmp_path / "data" / "labelsTr",
            ["liver", "pancreas"],
            UnknownClassError,
            "unknown class 'pancreas'",
        )
    )
    cases.append(("missing dir", tmp_path / "nowhere", None, NotFoundError, "does not exist"))
    return cases


def test_bad_input_raises_one_clear_line_and_changes_nothing(project, tmp_path):
    images = _cohort(tmp_path / "data", n=2, labeled=2)
    import_cases(project, images[1:], labels_dir=tmp_path / "data" / "labelsTr")
    before = snapshot_project(project.root)
    for name, labels_dir, classes, error, fragment in _bad_inputs(tmp_path, images):
        with pytest.raises(error, match=fragment) as raised:
            import_cases(project, images[:1], labels_dir=labels_dir, classes=classes)
        assert "\n" not in str(raised.value), name
        assert snapshot_project(project.root) == before, name
    with pytest.raises(ConflictError, match="case ids already in the project: c1"):
        import_cases(project, images)
    with pytest.raises(NotFoundError, match="no such file"):
        import_cases(project, [tmp_path / "missing_0000.nii.gz"])
    assert snapshot_project(project.root) == before


def test_label_versions_are_immutable_files(project, tmp_path):
    images = _cohort(tmp_path / "data", n=1, labeled=1)
    import_cases(project, images, labels_dir=tmp_path / "data" / "labelsTr")
    [version] = project.list_label_versions("c0")
    path = project.objects.path_of(version.object_key)
    assert path.exists() and path.name == f"{version.object_key}.nii.gz"
    assert not hasattr(project, "delete_label_version") and not hasattr(project, "update_label_version")
