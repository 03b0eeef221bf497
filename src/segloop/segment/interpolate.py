"""Fill between annotated slices: shape-based interpolation of signed distance maps, with alignment.

A person draws an organ on a few slices along one axis; everything between the first and the last
drawn slice is filled in, as 3D Slicer's "Fill between slices" does (nothing is added outside
that range). Between two drawn slices A and B the method is:

1. Split both slices into 8-connected components and group them: components that overlap across
   the two slices form one group (two mandible rami meeting a U-shaped body are one group);
   components left over on both sides are paired by nearest centroid (mm); anything still unpaired
   is a branch end that shrinks to nothing halfway to the other slice.
2. Align each group by an in-plane translation ``delta`` (whole voxels). Shapes that overlap by at
   least 90 % of the smaller one stay put (``delta = 0``); otherwise ``delta`` maximises their
   overlap (FFT cross-correlation), and among translations within 2 % of the best overlap the
   smallest move (mm) wins.
3. At the fraction ``t`` of the way from A to B, blend the two signed distance maps (mm, negative
   inside, anisotropic, 2D) after moving them onto the path:
   ``(1 - t) * sdf_A(x - t * delta) + t * sdf_B(x + (1 - t) * delta)`` (bilinear sampling). A shape
   that only moves between the slices is thus carried along unchanged, where plain SDF blending
   (and ITK's morphological contour interpolator) shrink non-overlapping cross-sections to nothing.
   Each component gets one map; a group's map is the minimum of its components' maps (exact for
   8-separated components), and so is the result where several groups meet.
4. Optionally smooth the interpolated map with a Gaussian (``smoothing_mm``) and keep ``< 0``; the
   drawn slices themselves are returned exactly as drawn.

Cost: the volume is read once to find the drawn content's in-plane box and the drawn slices are
read from that box only; all other work is on the box (plus the alignment moves and a margin),
with one batched distance transform per call (``edt``, or scipy for a few thousand voxels, where
``edt``'s per-call thread start-up costs more than the transform).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import cc3d
import edt
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage, optimize

from segloop.errors import GeometryMismatchError, InvalidInputError, LabelValueError

__all__ = ["fill_between_slices", "fill_between_slices_labels"]

#: Translations whose overlap is within this fraction of the best count as ties (smallest move wins).
_OVERLAP_TIE = 0.98
#: Shapes that overlap by this fraction of the smaller one as drawn are not moved.
_OVERLAP_STAY = 0.9
#: Free voxels kept around the shapes' box (besides the smoothing reach).
_MARGIN_VOXELS = 2
#: Gaussian kernels are cut at this many sigmas.
_TRUNCATE_SIGMAS = 3.0
#: Largest smoothing (a wider Gaussian smooths an organ away; 1e9 mm ran for hours, now refused).
MAX_SMOOTHING_MM = 20.0
#: Moved samples of up to this many voxels are taken for all slices at once; more, slice by slice.
_GATHER_LIMIT = 50000
#: Distance transforms of fewer voxels than this use scipy (no threads), larger ones ``edt``.
_SMALL_EDT_VOXELS = 20000
#: EDT batches larger than this (voxels) use two threads.
_PARALLEL_LIMIT = 1 << 20

Box = tuple[slice, slice, slice]


def fill_between_slices(
    mask: np.ndarray,
    axis: int,
    *,
    spacing_mm: Sequence[float],
    smoothing_mm: float = 0.0,
    annotated: Iterable[int] | None = None,
) -> np.ndarray:
    """Fill a mask between its annotated slices by shape-based (signed distance) interpolation.

    Args:
        mask: ``(I, J, K)`` bool mask (0/1 numbers are accepted) whose only trustworthy content is
            the annotated slices along ``axis``.
        axis: the voxel axis (0, 1 or 2) the slices are stacked along, e.g.
            ``segloop.core.geometry.axis_of_plane(affine, "axial")``.
        spacing_mm: voxel size ``(3,)`` in mm, in the mask's axis order.
        smoothing_mm: standard deviation (mm) of a Gaussian applied to the interpolated signed
            distance map before thresholding; 0 = none. Drawn slices stay as drawn.
        annotated: indices along ``axis`` of the slices that were drawn. Default: the slices that
            hold any voxel. Given explicitly, an annotated empty slice means "the organ is absent
            here" (the shape ends halfway towards it), and voxels on other slices are ignored.

    Returns:
        ``(I, J, K)`` bool mask, True only between the first and the last annotated slice; the
        annotated slices equal the input's.

    Raises:
        GeometryMismatchError: ``mask`` is not 3D, ``spacing_mm`` is not 3 positive numbers, or an
            annotated index lies outside the mask.
        LabelValueError: ``mask`` holds values other than 0 and 1.
        InvalidInputError: ``axis`` is not 0, 1 or 2, fewer than 2 slices are annotated, or
            ``smoothing_mm`` is negative.

    Examples:
        >>> mask = np.zeros((5, 5, 9), bool)
        >>> mask[1:4, 1:4, 0] = True       # a square on slice 0 ...
        >>> mask[1:4, 1:4, 8] = True       # ... and on slice 8
        >>> filled = fill_between_slices(mask, 2, spacing_mm=(1.0, 1.0, 1.0))
        >>> filled.sum(axis=(0, 1)).tolist()
        [9, 9, 9, 9, 9, 9, 9, 9, 9]
    """
    mask = _check_mask(mask)
    axis = _check_axis(axis)
    spacing = _check_spacing(spacing_mm)
    smoothing = _check_smoothing(smoothing_mm)
    crop, origin = _content_crop(mask, axis)
    if annotated is None:
        slices = np.flatnonzero(crop.any(axis=(1, 2)))
        _require_two(slices, axis, "the mask")
    else:
        slices = _check_annotated(annotated, mask.shape[axis], axis)
    drawn = np.ascontiguousarray(crop[slices])
    result = _zeros_like(mask, bool)
    filled = _interpolate_sdf(drawn, origin, slices, spacing, axis, smoothing, _plane_shape(mask, axis))
    if filled is not None:
        box, sdf = filled
        region = sdf < 0
        region[slices - slices[0]] = _window(drawn, origin, box)  # drawn slices stay exact
        np.moveaxis(result, axis, 0)[box] = region
    return result


def fill_between_slices_labels(
    labels: np.ndarray,
    axis: int,
    *,
    spacing_mm: Sequence[float],
    smoothing_mm: float = 0.0,
    classes: Iterable[int] | None = None,
    annotated: Iterable[int] | None = None,
) -> np.ndarray:
    """Fill every class of a label map between its annotated slices (see `fill_between_slices`).

    Each class is interpolated on its own. Where two classes claim a voxel, the one whose
    interpolated signed distance is deeper inside wins. Drawn voxels of the filled classes keep
    their value; voxels of classes not in ``classes`` are kept as they are and never overwritten;
    every other voxel is 0.

    Args:
        labels: ``(I, J, K)`` non-negative integer label map, drawn on a few slices along ``axis``.
        axis: the voxel axis (0, 1 or 2) the slices are stacked along.
        spacing_mm: voxel size ``(3,)`` in mm, in the array's axis order.
        smoothing_mm: Gaussian smoothing (mm) of each class's interpolated distance map; 0 = none.
        classes: the class values to fill. Default: every nonzero value present.
        annotated: slice indices drawn for *all* classes (a class absent from an annotated slice
            is absent there; other slices of the filled classes are ignored). Default: per class,
            the slices that hold that class.

    Returns:
        ``(I, J, K)`` label map of ``labels``' dtype.

    Raises:
        LabelValueError: ``labels`` is not a non-negative integer array, or a class value is not a
            positive integer of the array's dtype.
        InvalidInputError: a class is drawn on fewer than 2 slices, there is no class to fill, or a bad
            ``axis`` / ``smoothing_mm``.
        GeometryMismatchError: as in `fill_between_slices`.

    Examples:
        >>> labels = np.zeros((6, 6, 5), np.uint8)
        >>> labels[0:2, 0:2, [0, 4]] = 1
        >>> labels[3:6, 3:6, [0, 4]] = 2
        >>> filled = fill_between_slices_labels(labels, 2, spacing_mm=(1.0, 1.0, 2.0))
        >>> [int((filled == c).sum()) for c in (1, 2)]
        [20, 45]
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        msg = f"expected a 3D (I, J, K) label map; got shape {labels.shape}"
        raise GeometryMismatchError(msg)
    if not np.issubdtype(labels.dtype, np.integer):
        msg = f"expected an integer label map; got dtype {labels.dtype} (round and cast it first)"
        raise LabelValueError(msg)
    axis = _check_axis(axis)
    spacing = _check_spacing(spacing_mm)
    smoothing = _check_smoothing(smoothing_mm)
    shared = None if annotated is None else _check_annotated(annotated, labels.shape[axis], axis)

    # every nonzero voxel lies on a slice with content, inside the content's in-plane box
    crop, origin = _content_crop(labels, axis)
    content = np.flatnonzero(crop.any(axis=(1, 2)))
    drawn_all = np.ascontiguousarray(crop[content])
    present = np.unique(drawn_all[drawn_all != 0])
    if present.size and present[0] < 0:
        msg = f"expected non-negative labels; got values {present[present < 0][:5].tolist()}"
        raise LabelValueError(msg)
    if classes is None:
        values = [int(v) for v in present]
        if not values:
            msg = "the label map holds no class to fill: expected at least one nonzero value"
            raise InvalidInputError(msg)
    else:
        values = _check_classes(classes, labels.dtype)
    unlisted = np.setdiff1d(present, values)
    drawn_shared = None if shared is None else np.ascontiguousarray(crop[shared])
    plane_shape = _plane_shape(labels, axis)

    results = []
    for value in values:
        if drawn_shared is None:
            class_all = drawn_all == value
            on = class_all.any(axis=(1, 2))
            slices, class_drawn = content[on], class_all[on]
            _require_two(slices, axis, f"class {value}")
        else:
            slices, class_drawn = shared, drawn_shared == value
        filled = _interpolate_sdf(class_drawn, origin, slices, spacing, axis, smoothing, plane_shape)
        if filled is not None:
            results.append((value, slices, class_drawn, *filled))

    result = _zeros_like(labels, labels.dtype)
    out = np.moveaxis(result, axis, 0)
    if results:
        low = np.min([[b.start for b in box] for *_, box, _ in results], axis=0)
        high = np.max([[b.stop for b in box] for *_, box, _ in results], axis=0)
        union = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
        winner = np.zeros(tuple(high - low), dtype=labels.dtype)
        best = np.full(winner.shape, np.inf, dtype=np.float32)
        free = None
        if unlisted.size:
            free = ~np.isin(np.moveaxis(labels, axis, 0)[union], unlisted)
        placed = [(*entry, _relative(entry[3], low)) for entry in results]
        for value, _, _, _, sdf, region in placed:
            take = (sdf < 0) & (sdf < best[region])
            if free is not None:
                take &= free[region]
            best[region][take] = sdf[take]
            winner[region][take] = value
        for value, slices, class_drawn, box, _, region in placed:
            # drawn voxels keep their class; with shared annotated slices those slices are exact
            local = winner[region]
            rows = local[slices - slices[0]]
            mine = _window(class_drawn, origin, box)
            rows[mine] = value
            if shared is not None:
                rows[~mine & (rows == value)] = 0
            local[slices - slices[0]] = rows
        out[union] = winner
    if unlisted.size:
        kept = np.isin(drawn_all, unlisted)
        window = (content, *_window_slices(origin, drawn_all.shape[1:]))
        section = out[window]
        section[kept] = drawn_all[kept]
        out[window] = section
    return result


