"""2D slices of volumes as a COCO instance dataset (seed 000's ``dataset_generate``), and back.

Export: every slice along the chosen plane that holds a label (or every slice) becomes an 8-bit JPG
through a CT window, ``clip((value - level) * 256 / width + 128, 0, 255)`` (W400/L20 by default),
shown the radiological way (axial: anterior at the top, the patient's right on the left) and
resized so that the longer side is 512 pixels *in millimetres* (a 4 x 2 mm pixel grid becomes
square pixels). Each class's outline on a slice becomes one COCO annotation per connected piece:
a polygon ``[x0, y0, x1, y1, ...]`` in output pixels (pixel centres at +0.5, COCO's convention),
``bbox`` ``[x, y, w, h]``, ``area`` (the polygon's), ``iscrowd`` 0. Holes are filled first, as the
seed does, because COCO polygons cannot carry them; pieces under 3 mm² are left out (seed 000
leaves out pieces under 5 pixels).
A class may be split into thirds from top to bottom (seed 000 gives the liver three labels):
categories ``<class>_top``, ``<class>_middle``, ``<class>_bottom`` with ``supercategory`` ``<class>``.

Each image entry carries ``"segloop"`` provenance (case, plane, voxel axis, slice index, grid,
display orientation, spacing, window, resize), so that results on these images, polygons with
scores, go back onto the 3D grid exactly: `read_slice_provenance`, `read_detections`,
`rasterize_detections`.

Layout of an export::

    OUT/img/<case>_<plane>_<slice>.jpg      the slices (RGB, as the seed writes them)
    OUT/mask/<case>_<plane>_<slice>.png     colour previews of the labels
    OUT/annotations/instances.json          the COCO file
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.draw import polygon as fill_polygon

from segloop.core.geometry import axis_of_plane, spacing_from_affine
from segloop.core.names import path_inside
from segloop.errors import (
    CorruptFileError,
    GeometryMismatchError,
    InvalidInputError,
    NotFoundError,
    TooLargeError,
    UnknownClassError,
)
from segloop.segment.contours import mask_to_polygons

__all__ = [
    "ANNOTATIONS_FILE",
    "DEFAULT_WINDOW",
    "IMAGES_DIR",
    "LONG_SIDE_PIXELS",
    "MASKS_DIR",
    "MAX_SLICE_PIXELS",
    "MIN_AREA_MM2",
    "THIRDS",
    "Detection",
    "SliceImage",
    "SliceProvenance",
    "SliceView",
    "make_case_slices",
    "make_categories",
    "make_document",
    "plan_slice_view",
    "rasterize_detections",
    "read_detections",
    "read_slice_provenance",
    "resized_shape",
    "take_plane",
    "window_to_uint8",
    "write_document",
    "write_slice_images",
]

#: Largest side (pixels) of an exported slice image a COCO file may declare: masks are decoded
#: at the image's size, so this caps what a results file can make segloop allocate.
MAX_SLICE_PIXELS = 8192
#: CT window (width, level) in HU of seed 000.
DEFAULT_WINDOW = (400.0, 20.0)
LONG_SIDE_PIXELS = 512
#: Pieces of a class smaller than this (mm²) on a slice are not exported. Seed 000 drops pieces
#: under 5 pixels of abdominal CT (about 0.78 mm pixels: 3 mm²); in mm², so a coarse grid (OpenKBP's
#: 4 mm pixels) keeps its single-voxel cross-sections.
MIN_AREA_MM2 = 3.0
THIRDS = ("top", "middle", "bottom")
IMAGES_DIR = "img"
MASKS_DIR = "mask"
ANNOTATIONS_FILE = "annotations/instances.json"
#: Display direction of rows and columns per plane: (world axis, +1 increasing / -1 decreasing).
#: Radiological: axial rows anterior->posterior, columns right->left; coronal and sagittal rows
#: superior->inferior, columns right->left and anterior->posterior.
_DISPLAY = {"axial": ((1, -1), (0, -1)), "coronal": ((2, -1), (0, -1)), "sagittal": ((2, -1), (1, -1))}
_PLANE_NORMAL = {"sagittal": 0, "coronal": 1, "axial": 2}
_IGNORE_COLOUR = (128, 128, 128)


# ------------------------------------------------------------------------------------ geometry


@dataclass(frozen=True)
class SliceView:
    """How a voxel slice is shown as an image.

    Attributes:
        plane: ``axial``, ``coronal`` or ``sagittal``.
        axis: the voxel axis stepped through (slices).
        row_axis: the voxel axis along image rows (top to bottom).
        row_flip: rows run against that voxel axis.
        col_axis: the voxel axis along image columns (left to right).
        col_flip: columns run against that voxel axis.
        top_is_high_index: slices of higher index lie further "up" (superior, anterior, right).
    """

    plane: str
    axis: int
    row_axis: int
    row_flip: bool
    col_axis: int
    col_flip: bool
    top_is_high_index: bool

    def to_record(self) -> dict[str, Any]:
        """Plain data for the provenance."""
        return {
            "plane": self.plane,
            "axis": self.axis,
            "rows": {"axis": self.row_axis, "flip": self.row_flip},
            "cols": {"axis": self.col_axis, "flip": self.col_flip},
        }


def plan_slice_view(affine: np.ndarray, plane: str) -> SliceView:
    """The voxel axis of ``plane`` and the radiological display orientation of its slices.

    Args:
        affine: ``(4, 4)`` RAS affine of the grid.
        plane: ``axial``, ``coronal`` or ``sagittal``.

    Examples:
        >>> view = plan_slice_view(np.diag([-1.0, -1.0, 1.0, 1.0]), "axial")   # LPS-like voxel axes
        >>> (view.axis, view.row_axis, view.row_flip, view.col_axis, view.col_flip)
        (2, 1, False, 0, False)
    """
    if plane not in _DISPLAY:
        msg = f"unknown plane {plane!r}: expected axial, coronal or sagittal"
        raise InvalidInputError(msg)
    matrix = np.asarray(affine, dtype=np.float64)[:3, :3]
    axis = axis_of_plane(affine, plane)
    in_plane = [a for a in range(3) if a != axis]
    (row_world, row_sign), (col_world, col_sign) = _DISPLAY[plane]
    weight = np.abs(matrix) / np.linalg.norm(matrix, axis=0)
    row_axis = max(in_plane, key=lambda a: weight[row_world, a])
    col_axis = next(a for a in in_plane if a != row_axis)
    return SliceView(
        plane,
        axis,
        row_axis,
        bool(np.sign(matrix[row_world, row_axis]) != row_sign),
        col_axis,
        bool(np.sign(matrix[col_world, col_axis]) != col_sign),
        bool(matrix[_PLANE_NORMAL[plane], axis] > 0),
    )


def take_plane(array: np.ndarray, view: SliceView, index: int) -> np.ndarray:
    """Slice ``index`` of an ``(I, J, K)`` array as a ``(rows, cols)`` image (a view, not a copy)."""
    selection: list[Any] = [slice(None)] * 3
    selection[view.axis] = index
    plane = array[tuple(selection)]
    if view.row_axis > view.col_axis:
        plane = plane.T
    if view.row_flip:
        plane = plane[::-1]
    if view.col_flip:
        plane = plane[:, ::-1]
    return plane


def _put_plane(array: np.ndarray, view: SliceView, index: int, plane: np.ndarray) -> None:
    """Write a ``(rows, cols)`` image into slice ``index`` of ``array`` (inverse of `take_plane`)."""
    target = take_plane(array, view, index)  # a view onto array, so assignment writes through
    target[...] = plane


def window_to_uint8(values: np.ndarray, width: float, level: float) -> np.ndarray:
    """Seed 000's window: ``clip((values - level) * 256 / width + 128, 0, 255)`` as uint8.

    Examples:
        >>> window_to_uint8(np.array([-1000, 20, 219, 500]), 400, 20).tolist()
        [0, 128, 255, 255]
    """
    if not width > 0:
        msg = f"window width must be > 0; got {width}"
        raise InvalidInputError(msg)
    scaled = (np.asarray(values, dtype=np.float64) - level) * 256.0 / width + 128.0
    return np.clip(scaled, 0, 255).astype(np.uint8)


def resized_shape(
    shape: Sequence[int], spacing_mm: Sequence[float], long_side: int = LONG_SIDE_PIXELS
) -> tuple[int, int]:
    """Output ``(height, width)`` so the longer physical side gets ``long_side`` pixels.

    Args:
        shape: ``(rows, cols)`` of the slice in voxels.
        spacing_mm: ``(row_mm, col_mm)`` voxel size.
        long_side: pixels of the longer side.

    Examples:
        >>> resized_shape((128, 128), (4.0, 2.0))
        (512, 256)
    """
    extent = [n * s for n, s in zip(shape, spacing_mm, strict=True)]
    longest = max(extent)
    return tuple(max(1, round(long_side * e / longest)) for e in extent)  # type: ignore[return-value]


def _resize(pixels: np.ndarray, size: tuple[int, int], *, nearest: bool) -> np.ndarray:
    image = Image.fromarray(np.ascontiguousarray(pixels))
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BICUBIC
    return np.asarray(image.resize((size[1], size[0]), method))


# ------------------------------------------------------------------------------------ polygons


def _outlines(mask: np.ndarray, min_area_voxels: float) -> list[np.ndarray]:
    """Outer outlines ``(n, 2)`` (row, col) of each piece of a 2D mask, holes filled."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return []
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    filled = ndimage.binary_fill_holes(crop)
    pieces, count = ndimage.label(filled, structure=np.ones((3, 3)))
    sizes = np.bincount(pieces.ravel(), minlength=count + 1)
    origin = np.array([rows[0], cols[0]], dtype=np.float64)
    outlines = []
    for piece in range(1, count + 1):
        if sizes[piece] < min_area_voxels:
            continue
        for polygon in mask_to_polygons((pieces == piece)[:, :, np.newaxis], 2):
            outlines.append(np.asarray(polygon["points"]) + origin)
    return outlines


