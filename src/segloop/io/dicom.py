"""DICOM image series (a folder of single-frame slices) through pydicom.

Conventions converted here and nowhere else:

* DICOM patient coordinates are LPS+ millimetres; the returned affine is RAS+ (`flip_ras_lps`).
* Array axes (I, J, K) are (column, row, slice): I runs along the row cosine (the first three
  values of ImageOrientationPatient) in steps of PixelSpacing[1], J along the column cosine in
  steps of PixelSpacing[0], K along the slice normal (row cosine x column cosine), so
  ``array[:, :, k]`` is ``pixel_array.T`` of the k-th slice.
* Slices are sorted by their position along the normal, never by InstanceNumber or file name; the
  slice step comes from those positions (SliceThickness may differ, e.g. 3 mm slices every 2 mm,
  and is used only for a single slice).
* Stored values are rescaled (RescaleSlope, RescaleIntercept) slice by slice: integer results
  become int16 (int32 when they do not fit), others float32.

The writer stores one CT Image Storage file per slice (explicit VR little endian, 16 bits, no
rescale) with new series and instance UIDs. ``meta["dicom_geometry"]`` keeps the header numbers
of a series read here; writing a volume whose affine they still produce reuses them digit for
digit, so read -> write -> read is exact even for oblique series.
"""

from __future__ import annotations

import io
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from segloop.core.geometry import flip_ras_lps, spacing_from_affine
from segloop.core.volume import Volume
from segloop.errors import (
    CorruptFileError,
    InvalidInputError,
    NotFoundError,
    TooLargeError,
    UnsupportedFormatError,
)
from segloop.io.checks import make_volume
from segloop.io.limits import check_declared_size, check_file_size, check_inflated_size, max_image_bytes
from segloop.io.scaling import finite_extremes, scaled_dtype

__all__ = ["read", "write"]

#: Largest relative deviation of one slice step from the median step.
SPACING_TOLERANCE = 0.01
_META_TAGS = {
    "series_uid": "SeriesInstanceUID",
    "modality": "Modality",
    "patient_id": "PatientID",
    "study_uid": "StudyInstanceUID",
    "series_description": "SeriesDescription",
}
_GEOMETRY_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
#: Every attribute the reader looks at (a damaged attribute it never reads does not stop it).
_USED_KEYWORDS = (
    *_META_TAGS.values(), *_GEOMETRY_TAGS, "Rows", "Columns", "NumberOfFrames", "SamplesPerPixel",
    "SliceThickness", "BitsAllocated", "RescaleSlope", "RescaleIntercept",
)  # fmt: skip
#: Attributes the CT image IOD requires to be present, even if empty (type 2).
_EMPTY_TAGS = ("PatientName", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
               "ReferringPhysicianName", "StudyID", "AccessionNumber", "Manufacturer",
               "PositionReferenceIndicator", "KVP", "AcquisitionNumber")  # fmt: skip


#: What pydicom raises on a truncated or garbled file (it has no single error type for it).
_DECODE_ERRORS = (
    EOFError,
    OSError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    struct.error,
    BytesLengthException,
)
#: Deflated Explicit VR Little Endian: the dataset after the file meta group is one deflate stream.
_DEFLATED = DeflatedExplicitVRLittleEndian.encode("ascii")


def _detail(error: Exception) -> str:
    """First line of a library's error message (pydicom's run over several lines)."""
    return (str(error).splitlines() or [type(error).__name__])[0]


def _dcmread(path: Path, *, stop_before_pixels: bool = False) -> Dataset:
    """``pydicom.dcmread`` on the file's bytes in memory (after the size cap): a forged element
    length then reads what the file holds instead of allocating the length it claims."""
    check_file_size(path.stat().st_size, what=str(path))
    data = path.read_bytes()
    _check_deflated_size(data, path)
    with warnings.catch_warnings():  # pydicom warns about every odd value; a bad file raises below
        warnings.simplefilter("ignore", UserWarning)
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels)


def _check_deflated_size(data: bytes, path: Path) -> None:
    """Refuse a deflated dataset that inflates past the cap (pydicom inflates it whole, unbounded).

    The file meta group starts after the 128-byte preamble and ``DICM`` with its own length
    (element (0002,0000), explicit VR UL); the deflate stream follows it.
    """
    if data[128:132] != b"DICM" or data[132:138] != b"\x02\x00\x00\x00UL" or len(data) < 144:
        return
    meta_end = 144 + struct.unpack_from("<I", data, 140)[0]
    if _DEFLATED in data[144:meta_end]:
        limit = max_image_bytes()
        check_inflated_size(data[meta_end:], limit, "deflate", what=str(path), over_limit=TooLargeError)


