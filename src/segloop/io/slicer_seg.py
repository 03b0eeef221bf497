"""3D Slicer segmentation files (.seg.nrrd): segments with names, colours and label values.

A .seg.nrrd is a NRRD whose header carries ``SegmentN_*`` fields. Slicer writes two variants:

- *label map*: one 3D array; each segment is the voxels equal to its ``SegmentN_LabelValue``
  in layer ``SegmentN_Layer`` (0);
- *layered*: a 4D array ``(layers, I, J, K)`` when segments overlap; each segment names its layer.
  Files from Slicer before 4.11 have one layer per segment and no label value (the value is 1).

The `Volume` keeps the array as stored (3D, or ``(L, I, J, K)`` for layered files) and lists the
segments in ``meta["segments"]`` as dicts ``{id, name, color (RGB 0-255), label_value, layer}``;
`segments_to_masks` yields one boolean mask per segment. The array may cover only part of the
reference image (Slicer crops to the segments' extent); its affine says where it lies.

Segments are checked so that no class is merged or vouched for by mistake:

- two segments with the same name, or two sharing one label value in one layer, are refused
  (`InvalidInputError`): their voxels would silently become one class;
- a segment whose label value no voxel holds is *empty*. Slicer writes an empty segment's
  ``SegmentN_Extent`` as an empty box (``0 -1 0 -1 0 -1``): a person kept the segment and
  painted nothing, which in Slicer means "none of this class here". Such segments stay in
  ``meta["segments"]`` (the class is annotated, with no voxel) and are also named in
  ``meta["empty_segments"]`` so the caller can say so. An empty segment whose extent says it
  has voxels is refused as inconsistent (`CorruptFileError`: a wrong label value or layer), and
  one without any extent is refused too (`InvalidInputError`): nothing says it is meant to be
  empty, and taking it as "absent" would teach a network that the class is not there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from segloop.core.volume import Volume
from segloop.errors import CorruptFileError, InvalidInputError, LabelValueError
from segloop.io.checks import make_volume
from segloop.io.nrrd import read_nrrd, write_nrrd

__all__ = ["read", "segments_to_masks", "write"]


def _segment_numbers(header: dict[str, Any]) -> list[int]:
    """The N of every ``SegmentN_*`` field, sorted."""
    return sorted(
        {
            int(key[len("Segment") :].split("_", 1)[0])
            for key in header
            if key.startswith("Segment") and key[len("Segment") :].split("_", 1)[0].isdigit()
        }
    )


def _parse_segments(header: dict[str, Any], path: Path) -> list[dict[str, Any]]:
    numbers = _segment_numbers(header)
    segments = []
    pre_411 = _is_pre_411(header)
    for number in numbers:
        prefix = f"Segment{number}_"
        try:
            color = [float(c) for c in str(header.get(prefix + "Color", "0.5 0.5 0.5")).split()]
            segments.append(
                {
                    "id": str(header.get(prefix + "ID", f"Segment_{number + 1}")),
                    "name": str(header.get(prefix + "Name", f"Segment_{number + 1}")),
                    "color": tuple(round(255 * c) for c in color[:3]),
                    "label_value": int(header.get(prefix + "LabelValue", 1)),
                    "layer": int(header.get(prefix + "Layer", number if pre_411 else 0)),
                }
            )
        except ValueError as error:
            msg = f"{path}: malformed segment field {prefix}* ({error})"
            raise CorruptFileError(msg) from error
    return segments


def _check_distinct(segments: list[dict[str, Any]], path: Path) -> None:
    """Refuse two segments with one name, or with one label value in one layer."""
    by_name: dict[str, dict[str, Any]] = {}
    by_value: dict[tuple[int, int], dict[str, Any]] = {}
    for segment in segments:
        if segment["name"] in by_name:
            msg = (
                f"{path}: two segments are named {segment['name']!r} (label values"
                f" {by_name[segment['name']]['label_value']} and {segment['label_value']}); expected one"
                " segment per class: rename or merge them"
            )
            raise InvalidInputError(msg)
        key = (segment["layer"], segment["label_value"])
        if key in by_value:
            msg = (
                f"{path}: segments {by_value[key]['name']!r} and {segment['name']!r} both use label value"
                f" {key[1]} in layer {key[0]}; expected one label value per segment"
            )
            raise InvalidInputError(msg)
        by_name[segment["name"]] = by_value[key] = segment


def _extent_is_empty(header: dict[str, Any], number: int, path: Path) -> bool | None:
    """Whether ``SegmentN_Extent`` is an empty box (True), a box with voxels (False) or absent (None)."""
    text = header.get(f"Segment{number}_Extent")
    if text is None:
        return None
    try:
        bounds = [int(v) for v in str(text).split()]
    except ValueError:
        bounds = []
    if len(bounds) != 6:
        msg = f"{path}: expected six whole numbers in Segment{number}_Extent; got {str(text)[:60]!r}"
        raise CorruptFileError(msg)
    return any(high < low for low, high in zip(bounds[::2], bounds[1::2], strict=True))


def _empty_segments(
    array: np.ndarray, header: dict[str, Any], segments: list[dict[str, Any]], path: Path
) -> list[str]:
    """Names of the segments no voxel belongs to; refuses those not declared empty (module doc)."""
    layers = array if array.ndim == 4 else array[np.newaxis]
    present = {layer: set(np.unique(layers[layer]).tolist()) for layer in {s["layer"] for s in segments}}
    numbers = _segment_numbers(header)
    empty = []
    for number, segment in zip(numbers, segments, strict=True):
        if segment["label_value"] in present[segment["layer"]]:
            continue
        declared_empty = _extent_is_empty(header, number, path)
        where = (
            f"segment {segment['name']!r} (label value {segment['label_value']}, layer {segment['layer']})"
        )
        if declared_empty is False:
            msg = f"{path}: {where} holds no voxel, though its extent says it has some (inconsistent file)"
            raise CorruptFileError(msg)
        if declared_empty is None:
            msg = (
                f"{path}: {where} holds no voxel, and no extent says it is meant to be empty;"
                " paint it or delete the segment"
            )
            raise InvalidInputError(msg)
        empty.append(segment["name"])
    return empty


def _check_declared_values(array: np.ndarray, segments: list[dict[str, Any]], path: Path) -> None:
    """Refuse voxels whose value no segment of their layer declares (they would vanish unsaid)."""
    layers = array if array.ndim == 4 else array[np.newaxis]
    for number, layer in enumerate(layers):
        declared = {0} | {s["label_value"] for s in segments if s["layer"] == number}
        if layer.dtype.kind in "ub" and layer.size:
            present = set(np.flatnonzero(np.bincount(layer.ravel().astype(np.intp))).tolist())
        else:
            present = set(np.unique(layer).tolist())
        stray = sorted(present - declared)
        if stray:
            msg = (
                f"{path}: layer {number} holds voxels of value(s) {stray[:5]} that no segment declares;"
                f" expected only {sorted(declared)} (add the segment or erase those voxels)"
            )
            raise LabelValueError(msg)


def _is_pre_411(header: dict[str, Any]) -> bool:
    return not any(key.endswith("_LabelValue") for key in header if key.startswith("Segment"))


def read(path: Path) -> Volume:
    """Read a .seg.nrrd; ``meta["segments"]`` describes each segment, ``meta["empty_segments"]``
    names those without voxels (see the module docstring for what is refused).

    Raises:
        CorruptFileError: a malformed segment field, a segment in a missing layer, or an empty
            segment whose extent says it has voxels.
        InvalidInputError: two segments with one name or one label value, or an empty segment
            nothing declares empty.
    """
    array, affine, header = read_nrrd(path)
    segments = _parse_segments(header, path)
    layers = 1 if array.ndim == 3 else array.shape[0]
    for segment in segments:
        if not 0 <= segment["layer"] < layers:
            msg = (
                f"{path}: segment {segment['name']!r} is in layer {segment['layer']},"
                f" but the file has {layers}"
            )
            raise CorruptFileError(msg)
    _check_distinct(segments, path)
    empty = _empty_segments(array, header, segments, path)
    _check_declared_values(array, segments, path)
    text = str(header.get("Segmentation_ReferenceImageExtentOffset", "0 0 0"))
    try:
        offset = [int(v) for v in text.split()]
    except ValueError as error:
        msg = f"{path}: expected whole numbers in Segmentation_ReferenceImageExtentOffset; got {text[:60]!r}"
        raise CorruptFileError(msg) from error
    meta = {"segments": segments, "empty_segments": empty, "reference_extent_offset": offset}
    return make_volume(array, affine, meta, what=str(path))


def segments_to_masks(volume: Volume) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """Yield ``(segment, mask)`` for each segment of a volume read from a .seg.nrrd.

    Args:
        volume: as returned by `read` (``meta["segments"]`` present).

    Yields:
        The segment dict and its ``(I, J, K)`` boolean mask.
    """
    layers = volume.array if volume.array.ndim == 4 else volume.array[np.newaxis]
    for segment in volume.meta.get("segments", []):
        yield segment, layers[segment["layer"]] == segment["label_value"]


def _segment_fields(number: int, segment: dict[str, Any], mask: np.ndarray) -> dict[str, str]:
    indices = np.nonzero(mask)
    bounds = [(int(i.min()), int(i.max())) for i in indices] if mask.any() else [(0, -1)] * 3
    color = " ".join(f"{c / 255:.6g}" for c in segment["color"])
    prefix = f"Segment{number}_"
    return {
        prefix + "ID": str(segment.get("id", segment["name"])),
        prefix + "Name": str(segment["name"]),
        prefix + "NameAutoGenerated": "0",
        prefix + "Color": color,
        prefix + "ColorAutoGenerated": "0",
        prefix + "LabelValue": str(int(segment["label_value"])),
        prefix + "Layer": str(int(segment.get("layer", 0))),
        prefix + "Extent": " ".join(f"{lo} {hi}" for lo, hi in bounds),
        prefix + "Tags": "Segmentation.Status:inprogress|",
    }


def write(volume: Volume, path: Path) -> None:
    """Write a label map (or layered ``(L, I, J, K)`` array) as a Slicer .seg.nrrd.

    Segments come from ``meta["segments"]``; without it, one segment per non-zero whole value
    (``Segment_<value>``, grey).
    """
    if volume.array.dtype.kind == "f" and not np.array_equal(volume.array, np.round(volume.array)):
        msg = f"{path}: a segmentation holds whole label values; got fractional values ({volume.array.dtype})"
        raise InvalidInputError(msg)
    segments = volume.meta.get("segments")
    if segments is None:
        values = [int(v) for v in np.unique(volume.array) if v != 0]
        segments = [
            {"name": f"Segment_{v}", "color": (128, 128, 128), "label_value": v, "layer": 0} for v in values
        ]
    fields = {
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    masked = Volume(volume.array, volume.affine, {"segments": segments})
    for number, (segment, mask) in enumerate(segments_to_masks(masked)):
        fields.update(_segment_fields(number, segment, mask))
    write_nrrd(volume.array, volume.affine, path, fields)