def _to_pixels(points: np.ndarray, scale: tuple[float, float]) -> list[float]:
    """Voxel (row, col) outline -> COCO ``[x0, y0, ...]`` in output pixels (centres at +0.5)."""
    xy = np.column_stack([(points[:, 1] + 0.5) * scale[1], (points[:, 0] + 0.5) * scale[0]])
    return [round(float(v), 2) for v in xy.ravel()]


def _from_pixels(flat: Sequence[float], scale: tuple[float, float]) -> np.ndarray:
    """COCO ``[x0, y0, ...]`` in output pixels -> voxel ``(row, col)`` points."""
    xy = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
    return np.column_stack([xy[:, 1] / scale[0] - 0.5, xy[:, 0] / scale[1] - 0.5])


def _polygon_area(flat: Sequence[float]) -> float:
    xy = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _bbox(flat: Sequence[float]) -> list[float]:
    xy = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
    low, high = xy.min(axis=0), xy.max(axis=0)
    return [round(float(v), 2) for v in (low[0], low[1], high[0] - low[0], high[1] - low[1])]


# ------------------------------------------------------------------------------------ export


def make_categories(class_names: Mapping[int, str], split_thirds: Iterable[str] = ()) -> list[dict[str, Any]]:
    """COCO categories: one per class (or three for a class split into thirds), ids from 1.

    Each carries ``supercategory`` = the class name and ``segloop_value`` = its schema value.

    Examples:
        >>> [c["name"] for c in make_categories({1: "liver", 2: "spleen"}, ["liver"])]
        ['liver_top', 'liver_middle', 'liver_bottom', 'spleen']
    """
    split = set(split_thirds)
    unknown = sorted(split - set(class_names.values()))
    if unknown:
        known = ", ".join(class_names.values())
        msg = f"cannot split {unknown} into thirds: expected classes of the schema ({known})"
        raise UnknownClassError(msg)
    categories = []
    for value, name in sorted(class_names.items()):
        names = [f"{name}_{third}" for third in THIRDS] if name in split else [name]
        for category in names:
            categories.append(
                {"id": len(categories) + 1, "name": category, "supercategory": name, "segloop_value": value}
            )
    return categories


