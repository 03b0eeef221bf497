"""Surface meshes and masks: marching cubes out, exact ray-parity scan conversion back.

Both directions work in RAS+ millimetres through the image's 4x4 ``affine`` (voxel index -> mm), so
oblique and anisotropic grids come out in the right place.

`mask_to_mesh` runs marching cubes (scikit-image) at level 0.5 on the mask cropped to its bounding
box plus one voxel of background, maps the vertices through the affine and optionally smooths them
with a Taubin filter (which barely shrinks). Faces are wound so that normals point out of the mask.

`mesh_to_mask` is the inverse: a voxel is inside when its centre is inside the closed surface. Rays
run along one voxel axis through the voxel centres (the axis that needs the fewest ray/triangle
tests); each ray's crossings with the triangles are found in one vectorised pass and the voxels
between the 1st and 2nd, 3rd and 4th, ... crossing are set. Rays that hit a vertex or an edge
exactly (they always do on marching-cubes meshes, whose vertices sit on the lines between voxel
centres) are handled exactly: the projected vertex coordinates are snapped to a binary grid fine
enough (2**-14 voxel for a 512 grid) that the point-in-triangle signs are computed without rounding,
and an exact zero is broken by a fixed symbolic shift of the ray (simulation of simplicity). Every
ray therefore crosses a closed surface an even number of times, and a mask survives
``mask_to_mesh(smoothing_iterations=0)`` → ``mesh_to_mask`` unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse
from skimage.measure import marching_cubes

from segloop.errors import GeometryMismatchError, InvalidInputError

__all__ = ["mask_to_mesh", "mesh_to_mask"]

#: Ray/triangle candidate pairs handled per vectorised block (bounds the temporary memory).
_CANDIDATES_PER_BLOCK = 4_000_000
#: Taubin filter weights: shrink by lambda, inflate by mu; pass band 1/lambda - 1/mu ≈ 0.11.
_TAUBIN_LAMBDA = 0.5
_TAUBIN_MU = 0.53


def _check_affine(affine: np.ndarray) -> np.ndarray:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        msg = f"affine must be a finite (4, 4) voxel-to-RAS matrix; got shape {affine.shape}"
        raise GeometryMismatchError(msg)
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        msg = f"affine must be invertible; got {np.round(affine, 4).tolist()}"
        raise GeometryMismatchError(msg)
    return affine


def _check_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.all(np.isfinite(vertices)):
        msg = f"vertices must be a finite (N, 3) array of RAS mm; got shape {vertices.shape}"
        raise InvalidInputError(msg)
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0 or faces.dtype.kind not in "iu":
        msg = f"faces must be a non-empty (M, 3) integer index array; got {faces.dtype} {faces.shape}"
        raise InvalidInputError(msg)
    if faces.min() < 0 or faces.max() >= len(vertices):
        msg = f"faces index vertices 0..{len(vertices) - 1}; got indices {faces.min()}..{faces.max()}"
        raise InvalidInputError(msg)
    return vertices, faces.astype(np.int64, copy=False)


def _edges_even(faces: np.ndarray, n_vertices: int) -> bool:
    """True when every undirected edge belongs to an even number of triangles (2, or 4 at a pinch)."""
    first = np.concatenate((faces[:, 0], faces[:, 1], faces[:, 2]))
    second = np.concatenate((faces[:, 1], faces[:, 2], faces[:, 0]))
    keys = np.sort(np.minimum(first, second) * n_vertices + np.maximum(first, second))
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1], [True])))
    return bool(np.all(np.diff(starts) % 2 == 0))


def _is_closed(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """Closed (each edge in an even number of triangles), after merging vertices at the same position."""
    if _edges_even(faces, len(vertices)):
        return True
    _, inverse = np.unique(vertices, axis=0, return_inverse=True)  # a triangle soup, as STL stores
    return _edges_even(inverse.reshape(-1)[faces], len(vertices))


def _snap(coordinates: np.ndarray, magnitude: float) -> np.ndarray:
    """Round to a binary grid fine enough that 2D orientation tests on these values are exact.

    With ``|x| <= magnitude < 2**(D - 1)`` on a grid of ``2**-q`` and ``D + q = 25``, a difference
    of two values is a multiple of ``2**-q`` below ``2**D``, a product of two differences needs at
    most 50 bits and ``(b - a) x (p - a)`` is computed without rounding.
    """
    bits = int(np.ceil(np.log2(2.0 * magnitude + 2.0)))
    scale = 2.0 ** (25 - bits)
    return np.round(coordinates * scale) / scale


def _sign_with_ties(edge: np.ndarray, tie_u: np.ndarray, tie_w: np.ndarray) -> np.ndarray:
    """Sign of an edge function at a ray shifted by (eps, eps**2): the exact value, else its slopes."""
    sign = np.sign(edge)
    zero = sign == 0
    if zero.any():
        sign[zero] = np.where(tie_u[zero] != 0, np.sign(tie_u[zero]), np.sign(tie_w[zero]))
    return sign


Corners = tuple[np.ndarray, np.ndarray, np.ndarray]


def _ray_range(corners: Corners, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per triangle: the first grid line at or after its lowest corner and how many lines it spans."""
    low = np.maximum(np.ceil(np.minimum(np.minimum(corners[0], corners[1]), corners[2])), 0)
    high = np.minimum(np.floor(np.maximum(np.maximum(corners[0], corners[1]), corners[2])), size - 1)
    return low.astype(np.int64), np.maximum(high - low + 1, 0).astype(np.int64)


