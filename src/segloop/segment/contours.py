"""Polygons on slices <-> masks, and the JSON polygon document.

A polygon lies on one slice along an ``axis`` and is ``{"slice": k, "points": [[u, v], ...]}``:
``u`` and ``v`` are continuous voxel coordinates along the two in-plane axes in increasing axis
order (for ``axis=2``: ``u`` along I, ``v`` along J), voxel centres at whole numbers, so a slice
spans ``-0.5 .. size - 0.5``. A voxel is inside when its centre is.

Filling is even-odd (``fill_rule="evenodd"``, the default): every polygon on a slice flips the
voxels it covers, so a polygon drawn inside another cuts a hole, and the outer and hole contours
that `mask_to_polygons` returns fill back to the same mask. ``fill_rule="union"`` ORs them instead
(for hand-drawn polygons that overlap on purpose).

The polygon document (a JSON file, loaded into a dict by the caller) is::

    {
      "axis": "axial" | "coronal" | "sagittal" | 0 | 1 | 2,
      "coordinates": "voxel" | "mm",
      "classes": {
        "<class name>": [
          {"slice": 40, "points": [[u, v], [u, v], [u, v], ...]},
          ...
        ]
      }
    }

With ``"coordinates": "voxel"`` points are ``[u, v]`` as above and ``"slice"`` is required. With
``"mm"`` points are RAS+ ``[x, y, z]`` in mm; each must lie within half a voxel of the polygon's
slice (``"slice"`` may be left out: it is then the slice the points lie on). No other keys are
allowed anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from skimage.draw import polygon as fill_polygon
from skimage.measure import approximate_polygon, find_contours

from segloop.core.geometry import axis_of_plane
from segloop.errors import GeometryMismatchError, InvalidInputError, LabelValueError

__all__ = [
    "PolygonDocument",
    "make_polygon_document",
    "mask_to_polygons",
    "polygons_to_mask",
    "read_polygons",
]

_FILL_RULES = ("evenodd", "union")
_POLYGON_KEYS = {"slice", "points"}
_DOCUMENT_KEYS = {"axis", "coordinates", "classes"}
#: Slack (voxels) on the "within half a voxel" and "inside the slice" checks, for rounding.
_SLACK_VOXELS = 1e-6


@dataclass(frozen=True)
class PolygonDocument:
    """A parsed polygon document: the slice axis and, per class name, polygons in voxel coordinates.

    Attributes:
        axis: the voxel axis (0, 1, 2) the polygons' slices are stacked along.
        classes: class name -> list of ``{"slice": int, "points": [[u, v], ...]}`` (voxels).
    """

    axis: int
    classes: dict[str, list[dict[str, Any]]]

    def to_masks(self, shape: Sequence[int], *, fill_rule: str = "evenodd") -> dict[str, np.ndarray]:
        """Each class's polygons filled into an ``(I, J, K)`` bool mask of ``shape``."""
        return {
            name: polygons_to_mask(polygons, shape, self.axis, fill_rule=fill_rule)
            for name, polygons in self.classes.items()
        }


