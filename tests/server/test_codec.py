"""Volumes on the wire: NIfTI gz bytes out and back, bounded uploads, grid checks, previews."""

from __future__ import annotations

import gzip
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from segloop.core.volume import Volume
from segloop.errors import CorruptFileError, GeometryMismatchError, TooLargeError
from segloop.io import nifti
from segloop.io.limits import MAX_IMAGE_BYTES_VARIABLE
from segloop.server.codec import align_to_case_grid, preview_volume, read_nifti_upload, volume_to_nifti_gz
from segloop.store.records import CaseRecord

AFFINE = np.array([[0.8, 0, 0, -100.25], [0, 0.8, 0, 20.5], [0, 0, 2.5, -7.0], [0, 0, 0, 1]])


def case_record(shape=(6, 5, 4), affine=AFFINE) -> CaseRecord:
    return CaseRecord(1, "c0", shape, np.asarray(affine, float), "int16", (), None, "me")  # type: ignore[arg-type]


def test_volume_round_trips_through_bytes_that_nibabel_reads(tmp_path):
    array = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4) - 50
    data = volume_to_nifti_gz(array, AFFINE)
    assert data[:2] == b"\x1f\x8b"
    back = read_nifti_upload(data, what="upload")
    assert back.array.dtype == np.int16 and np.array_equal(back.array, array)
    np.testing.assert_allclose(back.affine, AFFINE, atol=1e-5)
    (tmp_path / "x.nii.gz").write_bytes(data)
    image = nib.load(tmp_path / "x.nii.gz")  # another reader sees the same voxels and grid
    assert np.array_equal(np.asanyarray(image.dataobj), array)
    np.testing.assert_allclose(image.affine, AFFINE, atol=1e-5)


def test_dtype_is_converted_and_float16_widened():
    entropy = np.full((2, 3, 4), 0.25, np.float16)
    assert read_nifti_upload(volume_to_nifti_gz(entropy, np.eye(4)), what="e").array.dtype == np.float32
    labels = Volume(np.ones((2, 3, 4), np.int64), np.eye(4))
    assert read_nifti_upload(volume_to_nifti_gz(labels, dtype=np.uint8), what="l").array.dtype == np.uint8
    with pytest.raises(ValueError, match="needs its affine"):
        volume_to_nifti_gz(np.zeros((2, 2, 2)))


def test_uncompressed_nifti_upload_is_read_too():
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    plain = nifti.encode(Volume(array, AFFINE), compress=False)
    assert np.array_equal(read_nifti_upload(plain, what="u").array, array)
    with pytest.raises(CorruptFileError, match="truncated"):
        read_nifti_upload(plain[:-5], what="u")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "not a NIfTI file"),
        (b"hello, this is no image", "not a NIfTI file"),
        (gzip.compress(b"\0" * 400, mtime=0), "not a NIfTI file"),
        (b"\x1f\x8b\x08\x00garbage-garbage", "gzip"),
    ],
    ids=["empty", "text", "gzip of zeros", "broken gzip"],  # stable: xdist workers collect alike
)
def test_corrupt_uploads_are_one_line_errors(data, match):
    with pytest.raises(CorruptFileError, match=match) as caught:
        read_nifti_upload(data, what="uploaded label")
    assert "\n" not in str(caught.value) and "uploaded label" in str(caught.value)


