"""TIFF: round trips, axis mapping, pixel size from ImageJ / resolution tags, corrupt files."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from segloop.core import Volume
from segloop.errors import CorruptFileError, SegloopError, UnsupportedFormatError
from segloop.io import read_volume, write_volume

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
OBLIQUE = np.array([[2e-4, 1e-5, 0.0, 1.5], [0.0, 2.5e-4, 0.0, -2.25], [0.0, 0.0, 1e-3, 0.125], [0, 0, 0, 1]])


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [
        ((9, 7, 5), np.uint8),
        ((9, 7, 1), np.uint16),
        ((3, 9, 7, 5), np.float32),
        ((2, 9, 7, 1), np.int64),
        ((9, 7, 4), np.float16),
        ((9, 7, 3), bool),
    ],
)
def test_write_then_read_round_trips_array_dtype_and_affine(tmp_path, shape, dtype):
    rng = np.random.default_rng(0)
    array = (rng.random(shape) * 200).astype(dtype)
    volume = read_volume(write_volume(Volume(array, OBLIQUE), tmp_path / "x.tif"))
    again = read_volume(write_volume(volume, tmp_path / "again.tiff"))
    for read in (volume, again):
        np.testing.assert_array_equal(read.array, array)
        assert read.array.dtype == array.dtype
        np.testing.assert_array_equal(read.affine, OBLIQUE)


def test_written_file_has_zyx_pages_zlib_and_resolution_in_centimetres(tmp_path):
    array = np.arange(4 * 3 * 2, dtype=np.uint16).reshape(4, 3, 2)
    path = write_volume(Volume(array, np.diag([5e-4, 2.5e-4, 1e-3, 1.0])), tmp_path / "x.tif")
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == "ZYX"
        np.testing.assert_array_equal(tif.series[0].asarray(), array.transpose(2, 1, 0))
        page = tif.pages.first
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        numerator, denominator = page.tags["XResolution"].value
        assert numerator / denominator == pytest.approx(20000.0)  # 0.5 µm pixels


def test_imagej_stack_with_microns_and_channels(tmp_path):
    data = np.random.default_rng(1).integers(0, 255, (3, 2, 4, 5)).astype(np.uint8)  # Z C Y X
    path = tmp_path / "ij.tif"
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.25),
        metadata={"axes": "ZCYX", "unit": "micron", "spacing": 2.0},
    )
    volume = read_volume(path)
    assert volume.array.shape == (2, 5, 4, 3)  # (C, X, Y, Z)
    assert volume.array[1, 4, 3, 2] == data[2, 1, 3, 4]
    np.testing.assert_allclose(volume.spacing, (5e-4, 2.5e-4, 2e-3))
    assert "spacing_unit" not in volume.meta


@pytest.mark.parametrize(
    ("unit", "resolution", "spacing"),
    [("INCH", 254.0, 0.1), ("CENTIMETER", 40.0, 0.25)],
)
def test_resolution_tags_give_the_pixel_size(tmp_path, unit, resolution, spacing):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(
        path,
        np.zeros((4, 6), np.uint8),
        resolution=(resolution, resolution),
        resolutionunit=unit,
        metadata=None,
    )
    volume = read_volume(path)
    assert volume.array.shape == (6, 4, 1)
    np.testing.assert_allclose(volume.spacing, (spacing, spacing, spacing))


def test_no_pixel_size_means_pixel_units_and_page_axis_is_z(tmp_path):
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as writer:
        for k in range(3):
            writer.write(np.full((4, 5), k, np.uint8), metadata=None, contiguous=False)
    volume = read_volume(path)
    assert volume.array.shape == (5, 4, 3)
    assert volume.array[:, :, 2].tolist() == np.full((5, 4), 2).tolist()
    assert volume.meta["spacing_unit"] == "pixel"
    np.testing.assert_array_equal(volume.affine, np.eye(4))


def test_rgb_samples_become_the_channel_axis(tmp_path):
    data = np.random.default_rng(2).integers(0, 255, (4, 5, 3)).astype(np.uint8)  # Y X S
    tifffile.imwrite(tmp_path / "rgb.tif", data, photometric="rgb")
    volume = read_volume(tmp_path / "rgb.tif")
    assert volume.array.shape == (3, 5, 4, 1)
    np.testing.assert_array_equal(volume.array[:, :, :, 0], data.transpose(2, 1, 0))


def test_time_series_is_refused(tmp_path):
    tifffile.imwrite(
        tmp_path / "t.tif", np.zeros((2, 3, 4, 5), np.uint8), imagej=True, metadata={"axes": "TZYX"}
    )
    with pytest.raises(UnsupportedFormatError, match="got 'TZYX'.*one time point per file"):
        read_volume(tmp_path / "t.tif")


@pytest.mark.parametrize("keep", [0.5, 0.99, 5])
def test_truncated_file_is_corrupt(tmp_path, keep):
    array = np.random.default_rng(3).integers(0, 255, (32, 32, 20)).astype(np.uint8)
    raw = write_volume(Volume(array, np.eye(4)), tmp_path / "x.tif").read_bytes()
    cut = int(len(raw) * keep) if keep < 1 else keep
    (tmp_path / "cut.tif").write_bytes(raw[:cut])
    with pytest.raises(CorruptFileError, match="truncated or corrupt"):
        read_volume(tmp_path / "cut.tif")


def _real(name: str) -> Path:
    folder = SHARED_DATA / name
    if not (folder / "images").is_dir():
        pytest.skip(f"real data {folder} is absent (it lies beside the checkout in CI)")
    return folder


def _volume_takes(spacing_mm: float) -> bool:
    try:
        Volume(np.zeros((1, 1, 1)), np.diag([spacing_mm] * 3 + [1.0]))
    except SegloopError:
        return False
    return True


def test_real_pngs_as_a_tiff_stack(tmp_path):
    folder = _real("nih3t3-nuclei-2d")
    names = ["dna-0.png", "dna-1.png", "dna-26.png"]
    stack = np.stack([np.asarray(Image.open(folder / "images" / n)) for n in names])  # Z Y X
    # No pixel size, like most conversions; without photometric, tifffile stores 3 planes as RGB.
    tifffile.imwrite(tmp_path / "nuclei.tif", stack, photometric="minisblack")
    volume = read_volume(tmp_path / "nuclei.tif")
    assert volume.array.shape == (1344, 1024, 3) and volume.array.dtype == np.uint8
    assert volume.meta["spacing_unit"] == "pixel"
    for k, name in enumerate(names):
        png = read_volume(folder / "images" / name)
        np.testing.assert_array_equal(volume.array[:, :, k], png.array[:, :, 0])
    again = read_volume(write_volume(volume, tmp_path / "again.tif"))
    np.testing.assert_array_equal(again.array, volume.array)
    np.testing.assert_array_equal(again.affine, volume.affine)
    label = np.asarray(Image.open(folder / "labels" / names[0]))
    tifffile.imwrite(tmp_path / "label.tif", label)  # a 2D page: (Y, X) -> (X, Y, 1)
    np.testing.assert_array_equal(read_volume(tmp_path / "label.tif").array[:, :, 0], label.T)


@pytest.mark.skipif(
    not _volume_takes(4e-6),
    reason="core.Volume refuses affines with |det| < 1e-12, i.e. nanometre voxels in mm;"
    " make its invertibility check scale-free",
)
def test_real_em_stack_in_nanometres(tmp_path):
    folder = _real("isbi2012-em-membranes")
    stack = np.stack([np.asarray(Image.open(folder / "images" / f"0{k}.png")) for k in range(3)])
    path = tmp_path / "em.tif"
    # ssTEM of the ISBI 2012 challenge: 4 x 4 x 50 nm voxels, written the way Fiji does.
    tifffile.imwrite(
        path,
        stack,
        imagej=True,
        resolution=(1 / 0.004, 1 / 0.004),
        metadata={"axes": "ZYX", "unit": "um", "spacing": 0.05},
    )
    volume = read_volume(path)
    np.testing.assert_allclose(volume.spacing, (4e-6, 4e-6, 5e-5))
    np.testing.assert_array_equal(volume.array, stack.transpose(2, 1, 0))
    again = read_volume(write_volume(volume, tmp_path / "again.tif"))
    np.testing.assert_array_equal(again.affine, volume.affine)