def _read_headers(folder: Path) -> dict[str, list[tuple[Path, Dataset]]]:
    """DICOM image headers of the files directly in ``folder``, grouped by SeriesInstanceUID."""
    series: dict[str, list[tuple[Path, Dataset]]] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            header = _dcmread(path, stop_before_pixels=True)
            for keyword in _USED_KEYWORDS:  # pydicom converts values when first read: here, in this try
                header.get(keyword)
        except InvalidDicomError:
            continue  # not DICOM: README.txt, .DS_Store, ...
        except (*_DECODE_ERRORS, NotImplementedError, RuntimeError) as error:
            msg = f"{path}: cannot read the DICOM header ({_detail(error)}); the file is truncated or corrupt"
            raise CorruptFileError(msg) from error
        if "Rows" in header:  # DICOMDIR, reports and RT structures hold no image
            series.setdefault(str(header.get("SeriesInstanceUID", "")), []).append((path, header))
    return series


def _describe(uid: str, slices: list[tuple[Path, Dataset]]) -> str:
    description = slices[0][1].get("SeriesDescription", "")
    return f"{uid or '<no SeriesInstanceUID>'} ({description!r}, {len(slices)} slices)"


def _check_slices(slices: list[tuple[Path, Dataset]]) -> None:
    """Raise unless every slice is a single-frame grey image with the series' geometry."""
    first_path, first = slices[0]
    for path, header in slices:
        missing = [tag for tag in _GEOMETRY_TAGS if header.get(tag) is None]
        if missing:
            msg = (
                f"{path}: expected a cross-sectional image with {', '.join(_GEOMETRY_TAGS)};"
                f" {', '.join(missing)} missing (a secondary capture or scout?); remove it"
            )
            raise UnsupportedFormatError(msg)
        frames, samples = (_integer(header, tag, default, path) for tag, default in _FRAME_TAGS)
        if frames != 1 or samples != 1:
            msg = (
                f"{path}: expected single-frame greyscale slices; got {frames} frames of"
                f" {samples} samples per pixel; convert it with dcm2niix and read the NIfTI"
            )
            raise UnsupportedFormatError(msg)
        for tag in ("Rows", "Columns", "ImageOrientationPatient", "PixelSpacing"):
            value, expected = _numbers(header, tag, path), _numbers(first, tag, first_path)
            if value.shape != expected.shape or not np.allclose(value, expected, rtol=0, atol=1e-4):
                msg = (
                    f"expected one {tag} in a series; {first_path.name} has {first[tag].value},"
                    f" {path.name} has {header[tag].value}; put each acquisition in its own folder"
                )
                raise UnsupportedFormatError(msg)


_FRAME_TAGS = (("NumberOfFrames", 1), ("SamplesPerPixel", 1))
#: Header numbers every slice needs, with how many values each holds.
_GEOMETRY_COUNTS = {"ImagePositionPatient": 3, "ImageOrientationPatient": 6, "PixelSpacing": 2}


def _numbers(header: Dataset, tag: str, path: Path) -> np.ndarray:
    """A header attribute as finite float64 numbers; raises `CorruptFileError` otherwise."""
    try:
        values = np.atleast_1d(np.asarray(header[tag].value, dtype=np.float64))
    except (*_DECODE_ERRORS, RuntimeError) as error:
        msg = f"{path}: expected numbers in {tag}; got {str(header.get(tag))[:60]!r} ({_detail(error)[:80]})"
        raise CorruptFileError(msg) from error
    count = _GEOMETRY_COUNTS.get(tag)
    if (count is not None and values.shape != (count,)) or not np.all(np.isfinite(values)):
        expected = f"{count} finite numbers" if count else "finite numbers"
        msg = f"{path}: expected {expected} in {tag}; got {values.tolist()[:8]}"
        raise CorruptFileError(msg)
    return values


def _integer(header: Dataset, tag: str, default: int, path: Path) -> int:
    value = header.get(tag, default)
    try:
        return int(value if value not in (None, "") else default)
    except (TypeError, ValueError) as error:
        msg = f"{path}: expected a whole number in {tag}; got {str(value)[:40]!r}"
        raise CorruptFileError(msg) from error


