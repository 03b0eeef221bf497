"""PNG and JPEG: round trips, modes, pixel size from the stored affine or dpi, the real 2D data."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segloop.core import Volume
from segloop.errors import CorruptFileError, UnsupportedFormatError
from segloop.io import read_volume, write_volume

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
AFFINE = np.array([[0.25, 0.0, 0.0, 1.5], [0.0, 0.125, 0.0, -2.0], [0.0, 0.0, 0.25, 3.0], [0, 0, 0, 1]])


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((9, 7, 1), np.uint8),
        ((9, 7, 1), np.uint16),
        ((2, 9, 7, 1), np.uint8),
        ((3, 9, 7, 1), np.uint8),
        ((4, 9, 7, 1), np.uint8),
    ],
)
def test_png_round_trips_array_dtype_and_affine(tmp_path, shape, dtype):
    rng = np.random.default_rng(0)
    array = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    volume = read_volume(write_volume(Volume(array, AFFINE), tmp_path / "x.png"))
    again = read_volume(write_volume(volume, tmp_path / "again.png"))
    for read in (volume, again):
        np.testing.assert_array_equal(read.array, array)
        assert read.array.dtype == array.dtype
        np.testing.assert_array_equal(read.affine, AFFINE)


def test_png_pixels_are_rows_of_x_and_carry_dpi_for_other_readers(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(4, 3, 1)  # (X, Y, 1)
    path = write_volume(Volume(array, np.diag([0.5, 0.25, 0.5, 1.0])), tmp_path / "x.png")
    with Image.open(path) as image:
        assert image.size == (4, 3)  # (width = X, height = Y)
        np.testing.assert_array_equal(np.asarray(image), array[:, :, 0].T)
        np.testing.assert_allclose(image.info["dpi"], (50.8, 101.6), rtol=1e-3)


def test_bool_writes_one_bit_and_reads_as_uint8(tmp_path):
    array = np.random.default_rng(1).random((8, 5, 1)) > 0.5
    path = write_volume(Volume(array, AFFINE), tmp_path / "mask.png")
    assert Image.open(path).mode == "1"
    volume = read_volume(path)
    assert volume.array.dtype == np.uint8
    np.testing.assert_array_equal(volume.array, array.astype(np.uint8))


def test_palette_indices_are_values_and_the_palette_is_kept(tmp_path):
    indices = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)  # (Y, X)
    image = Image.fromarray(indices).convert("P")
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0])
    image.save(tmp_path / "voc.png")
    volume = read_volume(tmp_path / "voc.png")
    np.testing.assert_array_equal(volume.array[:, :, 0], indices.T)
    assert volume.meta["palette"][:9] == [0, 0, 0, 255, 0, 0, 0, 255, 0]
    written = write_volume(volume, tmp_path / "again.png")
    assert Image.open(written).mode == "P"
    np.testing.assert_array_equal(read_volume(written).array, volume.array)


def test_unwritable_dtypes_and_stacks_are_refused(tmp_path):
    for array in (np.zeros((2, 2, 1), np.float32), np.zeros((2, 2, 1), np.int32)):
        with pytest.raises(UnsupportedFormatError, match=f"got {array.dtype}"):
            write_volume(Volume(array, AFFINE), tmp_path / "x.png")
    with pytest.raises(UnsupportedFormatError, match="one 2D image; got 3 slices"):
        write_volume(Volume(np.zeros((2, 2, 3), np.uint8), AFFINE), tmp_path / "x.png")
    with pytest.raises(UnsupportedFormatError, match="JPEG writing needs uint8"):
        write_volume(Volume(np.zeros((2, 2, 1), np.uint16), AFFINE), tmp_path / "x.jpg")
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.jpg").exists()
    Image.new("CMYK", (3, 2)).save(tmp_path / "print.jpg")
    with pytest.raises(UnsupportedFormatError, match="got CMYK; convert to RGB or L"):
        read_volume(tmp_path / "print.jpg")


def test_pixel_size_from_dpi_else_pixel_units(tmp_path):
    Image.fromarray(np.zeros((3, 4), np.uint8)).save(tmp_path / "dpi.png", dpi=(254, 127))
    spacing = read_volume(tmp_path / "dpi.png").spacing
    np.testing.assert_allclose(spacing, (0.1, 0.2, 0.1), rtol=1e-4)  # pHYs: whole pixels per metre
    Image.fromarray(np.zeros((3, 4), np.uint8)).save(tmp_path / "plain.png")
    volume = read_volume(tmp_path / "plain.png")
    assert volume.meta["spacing_unit"] == "pixel"
    np.testing.assert_array_equal(volume.affine, np.eye(4))
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(tmp_path / "photo.jpg", dpi=(300, 300))
    volume = read_volume(tmp_path / "photo.jpg")
    assert volume.array.shape == (3, 4, 3, 1)
    np.testing.assert_allclose(volume.spacing, (25.4 / 300,) * 3)


def test_jpeg_keeps_the_affine_and_pixels_approximately(tmp_path):
    y, x = np.mgrid[0:32, 0:24]
    array = ((x * 5 + y * 3) % 256).astype(np.uint8).T[:, :, np.newaxis]  # a smooth ramp
    volume = read_volume(write_volume(Volume(array, AFFINE), tmp_path / "x.jpg"))
    assert volume.array.dtype == np.uint8 and volume.array.shape == array.shape
    assert np.abs(volume.array.astype(int) - array).mean() < 3  # lossy, quality 95
    np.testing.assert_array_equal(volume.affine, AFFINE)
    again = read_volume(write_volume(volume, tmp_path / "again.jpeg"))
    np.testing.assert_array_equal(again.affine, AFFINE)
    with Image.open(tmp_path / "x.jpg") as image:
        assert image.info["dpi"] == (102, 203)  # JFIF keeps whole dots per inch only


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_or_foreign_files_are_corrupt(tmp_path, suffix):
    array = np.random.default_rng(2).integers(0, 255, (64, 64, 1)).astype(np.uint8)
    raw = write_volume(Volume(array, AFFINE), tmp_path / f"x{suffix}").read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CorruptFileError, match="truncated or corrupt"):
        read_volume(tmp_path / f"cut{suffix}")
    (tmp_path / f"text{suffix}").write_text("not an image")
    with pytest.raises(CorruptFileError):
        read_volume(tmp_path / f"text{suffix}")


@pytest.mark.parametrize(
    ("dataset", "image", "label_values"),
    [("nih3t3-nuclei-2d", "dna-0.png", {0, 255}), ("isbi2012-em-membranes", "00.png", {0, 255})],
)
def test_real_images_and_labels(tmp_path, dataset, image, label_values):
    folder = SHARED_DATA / dataset
    if not (folder / "images").is_dir():
        pytest.skip(f"real data {folder} is absent (it lies beside the checkout in CI)")
    pixels = np.asarray(Image.open(folder / "images" / image))
    volume = read_volume(folder / "images" / image)
    label = read_volume(folder / "labels" / image)
    assert volume.array.dtype == np.uint8 and volume.spatial_shape == (*pixels.shape[::-1], 1)
    np.testing.assert_array_equal(volume.array[:, :, 0], pixels.T)
    assert label.spatial_shape == volume.spatial_shape
    assert set(np.unique(label.array).tolist()) == label_values
    assert volume.meta["spacing_unit"] == "pixel"  # no dpi in these files
    again = read_volume(write_volume(label, tmp_path / "label.png"))
    np.testing.assert_array_equal(again.array, label.array)
    np.testing.assert_array_equal(again.affine, label.affine)