def _ray_crossings(u: Corners, w: Corners, depth: Corners, shape: tuple[int, int, int]) -> np.ndarray:
    """Sorted keys ``ray * (size_depth + 1) + first voxel index after the crossing`` of all crossings.

    ``u``, ``w``, ``depth`` hold the three corners' coordinates (voxel units) of every triangle
    along the two axes across the rays (exactly snapped) and along the rays; ``shape`` is the grid
    in that order. Rays pass through the integer points ``(u, w)`` of the grid.
    """
    area = (u[1] - u[0]) * (w[2] - w[0]) - (w[1] - w[0]) * (u[2] - u[0])  # exact
    low_u, count_u = _ray_range(u, shape[0])
    low_w, count_w = _ray_range(w, shape[1])
    count = np.where(area != 0, count_u * count_w, 0)  # flat in projection: never crossed
    crossed = np.flatnonzero(count)
    if len(crossed) == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(count[crossed])
    cuts = np.unique(np.searchsorted(ends, np.arange(_CANDIDATES_PER_BLOCK, ends[-1], _CANDIDATES_PER_BLOCK)))
    keys = []
    for block in np.split(crossed, cuts):
        per_triangle = count[block]
        triangle = np.repeat(block, per_triangle)
        first = np.cumsum(per_triangle) - per_triangle
        local = np.arange(len(triangle)) - np.repeat(first, per_triangle)
        ray_u = low_u[triangle] + local // count_w[triangle]
        ray_w = low_w[triangle] + local % count_w[triangle]
        tu, tw = [c[triangle] for c in u], [c[triangle] for c in w]
        pu, pw = ray_u.astype(np.float64), ray_w.astype(np.float64)
        # Exact edge functions of the edges opposite corners 0, 1, 2 at the ray, signs with ties broken.
        signs, weights = [], []
        for start, end in ((1, 2), (2, 0), (0, 1)):
            du, dw = tu[end] - tu[start], tw[end] - tw[start]
            edge = du * (pw - tw[start]) - dw * (pu - tu[start])
            signs.append(_sign_with_ties(edge, -dw, du))
            weights.append(edge)
        hit = np.flatnonzero((signs[0] == signs[1]) & (signs[1] == signs[2]))
        hit_triangle = triangle[hit]
        weights = [weight[hit] for weight in weights]
        crossing = sum(weight * d[hit_triangle] for weight, d in zip(weights, depth, strict=True))
        crossing /= weights[0] + weights[1] + weights[2]
        after = np.clip(np.ceil(np.clip(crossing, -1.0, shape[2] + 1.0)), 0, shape[2]).astype(np.int64)
        keys.append((ray_u[hit] * shape[1] + ray_w[hit]) * (shape[2] + 1) + after)
    return np.sort(np.concatenate(keys))