def _unit(vector: np.ndarray, where: str = "") -> np.ndarray:
    length = float(np.linalg.norm(vector))
    if not (np.isfinite(length) and length > 0):
        msg = f"{where}expected non-zero direction cosines in ImageOrientationPatient; got {vector.tolist()}"
        raise CorruptFileError(msg)
    return vector / length


def _slice_step(folder: Path, normal_positions: np.ndarray, slice_thickness: float) -> float:
    """Distance (mm) between neighbouring slices from their sorted positions along the normal."""
    if len(normal_positions) == 1:
        return slice_thickness if slice_thickness > 0 else 1.0
    steps = np.diff(normal_positions)
    repeated = normal_positions[1:][steps < 1e-4]
    if len(repeated):
        msg = (
            f"{folder}: expected one slice per position; several slices lie at"
            f" {np.round(np.unique(repeated), 3).tolist()} mm along the slice normal (echoes,"
            " phases or time points?); put each acquisition in its own folder"
        )
        raise InvalidInputError(msg)
    step = float(np.median(steps))
    worst = int(np.argmax(np.abs(steps - step)))
    if abs(steps[worst] - step) > SPACING_TOLERANCE * step:
        msg = (
            f"{folder}: expected equally spaced slices (within {SPACING_TOLERANCE:.0%}) of the"
            f" median step {step:.4g} mm; slices at {normal_positions[worst]:.4f} and"
            f" {normal_positions[worst + 1]:.4f} mm are {steps[worst]:.4g} mm apart (a missing or"
            " extra file?); complete the series or resample it"
        )
        raise InvalidInputError(msg)
    return step


def _geometry_affine(geometry: dict[str, Any], folder: Path = Path()) -> np.ndarray:
    """RAS+ affine of a sorted series from its header numbers (see ``meta["dicom_geometry"]``)."""
    orientation = np.array(geometry["orientation"], float)
    row, column = _unit(orientation[:3]), _unit(orientation[3:])
    normal = _unit(np.cross(row, column))
    positions = np.array(geometry["positions"], float)
    step = _slice_step(folder, positions @ normal, float(geometry["slice_thickness"]))
    row_spacing, column_spacing = geometry["pixel_spacing"]
    affine = np.eye(4)
    affine[:3, 0] = row * float(column_spacing)
    affine[:3, 1] = column * float(row_spacing)
    affine[:3, 2] = normal * step
    affine[:3, 3] = positions[0]
    return flip_ras_lps(affine)


def _number(header: Dataset, tag: str, default: float, path: Path) -> float:
    """A one-number attribute (``default`` when absent or empty)."""
    value = header.get(tag)
    try:
        return float(default if value in (None, "") else value)
    except (TypeError, ValueError) as error:
        msg = f"{path}: expected a number in {tag}; got {str(value)[:40]!r}"
        raise CorruptFileError(msg) from error


