"""Files made by a hostile or careless hand: each is refused with one segloop error, nothing else.

Issue 18: detached NRRD data files outside their folder, decompression and allocation bombs,
broken NIfTI/DICOM headers, inconsistent .seg.nrrd segments, and the one image validator.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import tracemalloc
import zlib
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image

from segloop.core import Volume
from segloop.errors import (
    CorruptFileError,
    InvalidInputError,
    LabelValueError,
    NotFoundError,
    SegloopError,
    TooLargeError,
)
from segloop.io import read_volume, write_volume
from segloop.io.checks import check_scalar_image
from segloop.io.limits import (
    DEFAULT_MAX_IMAGE_BYTES,
    MAX_IMAGE_BYTES_VARIABLE,
    check_declared_size,
    inflate_exactly,
    max_image_bytes,
)
from segloop.io.nrrd import list_nrrd_files
from tests.conftest import shared_dataset

MIB = 1 << 20


@pytest.fixture
def small_cap(monkeypatch):
    """A 1 MiB cap on decoded image bytes."""
    monkeypatch.setenv(MAX_IMAGE_BYTES_VARIABLE, str(MIB))
    return MIB


# --- the cap ---------------------------------------------------------------------------------


def test_cap_defaults_to_2_gib_and_follows_the_environment(monkeypatch):
    monkeypatch.delenv(MAX_IMAGE_BYTES_VARIABLE, raising=False)
    assert max_image_bytes() == DEFAULT_MAX_IMAGE_BYTES == 2 << 30
    monkeypatch.setenv(MAX_IMAGE_BYTES_VARIABLE, "1_000")
    assert max_image_bytes() == 1000
    for bad in ("lots", "-5", "0"):
        monkeypatch.setenv(MAX_IMAGE_BYTES_VARIABLE, bad)
        with pytest.raises(InvalidInputError, match=f"{MAX_IMAGE_BYTES_VARIABLE} must be a positive"):
            max_image_bytes()


def test_declared_size_over_the_cap_names_shape_bytes_and_cap(small_cap):
    assert check_declared_size((512, 512), 2, what="x") == 512 * 512 * 2
    with pytest.raises(
        TooLargeError, match=r"x: the header declares \(1024, 1024\) .*2097152 bytes.*1048576"
    ):
        check_declared_size((1024, 1024), 2, what="x")
    with pytest.raises(CorruptFileError, match=r"at least 1.*\(0, 4\)"):
        check_declared_size((0, 4), 1, what="x")


def test_inflation_stops_at_the_declared_size():
    data = b"segloop" * 1000
    assert inflate_exactly(_bytes_io(gzip.compress(data) * 2), 2 * len(data), "gzip", what="x").tobytes() == (
        data * 2
    )
    for expected, message in ((len(data) - 1, "more than"), (len(data) + 1, "decodes to 7000 bytes")):
        with pytest.raises(CorruptFileError, match=message):
            inflate_exactly(_bytes_io(gzip.compress(data)), expected, "gzip", what="x")
    with pytest.raises(CorruptFileError, match="ends early"):
        inflate_exactly(_bytes_io(gzip.compress(data)[:-20]), len(data), "gzip", what="x")
    import bz2

    with pytest.raises(CorruptFileError, match="more than"):
        inflate_exactly(_bytes_io(bz2.compress(data)), 10, "bzip2", what="x")


def _bytes_io(data: bytes):
    import io

    return io.BytesIO(data)


def _gzip_zeros(size: int, chunk: int = 8 * MIB) -> bytes:
    """gzip of ``size`` zero bytes, compressed in chunks (a bomb: ~1000x smaller than it inflates)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(chunk)
    parts = [compressor.compress(zeros) for _ in range(size // chunk)]
    return b"".join([*parts, compressor.flush()])


def _nrrd_header(sizes: str, encoding: str = "gzip", extra: str = "") -> bytes:
    return (
        f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: {sizes}\nspace: left-posterior-superior\n"
        f"space directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (0,0,0)\nencoding: {encoding}\n{extra}\n"
    ).encode()


def _peak_bytes(function) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(SegloopError) as caught:
            function()
        return tracemalloc.get_traced_memory()[1], caught.value
    finally:
        tracemalloc.stop()


def test_gzip_nrrd_bomb_is_refused_without_inflating_it(tmp_path, small_cap):
    bomb = _gzip_zeros(64 * MIB)  # 64 KiB that inflate to 64 MiB
    declared_big = tmp_path / "big.nrrd"  # the header says so: refused before reading the data
    declared_big.write_bytes(_nrrd_header("1024 1024 64") + bomb)
    peak, error = _peak_bytes(lambda: read_volume(declared_big))
    assert isinstance(error, TooLargeError) and "(1024, 1024, 64)" in str(error)
    assert peak < 2 * MIB
    lying = tmp_path / "lying.nrrd"  # the header lies (64 KiB): inflation stops one byte past it
    lying.write_bytes(_nrrd_header("64 32 32") + bomb)
    peak, error = _peak_bytes(lambda: read_volume(lying))
    assert isinstance(error, CorruptFileError) and "more than the 65536 bytes" in str(error)
    assert peak < 4 * MIB  # pynrrd inflated all 64 MiB here before


def test_gzip_nifti_bomb_is_refused_without_inflating_it(tmp_path, small_cap):
    header = nib.Nifti1Header()
    header.set_data_shape((64, 32, 32))
    header.set_data_dtype(np.uint8)
    header.set_data_offset(352)
    prefix = header.binaryblock + b"\0" * 4
    path = tmp_path / "bomb.nii.gz"
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    path.write_bytes(compressor.compress(prefix) + compressor.compress(bytes(64 * MIB)) + compressor.flush())
    peak, error = _peak_bytes(lambda: read_volume(path))
    assert isinstance(error, CorruptFileError) and "more than" in str(error)
    assert peak < 4 * MIB
    header.set_data_shape((1024, 1024, 64))
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + bytes(100)))
    with pytest.raises(TooLargeError, match=r"\(1024, 1024, 64\)"):
        read_volume(path)