def polygons_to_mask(
    polygons: Iterable[Mapping[str, Any]], shape: Sequence[int], axis: int, *, fill_rule: str = "evenodd"
) -> np.ndarray:
    """Fill polygons drawn on slices into a 3D mask.

    Args:
        polygons: ``{"slice": k, "points": [[u, v], ...]}`` dicts, points in voxel coordinates of
            the two in-plane axes in increasing axis order (at least 3 points each). A
            ``"points_mm"`` entry, as `mask_to_polygons` adds, is ignored.
        shape: the mask's shape ``(I, J, K)``.
        axis: the voxel axis (0, 1 or 2) the slices are stacked along.
        fill_rule: ``"evenodd"`` (polygons on one slice flip what they cover: holes) or
            ``"union"`` (they add up).

    Returns:
        ``(I, J, K)`` bool mask: a voxel is True where its centre is inside.

    Raises:
        InvalidInputError: a malformed polygon (unknown keys, fewer than 3 points, not numbers), a bad
            ``axis`` or ``fill_rule``.
        GeometryMismatchError: a slice index outside the mask, or points outside the slice.

    Examples:
        >>> square = {"slice": 1, "points": [[0.5, 0.5], [0.5, 3.5], [3.5, 3.5], [3.5, 0.5]]}
        >>> mask = polygons_to_mask([square], (5, 5, 3), axis=2)
        >>> int(mask.sum()), mask[:, :, 1].astype(int).tolist()[1]
        (9, [0, 1, 1, 1, 0])
    """
    shape = _check_shape(shape)
    axis = _check_axis(axis)
    if fill_rule not in _FILL_RULES:
        msg = f"fill_rule must be one of {_FILL_RULES}; got {fill_rule!r}"
        raise InvalidInputError(msg)
    result = np.zeros(shape, dtype=bool)
    stack = np.moveaxis(result, axis, 0)
    plane_shape = stack.shape[1:]
    for index, polygon in enumerate(_as_list(polygons, "polygons")):
        where = f"polygon {index}"
        _check_keys(polygon, _POLYGON_KEYS | {"points_mm"}, _POLYGON_KEYS, where)
        k = _check_slice(polygon["slice"], stack.shape[0], axis, where)
        points = _check_points(polygon["points"], 2, f"{where} (slice {k})")
        _check_inside(points, plane_shape, f"{where} (slice {k})")
        rows, cols = fill_polygon(points[:, 0], points[:, 1], shape=plane_shape)
        layer = stack[k]
        if fill_rule == "evenodd":
            layer[rows, cols] ^= True
        else:
            layer[rows, cols] = True
    return result


def mask_to_polygons(
    mask: np.ndarray, axis: int, *, affine: np.ndarray | None = None, tolerance_voxels: float = 0.0
) -> list[dict[str, Any]]:
    """Trace the outlines of a mask on every non-empty slice as closed polygons.

    Contours are traced at 0.5 with scikit-image's ``find_contours`` on the slice padded by one
    empty voxel (so shapes touching the border still close), foreground 8-connected. Outer outlines
    and hole outlines both come back; filling them with the even-odd rule gives the mask back.

    Args:
        mask: ``(I, J, K)`` bool mask (0/1 numbers accepted).
        axis: the voxel axis (0, 1 or 2) to slice along.
        affine: optional ``(4, 4)`` voxel-to-RAS+ affine; adds ``"points_mm"`` ``[[x, y, z], ...]``.
        tolerance_voxels: simplify each outline (Douglas-Peucker) with this tolerance; 0 = keep
            every vertex. An outline that would simplify to fewer than 3 vertices (an island of a
            voxel or two) keeps its traced vertices instead of vanishing.

    Returns:
        A list of ``{"slice": k, "points": [[u, v], ...]}`` (plus ``"points_mm"``), ordered by
        slice; the closing point is not repeated.

    Raises:
        GeometryMismatchError: ``mask`` is not 3D or ``affine`` is not an invertible 4x4 matrix.
        LabelValueError: ``mask`` holds values other than 0 and 1.
        InvalidInputError: a bad ``axis`` or ``tolerance_voxels``.

    Examples:
        >>> mask = np.zeros((4, 4, 2), bool)
        >>> mask[1:3, 1:3, 0] = True
        >>> [(p["slice"], len(p["points"])) for p in mask_to_polygons(mask, 2)]
        [(0, 8)]
        >>> [len(p["points"]) for p in mask_to_polygons(mask, 2, tolerance_voxels=1.0)]
        [4]
        >>> dot = np.zeros((3, 3, 1), bool); dot[1, 1, 0] = True  # kept although tiny
        >>> mask_to_polygons(dot, 2, tolerance_voxels=1.0)[0]["points"]
        [[1.5, 1.0], [1.0, 0.5], [0.5, 1.0], [1.0, 1.5]]
    """
    mask = np.asarray(mask)
    if mask.ndim != 3:
        msg = f"expected a 3D (I, J, K) mask; got shape {mask.shape}"
        raise GeometryMismatchError(msg)
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            msg = f"expected a bool mask (or 0/1 numbers); got values {np.unique(mask)[:5].tolist()}"
            raise LabelValueError(msg)
        mask = mask != 0
    axis = _check_axis(axis)
    if not math.isfinite(tolerance_voxels) or tolerance_voxels < 0:
        msg = f"tolerance_voxels must be >= 0; got {tolerance_voxels}"
        raise InvalidInputError(msg)
    if affine is not None:
        affine = _check_affine(affine)
    stack = np.moveaxis(mask, axis, 0)
    polygons = []
    for k in np.flatnonzero(stack.any(axis=(1, 2))):
        layer = stack[k]
        rows = np.flatnonzero(layer.any(axis=1))
        cols = np.flatnonzero(layer.any(axis=0))
        crop = np.pad(layer[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], 1).astype(np.float32)
        origin = np.array([rows[0] - 1, cols[0] - 1], dtype=np.float64)
        for traced in find_contours(crop, 0.5, fully_connected="high"):
            points = _simplify(traced, tolerance_voxels) + origin
            if len(points) < 3:
                continue
            polygon: dict[str, Any] = {"slice": int(k), "points": points.tolist()}
            if affine is not None:
                polygon["points_mm"] = _voxel_to_mm(points, int(k), axis, affine).tolist()
            polygons.append(polygon)
    return polygons


