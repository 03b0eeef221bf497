"""Property-based fuzzing of every reader on files made from the real data (issue 18).

A small corpus is built at test time from ``../shared/data`` (a CT crop and its label written in
every format segloop reads, three real DICOM slices, a real EM PNG, a surface around a real
organ), and hypothesis truncates it, overwrites header bytes and rewrites header fields. Whatever
comes, a reader either returns a volume or raises one of segloop's error kinds with a one-line
message (never a library exception, never the bare `SegloopError`), and it never allocates much
more than the configured cap (traced with tracemalloc, under a 4 MiB cap). Nothing is committed:
the corpus lives in a temporary folder; the data being absent skips the module.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag

from segloop.core import Volume
from segloop.errors import SegloopError
from segloop.io import read_volume, write_volume
from segloop.io.limits import MAX_IMAGE_BYTES_VARIABLE
from segloop.io.mesh import Mesh, read_mesh, write_mesh
from segloop.segment.mesh import mask_to_mesh
from tests.conftest import SHARED_DATA

#: The cap the fuzzed readers run under, and how much a reader may trace at its peak: the decoded
#: copy, a scaled or reordered copy, the file's bytes, the libraries' objects, and the first import
#: of a decoder a mutated header asks for (pydicom's JPEG plugins: about 10 MB). A bomb is far above.
CAP = 4 << 20
PEAK_ALLOWED = 12 * CAP
#: ``SEGLOOP_FUZZ_EXAMPLES=500`` fuzzes deeper (with fresh random examples) than the suite's fixed 25.
_EXAMPLES = int(os.environ.get("SEGLOOP_FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=_EXAMPLES,
    deadline=None,
    derandomize="SEGLOOP_FUZZ_EXAMPLES" not in os.environ,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _real(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} is absent (it lies beside the checkout in CI)")
    return path


def _grey_slice(array: np.ndarray) -> np.ndarray:
    return np.clip(array[:, :, :1] // 8, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Seed files: real data, cropped and written in every format (paths by format name)."""
    folder = tmp_path_factory.mktemp("corpus")
    ct = read_volume(_real("totalsegmentator-examples", "ct_small", "image.nii.gz"))
    label = read_volume(_real("totalsegmentator-examples", "ct_small", "label_totalseg.nii.gz"))
    crop = (slice(40, 72), slice(30, 62), slice(8, 24))
    ct_crop = ct.with_array(np.ascontiguousarray(ct.array[crop]))
    label_crop = label.with_array(np.ascontiguousarray(label.array[crop]))
    seeds = {
        "nifti-gz": _real("totalsegmentator-examples", "ct_small", "image.nii.gz"),
        "nifti": write_volume(ct_crop, folder / "ct.nii"),
        "nrrd": write_volume(ct_crop, folder / "ct.nrrd"),
        "nhdr": write_volume(ct_crop, folder / "ct.nhdr"),
        "seg-nrrd": write_volume(label_crop, folder / "label.seg.nrrd"),
        "tiff": write_volume(ct_crop, folder / "ct.tif"),
        "mrc": write_volume(ct_crop.with_array(ct_crop.array.astype(np.float32)), folder / "ct.mrc"),
        "png": _real("isbi2012-em-membranes", "images", "00.png"),
        "jpeg": write_volume(
            ct_crop.with_array(np.clip(ct_crop.array[:, :, :1] // 8, 0, 255).astype(np.uint8)),
            folder / "ct.jpg",
        ),
    }
    dicom = folder / "dicom"
    dicom.mkdir()
    for slice_file in sorted(_real("totalsegmentator-examples", "ct_dicom_series", "dicom").iterdir())[:3]:
        shutil.copyfile(slice_file, dicom / slice_file.name)
    seeds["dicom"] = dicom
    vertices, faces = mask_to_mesh(label_crop.array == label_crop.array.max(), label_crop.affine)
    for suffix in ("stl", "ply", "obj"):
        seeds[f"mesh-{suffix}"] = write_mesh(Mesh(vertices, faces), folder / f"organ.{suffix}")
    for name, path in seeds.items():  # every seed reads before it is broken
        (read_mesh if name.startswith("mesh") else read_volume)(path)
    return seeds


@pytest.fixture(scope="module", autouse=True)
def small_cap() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MAX_IMAGE_BYTES_VARIABLE, str(CAP))
        yield


@contextmanager
def _copy_of(seed: Path) -> Iterator[Path]:
    """A writable copy of ``seed`` (a file, or a DICOM folder) in a fresh temporary folder."""
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / seed.name
        if seed.is_dir():
            shutil.copytree(seed, target)
        else:
            shutil.copyfile(seed, target)
            data_file = seed.with_name(seed.name.removesuffix(".nhdr") + ".raw.gz")
            if seed.suffix == ".nhdr":
                shutil.copyfile(data_file, target.with_name(data_file.name))
        for path in [target, *target.rglob("*")] if target.is_dir() else [target]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        yield target


def _victim(target: Path) -> Path:
    """The file to break: the copy itself, or the middle DICOM slice."""
    return sorted(target.iterdir())[1] if target.is_dir() else target


def _reader(name: str) -> Callable[[Path], object]:
    return read_mesh if name.startswith("mesh") else read_volume


def _read(name: str, path: Path) -> object:
    """What the reader returns, or the segloop error it raises."""
    try:
        return _reader(name)(path)
    except SegloopError as error:
        return error


def _assert_reads_or_refuse(name: str, path: Path) -> None:
    """Read ``path``: a volume (or mesh) or a segloop error kind, within the memory bound."""
    tracemalloc.start()
    try:
        result = _read(name, path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert type(result) is not SegloopError, f"bare SegloopError: {result}"
    if isinstance(result, SegloopError):
        assert "\n" not in str(result), f"multi-line message: {result!r}"
    else:
        assert isinstance(result, Mesh | Volume)
    assert peak < PEAK_ALLOWED, f"{name}: peak {peak} bytes traced, above {PEAK_ALLOWED}"


FORMATS = [
    "nifti-gz", "nifti", "nrrd", "nhdr", "seg-nrrd", "tiff", "mrc", "png", "jpeg", "dicom",
    "mesh-stl", "mesh-ply", "mesh-obj",
]  # fmt: skip


@pytest.mark.parametrize("name", FORMATS)
@FUZZ
@given(fraction=st.floats(0.0, 1.0, exclude_max=True))
def test_truncated_files_read_or_refuse(corpus, name, fraction):
    with _copy_of(corpus[name]) as target:
        victim = _victim(target)
        data = victim.read_bytes()
        victim.write_bytes(data[: int(len(data) * fraction)])
        _assert_reads_or_refuse(name, target)


@pytest.mark.parametrize("name", FORMATS)
@FUZZ
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 1 << 16), st.binary(min_size=1, max_size=8)), min_size=1, max_size=6
    ),
    head=st.sampled_from([64, 512, 1200, 4096]),
)
def test_overwritten_header_bytes_read_or_refuse(corpus, name, edits, head):
    with _copy_of(corpus[name]) as target:
        victim = _victim(target)
        data = bytearray(victim.read_bytes())
        for position, replacement in edits:
            start = position % min(head, len(data))
            data[start : start + len(replacement)] = replacement
        victim.write_bytes(bytes(data))
        _assert_reads_or_refuse(name, target)