def _rescale(header: Dataset, path: Path) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept), 1 and 0 when absent."""
    return _number(header, "RescaleSlope", 1.0, path), _number(header, "RescaleIntercept", 0.0, path)


def _read_pixels(paths: list[Path], shape: tuple[int, int, int], folder: Path) -> np.ndarray:
    """Rescaled voxel values ``(I, J, K)`` of the sorted slice files."""
    planes, scales = [], []
    for path in paths:
        try:
            dataset = _dcmread(path)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                plane = dataset.pixel_array
        except (RuntimeError, NotImplementedError) as error:
            msg = (
                f"{path}: no decoder for this transfer syntax ({_detail(error)}); install one"
                " (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg)"
            )
            raise UnsupportedFormatError(msg) from error
        except _DECODE_ERRORS as error:
            msg = f"{path}: cannot decode the pixel data ({_detail(error)}); the file is truncated or corrupt"
            raise CorruptFileError(msg) from error
        if plane.shape != shape[1::-1]:
            msg = f"{path}: expected {shape[1]} x {shape[0]} pixels; the pixel data decodes to {plane.shape}"
            raise CorruptFileError(msg)
        planes.append(plane)
        scales.append(_rescale(dataset, path))
    integral = all(p.dtype.kind in "iub" for p in planes)
    dtype = scaled_dtype([finite_extremes(p) for p in planes], scales, integral=integral, what=str(folder))
    array = np.empty(shape, dtype)
    for k, (plane, (slope, intercept)) in enumerate(zip(planes, scales, strict=True)):
        if np.issubdtype(dtype, np.integer):
            values = plane.astype(np.int64) * int(slope) + int(intercept)
        else:
            values = plane.astype(np.float64) * slope + intercept
        array[:, :, k] = values.T
    return array


def read(path: Path) -> Volume:
    """Read the one DICOM series in folder ``path``.

    Args:
        path: a folder holding the slice files (any or no extension); other files are skipped.

    Returns:
        A `Volume` with a ``(columns, rows, slices)`` array (int16/int32 or float32, rescaled) and
        the RAS+ affine; meta has series_uid, modality, patient_id, study_uid, series_description
        (when the header has them) and dicom_geometry.

    Raises:
        NotFoundError: the folder holds no DICOM image.
        InvalidInputError: it holds several series, or slices repeat or are unevenly spaced.
        TooLargeError: the declared voxels exceed `segloop.io.limits.max_image_bytes`.
        UnsupportedFormatError: multi-frame, colour or geometry-less images.
        CorruptFileError: a file cannot be decoded.
    """
    if not path.is_dir():
        msg = f"{path}: expected a folder holding one DICOM series; got a file"
        raise UnsupportedFormatError(msg)
    series = _read_headers(path)
    if not series:
        msg = f"{path}: expected DICOM image files in this folder; found none"
        raise NotFoundError(msg)
    if len(series) > 1:
        found = "; ".join(_describe(uid, slices) for uid, slices in series.items())
        msg = f"{path}: expected one series, found {len(series)}: {found}; put each series in its own folder"
        raise InvalidInputError(msg)
    slices = next(iter(series.values()))
    _check_slices(slices)
    first_path, first = slices[0]
    orientation = _numbers(first, "ImageOrientationPatient", first_path).tolist()
    where = f"{first_path}: "
    normal = np.cross(_unit(np.array(orientation[:3]), where), _unit(np.array(orientation[3:]), where))
    positions = {p: _numbers(h, "ImagePositionPatient", p) for p, h in slices}
    slices.sort(key=lambda s: float(np.dot(normal, positions[s[0]])))
    geometry = {
        "orientation": orientation,
        "pixel_spacing": _numbers(first, "PixelSpacing", first_path).tolist(),
        "positions": [positions[p].tolist() for p, _ in slices],
        "slice_thickness": _number(first, "SliceThickness", 0.0, first_path),
    }
    affine = _geometry_affine(geometry, path)
    shape = (_integer(first, "Columns", 0, first_path), _integer(first, "Rows", 0, first_path), len(slices))
    bits = _integer(first, "BitsAllocated", 16, first_path)
    check_declared_size(shape, max(1, bits // 8), what=str(path))
    array = _read_pixels([p for p, _ in slices], shape, path)
    meta: dict[str, Any] = {
        key: str(first.get(tag)) for key, tag in _META_TAGS.items() if first.get(tag) not in (None, "")
    }
    meta["dicom_geometry"] = geometry
    return make_volume(array, affine, meta, what=str(path))


def _ds(value: float) -> str:
    """``value`` as a DICOM decimal string (at most 16 characters; exact when it fits)."""
    return format_number_as_ds(float(value))


def _geometry_from_affine(volume: Volume) -> dict[str, Any]:
    """DICOM header numbers (LPS) describing the volume's grid; raises for grids DICOM lacks."""
    kept = volume.meta.get("dicom_geometry")
    n_slices = volume.spatial_shape[2]
    if isinstance(kept, dict) and len(kept.get("positions", ())) == n_slices:
        try:
            if np.array_equal(_geometry_affine(kept), volume.affine):
                return kept
        except (KeyError, TypeError, ValueError, InvalidInputError):
            pass  # stale or foreign meta: derive everything from the affine below
    lps = flip_ras_lps(volume.affine)
    spacing = spacing_from_affine(lps)
    row, column, step = (lps[:3, i] / spacing[i] for i in range(3))
    normal = np.cross(row, column)
    if abs(float(row @ column)) > 1e-6 or np.linalg.norm(np.cross(normal, step)) > 1e-6:
        msg = (
            "DICOM needs perpendicular row, column and slice axes; got the sheared affine"
            f" {np.round(volume.affine, 4).tolist()}; resample the volume or write NIfTI"
        )
        raise UnsupportedFormatError(msg)
    return {
        "orientation": [*row.tolist(), *column.tolist()],
        "pixel_spacing": [float(spacing[1]), float(spacing[0])],
        "positions": [(lps[:3, 3] + k * lps[:3, 2]).tolist() for k in range(n_slices)],
        "slice_thickness": float(spacing[2]),
    }