def _simplify(contour: np.ndarray, tolerance_voxels: float) -> np.ndarray:
    """A traced outline's vertices (the closing one dropped), Douglas-Peucker simplified when that
    leaves a polygon (a voxel-sized island would shrink to a segment: its traced vertices stay)."""
    closed = np.array_equal(contour[0], contour[-1])
    if tolerance_voxels > 0:
        simplified = approximate_polygon(contour, tolerance_voxels)
        simplified = simplified[:-1] if closed else simplified
        if len(simplified) >= 3:
            return simplified
    return contour[:-1] if closed else contour


def read_polygons(document: Mapping[str, Any], shape: Sequence[int], affine: np.ndarray) -> PolygonDocument:
    """Parse and check a polygon document (see the module docstring for the schema).

    Args:
        document: the loaded JSON document.
        shape: ``(I, J, K)`` of the image the polygons are drawn on.
        affine: its ``(4, 4)`` voxel-to-RAS+ affine (for plane names and mm coordinates).

    Returns:
        A `PolygonDocument` with every polygon in voxel coordinates.

    Raises:
        InvalidInputError: unknown or missing keys, a bad axis or coordinates value, a malformed polygon
            (fewer than 3 points, not numbers).
        GeometryMismatchError: a slice index outside the image, points outside their slice, or mm
            points more than half a voxel off their slice.

    Examples:
        >>> doc = {"axis": "axial", "coordinates": "voxel",
        ...        "classes": {"liver": [{"slice": 2, "points": [[1, 1], [1, 3], [3, 3]]}]}}
        >>> parsed = read_polygons(doc, (5, 5, 4), np.eye(4))
        >>> parsed.axis, parsed.classes["liver"][0]["slice"]
        (2, 2)
    """
    shape = _check_shape(shape)
    affine = _check_affine(affine)
    if not isinstance(document, Mapping):
        msg = f"a polygon document must be a JSON object; got {type(document).__name__}"
        raise InvalidInputError(msg)
    _check_keys(document, _DOCUMENT_KEYS, _DOCUMENT_KEYS, "the polygon document")
    axis = _parse_axis(document["axis"], affine)
    coordinates = document["coordinates"]
    if coordinates not in ("voxel", "mm"):
        msg = f'"coordinates" must be "voxel" or "mm"; got {coordinates!r}'
        raise InvalidInputError(msg)
    classes = document["classes"]
    if not isinstance(classes, Mapping):
        msg = f'"classes" must map class names to lists of polygons; got {type(classes).__name__}'
        raise InvalidInputError(msg)
    count = shape[axis]
    plane_shape = tuple(n for a, n in enumerate(shape) if a != axis)
    inverse = np.linalg.inv(affine)
    parsed: dict[str, list[dict[str, Any]]] = {}
    for name, polygons in classes.items():
        if not isinstance(name, str) or not name.strip():
            msg = f"class names must be non-empty strings; got {name!r}"
            raise InvalidInputError(msg)
        result = []
        for index, polygon in enumerate(_as_list(polygons, f"class {name!r}")):
            where = f"class {name!r} polygon {index}"
            required = _POLYGON_KEYS if coordinates == "voxel" else {"points"}
            _check_keys(polygon, _POLYGON_KEYS, required, where)
            k = _check_slice(polygon["slice"], count, axis, where) if "slice" in polygon else None
            if coordinates == "voxel":
                points = _check_points(polygon["points"], 2, f"{where} (slice {k})")
            else:
                world = _check_points(polygon["points"], 3, where)
                voxels = world @ inverse[:3, :3].T + inverse[:3, 3]
                if k is None:
                    k = int(np.rint(voxels[:, axis].mean()))
                    if not 0 <= k < count:
                        msg = f"{where} lies on slice {k}, outside axis {axis} (0..{count - 1})"
                        raise GeometryMismatchError(msg)
                off = np.abs(voxels[:, axis] - k) > 0.5 + _SLACK_VOXELS
                if off.any():
                    msg = (
                        f"{where}: mm points {_first_points(world[off])} lie more than half a voxel"
                        f" off slice {k} along axis {axis} (at {_first_points(voxels[off][:, [axis]])})"
                    )
                    raise GeometryMismatchError(msg)
                points = np.delete(voxels, axis, axis=1)
            _check_inside(points, plane_shape, f"{where} (slice {k})")
            result.append({"slice": k, "points": points.tolist()})
        parsed[name] = result
    return PolygonDocument(axis=axis, classes=parsed)


