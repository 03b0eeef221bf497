"""Connected components (islands) of masks and label maps, through connected-components-3d."""

from __future__ import annotations

from collections.abc import Sequence

import cc3d
import numpy as np
from scipy import ndimage

from segloop.core.geometry import bounding_box
from segloop.errors import InvalidInputError

__all__ = [
    "keep_components_at",
    "keep_largest_component",
    "label_components",
    "remove_small_components",
]

_CONNECTIVITY = {3: (6, 18, 26), 2: (4, 8)}
_TINY_VOXELS = 64


def _check_connectivity(mask: np.ndarray, connectivity: int) -> None:
    allowed = _CONNECTIVITY.get(mask.ndim, ())
    if connectivity not in allowed:
        msg = f"connectivity {connectivity} is not valid for a {mask.ndim}D mask: expected one of {allowed}"
        raise InvalidInputError(msg)


def label_components(mask: np.ndarray, *, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Number the connected components of a mask.

    Args:
        mask: ``(I, J, K)`` bool mask.
        connectivity: 6, 18 or 26 (4 or 8 in 2D).

    Returns:
        ``(components, n)``: uint32 array (0 background, 1..n components) and the count.

    Examples:
        >>> label_components(np.array([[[1, 0, 1]]], bool))[1]
        2
    """
    _check_connectivity(mask, connectivity)
    if mask.size < _TINY_VOXELS:
        # cc3d 4.1 mis-sizes its union-find on some tiny volumes (e.g. 1x1x3, 26-connected)
        rank = _CONNECTIVITY[mask.ndim].index(connectivity) + 1
        structure = ndimage.generate_binary_structure(mask.ndim, rank)
        components, count = ndimage.label(mask, structure=structure, output=np.uint32)
        return components, int(count)
    # cc3d 4.1 mislabels some 2D bool arrays (connectivity 8); a uint8 view of the same bytes is right
    data = mask.view(np.uint8) if mask.dtype == bool else mask
    components, count = cc3d.connected_components(data, connectivity=connectivity, return_N=True)
    return components, int(count)


def keep_largest_component(mask: np.ndarray, *, connectivity: int = 26) -> np.ndarray:
    """The largest connected component of ``mask`` (an empty mask stays empty).

    Examples:
        >>> keep_largest_component(np.array([[[1, 0, 1, 1]]], bool)).astype(int).tolist()
        [[[0, 0, 1, 1]]]
    """
    result = np.zeros(mask.shape, dtype=bool)
    box = bounding_box(mask)
    if box is None:
        return result
    crop = np.ascontiguousarray(mask[box], dtype=bool)
    components, count = label_components(crop, connectivity=connectivity)
    if count <= 1:
        result[box] = crop
        return result
    # count only foreground voxels: much less work than a bincount over the whole box
    sizes = np.bincount(components[crop], minlength=count + 1)
    result[box] = components == np.argmax(sizes)
    return result


def keep_components_at(
    mask: np.ndarray, points: Sequence[Sequence[int]], *, connectivity: int = 26
) -> np.ndarray:
    """The connected components of ``mask`` that hold the voxels ``points`` (each ``(i, j, k)``).

    Raises:
        InvalidInputError: a point lies outside the volume or on a False voxel.

    Examples:
        >>> keep_components_at(np.array([[[1, 0, 1, 0, 1]]], bool), [(0, 0, 2)]).astype(int).tolist()
        [[[0, 0, 1, 0, 0]]]
    """
    seeds = [tuple(int(p) for p in point) for point in points]
    for point in seeds:
        if len(point) != mask.ndim or any(not 0 <= p < n for p, n in zip(point, mask.shape, strict=True)):
            msg = f"seed point {point} lies outside the volume of shape {mask.shape}"
            raise InvalidInputError(msg)
        if not mask[point]:
            msg = f"seed point {point} is not inside the mask: expected a voxel of an island to keep"
            raise InvalidInputError(msg)
    components, _ = label_components(mask, connectivity=connectivity)
    return np.isin(components, [components[point] for point in seeds])


def remove_small_components(
    mask: np.ndarray, *, min_size_voxels: int = 1000, connectivity: int = 26
) -> np.ndarray:
    """``mask`` without components smaller than ``min_size_voxels`` (Slicer's default: 1000).

    Examples:
        >>> remove_small_components(np.array([[[1, 0, 1, 1]]], bool), min_size_voxels=2).astype(int).tolist()
        [[[0, 0, 1, 1]]]
    """
    if min_size_voxels < 0:
        msg = f"min_size_voxels must be >= 0; got {min_size_voxels}"
        raise InvalidInputError(msg)
    _check_connectivity(mask, connectivity)
    return cc3d.dust(
        np.ascontiguousarray(mask, dtype=bool), threshold=min_size_voxels, connectivity=connectivity
    )