def test_tiff_strip_that_inflates_past_its_image_is_refused(tmp_path):
    path = tmp_path / "small.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        offsets, counts = tags["StripOffsets"], tags["StripByteCounts"]
    data = bytearray(path.read_bytes())
    bomb = zlib.compress(bytes(16 * MIB), 9)
    formats = {3: "<H", 4: "<I", 16: "<Q"}
    struct.pack_into(formats[int(offsets.dtype)], data, offsets.valueoffset, len(data))
    struct.pack_into(formats[int(counts.dtype)], data, counts.valueoffset, len(bomb))
    path.write_bytes(bytes(data) + bomb)
    peak, error = _peak_bytes(lambda: read_volume(path))
    assert isinstance(error, CorruptFileError) and "more than 4096 bytes" in str(error)
    assert peak < 4 * MIB


@pytest.mark.parametrize("suffix", ["x.nii.gz", "x.nrrd", "x.tif", "x.mrc", "x.png", "dicom"])
def test_every_reader_refuses_a_declared_size_above_the_cap(tmp_path, monkeypatch, suffix):
    array = np.zeros((40, 40, 1 if suffix == "x.png" else 8), np.uint8 if suffix == "x.png" else np.int16)
    path = write_volume(Volume(array, np.eye(4)), tmp_path / suffix)
    assert read_volume(path).array.shape == array.shape
    monkeypatch.setenv(MAX_IMAGE_BYTES_VARIABLE, str(array.nbytes - 1))
    with pytest.raises(TooLargeError, match="above the cap"):
        read_volume(path)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR declares ``width`` x ``height`` grey pixels and which holds no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_png_declaring_a_huge_image_is_too_large_before_decoding(tmp_path, monkeypatch):
    monkeypatch.delenv(MAX_IMAGE_BYTES_VARIABLE, raising=False)
    # 400 M pixels: Pillow's decompression-bomb guard refuses it at open, under segloop's 2 GiB cap
    with pytest.raises(TooLargeError, match="decompression bomb"):
        read_volume(_png_header_only(tmp_path / "huge.png", 20000, 20000))
    monkeypatch.setenv(MAX_IMAGE_BYTES_VARIABLE, str(MIB))
    with pytest.raises(TooLargeError, match=r"\(2000, 1000, 1\) values of 1 byte"):
        read_volume(_png_header_only(tmp_path / "big.png", 2000, 1000))


# --- detached NRRD headers -------------------------------------------------------------------


def _detached(folder: Path, data_file: str, listed: str = "") -> Path:
    header = folder / "image.nhdr"
    header.write_bytes(
        _nrrd_header("2 2 2", "raw", f"data file: {data_file}\n{listed}").rstrip(b"\n") + b"\n"
    )
    return header