def _stored_dtype(array: np.ndarray) -> np.dtype:
    if array.dtype.kind not in "iu":
        msg = (
            f"DICOM writing needs integer voxel values; got {array.dtype}; round and cast"
            " (array.astype(np.int16)) or write NIfTI"
        )
        raise UnsupportedFormatError(msg)
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    for dtype in (np.dtype("<i2"), np.dtype("<u2")):
        if np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max:
            return dtype
    msg = (
        f"DICOM writing stores 16-bit values (int16 or uint16); got values from {low} to {high};"
        " rescale them or write NIfTI"
    )
    raise UnsupportedFormatError(msg)


def _slice_dataset(volume: Volume, dtype: np.dtype, common: dict[str, str]) -> Dataset:
    """A dataset with everything but the per-slice attributes: CT Image Storage for CT volumes,
    Secondary Capture (modality OT unless ``meta`` names one) for everything else."""
    instance_uid = generate_uid()
    modality = str(volume.meta.get("modality") or "OT")
    sop_class = CTImageStorage if modality == "CT" else SecondaryCaptureImageStorage
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = sop_class
    dataset.file_meta.MediaStorageSOPInstanceUID = instance_uid
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = instance_uid
    dataset.StudyInstanceUID = common["study_uid"]
    dataset.SeriesInstanceUID = common["series_uid"]
    dataset.FrameOfReferenceUID = common["frame_uid"]
    dataset.Modality = modality
    dataset.PatientID = str(volume.meta.get("patient_id") or "anonymous")
    dataset.SeriesDescription = str(volume.meta.get("series_description") or "segloop")
    dataset.ImageType = ["DERIVED", "SECONDARY"]
    for tag in _EMPTY_TAGS:
        setattr(dataset, tag, "")
    dataset.SeriesNumber = 1
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.Columns, dataset.Rows = volume.spatial_shape[:2]
    dataset.BitsAllocated = dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = int(dtype.kind == "i")
    dataset.RescaleSlope, dataset.RescaleIntercept, dataset.RescaleType = "1", "0", "US"
    return dataset


def write(volume: Volume, path: Path) -> None:
    """Write ``volume`` as a CT Image Storage series, one file per slice, into folder ``path``.

    The series gets new series, frame-of-reference and instance UIDs; it joins the study in
    ``meta["study_uid"]`` when there is one (a new study otherwise). Modality, PatientID and
    SeriesDescription come from ``meta`` ("OT", "anonymous", "segloop" without). A left-handed
    affine (slices stacked against row x column) is written at the right positions but reads
    back with K reversed, since readers sort slices along the normal.

    Args:
        volume: a 3D ``(I, J, K)`` integer volume with values in int16 or uint16 range; I becomes
            the DICOM columns, J the rows, K the slices ``IM00001.dcm``, ``IM00002.dcm``, ...
        path: an existing, empty folder.

    Raises:
        UnsupportedFormatError: float, bool or multi-channel arrays, values beyond 16 bits, or a
            sheared affine.
    """
    if volume.array.ndim != 3:
        msg = (
            f"DICOM writing takes one channel (I, J, K); got shape {volume.array.shape};"
            " write each channel as its own series"
        )
        raise UnsupportedFormatError(msg)
    dtype = _stored_dtype(volume.array)
    geometry = _geometry_from_affine(volume)
    orientation = np.array(geometry["orientation"], float)
    normal = np.cross(_unit(orientation[:3]), _unit(orientation[3:]))
    common = {
        "study_uid": str(volume.meta.get("study_uid") or generate_uid()),
        "series_uid": generate_uid(),
        "frame_uid": generate_uid(),
    }
    for k, position in enumerate(geometry["positions"]):
        dataset = _slice_dataset(volume, dtype, common)
        dataset.InstanceNumber = k + 1
        dataset.ImagePositionPatient = [_ds(v) for v in position]
        dataset.ImageOrientationPatient = [_ds(v) for v in geometry["orientation"]]
        dataset.PixelSpacing = [_ds(v) for v in geometry["pixel_spacing"]]
        dataset.SliceThickness = _ds(geometry["slice_thickness"])
        dataset.SliceLocation = _ds(float(np.dot(normal, position)))
        plane = np.ascontiguousarray(volume.array[:, :, k].T, dtype=dtype)
        dataset.PixelData = plane.tobytes()
        dataset.save_as(path / f"IM{k + 1:05d}.dcm", enforce_file_format=True)