# --------------------------------------------------------------------------------------------- checks


def _check_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 3:
        msg = f"expected a 3D (I, J, K) mask; got shape {mask.shape}"
        raise GeometryMismatchError(msg)
    if mask.dtype == bool:
        return mask
    if not (np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating)):
        msg = f"expected a bool mask (or 0/1 numbers); got dtype {mask.dtype}"
        raise LabelValueError(msg)
    odd = np.unique(mask[(mask != 0) & (mask != 1)])
    if odd.size:
        msg = (
            f"expected a bool mask (or 0/1 numbers); got values {odd[:5].tolist()}"
            " (use fill_between_slices_labels for label maps)"
        )
        raise LabelValueError(msg)
    return mask != 0


def _check_axis(axis: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer) or axis not in (0, 1, 2):
        msg = f"axis must be 0, 1 or 2; got {axis!r} (use axis_of_plane(affine, 'axial') for a plane name)"
        raise InvalidInputError(msg)
    return int(axis)


def _check_spacing(spacing_mm: Sequence[float]) -> np.ndarray:
    spacing = np.asarray(spacing_mm, dtype=np.float64).ravel()
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        msg = f"spacing_mm must be 3 positive voxel sizes in mm; got {np.asarray(spacing_mm).tolist()}"
        raise GeometryMismatchError(msg)
    return spacing


