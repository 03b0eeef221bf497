"""Meshes: mask -> surface -> STL and STL -> surface -> mask, segloop vs scikit-image + trimesh.

On the 512x512x128 phantom labels (0.8 x 0.8 x 2.5 mm), all organs as one mask and the liver alone:

- mask -> mesh -> binary STL on disk: segloop's `mask_to_mesh` (marching cubes on the bounding-box
  crop, Taubin smoothing) + `write_mesh` (LPS + marker, atomic, fsync) vs the plain recipe:
  scikit-image marching cubes on the whole grid + trimesh's binary STL export. Target <= 0.3 s.
- mesh -> mask: segloop's ray-parity `mesh_to_mask` vs trimesh ``voxelized(pitch).fill()`` on the
  same mesh (the one read back from the STL). trimesh voxelises in its own axis-aligned grid, so it
  is given the mesh in voxel-index coordinates with pitch 1 (its grid then coincides with the image
  grid) and its matrix is placed onto the image grid for the Dice; only the voxelisation is timed.
  Target >= 3x faster, round-trip Dice >= 0.99.

Ratios > 1 mean segloop is faster. Run from the repository root:

    .venv/bin/python benchmarks/segment_mesh.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import trimesh
from skimage.measure import marching_cubes

from segloop.io.mesh import Mesh, read_mesh, write_mesh
from segloop.metrics import dice
from segloop.segment.mesh import mask_to_mesh, mesh_to_mask
from segloop.synthetic import make_ct_phantom

SHAPE = (512, 512, 128)
SPACING_MM = (0.8, 0.8, 2.5)


def _median(action: Callable[[], object], repeats: int) -> tuple[float, object]:
    result = action()  # warm-up, and the result to score
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _row(operation, seconds, peer, peer_seconds, ours_dice=None, peer_dice=None, note=""):
    return {
        "operation": operation,
        "segloop_s": seconds,
        "peer": peer,
        "peer_s": peer_seconds,
        "ratio": peer_seconds / seconds if peer_seconds is not None else None,
        "segloop_dice": ours_dice,
        "peer_dice": peer_dice,
        "note": note,
    }


def _trimesh_fill(mesh: Mesh, affine: np.ndarray, shape: tuple[int, int, int], repeats: int):
    """trimesh ``voxelized(1).fill()`` in voxel-index space: (median seconds, mask on the image grid)."""
    inverse = np.linalg.inv(affine)
    voxel = mesh.vertices @ inverse[:3, :3].T + inverse[:3, 3]
    times, grid = [], None
    for _ in range(repeats + 1):  # a fresh Trimesh each time: nothing cached between runs
        surface = trimesh.Trimesh(voxel, mesh.faces, process=False)
        start = time.perf_counter()
        grid = surface.voxelized(pitch=1.0).fill()
        times.append(time.perf_counter() - start)
    matrix = np.asarray(grid.matrix, dtype=bool)
    offset = np.round(grid.transform[:3, 3]).astype(int)
    result = np.zeros(shape, dtype=bool)
    target = tuple(
        slice(max(o, 0), min(o + m, s)) for o, m, s in zip(offset, matrix.shape, shape, strict=True)
    )
    source = tuple(slice(t.start - o, t.stop - o) for t, o in zip(target, offset, strict=True))
    result[target] = matrix[source]
    return statistics.median(times[1:]), result


def _peer_mask_to_stl(mask: np.ndarray, affine: np.ndarray, path: Path) -> None:
    vertices, faces, _, _ = marching_cubes(mask.astype(np.float32), level=0.5)
    vertices = vertices @ affine[:3, :3].T + affine[:3, 3]
    path.write_bytes(trimesh.exchange.stl.export_stl(trimesh.Trimesh(vertices, faces, process=False)))


def _bench_mask(name: str, mask: np.ndarray, affine: np.ndarray, folder: Path, repeats: int) -> list[dict]:
    rows = []
    stl = folder / f"{name}.stl"
    peer_seconds, _ = _median(lambda: _peer_mask_to_stl(mask, affine, folder / f"{name}-peer.stl"), repeats)
    for iterations in (10, 0):

        def to_stl(iterations: int = iterations) -> None:
            vertices, faces = mask_to_mesh(mask, affine, smoothing_iterations=iterations)
            write_mesh(Mesh(vertices, faces), stl, overwrite=True)

        seconds, _ = _median(to_stl, repeats)
        surface = Mesh(*mask_to_mesh(mask, affine, smoothing_iterations=iterations))
        write_seconds, _ = _median(partial(write_mesh, surface, stl, overwrite=True), repeats)
        mesh = read_mesh(stl)
        round_trip = dice(mesh_to_mask(mesh.vertices, mesh.faces, mask.shape, affine), mask)
        rows.append(
            _row(
                f"mask -> mesh -> STL, {name}, smoothing {iterations}",
                seconds,
                "skimage marching_cubes (full grid) + trimesh STL export",
                peer_seconds,
                round_trip,
                None,
                f"{len(mesh.faces)} triangles, of which STL write {write_seconds:.3f} s (atomic, fsync);"
                " target <= 0.3 s; Dice: round trip",
            )
        )
    to_stl(10)
    mesh = read_mesh(stl)
    seconds, ours = _median(lambda: mesh_to_mask(mesh.vertices, mesh.faces, mask.shape, affine), repeats)
    theirs_seconds, theirs = _trimesh_fill(mesh, affine, mask.shape, repeats)
    rows.append(
        _row(
            f"mesh -> mask (STL read back), {name}",
            seconds,
            "trimesh voxelized(pitch=1).fill() in voxel space",
            theirs_seconds,
            dice(ours, mask),
            dice(theirs, mask),
            "target >= 3x, Dice >= 0.99 (vs the original mask)",
        )
    )
    return rows


def run(repeats: int = 3) -> list[dict]:
    phantom = make_ct_phantom(SHAPE, SPACING_MM, seed=0).labels
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, mask in (("all organs", phantom.array > 0), ("liver", phantom.array == 1)):
            rows += _bench_mask(name, mask, phantom.affine, Path(folder), repeats)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for row in run(args.repeats):
        ours = "-" if row["segloop_dice"] is None else f"{row['segloop_dice']:.4f}"
        theirs = "-" if row["peer_dice"] is None else f"{row['peer_dice']:.4f}"
        print(
            f"{row['operation']:<46} {row['segloop_s']:.3f} s vs {row['peer_s']:.3f} s {row['ratio']:5.1f}x"
            f"  Dice {ours} vs {theirs}  [{row['peer']}; {row['note']}]"
        )


if __name__ == "__main__":
    main()
