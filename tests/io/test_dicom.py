"""DICOM series: round trips, sorting, rescaling, series checks and the real TotalSegmentator CT."""

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from segloop.core import Volume
from segloop.core.geometry import flip_ras_lps
from segloop.errors import CorruptFileError, InvalidInputError, NotFoundError, UnsupportedFormatError
from segloop.io import read_volume, write_volume

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
AXIAL = np.array(  # the usual axial CT grid: I -> right-to-left, J -> anterior-to-posterior
    [[-0.75, 0.0, 0.0, 120.25], [0.0, -0.5, 0.0, 80.5], [0.0, 0.0, 2.5, -300.0], [0, 0, 0, 1]]
)


def _oblique() -> np.ndarray:
    c, s = np.cos(0.3), np.sin(0.3)  # turned 0.3 rad about z ...
    turn = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    c, s = np.cos(0.2), np.sin(0.2)  # ... then tilted 0.2 rad about x
    rotation = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ turn
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.8, 1.3])
    affine[:3, 3] = [10.1, -20.3, 5.7]
    return affine


def _real_series() -> Path:
    folder = SHARED_DATA / "totalsegmentator-examples" / "ct_dicom_series"
    if not (folder / "dicom").is_dir():
        pytest.skip(f"real data {folder} is absent (it lies beside the checkout in CI)")
    return folder


def _write(volume: Volume, folder: Path) -> Path:
    return write_volume(volume, folder, format_name="dicom")


def _edit_slices(folder: Path, **attributes: object) -> None:
    for path in folder.iterdir():
        dataset = pydicom.dcmread(path)
        for name, value in attributes.items():
            setattr(dataset, name, value)
        dataset.save_as(path)