def _check_smoothing(smoothing_mm: float) -> float:
    smoothing = float(smoothing_mm)
    if not math.isfinite(smoothing) or not 0 <= smoothing <= MAX_SMOOTHING_MM:
        msg = f"smoothing_mm must lie in 0..{MAX_SMOOTHING_MM:g} mm (0 = none); got {smoothing_mm}"
        raise InvalidInputError(msg)
    return smoothing


def _check_classes(classes: Iterable[int], dtype: np.dtype) -> list[int]:
    values = []
    largest = np.iinfo(dtype).max
    for value in classes:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 < value <= largest:
            msg = f"class values must be positive integers up to {largest} ({dtype}); got {value!r}"
            raise LabelValueError(msg)
        values.append(int(value))
    if not values:
        msg = "classes is empty: expected at least one class value to fill"
        raise InvalidInputError(msg)
    return sorted(set(values))


def _check_annotated(annotated: Iterable[int], count: int, axis: int) -> np.ndarray:
    """Sorted unique annotated slice indices (at least 2, all inside ``0..count-1``)."""
    raw = list(annotated)
    if any(isinstance(k, bool) or not isinstance(k, int | np.integer) for k in raw):
        msg = f"annotated must be integer slice indices along axis {axis}; got {raw}"
        raise InvalidInputError(msg)
    outside = [int(k) for k in raw if not 0 <= k < count]
    if outside:
        msg = f"annotated slices {outside} lie outside axis {axis} (0..{count - 1})"
        raise GeometryMismatchError(msg)
    slices = np.unique(np.asarray(raw, dtype=np.int64))
    _require_two(slices, axis, "annotated")
    return slices