def test_truncated_gzip_upload_is_refused():
    data = volume_to_nifti_gz(np.ones((20, 20, 20), np.uint8), np.eye(4))
    with pytest.raises(CorruptFileError):
        read_nifti_upload(data[: len(data) // 2], what="uploaded label")


def test_gzip_bomb_is_refused_before_inflating(monkeypatch):
    """A header declaring 8 GiB of voxels is refused from its header alone (a few KB of gzip)."""
    header = nib.Nifti1Header()
    header.set_data_shape((2048, 2048, 2048))
    header.set_data_dtype(np.uint8)
    header.set_sform(np.eye(4), code=1)
    header.set_data_offset(352)
    raw = header.binaryblock + b"\0" * 4
    bomb = gzip.compress(raw + b"\0" * (1 << 20))  # the voxels it has are zeros; it declares far more
    assert len(bomb) < 10_000
    tracemalloc.start()
    try:
        with pytest.raises(TooLargeError, match="above the cap"):
            read_nifti_upload(bomb, what="uploaded label")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # nothing near the declared 8 GiB (nor the 1 MiB of zeros) was inflated
    monkeypatch.setenv(MAX_IMAGE_BYTES_VARIABLE, str(1 << 20))  # a lower cap applies to uploads too
    with pytest.raises(TooLargeError):
        read_nifti_upload(volume_to_nifti_gz(np.zeros((128, 128, 128), np.uint8), np.eye(4)), what="x")


def test_upload_on_the_case_grid_is_accepted_flipped_axes_put_back_in_order():
    case = case_record()
    array = np.random.default_rng(0).integers(0, 3, case.shape).astype(np.uint8)
    assert np.array_equal(align_to_case_grid(Volume(array, AFFINE + 1e-5), case, what="u"), array)
    flipped = AFFINE.copy()  # the same voxels written with the first axis reversed
    flipped[:3, 3] += flipped[:3, 0] * (case.shape[0] - 1)
    flipped[:3, 0] *= -1
    assert np.array_equal(align_to_case_grid(Volume(array[::-1], flipped), case, what="u"), array)


@pytest.mark.parametrize(
    ("shape", "affine", "match"),
    [
        ((6, 5, 3), AFFINE, r"shape \(6, 5, 3\) does not match the image shape \(6, 5, 4\)"),
        ((6, 5, 4), AFFINE + np.diag([0.1, 0, 0, 0]), "affine differs from the image affine by up to 0.1 mm"),
        ((6, 5, 4), np.eye(4), "affine differs"),
    ],
)
def test_upload_off_the_case_grid_names_both_grids(shape, affine, match):
    with pytest.raises(GeometryMismatchError, match=match):
        align_to_case_grid(Volume(np.zeros(shape, np.uint8), affine), case_record(), what="uploaded label")


def test_channels_are_not_a_label():
    volume = Volume(np.zeros((2, 6, 5, 4), np.uint8), AFFINE)
    with pytest.raises(GeometryMismatchError, match=r"shape \(2, 6, 5, 4\): expected case 'c0'"):
        align_to_case_grid(volume, case_record(), what="uploaded label")


def test_preview_keeps_every_step_th_voxel_at_the_same_world_position():
    array = np.arange(300 * 260 * 3, dtype=np.int32).reshape(300, 260, 3)
    volume = Volume(array, AFFINE)
    small = preview_volume(volume, max_in_plane=128)
    assert small.spatial_shape == (100, 87, 3)  # step 3 (300 / 128 -> 3), slices kept
    assert np.array_equal(small.array, array[::3, ::3])
    for voxel in ([0, 0, 0], [5, 7, 2], [99, 86, 1]):
        full = [voxel[0] * 3, voxel[1] * 3, voxel[2]]
        np.testing.assert_allclose(small.affine @ [*voxel, 1], AFFINE @ [*full, 1])
    assert preview_volume(Volume(array[:100, :100], AFFINE)).spatial_shape == (100, 100, 3)


def test_preview_strides_the_axial_plane_of_a_permuted_grid():
    affine = np.eye(4)[[2, 0, 1, 3]]  # voxel axis 1 runs along z: axial slices are along axis 1
    small = preview_volume(Volume(np.zeros((256, 4, 200), np.uint8), affine), max_in_plane=64)
    assert small.spatial_shape == (64, 4, 50)


def test_a_volume_over_one_gzip_block_is_one_gzip_member_as_browsers_need():
    import zlib

    from segloop.io.gzip_blocks import BLOCK_BYTES

    shape = (256, 256, BLOCK_BYTES // 256**2 + 1)  # one block and a bit
    array = np.random.default_rng(0).integers(0, 9, size=shape, dtype=np.uint8)
    data = volume_to_nifti_gz(array, AFFINE)
    inflater = zlib.decompressobj(31)  # one gzip member; DecompressionStream refuses what follows it
    raw = inflater.decompress(data)
    assert inflater.eof and inflater.unused_data == b""
    assert np.array_equal(nifti.decode(raw, what="x").array, array)