def test_write_then_read_round_trips_array_and_affine(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(-1024, 3000, (6, 5, 4)).astype(np.int16)
    volume = read_volume(_write(Volume(array, AXIAL), tmp_path / "ct"))
    np.testing.assert_array_equal(volume.array, array)
    assert volume.array.dtype == np.int16
    np.testing.assert_array_equal(volume.affine, AXIAL)
    again = read_volume(_write(volume, tmp_path / "again"))
    np.testing.assert_array_equal(again.array, array)
    np.testing.assert_array_equal(again.affine, AXIAL)
    assert again.meta["series_uid"] != volume.meta["series_uid"]  # a new series every time ...
    assert again.meta["study_uid"] == volume.meta["study_uid"]  # ... in the same study


def test_left_handed_grid_reads_back_with_slices_reversed(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    affine = AXIAL @ np.diag([1.0, 1.0, -1.0, 1.0])  # K runs feet-ward
    volume = read_volume(_write(Volume(array, affine), tmp_path / "ct"))
    np.testing.assert_array_equal(volume.array, array[:, :, ::-1])
    last = affine @ [0, 0, 3, 1]  # the same voxel centres, counted the other way
    np.testing.assert_array_equal(volume.affine[:, 3], last)
    np.testing.assert_array_equal(volume.affine[:3, :3], AXIAL[:3, :3])


def test_oblique_series_round_trips_exactly_once_read(tmp_path):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 100, (7, 6, 5)).astype(np.int16)
    first = read_volume(_write(Volume(array, _oblique()), tmp_path / "a"))
    np.testing.assert_allclose(first.affine, _oblique(), atol=1e-9)  # 16-character decimal strings
    again = read_volume(_write(first, tmp_path / "b"))
    np.testing.assert_array_equal(again.affine, first.affine)
    np.testing.assert_array_equal(again.array, array)


@pytest.mark.parametrize(
    ("dtype", "high", "read_dtype"),
    [(np.uint8, 255, np.int16), (np.uint16, 60000, np.int32), (np.int32, 30000, np.int16)],
)
def test_integer_dtypes_read_back_as_int16_or_int32(tmp_path, dtype, high, read_dtype):
    array = np.random.default_rng(2).integers(0, high, (4, 3, 2)).astype(dtype)
    volume = read_volume(_write(Volume(array, AXIAL), tmp_path / "x"))
    assert volume.array.dtype == read_dtype
    np.testing.assert_array_equal(volume.array, array)


def test_float_bool_and_wide_values_are_refused(tmp_path):
    with pytest.raises(UnsupportedFormatError, match="integer voxel values; got float32"):
        _write(Volume(np.zeros((2, 2, 2), np.float32), AXIAL), tmp_path / "f")
    with pytest.raises(UnsupportedFormatError, match="got bool"):
        _write(Volume(np.zeros((2, 2, 2), bool), AXIAL), tmp_path / "b")
    wide = np.zeros((2, 2, 2), np.int32)
    wide[1, 1, 1] = 70000
    with pytest.raises(UnsupportedFormatError, match="from 0 to 70000"):
        _write(Volume(wide, AXIAL), tmp_path / "w")
    assert not (tmp_path / "f").exists() and not (tmp_path / "w").exists()


def test_rescale_slope_and_intercept_are_applied_per_slice(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    folder = _write(Volume(array, AXIAL), tmp_path / "ct")
    _edit_slices(folder, RescaleSlope="2", RescaleIntercept="-1024")
    volume = read_volume(folder)
    assert volume.array.dtype == np.int16
    np.testing.assert_array_equal(volume.array, array * 2 - 1024)
    _edit_slices(folder, RescaleSlope="0.5", RescaleIntercept="0")
    dataset = pydicom.dcmread(folder / "IM00002.dcm")
    dataset.RescaleIntercept = "10"
    dataset.save_as(folder / "IM00002.dcm")
    volume = read_volume(folder)
    assert volume.array.dtype == np.float32
    expected = array * np.float32(0.5)
    expected[:, :, 1] += 10
    np.testing.assert_array_equal(volume.array, expected)


def test_shuffled_unnamed_files_are_sorted_by_position(tmp_path):
    rng = np.random.default_rng(3)
    array = rng.integers(-100, 100, (5, 4, 6)).astype(np.int16)
    folder = _write(Volume(array, AXIAL), tmp_path / "ct")
    files = sorted(folder.iterdir())
    names = ("q", "b", "z", "a", "m", "c")  # no extension, not in slice order
    for index, name in zip(rng.permutation(len(files)), names, strict=True):
        dataset = pydicom.dcmread(files[index])
        dataset.InstanceNumber = int(rng.integers(1, 100))
        dataset.save_as(folder / name)
        files[index].unlink()
    (folder / "README.txt").write_text("not DICOM")
    volume = read_volume(folder)
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_array_equal(volume.affine, AXIAL)


def test_repeated_and_uneven_positions_are_refused(tmp_path):
    folder = _write(Volume(np.zeros((2, 2, 5), np.int16), AXIAL), tmp_path / "ct")
    (folder / "IM00003.dcm").unlink()
    with pytest.raises(InvalidInputError, match=r"equally spaced.*-297\.5000 and -292\.5000 mm"):
        read_volume(folder)
    shutil.copy(folder / "IM00002.dcm", folder / "copy.dcm")
    with pytest.raises(InvalidInputError, match=r"one slice per position.*\[-297\.5\] mm"):
        read_volume(folder)


def test_single_slice_uses_slice_thickness(tmp_path):
    folder = _write(Volume(np.ones((3, 2, 1), np.int16), AXIAL), tmp_path / "one")
    _edit_slices(folder, SliceThickness="4")
    assert read_volume(folder).spacing == (0.75, 0.5, 4.0)


def test_empty_truncated_and_multichannel_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing here")
    with pytest.raises(NotFoundError, match="expected DICOM image files"):
        read_volume(tmp_path / "empty")
    folder = _write(Volume(np.zeros((16, 16, 3), np.int16), AXIAL), tmp_path / "ct")
    raw = (folder / "IM00002.dcm").read_bytes()
    (folder / "IM00002.dcm").write_bytes(raw[: len(raw) - 100])
    with pytest.raises(CorruptFileError, match=r"IM00002\.dcm.*truncated or corrupt"):
        read_volume(folder)
    with pytest.raises(UnsupportedFormatError, match="one channel"):
        _write(Volume(np.zeros((2, 2, 2, 2), np.int16), AXIAL), tmp_path / "c")


def test_real_series_matches_its_nifti_label_and_simpleitk():
    sitk = pytest.importorskip("SimpleITK")
    folder = _real_series()
    volume = read_volume(folder / "dicom")
    assert volume.array.shape == (512, 512, 20)
    assert volume.array.dtype == np.int16  # uint16 stored, intercept -1024
    assert volume.array.min() == -1024
    assert volume.meta["modality"] == "CT"
    assert volume.spacing == (0.9765625, 0.9765625, 2.0)  # SliceThickness says 3 mm: overlapping
    label = nib.load(folder / "label_totalseg_fast.nii.gz")
    assert label.shape == volume.spatial_shape
    # The label (TotalSegmentator, via dcm2niix) stores rows bottom-up: its J runs against ours.
    reverse_rows = np.array([[1, 0, 0, 0], [0, -1, 0, 511], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.testing.assert_allclose(volume.affine @ reverse_rows, label.affine, atol=1e-3)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder / "dicom")))
    image = reader.Execute()
    lps = flip_ras_lps(volume.affine)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(lps[:3, :3], direction * np.array(image.GetSpacing()), atol=1e-6)
    np.testing.assert_allclose(lps[:3, 3], image.GetOrigin(), atol=1e-6)
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(image).transpose(2, 1, 0))


def test_real_series_round_trips_and_simpleitk_reads_what_was_written(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    volume = read_volume(_real_series() / "dicom")
    folder = _write(volume, tmp_path / "copy")
    again = read_volume(folder)
    np.testing.assert_array_equal(again.array, volume.array)
    np.testing.assert_array_equal(again.affine, volume.affine)
    assert sorted(p.name for p in folder.iterdir())[:2] == ["IM00001.dcm", "IM00002.dcm"]
    image = sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    np.testing.assert_allclose(image.GetOrigin(), flip_ras_lps(volume.affine)[:3, 3], atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), volume.array)


def test_folder_with_two_series_names_both(tmp_path):
    source = sorted((_real_series() / "dicom").iterdir())
    for path in source[:3]:
        shutil.copy(path, tmp_path / path.name)
    for index, path in enumerate(source[3:6]):
        dataset = pydicom.dcmread(path)
        dataset.SeriesInstanceUID = "1.2.3.4.5"
        dataset.SeriesDescription = "other"
        dataset.save_as(tmp_path / f"other{index}")
    with pytest.raises(InvalidInputError, match="expected one series, found 2") as caught:
        read_volume(tmp_path)
    message = str(caught.value)
    assert "<no SeriesInstanceUID> ('CT Body 3.0', 3 slices)" in message
    assert "1.2.3.4.5 ('other', 3 slices)" in message
    assert "put each series in its own folder" in message