def _require_two(slices: np.ndarray, axis: int, what: str) -> None:
    if slices.size < 2:
        where = f" (slice {slices.tolist()[0]})" if slices.size else ""
        msg = (
            f"{what} holds {slices.size} annotated slice(s) along axis {axis}{where}:"
            " fill between slices needs at least 2"
        )
        raise InvalidInputError(msg)


# ------------------------------------------------------------------------------------------- the method


def _relative(box: Box, origin: np.ndarray) -> Box:
    """``box`` shifted so that ``origin`` becomes 0."""
    return tuple(slice(b.start - int(a), b.stop - int(a)) for b, a in zip(box, origin, strict=True))  # type: ignore[return-value]


def _content_crop(volume: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """A slice-first view of ``volume`` cropped in-plane to its content, and the crop's origin ``(2,)``.

    One pass over the volume finds the in-plane box; the slices are then read from the box only.
    """
    box = _bbox_2d(volume.any(axis=axis))
    if box is None:
        box = np.zeros((2, 2), dtype=np.int64)
    crop = np.moveaxis(volume, axis, 0)[:, box[0, 0] : box[0, 1], box[1, 0] : box[1, 1]]
    return crop, box[:, 0]


def _plane_shape(volume: np.ndarray, axis: int) -> np.ndarray:
    return np.delete(np.array(volume.shape), axis)


def _window_slices(origin: np.ndarray, shape: Sequence[int]) -> tuple[slice, slice]:
    return slice(int(origin[0]), int(origin[0] + shape[0])), slice(int(origin[1]), int(origin[1] + shape[1]))


def _window(drawn: np.ndarray, origin: np.ndarray, box: Box) -> np.ndarray:
    """The in-plane crops ``drawn`` (``(n, u, v)`` at ``origin``) seen through ``box``'s in-plane part."""
    _, rows, cols = box
    result = np.zeros((len(drawn), rows.stop - rows.start, cols.stop - cols.start), dtype=drawn.dtype)
    u0, v0 = max(rows.start, int(origin[0])), max(cols.start, int(origin[1]))
    u1, v1 = min(rows.stop, int(origin[0]) + drawn.shape[1]), min(cols.stop, int(origin[1]) + drawn.shape[2])
    if u1 > u0 and v1 > v0:
        result[:, u0 - rows.start : u1 - rows.start, v0 - cols.start : v1 - cols.start] = drawn[
            :, u0 - int(origin[0]) : u1 - int(origin[0]), v0 - int(origin[1]) : v1 - int(origin[1])
        ]
    return result


def _zeros_like(volume: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Zeros of ``volume``'s shape and memory order (lazily allocated, unlike ``np.zeros_like``)."""
    order = "F" if volume.flags.f_contiguous and not volume.flags.c_contiguous else "C"
    return np.zeros(volume.shape, dtype=dtype, order=order)


def _bbox_2d(mask: np.ndarray) -> np.ndarray | None:
    """``[[u0, u1], [v0, v1]]`` (stop exclusive) of a 2D mask, or None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([[rows[0], rows[-1] + 1], [cols[0], cols[-1] + 1]])


def _signed_distances(masks: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Signed distances (mm, float32, negative inside) of a stack ``(n, U, V)`` of 2D masks.

    One 3D distance transform for the whole stack and its complement: the stack axis gets a
    spacing far larger than any in-plane distance, so every mask only sees itself (each must hold
    both inside and outside voxels). ``edt`` does large stacks; small ones go to scipy, because
    every ``edt`` call starts and joins worker threads once per axis, which costs more than the
    transform itself on a few thousand voxels (and far more on a busy machine).
    """
    apart = 10.0 * float(np.linalg.norm(np.array(masks.shape[1:]) * spacing)) + 1.0
    values = np.concatenate([masks, ~masks])
    anisotropy = (apart, *map(float, spacing))
    if values.size < _SMALL_EDT_VOXELS:
        distances = ndimage.distance_transform_edt(values, sampling=anisotropy).astype(np.float32)
    else:
        threads = 2 if values.size > _PARALLEL_LIMIT else 1
        squared = edt.edtsq(
            values.view(np.uint8), anisotropy=anisotropy, black_border=False, parallel=threads
        )
        distances = np.sqrt(squared, out=squared)
    count = len(masks)
    return np.subtract(distances[count:], distances[:count], dtype=np.float32)


def _label_slice(mask: np.ndarray) -> tuple[np.ndarray | None, int]:
    """8-connected components of a 2D mask: ``(labels 1..count, count)``, ``(None, 0)`` when empty."""
    if not mask.any():
        return None, 0
    # (uint8: cc3d 4.1's 2D path mislabels bool arrays with 8-connectivity)
    labels, count = cc3d.connected_components(mask.view(np.uint8), connectivity=8, return_N=True)
    return labels, int(count)


def _best_translation(
    first: np.ndarray,
    box_a: np.ndarray,
    size_a: int,
    second: np.ndarray,
    box_b: np.ndarray,
    size_b: int,
    spacing: np.ndarray,
) -> np.ndarray:
    """Whole-voxel move ``d`` with ``second(x + d) ~ first(x)``: best overlap, then smallest move.

    ``first`` and ``second`` are non-empty 2D masks on one grid, ``box_*`` their bounding boxes
    ``[[u0, u1], [v0, v1]]`` and ``size_*`` their voxel counts. Shapes that already overlap by
    `_OVERLAP_STAY` of the smaller one are not moved.
    """
    low, high = np.maximum(box_a[:, 0], box_b[:, 0]), np.minimum(box_a[:, 1], box_b[:, 1])
    if np.all(high > low):
        common = (slice(low[0], high[0]), slice(low[1], high[1]))
        if np.count_nonzero(first[common] & second[common]) >= _OVERLAP_STAY * min(size_a, size_b):
            return np.zeros(2)
    crop_a = first[box_a[0, 0] : box_a[0, 1], box_a[1, 0] : box_a[1, 1]]
    crop_b = second[box_b[0, 0] : box_b[0, 1], box_b[1, 0] : box_b[1, 1]]
    # overlap[n] = sum_x crop_a[x] * crop_b[x + n - (crop_a.shape - 1)], by FFT (no wrap-around)
    size = (crop_a.shape[0] + crop_b.shape[0] - 1, crop_a.shape[1] + crop_b.shape[1] - 1)
    overlap = np.fft.irfft2(np.fft.rfft2(crop_b, size) * np.fft.rfft2(crop_a[::-1, ::-1], size), size)
    rows, cols = np.nonzero(overlap >= _OVERLAP_TIE * overlap.max() - 0.25)
    # index n of the full correlation is the move n - (crop_a.shape - 1) between the crops
    rows += box_b[0, 0] - box_a[0, 0] - crop_a.shape[0] + 1
    cols += box_b[1, 0] - box_a[1, 0] - crop_a.shape[1] + 1
    best = np.argmin((rows * spacing[0]) ** 2 + (cols * spacing[1]) ** 2)
    return np.array([rows[best], cols[best]], dtype=np.float64)


def _group_components(
    labels_a: np.ndarray, count_a: int, labels_b: np.ndarray, count_b: int, spacing: np.ndarray
) -> list[tuple[list[int], list[int]]]:
    """Groups ``(components of A, components of B)`` to interpolate together (either list may be empty).

    ``labels_*`` number each slice's 8-connected components ``1..count_*``. Components that overlap
    across the slices are grouped (transitively); left-over ones are paired by nearest centroid
    (mm); the rest stand alone (branch ends).
    """
    if count_a == 0 or count_b == 0 or (count_a == 1 and count_b == 1):
        return [(list(range(1, count_a + 1)), list(range(1, count_b + 1)))]
    parent = list(range(count_a + count_b))  # union-find: A's components, then B's

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    both = (labels_a > 0) & (labels_b > 0)
    for a, b in {(int(a), int(b)) for a, b in zip(labels_a[both], labels_b[both], strict=True)}:
        parent[root(a - 1)] = root(count_a + b - 1)
    sizes: dict[int, int] = {}
    for node in range(count_a + count_b):
        sizes[root(node)] = sizes.get(root(node), 0) + 1
    lonely_a = [n for n in range(count_a) if sizes[root(n)] == 1]
    lonely_b = [n for n in range(count_b) if sizes[root(count_a + n)] == 1]
    if lonely_a and lonely_b:  # pair what overlaps nothing by nearest centroid (mm)
        centre_a = np.array(ndimage.center_of_mass(labels_a > 0, labels_a, range(1, count_a + 1)))[lonely_a]
        centre_b = np.array(ndimage.center_of_mass(labels_b > 0, labels_b, range(1, count_b + 1)))[lonely_b]
        cost = np.linalg.norm((centre_a[:, None, :] - centre_b[None, :, :]) * spacing, axis=2)
        for i, j in zip(*optimize.linear_sum_assignment(cost), strict=True):
            parent[root(lonely_a[i])] = root(count_a + lonely_b[j])
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for n in range(count_a):
        groups.setdefault(root(n), ([], []))[0].append(n + 1)
    for n in range(count_b):
        groups.setdefault(root(count_a + n), ([], []))[1].append(n + 1)
    return list(groups.values())


def _sample_moved(sources: np.ndarray, which: np.ndarray, moves: np.ndarray) -> np.ndarray:
    """``out[n, x] = sources[which[n]](x - moves[n])``: bilinear, edges clamped.

    Args:
        sources: ``(m, U, V)`` maps; which: ``(T,)`` indices into them; moves: ``(T, 2)`` voxels.

    Returns:
        ``(T, U, V)`` float32.
    """
    source = -moves
    base = np.floor(source).astype(np.int64)
    fraction = (source - base).astype(np.float32)
    count, rows, cols = len(which), *sources.shape[1:]
    pad = int(np.abs(base).max()) + 1
    padded = np.pad(sources, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    if count * rows * cols <= _GATHER_LIMIT:  # small: copy every slice's window at once
        windows = sliding_window_view(padded, (rows + 1, cols + 1), axis=(1, 2))
        block = windows[which, pad + base[:, 0], pad + base[:, 1]]
        fu, fv = fraction[:, 0, None, None], fraction[:, 1, None, None]
        top = block[:, :-1, :-1] * (1 - fv) + block[:, :-1, 1:] * fv
        bottom = block[:, 1:, :-1] * (1 - fv) + block[:, 1:, 1:] * fv
        return top * (1 - fu) + bottom * fu
    result = np.zeros((count, rows, cols), dtype=np.float32)
    for n in range(count):
        for du, wu in ((0, 1.0 - fraction[n, 0]), (1, fraction[n, 0])):
            for dv, wv in ((0, 1.0 - fraction[n, 1]), (1, fraction[n, 1])):
                if wu * wv > 1e-6:
                    u0, v0 = pad + base[n, 0] + du, pad + base[n, 1] + dv
                    result[n] += np.float32(wu * wv) * padded[which[n], u0 : u0 + rows, v0 : v0 + cols]
    return result


def _blend_gaps(
    sdf: np.ndarray, sources: np.ndarray, groups: list[tuple[int, int, int, int, np.ndarray]]
) -> None:
    """Write the interpolated maps between drawn slices into ``sdf`` (minimum over groups).

    Args:
        sdf: ``(n, U, V)`` float32 maps of every slice from the first drawn one, changed in place.
        sources: ``(m, U, V)`` distance maps of the drawn shapes.
        groups: ``(start, stop, source_a, source_b, move)`` per group of a gap between the drawn
            slices at ``start`` and ``stop`` (relative to ``sdf``); a source of -1 means nothing is
            there (a branch end, which shrinks to nothing halfway).
    """
    depth = -sources.reshape(len(sources), -1).min(axis=1)  # deepest inside of each map (mm)
    small = sources[0].size * len(sdf) <= _GATHER_LIMIT  # small maps: all slices in one go
    moving, still = [], []
    for start, stop, a, b, move in groups:
        if stop - start < 2:
            continue
        if a >= 0 and b >= 0 and (small or move.any()):
            (moving if move.any() else still).append((start, stop, a, b, move))
            continue
        weight_b = (np.arange(1, stop - start, dtype=np.float32) / np.float32(stop - start))[:, None, None]
        if b < 0:  # a branch end: the map rises by its depth and is gone halfway
            blended = (1 - weight_b) * sources[a] + weight_b * depth[a]
        elif a < 0:
            blended = (1 - weight_b) * depth[b] + weight_b * sources[b]
        else:
            blended = (1 - weight_b) * sources[a] + weight_b * sources[b]
        layers = sdf[start + 1 : stop]
        np.minimum(layers, blended, out=layers)
    for chosen, moved in ((still, False), (moving, True)):
        if not chosen:
            continue
        # every slice of these groups at once: (slice, source_a, source_b, t) per slice
        layer = np.concatenate([np.arange(start + 1, stop) for start, stop, *_ in chosen])
        fraction = np.concatenate([np.arange(1, stop - start) / (stop - start) for start, stop, *_ in chosen])
        which_a = np.concatenate([np.full(stop - start - 1, a) for start, stop, a, _, _ in chosen])
        which_b = np.concatenate([np.full(stop - start - 1, b) for start, stop, _, b, _ in chosen])
        weight_b = fraction.astype(np.float32)[:, None, None]
        if moved:
            moves = np.concatenate([np.tile(move, (stop - start - 1, 1)) for start, stop, *_, move in chosen])
            steps = fraction[:, None] * moves  # A moves t * move, B comes back (1 - t) * move
            blended = (1 - weight_b) * _sample_moved(sources, which_a, steps)
            blended += weight_b * _sample_moved(sources, which_b, steps - moves)
        else:
            blended = (1 - weight_b) * sources[which_a] + weight_b * sources[which_b]
        if len(np.unique(layer)) == len(layer):
            sdf[layer] = np.minimum(sdf[layer], blended)
        else:  # several groups meet on a slice
            np.minimum.at(sdf, layer, blended)


def _interpolate_sdf(
    drawn: np.ndarray,
    origin: np.ndarray,
    slices: np.ndarray,
    spacing: np.ndarray,
    axis: int,
    smoothing_mm: float,
    plane_shape: np.ndarray,
) -> tuple[Box, np.ndarray] | None:
    """Interpolated signed distance (mm) between drawn slices, on a box of the slice-first volume.

    Args:
        drawn: ``(n, u, v)`` bool, the drawn slices in order, cropped in-plane (all of their
            content inside) at ``origin`` ``(2,)`` of slices of shape ``plane_shape`` ``(2,)``.
        slices: ``(n,)`` their sorted indices along ``axis``.
        spacing: voxel size ``(3,)`` in mm; axis: the slice axis; smoothing_mm: Gaussian sigma.

    Returns:
        ``(box, sdf)``: ``box`` indexes ``np.moveaxis(volume, axis, 0)`` (from the first to the
        last drawn slice, in-plane the shapes' reach), ``sdf`` is float32 of the box's shape (drawn
        slices hold their exact map). None when every drawn slice is empty.
    """
    plane = np.delete(spacing, axis)
    outer = _bbox_2d(drawn.any(axis=0))
    if outer is None:
        return None
    cropped = np.ascontiguousarray(drawn[:, outer[0, 0] : outer[0, 1], outer[1, 0] : outer[1, 1]])
    outer = outer + np.asarray(origin)[:, None]  # from here on in slice coordinates
    # 8-connected components per slice, numbered 1..count there and offset + 1.. across the stack
    components = [_label_slice(layer) for layer in cropped]
    counts = np.array([count for _, count in components])
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])

    # bounding boxes [[u0, u1], [v0, v1]] and sizes of the whole drawn slices, all at once
    rows_hit, cols_hit = cropped.any(axis=2), cropped.any(axis=1)
    slice_boxes = np.stack(
        [
            np.stack([rows_hit.argmax(axis=1), rows_hit.shape[1] - rows_hit[:, ::-1].argmax(axis=1)], axis=1),
            np.stack([cols_hit.argmax(axis=1), cols_hit.shape[1] - cols_hit[:, ::-1].argmax(axis=1)], axis=1),
        ],
        axis=1,
    )
    slice_sizes = np.count_nonzero(cropped.reshape(len(cropped), -1), axis=1)

    def part_of(index: int, members: list[int], whole: bool) -> tuple[np.ndarray, np.ndarray, int]:
        """Mask, bounding box and size of some components of a drawn slice."""
        if whole:
            return cropped[index], slice_boxes[index], int(slice_sizes[index])
        part = np.isin(components[index][0], members)
        return part, _bbox_2d(part), int(np.count_nonzero(part))

    # group the components of neighbouring drawn slices and align each group (crop coordinates);
    # a group is kept as global component numbers (1..) of its two slices, and a move
    gaps: list[list[tuple[list[int], list[int], np.ndarray]]] = []
    needed = [np.array([[0, outer[0, 1] - outer[0, 0]], [0, outer[1, 1] - outer[1, 0]]])]
    for index in range(len(slices) - 1):
        (local_a, count_a), (local_b, count_b) = components[index], components[index + 1]
        if slices[index + 1] - slices[index] < 2 or count_a + count_b == 0:
            gaps.append([])
            continue
        if count_a == 0 or count_b == 0 or (count_a == 1 and count_b == 1):
            groups = [(list(range(1, count_a + 1)), list(range(1, count_b + 1)))]
        else:
            groups = _group_components(local_a, count_a, local_b, count_b, plane)
        pairs = []
        for members_a, members_b in groups:
            move = np.zeros(2)
            if members_a and members_b:
                whole = len(groups) == 1
                part_a, box_a, size_a = part_of(index, members_a, whole)
                part_b, box_b, size_b = part_of(index + 1, members_b, whole)
                move = _best_translation(part_a, box_a, size_a, part_b, box_b, size_b, plane)
                if move.any():
                    needed.append(box_a + move.astype(int)[:, None])
                    needed.append(box_b - move.astype(int)[:, None])
            offset_a, offset_b = int(offsets[index]), int(offsets[index + 1])
            pairs.append(([m + offset_a for m in members_a], [m + offset_b for m in members_b], move))
        gaps.append(pairs)

    # the frame: everything any moved shape reaches, plus the margin, clipped to the slice
    reach = _MARGIN_VOXELS + 1
    if smoothing_mm > 0:
        reach += math.ceil(_TRUNCATE_SIGMAS * smoothing_mm / plane.min())
    low = np.maximum(np.min([b[:, 0] for b in needed], axis=0) - reach + outer[:, 0], 0)
    high = np.minimum(np.max([b[:, 1] for b in needed], axis=0) + reach + outer[:, 0], plane_shape)
    frame_shape = tuple(int(n) for n in high - low)

    # the distance map of every component, from one batched EDT; a union of components (which are
    # 8-separated) has the minimum of their maps as its map
    batch = np.zeros((int(counts.sum()), *frame_shape), dtype=bool)
    inner = tuple(
        slice(int(a), int(a + n)) for a, n in zip(outer[:, 0] - low, cropped.shape[1:], strict=True)
    )
    for layer, (local, count), offset in zip(cropped, components, offsets, strict=True):
        if count == 1:
            batch[(offset, *inner)] = layer
        elif count > 1:
            for number in range(1, count + 1):
                batch[(offset + number - 1, *inner)] = local == number
    maps = _signed_distances(batch, plane)

    # distance maps of unions of components (slices, groups) appended after the components'
    unions: dict[tuple[int, ...], int] = {}
    extra: list[np.ndarray] = []

    def source_of(members: list[int]) -> int:
        if not members:
            return -1
        if len(members) == 1:
            return members[0] - 1
        key = tuple(members)
        if key not in unions:
            unions[key] = len(maps) + len(extra)
            extra.append(maps[np.array(members) - 1].min(axis=0))
        return unions[key]

    drawn_sources = [
        source_of(list(range(offset + 1, offset + count + 1)))
        for offset, count in zip(offsets, counts, strict=True)
    ]
    first_slice = int(slices[0])
    groups = [
        (
            int(slices[index]) - first_slice,
            int(slices[index + 1]) - first_slice,
            source_of(a),
            source_of(b),
            move,
        )
        for index, pairs in enumerate(gaps)
        for a, b, move in pairs
    ]
    sources = np.concatenate([maps, np.array(extra)]) if extra else maps

    far_mm = float(np.linalg.norm(np.array(frame_shape) * plane))
    sdf = np.full((int(slices[-1]) - first_slice + 1, *frame_shape), far_mm, dtype=np.float32)
    for k, source in zip(slices, drawn_sources, strict=True):
        if source >= 0:
            sdf[k - first_slice] = sources[source]
    _blend_gaps(sdf, sources, groups)
    if smoothing_mm > 0:
        sigma = smoothing_mm / np.concatenate([[spacing[axis]], plane])
        sdf = ndimage.gaussian_filter(sdf, sigma, mode="nearest", truncate=_TRUNCATE_SIGMAS)
    box = (
        slice(first_slice, int(slices[-1]) + 1),
        slice(int(low[0]), int(high[0])),
        slice(int(low[1]), int(high[1])),
    )
    return box, sdf
