"""Cases in memory, intensity normalisation, resampling and the training sampler.

A `Case` keeps its image in the stored dtype (int16 CT stays int16: 2 bytes a voxel, not a
float32 copy) and its labels as uint8/uint16 schema values, where the ignore value
(``n_classes``, i.e. `LabelSchema.ignore_index`) marks voxels that teach nothing. Normalisation
is an affine map with clipping applied per batch on the fly; its four numbers are computed once
per case (`IntensityParameters`).

Training cohorts stay compressed in memory: `compress_case` turns a case's arrays into
`CompressedVolume`s (one deflate block per plane along one axis, 10x smaller on OpenKBP CT and
~200x on labels), `prepare_case` decompresses one case at a time to index it, and the sampler
decompresses only the planes a sample covers (one plane for a 2D slice along that axis). So the
peak memory of training grows with the compressed size of the cohort, not its raw size.

The `PatchSampler` draws 2D slices (along one array axis) or 3D patches, mostly centred on
annotated foreground (a class drawn uniformly among those the case holds, then one of its
voxels, nnU-Net style), otherwise on a random annotated voxel; slices or patches that hold only
ignored voxels are never drawn. Everything random comes from one ``numpy.random.Generator``
seeded by the config, whose state is saved in checkpoints.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from isal import isal_zlib

from segloop.engine.config import TrainConfig
from segloop.errors import GeometryMismatchError, InvalidInputError, LabelValueError

__all__ = [
    "Case",
    "CompressedVolume",
    "IntensityParameters",
    "PatchSampler",
    "PreparedCase",
    "compress_case",
    "compute_intensity_parameters",
    "context_indices",
    "normalize_intensity",
    "prepare_case",
    "resample_image",
    "resample_labels",
    "resolve_patch_size",
    "resolve_slice_axis",
    "spatial_transform",
    "split_cases",
    "swap_table",
]

# At most this many voxel positions are kept per class (and for "any annotated voxel") per case:
# enough to sample from, small next to the image (50,000 x 4 bytes).
_MAX_LOCATIONS = 50_000
_STATS_SAMPLE = 1_000_000
# ISA-L deflate level: 1 compresses OpenKBP CT ~10x at ~700 MB/s and inflates ~700 MB/s (2-core
# VM); level 0 is ~30% faster but 30% larger on CT and 4x larger on labels; 3 is 5x slower to
# compress for no gain (measured here).
_DEFLATE_LEVEL = 1
# A plane is cut into bands of rows of about this many raw bytes (64 rows of a 512^2 int16 CT
# plane; a whole 128^2 plane), so a 3D patch inflates only the bands it crosses: 64^3 in a
# 512x512x300 CT inflates 4 MiB, not 32 MiB. Deflate's window is 32 KiB: bigger blocks gain little.
_BAND_BYTES = 64 * 2**10
# Planes are gathered from a strided axis into contiguous chunks of about this many bytes.
_CHUNK_BYTES = 8 * 2**20


class CompressedVolume:
    """A read-only 3D array held compressed: deflate blocks per plane along ``axis``.

    Each plane (index along ``axis``) is stored as deflate blocks of whole rows (bands of about
    64 KiB raw; one block for a plane up to that size). Indexing with ints and slices inflates only
    the blocks it covers: ``volume[:, 10:50, 7]`` with ``axis=2`` inflates part of one plane, so a
    2D training slice along ``axis`` costs one plane at most. ``np.asarray(volume)`` decompresses
    everything (a new C-contiguous array equal to the input).

    Written by hand because no dependency does it well: blosc / zarr would chunk and compress
    faster but are not dependencies (and zarr's chunk grid, stores and codec pipeline are a lot of
    machinery for an in-memory array); per-plane deflate through ISA-L (already a dependency,
    inflating several times faster than zlib) is a few lines.

    Args:
        array: ``(I, J, K)`` array of any fixed-size dtype (copied into compressed blocks; the
            input is not kept). Anything ``np.asarray`` accepts, another `CompressedVolume` too.
        axis: the array axis whose planes are compressed one by one (0, 1, 2 or negative).
        level: ISA-L deflate level, 0 (fastest) to 3.

    Attributes:
        shape: ``(I, J, K)``.
        dtype: the array's dtype (kept exactly, byte order included).
        axis: the compressed axis (0, 1 or 2).

    Examples:
        >>> a = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
        >>> v = CompressedVolume(a, axis=2)
        >>> v.shape, v.dtype.name, v[1, :2, 3].tolist()
        ((2, 3, 4), 'int16', [15, 19])
        >>> bool(np.array_equal(np.asarray(v), a))
        True
    """

    __slots__ = ("_band_rows", "_blocks", "_plane_shape", "axis", "dtype", "shape")

    def __init__(self, array: Any, axis: int, *, level: int = _DEFLATE_LEVEL) -> None:
        array = np.asarray(array)
        if array.ndim != 3:
            msg = f"CompressedVolume needs an (I, J, K) array; got shape {array.shape}"
            raise InvalidInputError(msg)
        if array.dtype.hasobject:
            msg = f"CompressedVolume needs a numeric array; got dtype {array.dtype}"
            raise InvalidInputError(msg)
        if not -3 <= axis < 3:
            msg = f"axis must be 0, 1 or 2 (or negative); got {axis}"
            raise InvalidInputError(msg)
        self.shape: tuple[int, int, int] = tuple(int(n) for n in array.shape)  # type: ignore[assignment]
        self.dtype: np.dtype = array.dtype
        self.axis = int(axis) % 3
        self._plane_shape = tuple(n for a, n in enumerate(self.shape) if a != self.axis)
        row_bytes = max(self._plane_shape[1] * self.dtype.itemsize, 1)
        self._band_rows = max(1, _BAND_BYTES // row_bytes)
        planes = np.moveaxis(array, self.axis, 0)  # a view; contiguous planes for axis 0
        step = max(1, _CHUNK_BYTES // max(row_bytes * self._plane_shape[0], 1))
        blocks = []
        for start in range(0, planes.shape[0], step):
            chunk = np.ascontiguousarray(planes[start : start + step])  # no copy when already contiguous
            for plane in chunk:
                blocks.append(
                    tuple(
                        isal_zlib.compress(plane[row : row + self._band_rows], level)
                        for row in range(0, max(plane.shape[0], 1), self._band_rows)
                    )
                )
        self._blocks: tuple[tuple[bytes, ...], ...] = tuple(blocks)

    @property
    def ndim(self) -> int:
        """3."""
        return 3

    @property
    def size(self) -> int:
        """Number of voxels."""
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        """Bytes per voxel once decompressed."""
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        """Bytes held in memory (the compressed blocks)."""
        return sum(len(block) for plane in self._blocks for block in plane)

    @property
    def raw_nbytes(self) -> int:
        """Bytes of the decompressed array."""
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return (
            f"CompressedVolume(shape={self.shape}, dtype={self.dtype}, axis={self.axis},"
            f" {self.nbytes} bytes for {self.raw_nbytes})"
        )

    def _bands(self, index: int, first: int, stop: int) -> np.ndarray:
        """Rows ``first * band_rows`` up to band ``stop`` of plane ``index`` (read-only)."""
        rows = min(stop * self._band_rows, self._plane_shape[0]) - first * self._band_rows
        size = rows * self._plane_shape[1] * self.dtype.itemsize
        blocks = self._blocks[index][first:stop]
        if len(blocks) == 1:
            raw = isal_zlib.decompress(blocks[0], bufsize=max(size, 1))
        else:
            raw = b"".join(isal_zlib.decompress(b, bufsize=max(size, 1)) for b in blocks)
        return np.frombuffer(raw, self.dtype).reshape(rows, self._plane_shape[1])

    def plane(self, index: int) -> np.ndarray:
        """The decompressed plane ``index`` along `axis` (read-only, shape without that axis)."""
        return self._bands(index, 0, len(self._blocks[index]))

    def _plane_rows(self, index: int, rows: slice | int) -> tuple[np.ndarray, slice | int]:
        """The bands of plane ``index`` that ``rows`` (an in-range key of its first axis) covers,
        and ``rows`` relative to them."""
        extent, band = self._plane_shape[0], self._band_rows
        if isinstance(rows, slice):
            span = range(*rows.indices(extent))
            if span.step < 0 or not span:
                return self.plane(index), rows
            first, last = span[0] // band, span[-1] // band
            offset = first * band
            return self._bands(index, first, last + 1), slice(
                span[0] - offset, span[-1] + 1 - offset, span.step
            )
        row = operator.index(rows) % extent
        return self._bands(index, row // band, row // band + 1), row - row // band * band

    def __getitem__(self, key: Any) -> np.ndarray:
        """Index like a numpy array; ints and slices inflate only the blocks they cover.

        Any other index (arrays, ``None``, ``...``) decompresses the whole volume first.

        Returns:
            A new (writable) array, never a view of compressed data; a numpy scalar for 3 ints.

        Raises:
            IndexError: an integer out of range, as numpy.
        """
        key = key if isinstance(key, tuple) else (key,)
        if len(key) > 3 or not all(
            isinstance(k, slice) or (isinstance(k, int | np.integer) and not isinstance(k, bool | np.bool_))
            for k in key
        ):
            return np.asarray(self)[key]
        key = key + (slice(None),) * (3 - len(key))
        shape = []  # of the result (a few microseconds; numpy's own way to tell costs 25)
        for axis, (k, extent) in enumerate(zip(key, self.shape, strict=True)):
            if isinstance(k, slice):
                shape.append(len(range(*k.indices(extent))))
            elif not -extent <= k < extent:
                msg = f"index {k} is out of bounds for axis {axis} with size {extent}"
                raise IndexError(msg)
        along, rest = key[self.axis], key[: self.axis] + key[self.axis + 1 :]
        count = self.shape[self.axis]
        if not isinstance(along, slice):
            rows, rows_key = self._plane_rows(operator.index(along) % count, rest[0])
            part = np.array(rows[rows_key, rest[1]])
            return part[()] if part.ndim == 0 else part  # a numpy scalar for 3 ints, as numpy
        out = np.empty(shape, self.dtype)
        position = sum(isinstance(k, slice) for k in key[: self.axis])  # the axis in the result
        moved = np.moveaxis(out, position, 0)
        for j, index in enumerate(range(*along.indices(count))):
            rows, rows_key = self._plane_rows(index, rest[0])
            moved[j] = rows[rows_key, rest[1]]
        return out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """The whole decompressed ``(I, J, K)`` array (C-contiguous; always a new array)."""
        if copy is False:
            msg = "a CompressedVolume cannot be seen as an array without decompressing (a copy)"
            raise ValueError(msg)
        out = np.empty(self.shape, self.dtype)
        planes = np.moveaxis(out, self.axis, 0)
        count = len(self._blocks)
        step = max(1, _CHUNK_BYTES // max(math.prod(self._plane_shape) * self.dtype.itemsize, 1))
        chunk = np.empty((min(step, count), *self._plane_shape), self.dtype)
        for start in range(0, count, step):
            stop = min(start + step, count)
            target = planes[start:stop]
            buffer = target if self.axis == 0 else chunk[: stop - start]
            for j in range(start, stop):
                buffer[j - start] = self.plane(j)
            if buffer is not target:
                target[...] = buffer  # one strided copy per chunk of planes, not per plane
        return out if dtype is None else out.astype(dtype, copy=False)


@dataclass(frozen=True, eq=False)
class Case:
    """One case in memory.

    Args:
        case_id: the store's case id (used in messages and validation reports).
        image: ``(I, J, K)`` intensities in their stored dtype (e.g. int16); never copied to float32.
            A numpy array or a `CompressedVolume` (see `compress_case`).
        labels: ``(I, J, K)`` uint8/uint16 schema values (0 background, 1..N classes, N + 1
            ignore), or None for an unlabelled case; a numpy array or a `CompressedVolume`.
        spacing: voxel size in mm along I, J, K.
    """

    case_id: str
    image: np.ndarray | CompressedVolume
    labels: np.ndarray | CompressedVolume | None
    spacing: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.image.ndim != 3:
            msg = f"case {self.case_id}: image must be 3D (I, J, K); got shape {self.image.shape}"
            raise InvalidInputError(msg)
        if self.labels is not None:
            if self.labels.shape != self.image.shape:
                msg = (
                    f"case {self.case_id}: labels shape {self.labels.shape} does not match image shape"
                    f" {self.image.shape}"
                )
                raise GeometryMismatchError(msg)
            if not np.issubdtype(self.labels.dtype, np.integer):
                msg = f"case {self.case_id}: labels must be an integer array; got {self.labels.dtype}"
                raise LabelValueError(msg)
        if len(self.spacing) != 3 or not all(s > 0 for s in self.spacing):
            msg = f"case {self.case_id}: spacing must be 3 positive numbers (mm); got {self.spacing}"
            raise InvalidInputError(msg)


def compress_case(case: Case, axis: int | None = None, *, level: int = _DEFLATE_LEVEL) -> Case:
    """The case with its image and labels as `CompressedVolume`s (planes along ``axis``).

    Compress each case right after reading it, so that the raw arrays of a cohort never exist
    at once. Arrays already compressed along ``axis`` are kept as they are (no work).

    Args:
        case: a case (arrays raw or compressed).
        axis: the axis whose planes are compressed; default: the largest spacing (ties: the
            last such axis), the axis 2D training slices along by default (`resolve_slice_axis`),
            so a slice costs one plane.
        level: ISA-L deflate level (0-3).

    Returns:
        A new `Case` with the same id and spacing.

    Examples:
        >>> case = Case("a", np.zeros((4, 4, 2), np.int16), np.zeros((4, 4, 2), np.uint8), (1.0, 1.0, 3.0))
        >>> compressed = compress_case(case)
        >>> compressed.image.axis, compressed.image.shape
        (2, (4, 4, 2))
    """
    if axis is None:
        axis = _largest_spacing_axis(case.spacing)

    def compress(array: np.ndarray | CompressedVolume) -> CompressedVolume:
        if isinstance(array, CompressedVolume) and array.axis == axis % 3:
            return array
        return CompressedVolume(array, axis, level=level)

    labels = None if case.labels is None else compress(case.labels)
    return Case(case.case_id, compress(case.image), labels, case.spacing)


@dataclass(frozen=True)
class IntensityParameters:
    """``normalised = (clip(x, low, high) - shift) * scale`` for one case."""

    low: float
    high: float
    shift: float
    scale: float
    pad_value: float


@dataclass(frozen=True, eq=False)
class PreparedCase:
    """A training case on its training grid with what the sampler needs.

    Attributes:
        case: the case (resampled when the config has a target spacing).
        intensity: its normalisation.
        foreground: class value -> flat voxel indices of that class (at most 50,000, random subset).
        annotated: flat indices of not-ignored voxels (random subset), or None when none is ignored.
        annotated_fraction: fraction of voxels that are not ignored.
    """

    case: Case
    intensity: IntensityParameters
    foreground: dict[int, np.ndarray] = field(default_factory=dict)
    annotated: np.ndarray | None = None
    annotated_fraction: float = 1.0


def compute_intensity_parameters(image: np.ndarray, config: TrainConfig) -> IntensityParameters:
    """The normalisation of one image by ``config.modality`` (computed on a subsample if large).

    Args:
        image: ``(I, J, K)`` array of any numeric dtype.
        config: uses ``modality``, ``window`` and ``percentiles``.

    Returns:
        `IntensityParameters`. CT: clip to ``level ± width/2``, scale to [0, 1]; MR/other: z-score;
        microscopy/EM/cryo-ET: clip to the percentiles, scale to [0, 1].

    Examples:
        >>> p = compute_intensity_parameters(np.zeros((2, 2, 2), np.int16), TrainConfig())
        >>> (p.low, p.high, p.shift, p.scale)
        (-160.0, 240.0, -160.0, 0.0025)
    """
    kind = config.normalization
    if kind == "window":
        width, level = config.window
        low = level - width / 2.0
        return IntensityParameters(low, low + width, low, 1.0 / width, low)
    flat = image.reshape(-1)
    step = max(1, flat.size // _STATS_SAMPLE)
    sample = flat[::step].astype(np.float64)
    if kind == "zscore":
        mean, std = float(sample.mean()), float(sample.std())
        return IntensityParameters(-math.inf, math.inf, mean, 1.0 / max(std, 1e-8), float(sample.min()))
    low, high = (float(v) for v in np.percentile(sample, config.percentiles))
    return IntensityParameters(low, high, low, 1.0 / max(high - low, 1e-8), low)


def normalize_intensity(
    batch: torch.Tensor,
    low: torch.Tensor | float,
    high: torch.Tensor | float,
    shift: torch.Tensor | float,
    scale: torch.Tensor | float,
) -> torch.Tensor:
    """Clip and scale a float batch in place, one parameter set per sample.

    Args:
        batch: ``(B, C, *spatial)`` float32 tensor (stored values); modified in place and returned.
        low: ``(B,)`` tensor (or one float) of `IntensityParameters.low`; likewise ``high``,
            ``shift`` and ``scale``.
        high: upper clip value(s).
        shift: value(s) subtracted after clipping.
        scale: factor(s) applied last.

    Examples:
        >>> normalize_intensity(torch.tensor([[[-500.0, 40.0, 900.0]]]), -160.0, 240.0, -160.0, 0.0025)
        tensor([[[0.0000, 0.5000, 1.0000]]])
    """
    shape = (-1,) + (1,) * (batch.ndim - 1)

    def per_sample(value: torch.Tensor | float) -> torch.Tensor:
        return torch.as_tensor(value, dtype=batch.dtype, device=batch.device).reshape(shape)

    torch.clamp(batch, per_sample(low), per_sample(high), out=batch)
    batch.sub_(per_sample(shift)).mul_(per_sample(scale))
    return batch


def _target_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, ...]:
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target, strict=True))


def resample_image(
    image: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float]
) -> np.ndarray:
    """Resample an image to ``target_spacing`` (trilinear), keeping its dtype (integers are rounded).

    Args:
        image: ``(I, J, K)`` array.
        spacing: its voxel size in mm.
        target_spacing: the wanted voxel size in mm.

    Returns:
        The resampled ``(I', J', K')`` array, ``I' = round(I * spacing / target)``; the input itself
        when the grid does not change.
    """
    shape = _target_shape(image.shape, spacing, target_spacing)
    if shape == image.shape:
        return image
    values = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    result = torch.nn.functional.interpolate(values, size=shape, mode="trilinear", align_corners=False)[0, 0]
    result = result.numpy()
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        result = np.clip(np.rint(result), info.min, info.max)
    return result.astype(image.dtype)


def resample_labels(labels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resampling of a label array to ``shape`` (dtype kept)."""
    shape = tuple(int(n) for n in shape)
    if shape == labels.shape:
        return labels
    values = torch.from_numpy(labels.astype(np.int16 if labels.dtype == np.uint8 else np.int32))
    result = torch.nn.functional.interpolate(values[None, None].float(), size=shape, mode="nearest-exact")
    return result[0, 0].numpy().astype(labels.dtype)


def _compact_labels(labels: np.ndarray, n_classes: int, case_id: str) -> np.ndarray:
    top = int(labels.max(initial=0))
    low = int(labels.min(initial=0))
    if low < 0 or top > n_classes:
        msg = (
            f"case {case_id}: labels hold values {low}..{top}; expected 0..{n_classes - 1} (classes)"
            f" and {n_classes} (ignore)"
        )
        raise LabelValueError(msg)
    dtype = np.uint8 if n_classes <= 255 else np.uint16
    return labels if labels.dtype == dtype else labels.astype(dtype)


def prepare_case(case: Case, config: TrainConfig, n_classes: int, *, seed: int = 0) -> PreparedCase:
    """Resample (if ``config.target_spacing``), check labels and index foreground for sampling.

    A compressed case (`compress_case`) is decompressed here transiently (this case only) and
    stays compressed in the result, along the same axis (recompressed only when resampling or
    label compaction changed its arrays).

    Args:
        case: a labelled case (arrays raw or `CompressedVolume`).
        config: the training config.
        n_classes: output classes with background (the ignore value is ``n_classes``).
        seed: seeds the random subset of kept voxel positions.

    Raises:
        LabelValueError: labels missing or outside ``0..n_classes``.
    """
    if case.labels is None:
        msg = f"case {case.case_id} has no labels: training needs labelled cases"
        raise LabelValueError(msg)
    raw_image, raw_labels = np.asarray(case.image), np.asarray(case.labels)
    image, labels, spacing = raw_image, _compact_labels(raw_labels, n_classes, case.case_id), case.spacing
    if config.target_spacing is not None:
        image = resample_image(image, spacing, config.target_spacing)
        labels = resample_labels(labels, image.shape)
        spacing = tuple(float(s) for s in config.target_spacing)
    rng = np.random.default_rng(seed)
    flat = labels.reshape(-1)
    foreground_index = np.flatnonzero((flat > 0) & (flat < n_classes))
    foreground_values = flat[foreground_index]
    foreground = {}
    for value in np.unique(foreground_values).tolist():
        positions = foreground_index[foreground_values == value]
        if positions.size > _MAX_LOCATIONS:
            positions = np.sort(rng.choice(positions, _MAX_LOCATIONS, replace=False))
        foreground[int(value)] = positions.astype(np.int32 if flat.size < 2**31 else np.int64)
    ignored = flat == n_classes
    n_ignored = int(np.count_nonzero(ignored))
    annotated = None
    if n_ignored:
        positions = np.flatnonzero(~ignored)
        if positions.size > _MAX_LOCATIONS:
            positions = np.sort(rng.choice(positions, _MAX_LOCATIONS, replace=False))
        annotated = positions.astype(np.int32 if flat.size < 2**31 else np.int64)
    intensity = compute_intensity_parameters(image, config)
    kept_image: np.ndarray | CompressedVolume = image
    kept_labels: np.ndarray | CompressedVolume = labels
    if isinstance(case.image, CompressedVolume):
        kept_image = case.image if image is raw_image else CompressedVolume(image, case.image.axis)
    if isinstance(case.labels, CompressedVolume):
        kept_labels = case.labels if labels is raw_labels else CompressedVolume(labels, case.labels.axis)
    prepared = Case(case.case_id, kept_image, kept_labels, spacing)  # type: ignore[arg-type]
    return PreparedCase(
        prepared,
        intensity,
        foreground,
        annotated,
        1.0 - n_ignored / flat.size,
    )


#: 2D training crops, as a fraction of the slice (80² crops of OpenKBP's 128² slices)
CROP_FRACTION = 0.625


def resolve_slice_axis(config: TrainConfig, spacings: Sequence[Sequence[float]]) -> int:
    """``config.slice_axis``, or the axis with the largest median spacing (ties: the last such axis).

    Examples:
        >>> resolve_slice_axis(TrainConfig(), [(0.8, 0.8, 3.0)])
        2
    """
    if config.slice_axis is not None:
        return config.slice_axis
    return _largest_spacing_axis(np.median(np.asarray(spacings, dtype=float).reshape(-1, 3), axis=0))


def _largest_spacing_axis(spacing: Sequence[float]) -> int:
    """The axis of the largest spacing; the last one on ties (within 1e-6 relative)."""
    values = np.asarray(spacing, dtype=float)
    return int(np.flatnonzero(values >= values.max() * (1 - 1e-6))[-1])


def resolve_patch_size(
    config: TrainConfig, shapes: Sequence[Sequence[int]], slice_axis: int, divisor: int
) -> tuple[int, ...]:
    """``config.patch_size``, or a crop of 2D slices / 64³ (3D), rounded up to ``divisor``.

    The 2D crop is `CROP_FRACTION` of the largest in-plane shape: crops centred on annotated voxels
    learn far faster in CPU minutes than whole slices (OpenKBP, 2 sparse cases, 1.5 min: test Dice
    0.43 with 80² crops of the 128² slices, 0.07 with whole slices). Prediction still runs on whole
    slices.

    Examples:
        >>> resolve_patch_size(TrainConfig(), [(128, 128, 90)], 2, 16)
        (80, 80)
    """
    if config.patch_size is not None:
        size = config.patch_size
    elif config.dims == 2:
        planes = [[n for axis, n in enumerate(shape) if axis != slice_axis] for shape in shapes]
        largest = np.max(np.asarray(planes), axis=0)
        size = tuple(max(1, round(int(v) * CROP_FRACTION)) for v in largest)
    else:
        size = (64, 64, 64)
    return tuple(int(math.ceil(s / divisor) * divisor) for s in size)


def split_cases(case_ids: Sequence[str], config: TrainConfig) -> tuple[list[str], list[str]]:
    """Training and validation case ids: ``config.validation_case_ids`` or a seeded fraction.

    Examples:
        >>> split_cases(["a", "b", "c", "d", "e"], TrainConfig(validation_case_ids=("c",)))
        (['a', 'b', 'd', 'e'], ['c'])
    """
    ids = list(case_ids)
    if config.validation_case_ids is not None:
        unknown = sorted(set(config.validation_case_ids) - set(ids))
        if unknown:
            msg = f"validation case ids {', '.join(unknown)} are not among the labelled cases"
            raise InvalidInputError(msg)
        chosen = set(config.validation_case_ids)
    else:
        count = round(len(ids) * config.validation_fraction)
        count = min(count, len(ids) - 1) if len(ids) > 1 else 0
        order = np.random.default_rng(config.seed).permutation(len(ids))
        chosen = {ids[i] for i in order[:count]}
    return [i for i in ids if i not in chosen], [i for i in ids if i in chosen]


def context_indices(centres: np.ndarray | int, k: int, extent: int) -> np.ndarray:
    """Slice indices of 2.5D input: ``k`` neighbours on each side, the volume's end slices repeated.

    Args:
        centres: slice index or array of them (any shape).
        k: neighbours on each side (`TrainConfig.context_slices`).
        extent: number of slices.

    Returns:
        ``(*centres.shape, 2k + 1)`` int64 indices in ``0..extent-1``.

    Examples:
        >>> context_indices(np.array([0, 4]), 1, 5).tolist()
        [[0, 0, 1], [3, 4, 4]]
    """
    offsets = np.arange(-k, k + 1)
    return np.clip(np.asarray(centres, dtype=np.int64)[..., None] + offsets, 0, extent - 1)


def swap_table(size: int, pairs: Sequence[Sequence[int]]) -> np.ndarray:
    """``table[v]``: the value a left-right mirror makes of value ``v`` (paired classes swapped).

    Args:
        size: number of values (``n_classes + 1`` for labels with ignore, ``n_classes`` for
            probability channels).
        pairs: class value pairs (`TrainConfig.mirror_pairs`), each value below ``size``.

    Raises:
        InvalidInputError: a value of a pair outside ``0..size-1``.

    Examples:
        >>> swap_table(5, [(1, 3)]).tolist()
        [0, 3, 2, 1, 4]
    """
    table = np.arange(size)
    for a, b in pairs:
        if not (0 < a < size and 0 < b < size):
            msg = f"mirror pair {(a, b)} is not a pair of classes: expected values in 1..{size - 1}"
            raise InvalidInputError(msg)
        table[a], table[b] = b, a
    return table


#: spatial augmentation ranges: rotation in degrees (uniform ±), scale factor (uniform)
ROTATION_DEGREES = 15.0
SCALE_RANGE = (0.85, 1.15)


def spatial_transform(
    images: torch.Tensor,
    labels: torch.Tensor,
    angles_deg: Sequence[float],
    scales: Sequence[float],
    *,
    pad_values: torch.Tensor,
    ignore_index: int,
    plane: tuple[int, int] = (0, 1),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate and scale samples in a plane of their spatial dims (``grid_sample`` on the batch).

    A scale above 1 enlarges the content. Rotation is in voxel units (a non-square patch is not
    sheared). Voxels that come from outside a sample get its pad value and the ignore label.

    Args:
        images: ``(B, C, *spatial)`` float32 (2 or 3 spatial dims), interpolated linearly.
        labels: ``(B, *spatial)`` integer labels, nearest neighbour (values stay valid labels).
        angles_deg: B rotation angles in degrees.
        scales: B scale factors.
        pad_values: ``(B,)`` image value of padding per sample.
        ignore_index: the label of voxels from outside.
        plane: the two spatial dims (0-based, of ``spatial``) the rotation acts in.

    Returns:
        New ``images`` and ``labels`` tensors of the same shapes and dtypes.
    """
    spatial = images.shape[2:]
    n = len(spatial)
    batch = images.shape[0]
    half = torch.tensor([s / 2.0 for s in spatial], dtype=torch.float64)
    matrices = torch.eye(n, dtype=torch.float64).repeat(batch, 1, 1)
    radians = torch.deg2rad(torch.as_tensor(angles_deg, dtype=torch.float64))
    cos, sin = torch.cos(radians), torch.sin(radians)
    p, q = plane
    matrices[:, p, p], matrices[:, p, q], matrices[:, q, p], matrices[:, q, q] = cos, -sin, sin, cos
    matrices /= torch.as_tensor(scales, dtype=torch.float64).reshape(-1, 1, 1)
    # in normalised coordinates: D^-1 M D with D = half-sizes (voxel units), axes reversed (x first)
    normalised = matrices * half.reshape(1, 1, n) / half.reshape(1, n, 1)
    order = list(range(n - 1, -1, -1))
    theta = torch.zeros(batch, n, n + 1, dtype=torch.float32)
    theta[:, :, :n] = normalised[:, order][:, :, order].float()
    grid = torch.nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    shift = pad_values.to(images.dtype).reshape((-1,) + (1,) * (images.ndim - 1))
    moved = torch.nn.functional.grid_sample(
        images - shift, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    codes = (labels.to(torch.float32) + 1.0).unsqueeze(1)  # 0 = came from outside
    moved_codes = (
        torch.nn.functional.grid_sample(
            codes, grid, mode="nearest", padding_mode="zeros", align_corners=False
        )[:, 0]
        .round()
        .long()
    )
    new_labels = torch.where(moved_codes == 0, ignore_index, moved_codes - 1).to(labels.dtype)
    return moved + shift, new_labels


class PatchSampler:
    """Draws training batches from prepared cases (2D slices or 3D patches).

    Args:
        cases: prepared training cases (at least one with an annotated voxel).
        config: uses ``dims``, ``batch_size``, ``foreground_ratio``, ``flip_axes``,
            ``lateral_axis`` and ``mirror_pairs`` (a flip along the lateral axis swaps the paired
            labels), ``context_slices``, ``spatial_augmentation``, ``intensity_augmentation``.
        n_classes: output classes with background (ignore value ``n_classes``).
        patch_size: resolved patch (2 sizes for 2D in the order of the in-plane axes, 3 for 3D).
        slice_axis: the array axis 2D slices are taken along (unused for 3D).
        seed: seeds the generator (its state is `state` / `set_state`).
    """

    def __init__(
        self,
        cases: Sequence[PreparedCase],
        config: TrainConfig,
        *,
        n_classes: int,
        patch_size: Sequence[int],
        slice_axis: int,
        seed: int,
    ) -> None:
        self.cases = [c for c in cases if c.annotated_fraction > 0]
        if not self.cases:
            msg = (
                "no training case has an annotated voxel: label some voxels (all are ignore or no case given)"
            )
            raise LabelValueError(msg)
        self.config = config
        self.n_classes = n_classes
        self.patch_size = tuple(int(s) for s in patch_size)
        self.slice_axis = slice_axis
        self.rng = np.random.default_rng(seed)
        self.plane_axes = tuple(a for a in range(3) if a != slice_axis) if config.dims == 2 else (0, 1, 2)
        self.flip_dims = tuple(
            self.plane_axes.index(a) for a in config.flip_axes if a in self.plane_axes
        )  # positions within the patch's spatial dims
        lateral = config.lateral_axis
        self.lateral_dim = self.plane_axes.index(lateral) if lateral in self.plane_axes else None
        self.swap = swap_table(n_classes + 1, config.mirror_pairs) if config.mirror_pairs else None
        self.channels = config.in_channels
        self.rotation_plane = (0, 1) if config.dims == 2 else tuple(a for a in range(3) if a != slice_axis)

    @property
    def state(self) -> dict:
        """The generator state (plain data, for checkpoints)."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        """Restore a generator state from `state`."""
        self.rng.bit_generator.state = state

    def _centre(self, prepared: PreparedCase) -> tuple[int, int, int]:
        """A voxel to centre the sample on: foreground (by class) or any annotated voxel."""
        rng = self.rng
        shape = prepared.case.image.shape
        if prepared.foreground and rng.random() < self.config.foreground_ratio:
            classes = sorted(prepared.foreground)
            positions = prepared.foreground[classes[int(rng.integers(len(classes)))]]
            flat = int(positions[int(rng.integers(positions.size))])
        elif prepared.annotated is not None:
            flat = int(prepared.annotated[int(rng.integers(prepared.annotated.size))])
        else:
            flat = int(rng.integers(int(np.prod(shape))))
        return tuple(int(v) for v in np.unravel_index(flat, shape))  # type: ignore[return-value]

    def _window(self, centre: int, size: int, extent: int) -> int:
        """Start of a window of ``size`` that holds ``centre`` at a random position (kept in bounds)."""
        start = centre - int(self.rng.integers(size))
        return min(max(start, 0), max(extent - size, 0)) if extent >= size else (extent - size) // 2

    def _placement(self, prepared: PreparedCase, centre: tuple[int, int, int]) -> tuple[tuple, tuple]:
        """Where the patch around ``centre`` comes from in the case and goes to in the patch."""
        source, target = [], []
        for axis in range(3):
            if self.config.dims == 2 and axis == self.slice_axis:
                source.append(centre[axis])
                continue
            size = self.patch_size[self.plane_axes.index(axis)]
            extent = prepared.case.image.shape[axis]
            start = self._window(centre[axis], size, extent)
            lo, hi = max(start, 0), min(start + size, extent)
            source.append(slice(lo, hi))
            target.append(slice(lo - start, hi - start))
        return tuple(source), tuple(target)

    def _extract(
        self,
        prepared: PreparedCase,
        placement: tuple[tuple, tuple],
        image_out: np.ndarray,
        label_out: np.ndarray,
    ) -> None:
        """Copy the placed patch into the buffers (padding: the case's pad value, ignore).

        ``image_out`` is ``(C, *patch)``: with context slices (2D), channel ``c`` holds slice
        ``centre + c - k`` (clamped to the volume), read in one block of planes.
        """
        source, target = placement
        image_out.fill(prepared.intensity.pad_value)
        label_out.fill(self.n_classes)
        label_out[target] = prepared.case.labels[source]  # type: ignore[index]
        if self.channels == 1:
            image_out[0][target] = prepared.case.image[source]
            return
        axis, extent = self.slice_axis, prepared.case.image.shape[self.slice_axis]
        indices = context_indices(source[axis], self.config.context_slices, extent)
        low = int(indices[0])
        block = (*source[:axis], slice(low, int(indices[-1]) + 1), *source[axis + 1 :])
        planes = np.moveaxis(prepared.case.image[block], axis, 0)  # (planes, *in-plane)
        image_out[(slice(None), *target)] = planes[indices - low]

    def sample(self, part: tuple[int, int] = (0, 1)) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch, or part ``(rank, parts)`` of it (a process of a distributed run).

        Every part draws the random numbers of the whole batch (``config.batch_size`` samples), so
        the generators of all parts stay equal and the parts of one call, concatenated in rank
        order, are the batch one process would draw; only the part's own samples are read.

        Returns:
            ``images``: ``(b, C, *patch)`` float32, normalised (``C = 2 * context_slices + 1``);
            ``labels``: ``(b, *patch)`` int64 with ignored voxels (and padding) = ``n_classes``;
            ``b = batch_size / parts``.
        """
        rank, parts = part
        batch = self.config.batch_size
        share = batch // parts
        mine = range(rank * share, (rank + 1) * share)
        images = np.empty((share, self.channels, *self.patch_size), dtype=np.float32)
        labels = np.empty((share, *self.patch_size), dtype=np.uint8 if self.n_classes <= 255 else np.int32)
        params = np.empty((4, share), dtype=np.float64)
        pads = np.empty(share, dtype=np.float64)
        for b in range(batch):
            prepared = self.cases[int(self.rng.integers(len(self.cases)))]
            placement = self._placement(prepared, self._centre(prepared))
            flips = [dim for dim in self.flip_dims if self.rng.random() < 0.5]
            if b not in mine:
                continue
            i = b - mine.start
            self._extract(prepared, placement, images[i], labels[i])
            p = prepared.intensity
            params[:, i] = (p.low, p.high, p.shift, p.scale)
            pads[i] = p.pad_value
            for dim in flips:
                images[i] = np.flip(images[i], dim + 1).copy()
                labels[i] = np.flip(labels[i], dim).copy()
            if self.swap is not None and self.lateral_dim in flips:
                labels[i] = self.swap[labels[i]]
        tensor = normalize_intensity(torch.from_numpy(images), *(torch.from_numpy(row) for row in params))
        label_tensor = torch.from_numpy(labels).long()
        if self.config.spatial_augmentation > 0:
            tensor, label_tensor = self._spatial(tensor, label_tensor, params, pads, mine)
        if self.config.intensity_augmentation:
            scale = self.rng.uniform(0.9, 1.1, batch).astype(np.float32)[mine.start : mine.stop]
            shift = self.rng.uniform(-0.1, 0.1, batch).astype(np.float32)[mine.start : mine.stop]
            shape = (-1,) + (1,) * (tensor.ndim - 1)
            tensor.mul_(torch.from_numpy(scale).reshape(shape)).add_(torch.from_numpy(shift).reshape(shape))
        return tensor, label_tensor

    def _spatial(
        self, images: torch.Tensor, labels: torch.Tensor, params: np.ndarray, pads: np.ndarray, mine: range
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate and scale a random share of the batch (draws for the whole batch, as `sample`)."""
        batch = self.config.batch_size
        chosen = self.rng.random(batch) < self.config.spatial_augmentation
        angles = self.rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES, batch)
        scales = self.rng.uniform(*SCALE_RANGE, batch)
        picked = np.flatnonzero(chosen[mine.start : mine.stop])
        if not picked.size:
            return images, labels
        low, high, shift, scale = params[:, picked]
        normalised_pads = (np.clip(pads[picked], low, high) - shift) * scale
        index = torch.from_numpy(picked)
        moved_images, moved_labels = spatial_transform(
            images[index],
            labels[index],
            angles[mine.start : mine.stop][picked],
            scales[mine.start : mine.stop][picked],
            pad_values=torch.from_numpy(normalised_pads),
            ignore_index=self.n_classes,
            plane=self.rotation_plane,  # type: ignore[arg-type]
        )
        images[index], labels[index] = moved_images, moved_labels
        return images, labels
