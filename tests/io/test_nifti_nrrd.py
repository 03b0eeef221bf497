import gzip

import nibabel as nib
import numpy as np
import pytest

from segloop.core import Volume
from segloop.errors import ConflictError, CorruptFileError, NotFoundError, UnsupportedFormatError
from segloop.io import read_volume, write_volume

OBLIQUE = np.array(
    [
        [0.7, 0.1, 0.0, -12.25],
        [0.05, -0.9, 0.0, 44.5],
        [0.0, 0.0, 2.5, 1.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


@pytest.fixture(params=["x.nii.gz", "x.nii", "x.nrrd", "x.nhdr", "x.seg.nrrd"])
def suffix(request):
    return request.param


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.int32, np.uint16])
def test_write_then_read_round_trips_array_and_affine(tmp_path, rng, suffix, dtype):
    array = (rng.random((7, 8, 9)) * 100).astype(dtype)
    if suffix == "x.seg.nrrd":  # a segmentation holds whole label values, each one a segment
        array = np.round(array)
    written = read_volume(write_volume(Volume(array, OBLIQUE), tmp_path / suffix))
    again = read_volume(write_volume(written, tmp_path / f"again-{suffix}"))
    for volume in (written, again):
        np.testing.assert_array_equal(volume.array, array)
        assert volume.array.dtype == array.dtype
    np.testing.assert_allclose(written.affine, OBLIQUE, atol=1e-5)  # NIfTI stores float32
    np.testing.assert_array_equal(again.affine, written.affine)  # what was read round-trips exactly


def test_nifti_is_readable_by_nibabel_with_the_same_orientation(tmp_path, rng):
    array = rng.integers(-1000, 1000, (6, 5, 4)).astype(np.int16)
    path = write_volume(Volume(array, OBLIQUE), tmp_path / "ct.nii.gz")
    image = nib.load(path)
    np.testing.assert_array_equal(np.asanyarray(image.dataobj), array)
    np.testing.assert_allclose(image.affine, OBLIQUE, atol=1e-5)
    with gzip.open(path) as stream:  # plain zlib gzip opens what ISA-L wrote
        assert len(stream.read()) > array.nbytes


def test_nrrd_is_lps_on_disk_like_slicer(tmp_path):
    import nrrd

    path = write_volume(Volume(np.zeros((2, 2, 2), np.uint8), OBLIQUE), tmp_path / "x.nrrd")
    header = nrrd.read_header(str(path))
    assert header["space"] == "left-posterior-superior"
    np.testing.assert_allclose(header["space origin"], [12.25, -44.5, 1.0])


def test_nifti_scaled_integers_stay_integers(tmp_path):
    raw = np.array([[[0, 1000, 2000]]], dtype=np.uint16)
    image = nib.Nifti1Image(raw, np.eye(4))
    image.header.set_slope_inter(1.0, -1024.0)
    nib.save(image, tmp_path / "scaled.nii.gz")
    volume = read_volume(tmp_path / "scaled.nii.gz")
    assert volume.array.dtype == np.int16
    assert volume.array.ravel().tolist() == [-1024, -24, 976]


def test_truncated_nifti_is_a_corrupt_file_error(tmp_path, rng):
    path = write_volume(
        Volume(rng.normal(size=(20, 20, 20)).astype(np.float32), np.eye(4)), tmp_path / "x.nii.gz"
    )
    data = path.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match=r"cut.nii.gz: .*truncated"):
        read_volume(tmp_path / "cut.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(CorruptFileError, match="junk.nii.gz"):
        read_volume(tmp_path / "junk.nii.gz")
    (tmp_path / "junk.nrrd").write_bytes(b"NRRD0004\ntype: what\n\n")
    with pytest.raises(CorruptFileError, match="junk.nrrd"):
        read_volume(tmp_path / "junk.nrrd")


def test_missing_files_and_unknown_suffixes_are_named(tmp_path):
    with pytest.raises(NotFoundError, match="nope.nii.gz: no such file"):
        read_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "x.xyz").write_text("?")
    with pytest.raises(
        UnsupportedFormatError, match=r"x.xyz: unsupported file suffix; expected one of .*\.nii\.gz"
    ):
        read_volume(tmp_path / "x.xyz")


def test_writes_never_overwrite_unless_asked_and_leave_no_temporary_files(tmp_path):
    volume = Volume(np.ones((2, 2, 2), np.uint8), np.eye(4))
    path = write_volume(volume, tmp_path / "x.nii.gz")
    with pytest.raises(ConflictError, match="exists already"):
        write_volume(volume.with_array(np.zeros((2, 2, 2), np.uint8)), path)
    assert read_volume(path).array.sum() == 8
    write_volume(volume.with_array(np.zeros((2, 2, 2), np.uint8)), path, overwrite=True)
    assert read_volume(path).array.sum() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nii.gz"]


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    bad = Volume(np.zeros((2, 2, 2), dtype=np.complex64), np.eye(4))
    with pytest.raises(Exception):  # noqa: B017, PT011 - nibabel refuses complex64 NRRD? any error will do
        write_volume(bad, tmp_path / "x.nrrd")
    assert list(tmp_path.iterdir()) == []


def test_blocked_gzip_is_plain_gzip_and_reads_back_in_parallel(monkeypatch, tmp_path, rng):
    import gzip

    from segloop.io import gzip_blocks

    monkeypatch.setattr(gzip_blocks, "BLOCK_BYTES", 1000)  # many members on a small array
    array = rng.integers(0, 50, (20, 20, 20)).astype(np.int16)
    path = write_volume(Volume(array, np.eye(4)), tmp_path / "x.nii.gz")
    assert gzip_blocks._member_spans(path.read_bytes()) is not None
    with gzip.open(path) as stream:
        header_and_data = stream.read()
    assert header_and_data[-array.nbytes :] == array.tobytes(order="F")
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array, array)
    volume.array[0, 0, 0] = 7  # the array owns a writable buffer
    data = path.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[:-100])
    with pytest.raises(CorruptFileError, match="truncated"):
        read_volume(tmp_path / "cut.nii.gz")