def _category_ids(categories: Sequence[Mapping[str, Any]]) -> dict[tuple[int, int | None], int]:
    """``{(class value, third or None): category id}``."""
    ids = {}
    for category in categories:
        name, base = category["name"], category["supercategory"]
        third = THIRDS.index(name[len(base) + 1 :]) if name != base else None
        ids[(int(category["segloop_value"]), third)] = int(category["id"])
    return ids


def _third(index: int, extent: tuple[int, int], top_is_high_index: bool) -> int:
    """Which third (0 top, 1 middle, 2 bottom) of a class's slice extent ``index`` lies in."""
    first, last = extent
    span = last - first
    depth = last - index if top_is_high_index else index - first
    if depth <= span / 3:
        return 0
    return 1 if depth <= span * 2 / 3 else 2


@dataclass
class SliceImage:
    """One exported slice: the JPG pixels, the preview, its COCO image entry and annotations."""

    file_name: str
    pixels: np.ndarray
    preview: np.ndarray
    entry: dict[str, Any]
    annotations: list[dict[str, Any]] = field(default_factory=list)


def make_case_slices(
    image: np.ndarray,
    labels: np.ndarray | None,
    affine: np.ndarray,
    *,
    case_id: str,
    categories: Sequence[Mapping[str, Any]],
    colors: Mapping[int, Sequence[int]],
    ignore_value: int,
    plane: str = "axial",
    window: tuple[float, float] = DEFAULT_WINDOW,
    long_side: int = LONG_SIDE_PIXELS,
    all_slices: bool = False,
    min_area_mm2: float = MIN_AREA_MM2,
) -> list[SliceImage]:
    """The slices of one case as images with COCO annotations (ids are assigned later).

    Args:
        image: ``(I, J, K)`` intensities (HU for CT, or whatever ``window`` is in).
        labels: ``(I, J, K)`` schema labels on the same grid, or None (an unlabelled case).
        affine: the grid's ``(4, 4)`` RAS affine.
        case_id: the case identifier (file names and provenance).
        categories: from `make_categories`.
        colors: class value -> RGB for the previews.
        ignore_value: the schema's ignore value (grey in the previews, never annotated).
        plane: ``axial``, ``coronal`` or ``sagittal``.
        window: ``(width, level)`` in the image's units.
        long_side: pixels of the longer physical side.
        all_slices: export every slice, not only those holding a class.
        min_area_mm2: smallest piece of a class exported (in-plane area).

    Returns:
        One `SliceImage` per exported slice, in slice order.
    """
    view = plan_slice_view(affine, plane)
    spacing = spacing_from_affine(np.asarray(affine, dtype=np.float64))
    pixel_mm = (float(spacing[view.row_axis]), float(spacing[view.col_axis]))
    ids = _category_ids(categories)
    split_values = {value for value, third in ids if third is not None}
    extents: dict[int, tuple[int, int]] = {}
    if labels is not None:
        for value in split_values:
            present = np.flatnonzero(np.moveaxis(labels == value, view.axis, 0).any(axis=(1, 2)))
            if present.size:
                extents[value] = (int(present[0]), int(present[-1]))
    slices = []
    for index in range(image.shape[view.axis]):
        plane_labels = take_plane(labels, view, index) if labels is not None else None
        values = []
        if plane_labels is not None:
            values = [v for v in np.unique(plane_labels).tolist() if v not in (0, ignore_value)]
        if not values and not all_slices:
            continue
        plane_image = take_plane(image, view, index)
        size = resized_shape(plane_image.shape, pixel_mm, long_side)
        scale = (size[0] / plane_image.shape[0], size[1] / plane_image.shape[1])
        pixels = _resize(window_to_uint8(plane_image, *window), size, nearest=False)
        preview = np.zeros((*plane_image.shape, 3), dtype=np.uint8)
        file_stem = f"{case_id}_{plane}_{index:04d}"
        slice_image = SliceImage(f"{file_stem}.jpg", pixels, preview, {})
        for value in values:
            mask = plane_labels == value
            preview[mask] = colors.get(value, (255, 255, 255))
            third = _third(index, extents[value], view.top_is_high_index) if value in split_values else None
            for outline in _outlines(mask, min_area_mm2 / (pixel_mm[0] * pixel_mm[1])):
                flat = _to_pixels(outline, scale)
                slice_image.annotations.append(
                    {
                        "category_id": ids[(value, third)],
                        "segmentation": [flat],
                        "area": round(_polygon_area(flat), 2),
                        "bbox": _bbox(flat),
                        "iscrowd": 0,
                    }
                )
        if plane_labels is not None:
            preview[plane_labels == ignore_value] = _IGNORE_COLOUR
        slice_image.preview = _resize(preview, size, nearest=True)
        slice_image.entry = {
            "file_name": f"{file_stem}.jpg",
            "width": size[1],
            "height": size[0],
            "segloop": {
                "case": case_id,
                **view.to_record(),
                "slice": index,
                "shape": [int(n) for n in image.shape],
                "spacing_mm": [float(s) for s in spacing],
                "window": [float(window[0]), float(window[1])],
                "resize": {"from": list(plane_image.shape), "to": list(size)},
                "has_ignore": bool(plane_labels is not None and (plane_labels == ignore_value).any()),
                "mask": f"{MASKS_DIR}/{file_stem}.png",
            },
        }
        slices.append(slice_image)
    return slices


