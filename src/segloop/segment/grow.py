"""Grow labels from seed scribbles (Slicer's *Grow from seeds*) and fast marching from one seed mask.

`grow_from_seeds` is a seeded watershed: every voxel takes the seed class it reaches by the path
whose steepest step is the smallest, with the step between face neighbours ``p, q`` weighted by
``g(p) + g(q)``, ``g`` the gradient magnitude of the Gaussian-smoothed image. Two passes:

1. the watershed with the gradient smoothed by ``smoothing_mm`` decides which class wins where
   (heavy smoothing keeps it from leaking through noise and weak edges). Images of more than
   twice ``coarse_voxels`` voxels are first block-averaged by 2 along their finest axes until at
   most ``coarse_voxels`` remain (seeds keep their class in every block they touch), so that an
   update on a 256x256x128 CT takes well under a second;
2. a band around the boundaries between classes (the coarse blocks on a boundary, or two voxels
   on each side of it) is solved again at full resolution with a gradient smoothed by 1 mm
   only, in small tiles with the first result fixed around them. A band voxel is freed only
   where its class lies outside the band within one coarse block (two voxels in one pass), so
   a structure thinner than the band keeps its first-pass label instead of being regrown from
   its seeds alone.

The watershed itself is scipy's image foresting transform (`scipy.ndimage.watershed_ift`, C),
whose arc weight is the absolute difference of its input between neighbours. Writing the
quantised gradient ``q`` with alternating signs on the two colours of a 3D checkerboard,
``B + q`` on one colour and ``B - q`` on the other, makes that difference ``q(p) + q(q)`` on
every face arc, i.e. a gradient watershed in C (`_watershed` also walls off scipy's wrap-around
between rows). Fine tiles are solved in up to 4 threads; the result does not depend on how many.

Unlike Slicer, which crops the computation to the seeds' bounding box grown by 20 % and leaves
the rest unlabelled, the whole image is labelled: the coarse pass is cheap enough, and a crop
would cut off organ ends that lie beyond the outermost scribbled slices.

`fast_marching` is Slicer's *Fast Marching* effect: a front leaves the seed mask with a speed
that falls off with the intensity's distance from the seeds' intensities, and the first
``volume_fraction`` of the image's voxels it reaches are the segment.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from segloop.errors import GeometryMismatchError, InvalidInputError

__all__ = ["fast_marching", "grow_from_seeds"]

#: Gradient levels of the watershed (equally populated quantiles).
_LEVELS = 128
#: Fine tiles are about this many voxels along each axis (a multiple of the coarse block).
_TILE_VOXELS = 16
#: Fine tiles per watershed call (chunks run in threads; the result does not depend on it).
_TILES_PER_CHUNK = 16
#: Voxels of context around each fine tile for the watershed, and for the fine Gaussian gradient.
_HALO = 1
_GRADIENT_HALO = 3
#: Gaussian sigma (mm) of the gradient used to place boundaries at full resolution.
_FINE_SIGMA_MM = 1.0


def grow_from_seeds(
    image: np.ndarray,
    seeds: np.ndarray,
    *,
    spacing_mm: Sequence[float],
    smoothing_mm: float = 3.0,
    coarse_voxels: int = 1_100_000,
) -> np.ndarray:
    """Label every voxel with one of the seed classes, growing them along the image (a seeded watershed).

    The classes compete: a voxel goes to the seed reachable without crossing a stronger edge
    than the other seeds must cross (module docstring). Paint at least two classes, one of them
    usually a background scribble around the structures, as in Slicer's *Grow from seeds*.

    Args:
        image: ``(I, J, K)`` intensities (any real dtype; CT in HU or stored CT numbers).
        seeds: ``(I, J, K)`` integer array: 0 = not seeded, any other value = a seed class.
        spacing_mm: voxel size ``(di, dj, dk)`` in mm.
        smoothing_mm: Gaussian sigma (mm) of the gradient of the first pass, which decides which
            class wins where; larger closes leaks through weak or noisy edges, smaller follows
            thin structures. Boundaries are then placed with a 1 mm gradient.
        coarse_voxels: largest size of the coarse grid. Images of up to twice this many voxels are
            solved in one pass at full resolution (a coarse grid would lose thin structures there
            for little speed).

    Returns:
        ``(I, J, K)`` array of ``seeds.dtype`` holding a seed value in every voxel; seeded voxels
        keep their own value. Inputs are not modified. Deterministic.

    Raises:
        GeometryMismatchError: ``seeds`` and ``image`` differ in shape, or they are not 3D.
        InvalidInputError: fewer than two seed classes, non-integer seeds, or a bad ``spacing_mm``.

    Examples:
        >>> image = np.zeros((12, 12, 1)); image[:, 6:] = 100.0
        >>> seeds = np.zeros((12, 12, 1), np.uint8); seeds[6, 1] = 1; seeds[6, 10] = 2
        >>> labels = grow_from_seeds(image, seeds, spacing_mm=(1.0, 1.0, 1.0), smoothing_mm=0.5)
        >>> labels[:, :, 0].tolist()[0]
        [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]
    """
    spacing = _check_spacing(spacing_mm)
    _check_same_shape(image, seeds, "seeds")
    if not np.issubdtype(seeds.dtype, np.integer):
        msg = f"seeds must be an integer array (0 = not seeded); got dtype {seeds.dtype}"
        raise InvalidInputError(msg)
    if not smoothing_mm >= 0:
        msg = f"smoothing_mm must be >= 0; got {smoothing_mm}"
        raise InvalidInputError(msg)
    seeded = np.flatnonzero(seeds)
    values, classes = np.unique(seeds.ravel()[seeded], return_inverse=True)
    if values.size < 2:
        got = "no seeds" if values.size == 0 else f"only seed value {values[0]}"
        msg = f"grow_from_seeds needs seeds of at least two classes (e.g. a background scribble); got {got}"
        raise InvalidInputError(msg)
    marker_dtype = np.int16 if values.size < np.iinfo(np.int16).max else np.int32
    classes = (classes + 1).astype(marker_dtype)  # class index 1..n per seeded voxel

    single_pass = image.size <= 2 * coarse_voxels
    factor = (1, 1, 1) if single_pass else _coarse_factor(image.shape, spacing, coarse_voxels)
    index = _grow_coarse_to_fine(image, seeded, classes, spacing, smoothing_mm, factor)
    labels = values[index - 1]
    labels.ravel()[seeded] = seeds.ravel()[seeded]
    return labels


def _grow_coarse_to_fine(
    image: np.ndarray,
    seeded: np.ndarray,
    classes: np.ndarray,
    spacing: tuple[float, float, float],
    smoothing_mm: float,
    factor: tuple[int, int, int],
) -> np.ndarray:
    """Class index 1..n per voxel: watershed on the coarse grid, then its boundary blocks at full size."""
    shape = image.shape
    coarse_shape = tuple(-(-n // f) for n, f in zip(shape, factor, strict=True))
    coarse_spacing = tuple(s * f for s, f in zip(spacing, factor, strict=True))
    coarse_markers = np.zeros(coarse_shape, classes.dtype)
    coords = np.unravel_index(seeded, shape)
    coarse_flat = np.ravel_multi_index(
        tuple(c // f for c, f in zip(coords, factor, strict=True)), coarse_shape
    )
    np.maximum.at(coarse_markers.ravel(), coarse_flat, classes)  # deterministic on conflicts
    coarse_image = _block_mean(image, factor)
    gradient = _gradient_magnitude(coarse_image, coarse_spacing, smoothing_mm)
    coarse = _watershed(_gradient_levels(gradient), coarse_markers)
    index = _upsample(coarse, factor, shape)
    boundary = _class_boundary(coarse)
    steps = 1
    if factor == (1, 1, 1):  # one voxel on each side is too narrow a band to move a boundary in
        boundary, steps = ndimage.binary_dilation(boundary), 2
    # Free a band voxel only where its class can grow back from outside the band nearby: a
    # structure thinner than the band keeps its first-pass label instead of vanishing.
    boundary &= _near_own_core(coarse, boundary, steps)
    tile_coarse = tuple(max(1, _TILE_VOXELS // f) for f in factor)
    step = tuple(t * f for t, f in zip(tile_coarse, factor, strict=True))
    tile = tuple(min(t, n) for t, n in zip(step, shape, strict=True))
    tiles = np.argwhere(_block_any(boundary, tile_coarse))
    if tiles.size == 0:
        return index
    markers = np.where(_upsample(boundary, factor, shape), np.zeros(1, classes.dtype), index)
    markers.ravel()[seeded] = classes
    # Context around each tile, none along flat axes (a single slice).
    halo = tuple(_HALO if n > 1 else 0 for n in shape)
    context = tuple(_GRADIENT_HALO if n > 1 else 0 for n in shape)
    window = tuple(t + 2 * c for t, c in zip(tile, context, strict=True))
    stack_image = np.empty((len(tiles), *window), np.float32)
    stack_markers = np.empty(
        (len(tiles), *(t + 2 * h for t, h in zip(tile, halo, strict=True))), classes.dtype
    )
    for n, position in enumerate(tiles):
        start = [int(p) * t for p, t in zip(position, step, strict=True)]
        low = tuple(a - c for a, c in zip(start, context, strict=True))
        stack_image[n] = _padded_crop(image, low, window, mode="edge")
        low = tuple(a - h for a, h in zip(start, halo, strict=True))
        stack_markers[n] = _padded_crop(markers, low, stack_markers.shape[1:])
    gradient = _gradient_magnitude(stack_image, spacing, _FINE_SIGMA_MM, leading_axes=1)
    cut = (
        slice(None),
        *(slice(c - h, c - h + t + 2 * h) for c, h, t in zip(context, halo, tile, strict=True)),
    )
    level = _gradient_levels(gradient[cut])
    # Tiles are independent and the IFT releases the GIL: solve fixed chunks of them in threads.
    chunks = [slice(n, n + _TILES_PER_CHUNK) for n in range(0, len(tiles), _TILES_PER_CHUNK)]
    with ThreadPoolExecutor(max_workers=min(len(chunks), os.cpu_count() or 1, 4)) as pool:
        solved = np.concatenate(
            list(pool.map(lambda chunk: _watershed(level[chunk], stack_markers[chunk], 1), chunks))
        )
    for n, position in enumerate(tiles):
        start = [int(p) * t for p, t in zip(position, step, strict=True)]
        stop = [min(a + t, size) for a, t, size in zip(start, tile, shape, strict=True)]
        inner = tuple(slice(h, h + b - a) for a, b, h in zip(start, stop, halo, strict=True))
        index[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))] = solved[n][inner]
    return index


def fast_marching(
    image: np.ndarray,
    seeds: np.ndarray,
    *,
    spacing_mm: Sequence[float],
    volume_fraction: float,
    intensity_tolerance: float = 1.5,
) -> np.ndarray:
    """Grow one segment from a seed mask by fast marching until it fills a fraction of the image.

    The front leaves the seeds with speed ``F(x) = exp(-((I(x) - mu) / (t * s))**2 / 2)``
    (floored at 0.001), where ``I`` is the image smoothed with a Gaussian of one voxel, ``mu``
    and ``s`` the mean and standard deviation of ``I`` over the seeds (``s`` at least 1 % of the
    image's 1st-99th percentile range) and ``t`` the ``intensity_tolerance``. The arrival time
    ``T`` solves ``|grad T| = 1 / F`` in mm (scikit-fmm, first order), and the segment is the
    seeds plus the earliest-reached voxels, ``volume_fraction`` of all voxels in total
    (Slicer's "segment volume"; ties at the threshold time are all kept). The front is stopped
    early (a narrow band in time, estimated on a coarse grid) so a small fraction is fast.

    Args:
        image: ``(I, J, K)`` intensities.
        seeds: ``(I, J, K)`` seed mask (bool, or any array: nonzero = seeded).
        spacing_mm: voxel size ``(di, dj, dk)`` in mm.
        volume_fraction: target size of the segment as a fraction of the image's voxels, in (0, 1].
        intensity_tolerance: how many seed standard deviations away from the seed mean an
            intensity may be before the front slows to ``exp(-1/2)`` of full speed.

    Returns:
        ``(I, J, K)`` bool mask containing the seeds (all of them, even when they alone exceed
        the target). Inputs are not modified. Deterministic.

    Raises:
        GeometryMismatchError: ``seeds`` and ``image`` differ in shape, or they are not 3D.
        InvalidInputError: empty seeds, ``volume_fraction`` outside (0, 1], or a bad ``spacing_mm``.

    Examples:
        >>> image = np.zeros((10, 10, 1)); image[:, 5:] = 100.0
        >>> seeds = np.zeros((10, 10, 1), bool); seeds[5, 1] = True
        >>> mask = fast_marching(image, seeds, spacing_mm=(1.0, 1.0, 1.0), volume_fraction=0.5)
        >>> int(mask.sum()), bool(mask[:, :5].all())
        (50, True)
    """
    spacing = _check_spacing(spacing_mm)
    _check_same_shape(image, seeds, "seeds")
    if not 0.0 < volume_fraction <= 1.0:
        msg = f"volume_fraction must be in (0, 1] (a fraction of the image's voxels); got {volume_fraction}"
        raise InvalidInputError(msg)
    if not intensity_tolerance > 0:
        msg = f"intensity_tolerance must be > 0; got {intensity_tolerance}"
        raise InvalidInputError(msg)
    seed_mask = np.asarray(seeds).astype(bool)
    seed_count = int(np.count_nonzero(seed_mask))
    if seed_count == 0:
        msg = "fast_marching needs a non-empty seed mask; got no seeded voxel"
        raise InvalidInputError(msg)
    target = max(1, round(volume_fraction * image.size))
    if target <= seed_count:
        return seed_mask
    if target == image.size:
        return np.ones(image.shape, bool)
    speed = _similarity_speed(image, seed_mask, spacing, intensity_tolerance)
    # Estimate the arrival time of the target volume on a coarse grid, then march at full size
    # only that far (plus a margin), widening the band if the estimate fell short.
    factor = _coarse_factor(image.shape, spacing, 300_000)
    limit = 0.0
    if factor != (1, 1, 1):
        coarse_speed = _block_mean(speed, factor)
        coarse_seeds = _block_any(seed_mask, factor)
        coarse_spacing = tuple(s * f for s, f in zip(spacing, factor, strict=True))
        coarse_times = _arrival_times(coarse_seeds, coarse_speed, coarse_spacing, 0.0)
        coarse_target = max(1, round(volume_fraction * coarse_seeds.size))
        limit = 1.5 * float(np.partition(coarse_times.ravel(), coarse_target - 1)[coarse_target - 1])
    while True:
        times = _arrival_times(seed_mask, speed, spacing, limit)
        reached = int(np.count_nonzero(np.isfinite(times)))
        if limit == 0.0 or reached >= target or reached == image.size:
            break
        limit *= 2.0
    threshold = np.partition(times.ravel(), target - 1)[target - 1]
    return (times <= threshold) | seed_mask


def _similarity_speed(
    image: np.ndarray, seed_mask: np.ndarray, spacing: tuple[float, float, float], tolerance: float
) -> np.ndarray:
    """Front speed in (0.001, 1]: a Gaussian of the smoothed intensity's distance from the seeds'."""
    smooth = ndimage.gaussian_filter(
        image.astype(np.float32), [min(spacing) / s for s in spacing], mode="nearest", truncate=2.5
    )
    inside = smooth[seed_mask]
    low, high = np.percentile(smooth[:: max(1, smooth.shape[0] // 32)], [1, 99])
    spread = max(float(inside.std()), 0.01 * float(high - low), 1e-6)
    distance = (smooth - float(inside.mean())) / np.float32(tolerance * spread)
    speed = np.exp(-0.5 * distance * distance)
    return np.maximum(speed, np.float32(1e-3), out=speed)


def _arrival_times(
    seed_mask: np.ndarray, speed: np.ndarray, spacing: Sequence[float], limit: float
) -> np.ndarray:
    """First-order fast-marching arrival times (mm / speed) from the seeds; inf beyond ``limit`` (> 0)."""
    import skfmm

    phi = np.where(seed_mask, -1.0, 1.0)
    times = skfmm.travel_time(phi, speed, dx=list(spacing), order=1, narrow=limit)
    times = np.ma.filled(np.ma.asarray(times, dtype=np.float64), np.inf)
    times[seed_mask] = 0.0
    return times


def _check_spacing(spacing_mm: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(s) for s in spacing_mm)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        msg = f"spacing_mm must be 3 positive voxel sizes in mm; got {tuple(spacing_mm)}"
        raise InvalidInputError(msg)
    return values  # type: ignore[return-value]


def _check_same_shape(image: np.ndarray, other: np.ndarray, what: str) -> None:
    if np.ndim(image) != 3:
        msg = f"image must be a 3D (I, J, K) array; got shape {np.shape(image)}"
        raise GeometryMismatchError(msg)
    if np.shape(other) != np.shape(image):
        msg = f"{what} shape {np.shape(other)} does not match the image shape {np.shape(image)}"
        raise GeometryMismatchError(msg)


def _coarse_factor(shape: Sequence[int], spacing: Sequence[float], max_voxels: int) -> tuple[int, int, int]:
    """Powers of 2 per axis, doubling the finest axis first, until at most ``max_voxels`` remain."""
    factor = [1, 1, 1]
    while math.prod(-(-n // f) for n, f in zip(shape, factor, strict=True)) > max(1, max_voxels):
        candidates = [a for a in range(3) if shape[a] // factor[a] >= 2]
        if not candidates:
            break
        axis = min(candidates, key=lambda a: (spacing[a] * factor[a], -shape[a] / factor[a], a))
        factor[axis] *= 2
    return factor[0], factor[1], factor[2]


def _block_mean(array: np.ndarray, factor: Sequence[int]) -> np.ndarray:
    """float32 mean over ``factor`` blocks; the last partial block of an axis repeats its edge."""
    result = array.astype(np.float32, copy=False)
    for axis, f in enumerate(factor):
        if f == 1:
            continue
        size = result.shape[axis]
        if size % f:
            pad = [(0, 0)] * 3
            pad[axis] = (0, f - size % f)
            result = np.pad(result, pad, mode="edge")
        split = (*result.shape[:axis], result.shape[axis] // f, f, *result.shape[axis + 1 :])
        result = result.reshape(split).mean(axis=axis + 1, dtype=np.float32)
    return result


def _block_any(mask: np.ndarray, factor: Sequence[int]) -> np.ndarray:
    """True for each ``factor`` block holding a True voxel (partial blocks at the ends included)."""
    pad = [(0, (-n) % f) for n, f in zip(mask.shape, factor, strict=True)]
    if any(p for _, p in pad):
        mask = np.pad(mask, pad)
    split = []
    for n, f in zip(mask.shape, factor, strict=True):
        split += [n // f, f]
    return mask.reshape(split).any(axis=(1, 3, 5))


def _upsample(array: np.ndarray, factor: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """Repeat each coarse voxel ``factor`` times per axis and cut to ``shape``."""
    for axis, f in enumerate(factor):
        if f > 1:
            array = np.repeat(array, f, axis=axis)
    return array[: shape[0], : shape[1], : shape[2]]


def _padded_crop(
    array: np.ndarray, low: Sequence[int], window: Sequence[int], mode: str = "constant"
) -> np.ndarray:
    """``array[low : low + window]``, padded (zeros or edge values) where it leaves the array."""
    clipped = tuple(
        slice(max(lo, 0), min(lo + w, n)) for lo, w, n in zip(low, window, array.shape, strict=True)
    )
    crop = array[clipped]
    if crop.shape == tuple(window):
        return crop
    pad = [(s.start - lo, lo + w - s.stop) for s, lo, w in zip(clipped, low, window, strict=True)]
    return np.pad(crop, pad, mode=mode)


def _gradient_magnitude(
    array: np.ndarray, spacing: Sequence[float], sigma_mm: float, leading_axes: int = 0
) -> np.ndarray:
    """float32 gradient magnitude (units per mm) of the Gaussian-smoothed array (central differences).

    The last three axes are spatial; ``leading_axes`` axes before them are independent images.
    """
    sigma = [0.0] * leading_axes + [sigma_mm / s for s in spacing]
    smooth = (
        ndimage.gaussian_filter(array, sigma, mode="nearest", truncate=2.5)
        if sigma_mm > 0
        else array.astype(np.float32)
    )
    total = np.zeros(array.shape, np.float32)
    step = np.empty(array.shape, np.float32)
    for axis, size_mm in enumerate(spacing, start=leading_axes):
        if array.shape[axis] < 3:
            continue
        ahead, behind, middle = ([slice(None)] * array.ndim for _ in range(3))
        ahead[axis], behind[axis], middle[axis] = slice(2, None), slice(None, -2), slice(1, -1)
        step.fill(0.0)
        np.subtract(smooth[tuple(ahead)], smooth[tuple(behind)], out=step[tuple(middle)])
        step *= np.float32(0.5 / size_mm)
        total += step * step
    return np.sqrt(total, out=total)


def _gradient_levels(gradient: np.ndarray) -> np.ndarray:
    """uint16 ``gradient`` in `_LEVELS` equally populated levels (quantiles of a strided subsample)."""
    sample = gradient.ravel()[:: max(1, gradient.size // 131072)]
    edges = np.unique(np.quantile(sample, np.linspace(0.0, 1.0, _LEVELS + 1)[1:-1]).astype(np.float32))
    top = float(gradient.max(initial=0.0))
    if top <= 0.0:
        return np.zeros(gradient.shape, np.uint16)
    bins = 4096  # a lookup table over a fine linear grid avoids a binary search per voxel
    centres = (np.arange(bins, dtype=np.float64) + 0.5) * (top / (bins - 1))
    table = np.searchsorted(edges, centres, side="right").clip(0, _LEVELS - 1).astype(np.uint16)
    linear = np.multiply(gradient, np.float32((bins - 1) / top), dtype=np.float32)
    return table[linear.astype(np.int32).clip(0, bins - 1)]


def _watershed(level: np.ndarray, markers: np.ndarray, leading_axes: int = 0) -> np.ndarray:
    """Seeded watershed with arc weight ``q(p) + q(q)`` (``q`` = ``level``) by `scipy.ndimage.watershed_ift`.

    The IFT's arc weight is the absolute difference of its input, so the input is ``B + q`` on
    voxels with odd ``i + j + k`` and ``B - q`` on even ones: a face arc always joins the two
    colours. The IFT finds neighbours by flat index, so the last voxel of a row touches the
    first of the next: a one-voxel moat of 0 around each image, at least ``B - q >= 257`` away
    from every voxel (more than any arc inside), keeps paths inside. ``leading_axes`` axes
    before the last three hold independent images.

    Returns:
        The markers' labels grown over every voxel (markers' dtype, ``level``'s shape).
    """
    base = np.uint16(3 * _LEVELS)
    pad = [(0, 0)] * leading_axes + [(1, 1)] * 3
    code = np.pad(np.where(_odd_voxels(level.shape[-3:]), base + level, base - level), pad)
    structure = ndimage.generate_binary_structure(3, 1)
    for _ in range(leading_axes):
        structure = np.stack([np.zeros_like(structure), structure, np.zeros_like(structure)])
    grown = ndimage.watershed_ift(code, np.pad(markers, pad), structure=structure)
    inner = (slice(None),) * leading_axes + (slice(1, -1),) * 3
    return grown[inner]


def _odd_voxels(shape: Sequence[int]) -> np.ndarray:
    """bool ``(I, J, K)``: True where ``i + j + k`` is odd (one colour of a 3D checkerboard)."""
    i, j, k = (np.arange(n, dtype=np.int32) for n in shape)
    return (i[:, None, None] + j[None, :, None] + k[None, None, :]) % 2 == 1


def _near_own_core(labels: np.ndarray, band: np.ndarray, steps: int) -> np.ndarray:
    """True off the band and on band voxels at most ``steps`` face steps from their label off the band."""
    reach = ~band
    for _ in range(steps):
        grown = reach.copy()
        for axis in range(3):
            ahead, behind = [slice(None)] * 3, [slice(None)] * 3
            ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
            ahead, behind = tuple(ahead), tuple(behind)
            same = labels[ahead] == labels[behind]
            grown[ahead] |= reach[behind] & same
            grown[behind] |= reach[ahead] & same
        reach = grown
    return reach


def _class_boundary(labels: np.ndarray) -> np.ndarray:
    """True on voxels with a face neighbour of another label."""
    boundary = np.zeros(labels.shape, bool)
    for axis in range(labels.ndim):
        ahead, behind = [slice(None)] * labels.ndim, [slice(None)] * labels.ndim
        ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
        differs = labels[tuple(ahead)] != labels[tuple(behind)]
        boundary[tuple(ahead)] |= differs
        boundary[tuple(behind)] |= differs
    return boundary