def make_polygon_document(
    classes: Mapping[str, Iterable[Mapping[str, Any]]],
    axis: int,
    *,
    affine: np.ndarray | None = None,
    coordinates: str = "voxel",
) -> dict[str, Any]:
    """Build a polygon document (the inverse of `read_polygons`) from polygons per class.

    Args:
        classes: class name -> polygons ``{"slice", "points"}`` in voxel coordinates (as
            `mask_to_polygons` returns).
        axis: the voxel axis the slices are stacked along (written as 0, 1 or 2).
        affine: the image's ``(4, 4)`` affine; needed for ``coordinates="mm"``.
        coordinates: ``"voxel"`` or ``"mm"`` (RAS+ ``[x, y, z]`` points).

    Returns:
        A JSON-ready dict.

    Examples:
        >>> tri = {"slice": 0, "points": [[0, 0], [0, 2], [2, 0]]}
        >>> make_polygon_document({"a": [tri]}, 2, affine=np.eye(4), coordinates="mm")["classes"]["a"]
        [{'slice': 0, 'points': [[0.0, 0.0, 0.0], [0.0, 2.0, 0.0], [2.0, 0.0, 0.0]]}]
    """
    axis = _check_axis(axis)
    if coordinates not in ("voxel", "mm"):
        msg = f'coordinates must be "voxel" or "mm"; got {coordinates!r}'
        raise InvalidInputError(msg)
    if coordinates == "mm":
        if affine is None:
            msg = 'coordinates="mm" needs the image affine: expected affine=<4x4 matrix>, got None'
            raise InvalidInputError(msg)
        affine = _check_affine(affine)
    document: dict[str, Any] = {"axis": axis, "coordinates": coordinates, "classes": {}}
    for name, polygons in classes.items():
        entries = []
        for index, polygon in enumerate(polygons):
            where = f"class {name!r} polygon {index}"
            points = _check_points(polygon["points"], 2, where)
            k = int(polygon["slice"])
            if coordinates == "mm":
                points = _voxel_to_mm(points, k, axis, affine)
            entries.append({"slice": k, "points": points.tolist()})
        document["classes"][name] = entries
    return document


# --------------------------------------------------------------------------------------------- checks


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    values = tuple(shape)
    if len(values) != 3 or not all(isinstance(n, int | np.integer) and n > 0 for n in values):
        msg = f"shape must be 3 positive integers (I, J, K); got {values}"
        raise GeometryMismatchError(msg)
    return tuple(int(n) for n in values)  # type: ignore[return-value]