@pytest.mark.parametrize(
    "data_file", ["/etc/passwd", "../outside.raw", "sub/../../outside.raw", "link.raw", "%s/p%d.raw 0 1 1"]
)
def test_detached_data_files_outside_the_header_folder_are_refused(tmp_path, data_file):
    folder = tmp_path / "case"
    folder.mkdir()
    (tmp_path / "outside.raw").write_bytes(bytes(8))
    (folder / "link.raw").symlink_to(tmp_path / "outside.raw")
    data_file = data_file.replace("%s", str(tmp_path)) if data_file.startswith("%s") else data_file
    header = _detached(folder, data_file)
    with pytest.raises(InvalidInputError, match="lies outside the header's folder") as caught:
        read_volume(header)
    assert "8 bytes" not in str(caught.value) and "passwd:" not in str(caught.value)
    with pytest.raises(InvalidInputError):
        list_nrrd_files(header)


def test_unreadable_target_outside_leaks_nothing(tmp_path):
    secret = tmp_path / "secret.raw"
    secret.write_bytes(bytes(12345))
    folder = tmp_path / "case"
    folder.mkdir()
    header = _detached(folder, str(secret))
    with pytest.raises(InvalidInputError) as caught:
        read_volume(header)
    assert "12345" not in str(caught.value)


def test_detached_data_beside_or_below_the_header_is_read(tmp_path):
    (tmp_path / "sub").mkdir()
    values = np.arange(8, dtype=np.uint8)
    (tmp_path / "sub" / "d.raw").write_bytes(values.tobytes())
    (tmp_path / "sub" / "p0.raw").write_bytes(values[:4].tobytes())
    (tmp_path / "sub" / "p1.raw").write_bytes(values[4:].tobytes())
    expected = values.reshape(2, 2, 2).T
    for data_file, listed in (
        ("sub/d.raw", ""),
        ("LIST", "sub/p0.raw\nsub/p1.raw\n"),
        ("sub/p%d.raw 0 1 1", ""),
    ):
        header = _detached(tmp_path, data_file, listed)
        np.testing.assert_array_equal(read_volume(header).array, expected)
    assert list_nrrd_files(header)[1:] == [tmp_path / "sub" / "p0.raw", tmp_path / "sub" / "p1.raw"]
    header = _detached(tmp_path, "missing.raw")
    with pytest.raises(NotFoundError, match="'missing.raw' named in the header is missing"):
        read_volume(header)


def test_segloop_written_nhdr_names_its_data_file(tmp_path):
    path = write_volume(Volume(np.ones((3, 3, 3), np.uint8), np.eye(4)), tmp_path / "x.nhdr")
    assert [p.name for p in list_nrrd_files(path)] == ["x.nhdr", "x.raw.gz"]


# --- NIfTI headers ---------------------------------------------------------------------------


def _nifti_with(tmp_path: Path, offset: int, fmt: str, value: float) -> Path:
    volume = Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4))
    path = write_volume(volume, tmp_path / "x.nii", overwrite=True)
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "message"),
    [
        (40, "<h", 9, r"dim\[0\].*between 1 and 7; got 9"),
        (42, "<h", 0, r"at least 1; the header declares \(0, 3, 4\)"),
        (112, "<f", 1e30, r"scaling.*values up to.*look corrupt"),
        (112, "<f", float("inf"), "finite scaling slope"),
        (116, "<f", float("nan"), "finite scaling slope"),
        (70, "<h", 999, "invalid NIfTI header"),
        (108, "<f", 1e20, "voxel offset"),
    ],
)
def test_broken_nifti_headers_are_corrupt_files(tmp_path, offset, fmt, value, message):
    path = _nifti_with(tmp_path, offset, fmt, value)
    with pytest.raises(CorruptFileError, match=message):
        read_volume(path)


def test_nifti_slope_nan_or_zero_means_unscaled(tmp_path):
    for slope in (float("nan"), 0.0):
        path = _nifti_with(tmp_path, 112, "<f", slope)
        np.testing.assert_array_equal(read_volume(path).array, np.arange(24).reshape(2, 3, 4))


def test_nifti_rgb_and_complex_voxels_are_read_as_stored_and_refused_by_the_validator(tmp_path):
    rgb = np.zeros((2, 2, 2), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), tmp_path / "rgb.nii")
    complex_ = np.full((2, 2, 2), 1 + 2j, np.complex64)
    nib.save(nib.Nifti1Image(complex_, np.eye(4)), tmp_path / "c.nii")
    with pytest.raises(InvalidInputError, match="fields \\('R', 'G', 'B'\\)"):
        check_scalar_image(read_volume(tmp_path / "rgb.nii"), "image rgb.nii")
    with pytest.raises(InvalidInputError, match="complex"):
        check_scalar_image(read_volume(tmp_path / "c.nii"), "image c.nii")


# --- the validator ---------------------------------------------------------------------------