def make_document(
    entries: Sequence[tuple[dict[str, Any], Sequence[dict[str, Any]]]],
    categories: Sequence[Mapping[str, Any]],
    *,
    description: str,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The COCO instance file from ``(image entry, annotations)`` pairs; ids are numbered from 1."""
    images, annotations = [], []
    for image_id, (entry, entry_annotations) in enumerate(entries, start=1):
        images.append({"id": image_id, **entry})
        for annotation in entry_annotations:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **annotation})
    now = datetime.now(UTC)
    return {
        "info": {
            "description": description,
            "version": "1.0",
            "year": now.year,
            "contributor": "segloop",
            "date_created": now.isoformat(timespec="seconds"),
            "segloop": settings,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": list(categories),
    }


def write_slice_images(folder: Path, slices: Sequence[SliceImage]) -> None:
    """Write ``img/<name>.jpg`` (RGB, quality 95, as seed 000) and the ``mask/<name>.png`` previews."""
    (folder / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    (folder / MASKS_DIR).mkdir(parents=True, exist_ok=True)
    for slice_image in slices:
        Image.fromarray(slice_image.pixels).convert("RGB").save(
            path_inside(folder, IMAGES_DIR, slice_image.file_name), format="JPEG", quality=95
        )
        preview_path = path_inside(folder, slice_image.entry["segloop"]["mask"])
        Image.fromarray(slice_image.preview).save(preview_path, format="PNG", compress_level=1)


def write_document(folder: Path, document: Mapping[str, Any]) -> Path:
    """Write the COCO file to ``folder/annotations/instances.json``."""
    path = folder / ANNOTATIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------ import


@dataclass(frozen=True)
class SliceProvenance:
    """Where an exported image came from: case, slice, grid and display transform.

    Attributes:
        case_id: the case.
        view: how the slice was shown.
        index: the slice along ``view.axis``.
        shape: the case's ``(I, J, K)``.
        scale: output pixels per voxel, ``(rows, cols)``.
        plane_shape: the slice's ``(rows, cols)`` in voxels.
        image_shape: the exported image's ``(height, width)`` in pixels.
    """

    case_id: str
    view: SliceView
    index: int
    shape: tuple[int, int, int]
    scale: tuple[float, float]
    plane_shape: tuple[int, int]
    image_shape: tuple[int, int]


@dataclass(frozen=True)
class Detection:
    """One result: polygons ``[[x0, y0, ...], ...]`` (or a decoded mask) of a category on an image."""

    image_id: int
    category_id: int
    polygons: tuple[tuple[float, ...], ...]
    score: float
    mask: np.ndarray | None = None


def read_slice_provenance(
    document: Mapping[str, Any], where: str, case_shapes: Mapping[str, Sequence[int]]
) -> tuple[dict[int, SliceProvenance], dict[int, str]]:
    """Image provenance and ``{category id: class name}`` of a COCO file segloop exported.

    Every number is checked against the project before anything is allocated: the case must
    exist with the recorded grid, the slice must lie in it and the image size must be at most
    `MAX_SLICE_PIXELS` a side.

    Args:
        document: the parsed COCO file.
        where: its name, for messages.
        case_shapes: ``{case id: (I, J, K)}`` of the project's cases.

    Raises:
        CorruptFileError: not a COCO instance file, images without segloop provenance, or
            provenance that contradicts itself (axes, slice, plane size).
        NotFoundError: an image of a case the project lacks.
        GeometryMismatchError: an image of a case whose grid is another.
        TooLargeError: an image larger than `MAX_SLICE_PIXELS` a side.
    """
    if not isinstance(document, Mapping) or not {"images", "categories"} <= set(document):
        msg = (
            f"{where}: expected a COCO file with images and categories"
            " (the annotations/instances.json segloop exported)"
        )
        raise CorruptFileError(msg)
    if not isinstance(document["images"], list) or not isinstance(document["categories"], list):
        msg = f"{where}: images and categories must be lists"
        raise CorruptFileError(msg)
    images = {}
    for entry in document["images"]:
        try:
            record = entry["segloop"]
            view = SliceView(
                str(record.get("plane", "")),
                int(record["axis"]),
                int(record["rows"]["axis"]),
                bool(record["rows"]["flip"]),
                int(record["cols"]["axis"]),
                bool(record["cols"]["flip"]),
                False,
            )
            plane_shape = _int_pair(record["resize"]["from"])
            size = _int_pair(record["resize"]["to"])
            shape = tuple(int(n) for n in record["shape"])
            provenance = SliceProvenance(
                str(record["case"]),
                view,
                int(record["slice"]),
                shape,  # type: ignore[arg-type]
                (size[0] / plane_shape[0], size[1] / plane_shape[1]),
                plane_shape,
                size,
            )
            image_id = int(entry["id"])
        except (KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError) as error:
            msg = (
                f"{where}: image {entry.get('id') if isinstance(entry, Mapping) else entry!r:.60} lacks"
                f" segloop provenance ({error!r:.100});"
                " expected the annotations/instances.json segloop exported"
            )
            raise CorruptFileError(msg) from error
        _check_provenance(provenance, case_shapes, f"{where}: image {image_id}")
        images[image_id] = provenance
    categories = {}
    for category in document["categories"]:
        try:
            categories[int(category["id"])] = str(category.get("supercategory") or category["name"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            msg = f"{where}: malformed category {category!r:.100}: expected id, name, supercategory"
            raise CorruptFileError(msg) from error
    return images, categories


def _int_pair(values: Any) -> tuple[int, int]:
    rows, cols = (int(v) for v in values)
    return rows, cols


def _check_provenance(source: SliceProvenance, case_shapes: Mapping[str, Sequence[int]], here: str) -> None:
    """Raise unless the provenance fits the project's case and stays within the size cap."""
    if source.case_id not in case_shapes:
        msg = f"{here} comes from case {source.case_id[:60]!r}, which the project does not hold"
        raise NotFoundError(msg)
    expected = tuple(int(n) for n in case_shapes[source.case_id])
    if source.shape != expected:
        msg = f"{here}: its case {source.case_id!r} had grid {source.shape!s:.80}; the case is {expected}"
        raise GeometryMismatchError(msg)
    view = source.view
    if sorted((view.axis, view.row_axis, view.col_axis)) != [0, 1, 2]:
        msg = (
            f"{here}: slice axis {view.axis}, row axis {view.row_axis} and column axis {view.col_axis}"
            " must be 0, 1 and 2 in some order"
        )
        raise CorruptFileError(msg)
    if not 0 <= source.index < expected[view.axis]:
        msg = f"{here}: slice {source.index} is outside the case: expected 0..{expected[view.axis] - 1}"
        raise CorruptFileError(msg)
    if source.plane_shape != (expected[view.row_axis], expected[view.col_axis]):
        msg = (
            f"{here}: a slice of {source.plane_shape} voxels; the case's slices along axis {view.axis}"
            f" are {(expected[view.row_axis], expected[view.col_axis])}"
        )
        raise CorruptFileError(msg)
    if max(source.image_shape) > MAX_SLICE_PIXELS or min(source.image_shape) < 1:
        msg = f"{here}: an image of {source.image_shape} pixels; expected 1..{MAX_SLICE_PIXELS} a side"
        raise TooLargeError(msg)


def _rle_counts_from_string(text: str, where: str) -> list[int]:
    """The run lengths of COCO's compressed RLE string (pycocotools' ``rleFrString``)."""
    counts: list[int] = []
    position = 0
    try:
        while position < len(text):
            value, shift, more = 0, 0, True
            while more:
                code = ord(text[position]) - 48
                if not 0 <= code < 64 or shift > 60:
                    raise ValueError(text[position])
                value |= (code & 0x1F) << shift
                more = bool(code & 0x20)
                position += 1
                shift += 5
                if not more and code & 0x10:
                    value |= -1 << shift
            if len(counts) > 2:
                value += counts[-2]
            counts.append(value)
    except (IndexError, ValueError) as error:
        msg = f"{where}: malformed compressed RLE counts at character {position}"
        raise CorruptFileError(msg) from error
    return counts


def _decode_rle(segmentation: Mapping[str, Any], image_shape: tuple[int, int], where: str) -> np.ndarray:
    """A COCO RLE (``{"size": [h, w], "counts": [...] or "..."}``) as a ``(h, w)`` bool mask.

    The size must be the image's and the runs must cover it exactly, so nothing is allocated
    beyond the image's size.

    Decoded here, not by pycocotools: its C decoder writes as many pixels as the runs say without
    checking them against the size (a hostile file writes past its buffer), and it is optional.
    tests/exchange/test_coco.py checks this decoder against pycocotools' encoder.
    """
    size, counts = segmentation.get("size"), segmentation.get("counts")
    if not isinstance(size, list) or [type(v) for v in size] != [int, int] or tuple(size) != image_shape:
        msg = f"{where}: RLE size {size!r:.60} must be the image's [height, width] {list(image_shape)}"
        raise InvalidInputError(msg)
    pixels = image_shape[0] * image_shape[1]
    if isinstance(counts, str):
        if len(counts) > 12 * (pixels + 1):
            msg = f"{where}: RLE counts of {len(counts)} characters for a {pixels}-pixel image"
            raise TooLargeError(msg)
        counts = _rle_counts_from_string(counts, where)
    if not isinstance(counts, list) or not all(type(c) is int and c >= 0 for c in counts):
        msg = f"{where}: RLE counts must be run lengths >= 0 (a list of integers or COCO's string)"
        raise InvalidInputError(msg)
    if len(counts) > pixels + 1 or sum(counts) != pixels:
        total = sum(counts) if len(counts) <= pixels + 1 else "too many runs"
        msg = f"{where}: RLE runs must cover the image's {pixels} pixels exactly; got {total}"
        raise InvalidInputError(msg)
    flat = np.repeat(np.arange(len(counts)) % 2 == 1, counts)
    return flat.reshape(image_shape, order="F")


def _check_polygon(polygon: Any, image_shape: tuple[int, int], where: str) -> tuple[float, ...]:
    """A polygon ``[x0, y0, ...]`` of finite numbers at most one image size outside the image."""
    if not isinstance(polygon, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in polygon
    ):
        msg = f"{where}: segmentation must be polygons [[x0, y0, x1, y1, ...]]; got {polygon!r:.80}"
        raise CorruptFileError(msg)
    if len(polygon) % 2 or len(polygon) < 6:
        msg = f"{where}: a polygon needs at least 3 points (6 numbers, x and y pairs); got {len(polygon)}"
        raise CorruptFileError(msg)
    height, width = image_shape
    xy = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    inside = (
        np.isfinite(xy).all()
        and (np.abs(xy[:, 0] - width / 2) <= 1.5 * width).all()
        and (np.abs(xy[:, 1] - height / 2) <= 1.5 * height).all()
    )
    if not inside:
        finite = np.isfinite(xy)
        got = (
            f"values from {xy.min():.3g} to {xy.max():.3g}"
            if finite.all()
            else f"{int((~finite).sum())} NaN or infinite values"
        )
        msg = f"{where}: polygon points must be finite pixel coordinates near the {width}x{height} image;"
        msg += f" got {got}"
        raise InvalidInputError(msg)
    return tuple(float(v) for v in polygon)


def read_detections(
    results: Any, images: Mapping[int, SliceProvenance], categories: Mapping[int, str], where: str
) -> list[Detection]:
    """Parse COCO results (a list, or a COCO file's ``annotations``) and check them.

    Each result needs ``image_id``, ``category_id``, ``segmentation`` (polygons, or RLE on the
    image's size, compressed or not) and ``score`` (1.0 when absent, as in ground-truth files).

    Raises:
        CorruptFileError: an unknown image or category id, a polygon with fewer than 3 points or
            odd coordinates, a missing key, a score that is not a number.
        InvalidInputError: polygon points that are not finite or far outside the image, an RLE
            whose size is not the image's or whose runs do not cover it.
    """
    entries = results.get("annotations") if isinstance(results, Mapping) else results
    if not isinstance(entries, list):
        msg = f"{where}: expected a list of COCO results or a COCO file with annotations"
        raise CorruptFileError(msg)
    detections = []
    for number, entry in enumerate(entries):
        here = f"{where}: result {number}"
        if not isinstance(entry, Mapping) or not {"image_id", "category_id", "segmentation"} <= set(entry):
            msg = f"{here} must have image_id, category_id and segmentation; got {entry!r:.100}"
            raise CorruptFileError(msg)
        image_id, category_id = entry["image_id"], entry["category_id"]
        if image_id not in images:
            msg = f"{here} references image {image_id!r}, which the exported dataset does not hold"
            raise CorruptFileError(msg)
        if category_id not in categories:
            known = ", ".join(f"{k} ({v})" for k, v in sorted(categories.items()))
            msg = f"{here} references category {category_id!r}; expected one of {known}"
            raise CorruptFileError(msg)
        score = entry.get("score", 1.0)
        if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
            msg = f"{here}: score must be a number; got {score!r}"
            raise CorruptFileError(msg)
        segmentation = entry["segmentation"]
        image_shape = images[image_id].image_shape
        if isinstance(segmentation, Mapping):
            mask = _decode_rle(segmentation, image_shape, here)
            detections.append(Detection(image_id, category_id, (), float(score), mask))
            continue
        polygons = tuple(
            _check_polygon(polygon, image_shape, here)
            for polygon in (segmentation if isinstance(segmentation, list) else [None])
        )
        detections.append(Detection(image_id, category_id, polygons, float(score)))
    return detections


def rasterize_detections(
    detections: Sequence[Detection],
    images: Mapping[int, SliceProvenance],
    class_values: Mapping[int, int],
    *,
    score_threshold: float,
    dtype: np.dtype | type = np.uint8,
) -> dict[str, np.ndarray]:
    """Paint detections at or above ``score_threshold`` into a 3D label map per case.

    Detections are painted from the lowest score up, so where two overlap the higher score wins.
    A pixel is inside a polygon when its centre is (scikit-image's ``polygon``); parts outside
    the image are clipped.

    Args:
        detections: from `read_detections`.
        images: from `read_slice_provenance`.
        class_values: ``{category id: schema value}``.
        score_threshold: smallest score kept.
        dtype: dtype of the label maps.

    Returns:
        ``{case id: (I, J, K) label map}`` for every case with at least one kept detection.
    """
    volumes: dict[str, np.ndarray] = {}
    kept = sorted((d for d in detections if d.score >= score_threshold), key=lambda d: d.score)
    for detection in kept:
        source = images[detection.image_id]
        volume = volumes.setdefault(source.case_id, np.zeros(source.shape, dtype=dtype))
        plane = take_plane(volume, source.view, source.index).copy()
        value = class_values[detection.category_id]
        if detection.mask is not None:
            plane[_resize_mask(detection.mask, source.plane_shape)] = value
        for flat in detection.polygons:
            points = _from_pixels(flat, source.scale)
            rows, cols = fill_polygon(points[:, 0], points[:, 1], shape=source.plane_shape)
            plane[rows, cols] = value
        _put_plane(volume, source.view, source.index, plane)
    return volumes


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An output-pixel mask (height, width) sampled at the voxel centres of a ``shape`` slice."""
    rows = np.clip(((np.arange(shape[0]) + 0.5) * mask.shape[0] / shape[0]).astype(int), 0, mask.shape[0] - 1)
    cols = np.clip(((np.arange(shape[1]) + 0.5) * mask.shape[1] / shape[1]).astype(int), 0, mask.shape[1] - 1)
    return mask[np.ix_(rows, cols)]