def _check_axis(axis: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer) or axis not in (0, 1, 2):
        msg = f"axis must be 0, 1 or 2; got {axis!r} (use axis_of_plane(affine, 'axial') for a plane name)"
        raise InvalidInputError(msg)
    return int(axis)


def _parse_axis(value: Any, affine: np.ndarray) -> int:
    if isinstance(value, str) and value in ("axial", "coronal", "sagittal"):
        return axis_of_plane(affine, value)
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1, 2):
        return value
    msg = f'"axis" must be "axial", "coronal", "sagittal" or a voxel axis 0, 1, 2; got {value!r}'
    raise InvalidInputError(msg)


def _check_affine(affine: np.ndarray) -> np.ndarray:
    matrix = np.asarray(affine, dtype=np.float64)
    if (
        matrix.shape != (4, 4)
        or not np.all(np.isfinite(matrix))
        or abs(np.linalg.det(matrix[:3, :3])) < 1e-12
    ):
        msg = f"affine must be an invertible finite 4x4 matrix; got shape {matrix.shape}"
        raise GeometryMismatchError(msg)
    return matrix


def _as_list(value: Any, what: str) -> list:
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        msg = f"{what} must be a list of polygons; got {type(value).__name__}"
        raise InvalidInputError(msg)
    return list(value)


def _check_keys(entry: Any, allowed: set[str], required: set[str], where: str) -> None:
    if not isinstance(entry, Mapping):
        msg = f"{where} must be an object with keys {sorted(required)}; got {type(entry).__name__}"
        raise InvalidInputError(msg)
    unknown = sorted(set(map(str, entry)) - allowed)
    if unknown:
        msg = f"{where} has unknown keys {unknown}: expected only {sorted(allowed)}"
        raise InvalidInputError(msg)
    missing = sorted(required - set(entry))
    if missing:
        msg = f"{where} lacks keys {missing}: expected {sorted(required)}"
        raise InvalidInputError(msg)


def _check_slice(value: Any, count: int, axis: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        msg = f'{where}: "slice" must be an integer index; got {value!r}'
        raise InvalidInputError(msg)
    if not 0 <= value < count:
        msg = f"{where}: slice {value} lies outside axis {axis} (0..{count - 1})"
        raise GeometryMismatchError(msg)
    return int(value)


def _check_points(value: Any, width: int, where: str) -> np.ndarray:
    try:
        points = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        points = None
    if points is None or points.ndim != 2 or points.shape[1] != width or not np.all(np.isfinite(points)):
        layout = "[[u, v], ...] (voxels)" if width == 2 else "[[x, y, z], ...] (mm)"
        msg = f"{where}: points must be finite numbers {layout}; got {_first_points(value)}"
        raise InvalidInputError(msg)
    if len(points) < 3:
        msg = f"{where}: a polygon needs at least 3 points; got {len(points)}"
        raise InvalidInputError(msg)
    return points


def _check_inside(points: np.ndarray, plane_shape: Sequence[int], where: str) -> None:
    limits = np.array(plane_shape, dtype=np.float64) - 0.5
    outside = np.any((points < -0.5 - _SLACK_VOXELS) | (points > limits + _SLACK_VOXELS), axis=1)
    if outside.any():
        msg = (
            f"{where}: points {_first_points(points[outside])} lie outside the slice"
            f" (u -0.5..{limits[0]}, v -0.5..{limits[1]} in voxels)"
        )
        raise GeometryMismatchError(msg)


def _first_points(points: Any, count: int = 3) -> str:
    """The first few points, rounded, for a message."""
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        return repr(points)[:80]
    if array.ndim != 2:
        return repr(points)[:80]
    shown = np.round(array[:count], 3).tolist()
    more = f" and {len(array) - count} more" if len(array) > count else ""
    return f"{shown}{more}"


def _voxel_to_mm(points: np.ndarray, k: int, axis: int, affine: np.ndarray) -> np.ndarray:
    """In-plane voxel points ``(n, 2)`` on slice ``k`` -> RAS+ mm ``(n, 3)``."""
    voxels = np.insert(points, axis, float(k), axis=1)
    return voxels @ affine[:3, :3].T + affine[:3, 3]