def _fill_intervals(keys: np.ndarray, shape: tuple[int, int, int], axis: int) -> np.ndarray:
    """Set the voxels between consecutive crossing pairs of each ray."""
    size_depth = shape[axis]
    ray, after = np.divmod(keys, size_depth + 1)
    if len(keys) % 2 or np.any(ray[0::2] != ray[1::2]):
        # An odd number of crossings on some ray: impossible for a closed mesh in exact arithmetic
        # (a mesh far outside the exact range may cause it); drop those rays' crossings.
        boundaries = np.flatnonzero(np.diff(ray)) + 1
        starts = np.concatenate(([0], boundaries))
        lengths = np.diff(np.concatenate((starts, [len(ray)])))
        keep = np.repeat(lengths % 2 == 0, lengths)
        ray, after = ray[keep], after[keep]
    mask = np.zeros(shape, dtype=bool)
    begin, end, ray = after[0::2], after[1::2], ray[0::2]
    lengths = end - begin
    if lengths.sum() == 0:
        return mask
    other = [a for a in range(3) if a != axis]
    strides = np.array([shape[1] * shape[2], shape[2], 1], dtype=np.int64)
    ray_u, ray_w = np.divmod(ray, shape[other[1]])
    base = ray_u * strides[other[0]] + ray_w * strides[other[1]] + begin * strides[axis]
    first = np.cumsum(lengths) - lengths
    step = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(first, lengths)
    mask.reshape(-1)[np.repeat(base, lengths) + step * strides[axis]] = True
    return mask


def mesh_to_mask(
    vertices: np.ndarray, faces: np.ndarray, shape: Sequence[int], affine: np.ndarray
) -> np.ndarray:
    """Voxelise a closed surface onto an image grid: True where a voxel centre lies inside.

    Parts of the mesh outside the grid are clipped. A surface lying between voxel centres (thinner
    than a voxel) may set no voxel. Self-intersecting or nested surfaces follow the even-odd rule
    (a cavity inside a closed shell stays empty).

    Args:
        vertices: ``(N, 3)`` float vertex positions in RAS+ mm.
        faces: ``(M, 3)`` integer vertex indices of the triangles; the surface must be closed:
            every edge in an even number of triangles (two on a watertight manifold; four where
            marching cubes pinches two parts together), after merging vertices at equal positions.
        shape: grid shape ``(I, J, K)``.
        affine: ``(4, 4)`` map from voxel indices to RAS+ mm.

    Returns:
        ``(I, J, K)`` bool mask, a new array.

    Raises:
        InvalidInputError: malformed arrays, or a mesh that is not closed.
        GeometryMismatchError: a bad affine or shape, or a mesh lying entirely outside the grid.

    Examples:
        >>> mask = np.zeros((6, 5, 4), bool); mask[1:5, 1:3, 2] = True
        >>> affine = np.array([[0, 0, 2.5, 10], [0.8, 0, 0, -5], [0, -0.8, 0, 3], [0, 0, 0, 1]])
        >>> vertices, faces = mask_to_mesh(mask, affine)
        >>> bool(np.array_equal(mesh_to_mask(vertices, faces, mask.shape, affine), mask))
        True
    """
    affine = _check_affine(affine)
    vertices, faces = _check_mesh(vertices, faces)
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 1:
        msg = f"shape must be three positive sizes (I, J, K); got {shape}"
        raise GeometryMismatchError(msg)
    if not _is_closed(vertices, faces):
        msg = (
            f"mesh of {len(faces)} triangles is not closed (some edge belongs to an odd number of"
            " triangles): expected a watertight surface; fill its holes first (e.g. trimesh fill_holes)"
        )
        raise InvalidInputError(msg)
    voxel = vertices @ np.linalg.inv(affine)[:3, :3].T + np.linalg.solve(affine, [0, 0, 0, 1.0])[:3]
    low, high = voxel.min(axis=0), voxel.max(axis=0)
    if np.any(high < -0.5) or np.any(low > np.array(shape) - 0.5):
        msg = (
            f"mesh spans voxel indices {np.round(low, 1).tolist()}..{np.round(high, 1).tolist()},"
            f" entirely outside the image grid {shape}: expected a mesh in the image's RAS mm space"
        )
        raise GeometryMismatchError(msg)
    voxel = _snap(voxel, max(float(np.abs(voxel).max()), float(max(shape))))
    corners = [tuple(voxel[faces[:, corner], axis] for corner in range(3)) for axis in range(3)]
    ranges = [_ray_range(corners[axis], shape[axis])[1] for axis in range(3)]
    # Ray/triangle tests along each axis: the triangles' bounding boxes across it (fewest wins).
    work = [float(np.dot(ranges[(a + 1) % 3], ranges[(a + 2) % 3])) for a in range(3)]
    axis = int(2 - np.argmin(work[::-1]))  # ties: the last axis, whose voxels are contiguous
    across = [a for a in range(3) if a != axis]
    keys = _ray_crossings(
        corners[across[0]], corners[across[1]], corners[axis], (*(shape[a] for a in across), shape[axis])
    )
    return _fill_intervals(keys, shape, axis)


