"""Synthetic CT-like phantoms with known truth, for tests, docs and the demo.

Everything here is clearly synthetic: an elliptic body of soft tissue in air, with ellipsoid
organs whose size and position vary per case. Intensities are in HU with smoothed noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

from segloop.core.geometry import affine_from_spacing
from segloop.core.volume import Volume

__all__ = ["PHANTOM_CLASSES", "SCRIBBLE_BACKGROUND", "Phantom", "make_ct_phantom", "make_scribbles"]

#: name, HU, centre (fractions of the grid), semi-axes (fractions of the grid)
_ORGANS = (
    ("liver", 60, (0.35, 0.45, 0.55), (0.18, 0.16, 0.22)),
    ("spleen", 45, (0.70, 0.55, 0.55), (0.08, 0.10, 0.14)),
    ("kidney_left", 150, (0.66, 0.66, 0.40), (0.06, 0.07, 0.12)),
    ("kidney_right", 150, (0.34, 0.66, 0.40), (0.06, 0.07, 0.12)),
)
PHANTOM_CLASSES = tuple(organ[0] for organ in _ORGANS)
#: Label value of background scribbles made by `make_scribbles`.
SCRIBBLE_BACKGROUND = 255


@dataclass(frozen=True)
class Phantom:
    """A synthetic case: a CT-like image (int16 HU) and its exact labels (uint8, 1..4)."""

    image: Volume
    labels: Volume


def _ellipsoid(grid: tuple[np.ndarray, ...], centre: np.ndarray, axes: np.ndarray) -> np.ndarray:
    return sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, axes, strict=True)) <= 1.0


def make_ct_phantom(
    shape: tuple[int, int, int] = (64, 64, 48),
    spacing_mm: tuple[float, float, float] = (1.5, 1.5, 3.0),
    *,
    seed: int = 0,
    noise_hu: float = 20.0,
) -> Phantom:
    """A CT-like phantom with four ellipsoid organs (`PHANTOM_CLASSES`, values 1..4).

    Args:
        shape: grid ``(I, J, K)``.
        spacing_mm: voxel size in mm.
        seed: varies organ positions and sizes (±8 %) and the noise.
        noise_hu: standard deviation of the smoothed noise, in HU.

    Returns:
        The `Phantom`; both volumes share one diagonal affine.

    Examples:
        >>> p = make_ct_phantom((16, 16, 8), seed=1)
        >>> p.image.array.dtype.name, sorted(set(p.labels.array.ravel().tolist()))
        ('int16', [0, 1, 2, 3, 4])
    """
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*(np.linspace(0, 1, n) for n in shape), indexing="ij")
    image = np.full(shape, -1000.0)
    body = _ellipsoid(grid[:2], np.array([0.5, 0.5]), np.array([0.45, 0.38]))
    image[body] = 20.0
    labels = np.zeros(shape, dtype=np.uint8)
    for value, (_, hu, centre, axes) in enumerate(_ORGANS, start=1):
        jitter_centre = np.array(centre) + rng.uniform(-0.03, 0.03, 3)
        jitter_axes = np.array(axes) * rng.uniform(0.92, 1.08, 3)
        mask = _ellipsoid(grid, jitter_centre, jitter_axes) & body
        image[mask] = hu
        labels[mask] = value
    noise = ndimage.gaussian_filter(rng.normal(0.0, 1.0, shape), 0.7)
    image += noise / max(noise.std(), 1e-6) * noise_hu
    affine = affine_from_spacing(spacing_mm)
    return Phantom(
        Volume(np.clip(image, -1024, 3071).astype(np.int16), affine, {"synthetic": True}),
        Volume(labels, affine.copy(), {"synthetic": True}),
    )


def make_scribbles(
    labels: np.ndarray,
    spacing_mm: tuple[float, float, float],
    *,
    slices: int = 3,
    erode_mm: float = 3.0,
    ring_mm: tuple[float, float] = (6.0, 8.0),
    shell: bool = False,
    background: int = SCRIBBLE_BACKGROUND,
) -> np.ndarray:
    """Seeds a user might paint on axial (axis 2) slices, made from reference labels.

    Per class: on ``slices`` slices spread over 20-80 % of its extent, the skeleton of the class
    eroded by up to ``erode_mm`` plus a cross through the eroded part's centre. Background
    (value ``background``): a ring ``ring_mm`` away from all classes on those slices, or, with ``shell``,
    a 3D shell at that distance on every slice.
    """
    seeds = np.zeros(labels.shape, np.uint8 if background <= 255 else np.uint16)
    in_plane = spacing_mm[:2]
    organs = labels > 0
    for value in (int(v) for v in np.unique(labels) if v):
        mask = labels == value
        present = np.flatnonzero(mask.any(axis=(0, 1)))
        picks = {int(present[round(f * (len(present) - 1))]) for f in np.linspace(0.2, 0.8, slices)}
        for k in sorted(picks):
            depth = ndimage.distance_transform_edt(mask[:, :, k], sampling=in_plane)
            eroded = depth > min(erode_mm, 0.6 * depth.max())
            stroke = skeletonize(eroded) if eroded.sum() > 2 else eroded.copy()
            ci, cj = (round(c) for c in np.argwhere(eroded).mean(axis=0))
            stroke[ci, :] |= eroded[ci, :]
            stroke[:, cj] |= eroded[:, cj]
            seeds[:, :, k][stroke] = value
            if not shell:
                away = ndimage.distance_transform_edt(~organs[:, :, k], sampling=in_plane)
                ring = (away > ring_mm[0]) & (away <= ring_mm[1]) & (seeds[:, :, k] == 0)
                seeds[:, :, k][ring] = background
    if shell:
        away = ndimage.distance_transform_edt(~organs, sampling=spacing_mm)
        seeds[(away > ring_mm[0]) & (away <= ring_mm[1]) & (seeds == 0)] = background
    return seeds