def test_validator_accepts_grey_images_and_refuses_the_rest():
    check_scalar_image(Volume(np.zeros((3, 3, 3), np.float32), np.eye(4)), "ok")
    check_scalar_image(np.zeros((1, 3, 3, 3), np.uint8), "one channel")
    values = np.zeros((3, 4, 5), np.float32)
    values[1, 2, 3], values[2, 0, 0] = np.nan, -np.inf
    cases = [
        (
            values,
            r"image a: expected finite voxel values; got 1 NaN and 1 infinite voxels \(the first at index",
        ),
        (np.zeros((3, 4, 4, 1), np.uint8), "got 3 channels"),
        (np.zeros((2, 2, 2), np.complex128), "complex"),
        (np.zeros((2, 2, 2), "U3"), "numeric"),
    ]
    for array, message in cases:
        with pytest.raises(InvalidInputError, match=message) as caught:
            check_scalar_image(array, "image a")
        assert "\n" not in str(caught.value)


def test_real_microscopy_png_stays_readable_and_valid():
    folder = shared_dataset("nih3t3-nuclei-2d")
    volume = read_volume(folder / "images" / "dna-0.png")
    check_scalar_image(volume, "image dna-0.png")
    rgb = Image.open(folder / "images" / "dna-0.png").convert("RGB")
    assert np.asarray(rgb).ndim == 3


def test_rgb_png_is_three_channels_refused_by_the_validator(tmp_path):
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "rgb.png")
    volume = read_volume(tmp_path / "rgb.png")
    assert volume.array.shape == (3, 5, 4, 1)
    with pytest.raises(InvalidInputError, match="3 channels"):
        check_scalar_image(volume, "image rgb.png")


# --- DICOM -----------------------------------------------------------------------------------


def _series(tmp_path: Path) -> Path:
    volume = Volume(np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3), np.diag([0.5, 0.5, 2.0, 1.0]))
    folder = tmp_path / "series"
    folder.mkdir()
    write_volume(volume, folder / "s", format_name="dicom")
    return folder / "s"


def test_truncated_dicom_slice_is_a_corrupt_file(tmp_path):
    folder = _series(tmp_path)
    victim = sorted(folder.iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-7])
    with pytest.raises(CorruptFileError, match=f"{victim.name}: cannot decode the pixel data"):
        read_volume(folder)


def test_deflated_dicom_bomb_is_refused_before_pydicom_inflates_it(tmp_path, small_cap):
    folder = _series(tmp_path)
    victim = sorted(folder.iterdir())[1]
    dataset = pydicom.dcmread(victim)
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    dataset.save_as(victim, enforce_file_format=True)
    assert read_volume(folder).array.shape == (4, 5, 3)  # a real deflated slice reads
    data = victim.read_bytes()
    meta_end = 144 + struct.unpack_from("<I", data, 140)[0]
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = compressor.compress(bytes(64 * MIB)) + compressor.flush()
    victim.write_bytes(data[:meta_end] + bomb)
    peak, error = _peak_bytes(lambda: read_volume(folder))
    assert isinstance(error, TooLargeError) and "deflate" in str(error)
    assert peak < 8 * MIB  # pydicom alone inflated all 64 MiB


@pytest.mark.parametrize(
    ("attribute", "value", "message"),
    [
        ("RescaleSlope", "1e30", "look corrupt"),
        ("RescaleSlope", "inf", "finite scaling slope"),
        ("ImageOrientationPatient", [0, 0, 0, 0, 0, 0], "non-zero direction cosines"),
        ("ImagePositionPatient", ["nan", "0", "0"], "3 finite numbers in ImagePositionPatient"),
        ("Rows", 0, "at least 1"),
    ],
)
def test_broken_dicom_headers_are_corrupt_files(tmp_path, attribute, value, message):
    folder = _series(tmp_path)
    for path in folder.iterdir():
        dataset = pydicom.dcmread(path)
        setattr(dataset, attribute, value)
        dataset.save_as(path)
    with pytest.raises(CorruptFileError, match=message):
        read_volume(folder)


# --- .seg.nrrd -------------------------------------------------------------------------------


def _seg(tmp_path: Path, segments: list[dict], array: np.ndarray, drop_extent: bool = False) -> Path:
    volume = Volume(array, np.eye(4), {"segments": segments})
    path = write_volume(volume, tmp_path / "x.seg.nrrd", overwrite=True)
    if drop_extent or any(s.get("label_value_in_file") for s in segments):
        data, header = nrrd.read(str(path))
        for number, segment in enumerate(segments):
            if drop_extent:
                header.pop(f"Segment{number}_Extent")
            if "label_value_in_file" in segment:
                header[f"Segment{number}_LabelValue"] = str(segment["label_value_in_file"])
        nrrd.write(str(path), data, header)
    return path


