"""MRC: round trips in Ångström, axis order, modes, pixel-unit headers and corrupt files."""

import mrcfile
import numpy as np
import pytest

from segloop.core import Volume
from segloop.errors import CorruptFileError, SegloopError, UnsupportedFormatError
from segloop.io import read_volume, write_volume
from segloop.io.mrc import ANGSTROM_PER_MM

MM = np.diag([0.5, 0.25, 2.0, 1.0])  # millimetre voxels, for tests about anything but the units


def _angstrom_affine(voxel: tuple[float, float, float], origin: tuple[float, float, float]):
    affine = np.diag([*(np.array(voxel) / ANGSTROM_PER_MM), 1.0])
    affine[:3, 3] = np.array(origin) / ANGSTROM_PER_MM
    return affine


def _volume_takes_angstrom() -> bool:
    try:
        Volume(np.zeros((1, 1, 1)), _angstrom_affine((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    except SegloopError:
        return False
    return True


ANGSTROM = pytest.mark.skipif(
    not _volume_takes_angstrom(),
    reason="core.Volume refuses affines with |det| < 1e-12, i.e. Ångström voxels in mm (1 Å ="
    " 1e-7 mm); make its invertibility check scale-free",
)


@ANGSTROM
@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint16, np.float16, np.float32])
def test_write_then_read_round_trips_array_dtype_and_affine(tmp_path, dtype):
    rng = np.random.default_rng(0)
    array = (rng.random((9, 7, 5)) * 100).astype(dtype)
    affine = _angstrom_affine((1.5, 2.25, 4.0), (-12.5, 4.25, 100.0))
    volume = read_volume(write_volume(Volume(array, affine), tmp_path / "x.mrc"))
    again = read_volume(write_volume(volume, tmp_path / "again.rec"))
    for read in (volume, again):
        np.testing.assert_array_equal(read.array, array)
        assert read.array.dtype == array.dtype
        np.testing.assert_array_equal(read.affine, affine)
    assert volume.meta["voxel_size_angstrom"] == (1.5, 2.25, 4.0)
    assert volume.meta["origin_angstrom"] == (-12.5, 4.25, 100.0)


@ANGSTROM
@pytest.mark.parametrize("voxel", [(1.1, 1.1, 1.1), (1.5, 2.7, 3.3), (0.8333, 13.48, 0.8333)])
def test_read_write_read_is_exact_for_any_voxel_size(tmp_path, voxel):
    array = np.random.default_rng(1).random((3, 11, 13)).astype(np.float32)
    affine = _angstrom_affine(voxel, (-12.3, 4.5, 100.1))
    first = read_volume(write_volume(Volume(array, affine), tmp_path / "a.mrc"))
    np.testing.assert_allclose(first.affine, affine, rtol=1e-6, atol=0)  # float32 header
    np.testing.assert_allclose(first.meta["voxel_size_angstrom"], voxel, rtol=1e-6)
    again = read_volume(write_volume(first, tmp_path / "b.mrc"))
    np.testing.assert_array_equal(again.affine, first.affine)
    np.testing.assert_array_equal(again.array, array)


def test_axes_are_x_y_z_and_units_are_converted_from_angstrom(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)  # (nz, ny, nx)
    with mrcfile.new(tmp_path / "map.mrc") as mrc:
        mrc.set_data(data)
        mrc.voxel_size = (2.0e6, 4.0e6, 8.0e6)  # Å, large so that the mm affine is tame
        mrc.header.origin = (1.0e7, -3.0e7, 0.0)
    volume = read_volume(tmp_path / "map.mrc")
    np.testing.assert_array_equal(volume.array, data.transpose(2, 1, 0))
    np.testing.assert_array_equal(volume.affine[:3, :3], np.diag([0.2, 0.4, 0.8]))
    np.testing.assert_array_equal(volume.affine[:3, 3], [1.0, -3.0, 0.0])
    assert volume.meta["voxel_size_angstrom"] == (2.0e6, 4.0e6, 8.0e6)


def test_image_and_permuted_axis_map(tmp_path):
    with mrcfile.new(tmp_path / "image.mrc") as mrc:
        mrc.set_data(np.zeros((3, 4), np.float32))
    assert read_volume(tmp_path / "image.mrc").array.shape == (4, 3, 1)
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    with mrcfile.new(tmp_path / "swapped.mrc") as mrc:
        mrc.set_data(data)
        mrc.header.mapc, mrc.header.mapr = 2, 1  # columns run along Y, rows along X
    volume = read_volume(tmp_path / "swapped.mrc")
    np.testing.assert_array_equal(volume.array, data.transpose(1, 2, 0))


def test_header_without_cell_reads_in_pixels_and_stays_so(tmp_path):
    with mrcfile.new(tmp_path / "bare.mrc") as mrc:
        mrc.set_data(np.ones((2, 3, 4), np.int16))
    volume = read_volume(tmp_path / "bare.mrc")
    assert volume.meta["spacing_unit"] == "pixel"
    assert volume.meta["voxel_size_angstrom"] == (0.0, 0.0, 0.0)
    np.testing.assert_array_equal(volume.affine, np.eye(4))
    again = read_volume(write_volume(volume, tmp_path / "again.mrc"))
    assert again.meta["spacing_unit"] == "pixel"
    np.testing.assert_array_equal(again.affine, np.eye(4))


@pytest.mark.parametrize(
    ("array", "read_dtype"),
    [
        (np.arange(8, dtype=np.uint8).reshape(2, 2, 2), np.uint16),  # mrcfile widens uint8
        (np.eye(2, dtype=bool)[:, :, np.newaxis], np.int8),
        (np.arange(-4, 4, dtype=np.int32).reshape(2, 2, 2), np.int16),
        (np.arange(8, dtype=np.int64).reshape(2, 2, 2) * 9000, np.uint16),
        (np.linspace(0, 1, 8).reshape(2, 2, 2).astype(np.float32).astype(np.float64), np.float32),
    ],
)
def test_dtypes_are_narrowed_only_without_change(tmp_path, array, read_dtype):
    volume = read_volume(write_volume(Volume(array, MM), tmp_path / "x.mrc"))
    assert volume.array.dtype == read_dtype
    np.testing.assert_array_equal(volume.array, array)


def test_unstorable_values_orientation_and_channels_are_refused(tmp_path):
    with pytest.raises(UnsupportedFormatError, match="got int64 values that do not fit"):
        write_volume(Volume(np.full((2, 2, 2), 70000, np.int64), MM), tmp_path / "x.mrc")
    with pytest.raises(UnsupportedFormatError, match="got float64"):
        write_volume(Volume(np.full((2, 2, 2), 0.1), MM), tmp_path / "x.mrc")
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])
    rotated = np.array([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    for affine in (flipped, rotated):
        with pytest.raises(UnsupportedFormatError, match="MRC has no orientation"):
            write_volume(Volume(np.zeros((2, 2, 2), np.int16), affine), tmp_path / "x.mrc")
    with pytest.raises(UnsupportedFormatError, match="one channel"):
        write_volume(Volume(np.zeros((2, 2, 2, 2), np.int16), MM), tmp_path / "x.mrc")
    assert not (tmp_path / "x.mrc").exists()


def test_volume_stack_is_refused(tmp_path):
    with mrcfile.new(tmp_path / "stack.mrc") as mrc:
        mrc.set_data(np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(UnsupportedFormatError, match="stack of shape"):
        read_volume(tmp_path / "stack.mrc")


@pytest.mark.parametrize("keep", [0.5, 1100, 500])
def test_truncated_or_foreign_files_are_corrupt(tmp_path, keep):
    array = np.random.default_rng(2).random((20, 20, 20)).astype(np.float32)
    raw = write_volume(Volume(array, MM), tmp_path / "x.mrc").read_bytes()
    (tmp_path / "cut.mrc").write_bytes(raw[: int(len(raw) * keep) if keep < 1 else keep])
    with pytest.raises(CorruptFileError, match="truncated or corrupt"):
        read_volume(tmp_path / "cut.mrc")
    (tmp_path / "text.map").write_text("not a map" * 200)
    with pytest.raises(CorruptFileError, match="not an MRC file"):
        read_volume(tmp_path / "text.map")