def _smooth_taubin(vertices: np.ndarray, faces: np.ndarray, iterations: int) -> np.ndarray:
    """Taubin's lambda/mu smoothing with uniform neighbour weights (alternate shrink and inflate).

    Each triangle contributes its three directed edges; on a closed, consistently wound surface
    (marching cubes') every neighbour pair then appears once in each direction.
    """
    n = len(vertices)
    first = np.concatenate((faces[:, 0], faces[:, 1], faces[:, 2]))
    second = np.concatenate((faces[:, 1], faces[:, 2], faces[:, 0]))
    adjacency = sparse.csr_matrix((np.ones(len(first)), (first, second)), shape=(n, n))
    degree = np.maximum(np.bincount(first, minlength=n), 1).astype(np.float64)[:, None]
    smoothed = vertices.copy()
    for index in range(iterations):
        factor = _TAUBIN_LAMBDA if index % 2 == 0 else -_TAUBIN_MU
        smoothed += factor * ((adjacency @ smoothed) / degree - smoothed)
    return smoothed


def mask_to_mesh(
    mask: np.ndarray, affine: np.ndarray, *, smoothing_iterations: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """A closed triangle surface around a mask, in RAS+ mm (marching cubes at level 0.5).

    The surface passes half-way between inside and outside voxel centres, so ``mesh_to_mask`` of
    the unsmoothed mesh gives the mask back exactly. Smoothing (Taubin, lambda 0.5 / mu 0.53)
    removes the voxel staircase and moves the surface by a fraction of a voxel; structures one
    voxel thin may then lose voxels on the way back: pass ``smoothing_iterations=0`` for an exact
    round trip.

    Args:
        mask: ``(I, J, K)`` array; nonzero voxels are inside.
        affine: ``(4, 4)`` map from voxel indices to RAS+ mm.
        smoothing_iterations: Taubin filter passes (0: none).

    Returns:
        ``(vertices, faces)``: ``(N, 3)`` float64 RAS mm and ``(M, 3)`` int64, wound so that normals
        point outwards. The surface is closed; where two parts of the mask touch along a voxel
        edge only, marching cubes joins them with an edge shared by four triangles (not a
        manifold there, so trimesh's ``is_watertight`` is False for such meshes).

    Raises:
        InvalidInputError: an empty mask or a mask that is not 3D.
        GeometryMismatchError: a bad affine.

    Examples:
        >>> mask = np.zeros((5, 5, 5), bool); mask[1:4, 1:4, 1:4] = True
        >>> vertices, faces = mask_to_mesh(mask, np.diag([2.0, 2.0, 2.0, 1.0]), smoothing_iterations=0)
        >>> vertices.min(axis=0).tolist(), vertices.max(axis=0).tolist(), faces.dtype.name
        ([1.0, 1.0, 1.0], [7.0, 7.0, 7.0], 'int64')
    """
    affine = _check_affine(affine)
    mask = np.asarray(mask)
    if mask.ndim != 3:
        msg = f"mask must be a 3D (I, J, K) array; got shape {mask.shape}"
        raise InvalidInputError(msg)
    if smoothing_iterations < 0:
        msg = f"smoothing_iterations must be >= 0; got {smoothing_iterations}"
        raise InvalidInputError(msg)
    plane = mask.any(axis=2)
    rows, columns = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    if len(rows) == 0:
        msg = f"mask of shape {mask.shape} is empty: expected at least one nonzero voxel to mesh"
        raise InvalidInputError(msg)
    slices = np.flatnonzero(mask[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1].any(axis=(0, 1)))
    low = np.array([rows[0], columns[0], slices[0]])
    high = np.array([rows[-1], columns[-1], slices[-1]]) + 1
    crop = np.zeros(tuple(high - low + 2), dtype=np.float32)
    crop[1:-1, 1:-1, 1:-1] = mask[low[0] : high[0], low[1] : high[1], low[2] : high[2]] != 0
    voxel, faces, _, _ = marching_cubes(crop, level=0.5)
    faces = faces[:, ::-1].astype(np.int64)  # scikit-image winds them inwards for bright objects
    voxel = voxel.astype(np.float64) + (low - 1)
    if smoothing_iterations:
        # The uniform-weight Laplacian commutes with linear maps: smoothing in voxel space is the same.
        voxel = _smooth_taubin(voxel, faces, smoothing_iterations)
    vertices = voxel @ affine[:3, :3].T + affine[:3, 3]
    if np.linalg.det(affine[:3, :3]) < 0:  # a mirroring affine turns the surface inside out
        faces = faces[:, ::-1]
    return vertices, np.ascontiguousarray(faces)