def _segment(name: str, value: int, **extra) -> dict:
    return {"id": name, "name": name, "color": (1, 2, 3), "label_value": value, "layer": 0, **extra}


def test_two_segments_with_one_name_are_refused(tmp_path):
    labels = np.zeros((3, 3, 3), np.uint8)
    labels[0], labels[1] = 1, 2
    path = _seg(tmp_path, [_segment("liver", 1), _segment("liver", 2)], labels)
    with pytest.raises(InvalidInputError, match="two segments are named 'liver'"):
        read_volume(path)
    path = _seg(tmp_path, [_segment("liver", 1), _segment("spleen", 1)], labels)
    with pytest.raises(InvalidInputError, match="'liver' and 'spleen' both use label value 1"):
        read_volume(path)


def test_empty_segments_are_reported_or_refused(tmp_path):
    labels = np.zeros((3, 3, 3), np.uint8)
    labels[0] = 1
    # painted nothing, and Slicer's empty extent says so: kept, and named as empty
    volume = read_volume(_seg(tmp_path, [_segment("liver", 1), _segment("spleen", 2)], labels))
    assert [s["name"] for s in volume.meta["segments"]] == ["liver", "spleen"]
    assert volume.meta["empty_segments"] == ["spleen"]
    # the label value was changed: its extent still says it has voxels
    path = _seg(tmp_path, [_segment("liver", 1, label_value_in_file=7)], labels)
    with pytest.raises(
        CorruptFileError, match=r"'liver' \(label value 7, layer 0\) holds no voxel, though its extent"
    ):
        read_volume(path)
    # nothing says the segment is meant to be empty
    path = _seg(tmp_path, [_segment("liver", 1), _segment("spleen", 2)], labels, drop_extent=True)
    with pytest.raises(InvalidInputError, match="'spleen'.*no extent says it is meant to be empty"):
        read_volume(path)


# --- the CLI ---------------------------------------------------------------------------------


def test_segloop_info_prints_one_line_errors_for_hostile_files(tmp_path, run_cli):
    folder = tmp_path / "case"
    folder.mkdir()
    hostile = [
        _detached(folder, "../../../../etc/passwd"),
        _nifti_with(tmp_path, 40, "<h", 9),
    ]
    (tmp_path / "bomb.nrrd").write_bytes(_nrrd_header("4096 4096 1024") + _gzip_zeros(8 * MIB))
    hostile.append(tmp_path / "bomb.nrrd")
    for path in hostile:
        result = run_cli("info", path)
        assert result.code == 1, result.out
        lines = (result.out + result.err).strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines


def test_real_files_read_unchanged(tmp_path):
    data = shared_dataset("totalsegmentator-examples")
    for path in (data / "ct_small" / "image.nii.gz", data / "ct_dicom_series" / "dicom"):
        volume = read_volume(path)
        check_scalar_image(volume, str(path))
    copy = tmp_path / "image.nii.gz"
    shutil.copy(data / "ct_small" / "image.nii.gz", copy)
    os.chmod(copy, 0o644)
    np.testing.assert_array_equal(read_volume(copy).array, nib.load(copy).get_fdata().astype(np.int16))


def test_voxels_of_no_segment_are_refused_not_dropped(tmp_path):
    labels = np.zeros((3, 3, 3), np.uint8)
    labels[0] = 1
    labels[2, 2, 2] = 5  # painted with a value no segment declares
    with pytest.raises(LabelValueError, match=r"value\(s\) \[5\] that no segment declares"):
        read_volume(_seg(tmp_path, [_segment("liver", 1)], labels))


def test_fractional_values_are_no_segmentation(tmp_path):
    volume = Volume(np.full((2, 2, 2), 0.5, np.float32), np.eye(4))
    with pytest.raises(InvalidInputError, match="whole label values"):
        write_volume(volume, tmp_path / "x.seg.nrrd")
    assert not (tmp_path / "x.seg.nrrd").exists()


def test_pipes_are_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "x.nii.gz"
    os.mkfifo(fifo)
    with pytest.raises(InvalidInputError, match="not a regular file"):
        read_volume(fifo)


def test_a_failed_folder_write_leaves_no_folder_it_made(tmp_path):
    from segloop.io.atomic import atomic_directory

    target = tmp_path / "out" / "deeper" / "Dataset501"
    with pytest.raises(RuntimeError), atomic_directory(target) as folder:
        (folder / "half.txt").write_text("half")
        raise RuntimeError("the export failed here")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with atomic_directory(target) as folder:
        (folder / "whole.txt").write_text("whole")
    assert (target / "whole.txt").read_text() == "whole"