_EXTREMES = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, -1, 1, 7, 8, 9, 32767, -32768, 2**31 - 1]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
)
#: NIfTI-1 fields (byte offset, struct format) worth breaking: dim, datatype, bitpix, vox_offset,
#: scl_slope, scl_inter, pixdim, qform/sform codes, quaternion, srow.
_NIFTI_FIELDS = [
    *[(40 + 2 * i, "<h") for i in range(8)],
    (70, "<h"), (72, "<h"), (108, "<f"), (112, "<f"), (116, "<f"),
    *[(76 + 4 * i, "<f") for i in range(8)],
    (252, "<h"), (254, "<h"),
    *[(256 + 4 * i, "<f") for i in range(6)],
    *[(280 + 4 * i, "<f") for i in range(12)],
]  # fmt: skip


def _pack(fmt: str, value: float) -> bytes:
    kind = fmt[-1]
    if kind == "f":
        return struct.pack(fmt, float(np.float32(value)) if np.isfinite(value) else value)
    bits = 8 * struct.calcsize(fmt)
    return struct.pack(
        fmt, (int(value) + 2 ** (bits - 1)) % 2**bits - 2 ** (bits - 1) if np.isfinite(value) else 0
    )


@FUZZ
@given(fields=st.lists(st.tuples(st.sampled_from(_NIFTI_FIELDS), _EXTREMES), min_size=1, max_size=4))
def test_mutated_nifti_header_fields_read_or_refuse(corpus, fields):
    with _copy_of(corpus["nifti"]) as target:
        data = bytearray(target.read_bytes())
        for (offset, fmt), value in fields:
            data[offset : offset + struct.calcsize(fmt)] = _pack(fmt, value)
        target.write_bytes(bytes(data))
        _assert_reads_or_refuse("nifti", target)


#: MRC2014 header fields (byte offset, struct format): nx, ny, nz, mode, starts, mx, my, mz, cell,
#: mapc, mapr, maps, ispg, nsymbt, origin.
_MRC_FIELDS = [
    *[(4 * i, "<i") for i in range(10)],
    *[(40 + 4 * i, "<f") for i in range(3)],
    (64, "<i"), (68, "<i"), (72, "<i"), (88, "<i"), (92, "<i"),
    *[(196 + 4 * i, "<f") for i in range(3)],
]  # fmt: skip


@FUZZ
@given(fields=st.lists(st.tuples(st.sampled_from(_MRC_FIELDS), _EXTREMES), min_size=1, max_size=4))
def test_mutated_mrc_header_fields_read_or_refuse(corpus, fields):
    with _copy_of(corpus["mrc"]) as target:
        data = bytearray(target.read_bytes())
        for (offset, fmt), value in fields:
            data[offset : offset + struct.calcsize(fmt)] = _pack(fmt, value)
        target.write_bytes(bytes(data))
        _assert_reads_or_refuse("mrc", target)


#: DICOM attributes of the image grid and its values, and what to put in them.
_DICOM_VALUES = {
    "Rows": st.integers(0, 65535),
    "Columns": st.integers(0, 65535),
    "BitsAllocated": st.sampled_from([0, 1, 7, 8, 12, 16, 32, 64]),
    "BitsStored": st.integers(0, 64),
    "PixelRepresentation": st.integers(0, 2),
    "SamplesPerPixel": st.integers(0, 4),
    "NumberOfFrames": st.sampled_from(["0", "1", "2", "99999", "x"]),
    "RescaleSlope": st.sampled_from(["1", "0", "-1", "1e30", "nan", "inf", "x", ""]),
    "RescaleIntercept": st.sampled_from(["0", "-1024", "1e300", "nan", "x"]),
    "PixelSpacing": st.sampled_from([["0", "0"], ["1"], ["nan", "1"], ["1", "1", "1"], ["-1", "2"]]),
    "ImageOrientationPatient": st.sampled_from(
        [["0"] * 6, ["1", "0", "0", "1", "0", "0"], ["1", "0", "0"], ["nan"] * 6, ["1e308"] * 6]
    ),
    "ImagePositionPatient": st.sampled_from([["0", "0", "0"], ["nan", "0", "0"], ["1"], ["1e308"] * 3]),
    "SliceThickness": st.sampled_from(["0", "-2", "inf", "x"]),
}


def _set_raw(dataset: pydicom.Dataset, name: str, value: object) -> None:
    """Store ``value`` in attribute ``name`` as the file's bytes, valid for its VR or not."""
    tag = pydicom.datadict.tag_for_keyword(name)
    vr = pydicom.datadict.dictionary_VR(tag)
    if isinstance(value, int):
        setattr(dataset, name, value)
        return
    raw = ("\\".join(value) if isinstance(value, list) else str(value)).encode("ascii")
    raw += b" " * (len(raw) % 2)
    dataset[tag] = RawDataElement(BaseTag(tag), vr, len(raw), raw, 0, False, True)


@FUZZ
@given(data=st.data())
def test_mutated_dicom_attributes_read_or_refuse(corpus, data):
    with _copy_of(corpus["dicom"]) as target:
        slices = sorted(target.iterdir())
        for path in data.draw(st.sampled_from([slices[1:2], slices])):
            dataset = pydicom.dcmread(path)
            for name in data.draw(st.lists(st.sampled_from(sorted(_DICOM_VALUES)), min_size=1, max_size=3)):
                _set_raw(dataset, name, data.draw(_DICOM_VALUES[name]))
            dataset.save_as(path)
        _assert_reads_or_refuse("dicom", target)


_NRRD_VALUES = st.one_of(
    _EXTREMES.map(str),
    st.text(alphabet=st.characters(codec="ascii", exclude_characters="\n\r"), max_size=40),
    st.sampled_from([
        "none", "nan", "(nan,nan,nan)", "(1,0,0) (0,1,0)", "1 2", "LIST", "../x.raw", "/etc/passwd",
        "x%d.raw 0 99999999 1", "bzip2", "hex", "ascii", "block", "big", "-1", "99999 99999 99999",
    ]),
)  # fmt: skip


@pytest.mark.parametrize("name", ["nrrd", "nhdr", "seg-nrrd"])
@FUZZ
@given(data=st.data())
def test_mutated_nrrd_header_fields_read_or_refuse(corpus, name, data):
    with _copy_of(corpus[name]) as target:
        raw = target.read_bytes()
        end = raw.find(b"\n\n") + 1 if name != "nhdr" else len(raw)
        lines = raw[:end].decode("latin-1").splitlines()
        for _ in range(data.draw(st.integers(1, 3))):
            number = data.draw(st.integers(1, len(lines) - 1))
            field, separator, _ = lines[number].partition(":=" if ":=" in lines[number] else ":")
            lines[number] = f"{field}{separator} {data.draw(_NRRD_VALUES)}"
        target.write_bytes("\n".join(lines).encode("latin-1") + b"\n" + raw[end:])
        _assert_reads_or_refuse(name, target)
