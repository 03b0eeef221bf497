"""I/O benchmark: segloop vs nibabel and SimpleITK on a 512x512x128 int16 CT-like .nii.gz.

Also times `segloop add` of the 34 OpenKBP cases and `segloop --help` start-up. Every number is
measured in this run; ratios > 1 mean segloop is faster. Run from the repository root:

    .venv/bin/python benchmarks/io.py [--repeats 3] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from segloop.io import read_volume, write_volume
from segloop.loop.cases import import_cases, init_project
from segloop.synthetic import make_ct_phantom

SHAPE = (512, 512, 128)
SPACING_MM = (0.8, 0.8, 2.5)
OPENKBP_CLASSES = ["brainstem", "spinal_cord", "parotid_r", "parotid_l", "esophagus", "larynx", "mandible"]


def median_seconds(action: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    """Median wall time of ``action`` over ``repeats`` calls (after one warm-up call)."""
    if warmup:
        action()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_nifti(folder: Path, repeats: int) -> dict[str, float]:
    # Each library gets the layout it reads back: (I, J, K) Fortran order for NIfTI readers
    # (nibabel and segloop return that), SimpleITK its own image.
    phantom = make_ct_phantom(SHAPE, SPACING_MM, seed=0).image
    array, affine = np.asfortranarray(phantom.array), phantom.affine
    phantom = phantom.with_array(array)
    paths = {name: folder / f"{name}.nii.gz" for name in ("segloop", "nibabel", "sitk")}

    def write_segloop() -> None:
        write_volume(phantom, paths["segloop"], overwrite=True)

    def write_nibabel() -> None:
        nib.save(nib.Nifti1Image(array, affine), paths["nibabel"])

    sitk_image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    sitk_image.SetSpacing(SPACING_MM)

    def write_sitk() -> None:
        sitk.WriteImage(sitk_image, str(paths["sitk"]), useCompression=True)

    results = {
        "write segloop": median_seconds(write_segloop, repeats),
        "write nibabel": median_seconds(write_nibabel, repeats),
        "write SimpleITK": median_seconds(write_sitk, repeats),
        "read segloop": median_seconds(lambda: read_volume(paths["segloop"]).array, repeats),
        "read segloop, nibabel's file": median_seconds(lambda: read_volume(paths["nibabel"]).array, repeats),
        "read nibabel": median_seconds(lambda: np.asarray(nib.load(paths["nibabel"]).dataobj), repeats),
        "read SimpleITK": median_seconds(
            lambda: sitk.GetArrayFromImage(sitk.ReadImage(str(paths["sitk"]))), repeats
        ),
    }
    # segloop's files must open in the peers exactly
    assert np.array_equal(np.asarray(nib.load(paths["segloop"]).dataobj), array)
    assert np.array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(paths["segloop"]))), array.transpose(2, 1, 0)
    )
    for name, path in paths.items():
        results[f"size MiB {name}"] = path.stat().st_size / 2**20
    return results


def bench_add_openkbp(data: Path, folder: Path) -> float | None:
    openkbp = data / "openkbp-headneck-ct"
    if not openkbp.is_dir():
        return None
    project = init_project(folder / "kbp", OPENKBP_CLASSES)
    images = sorted((openkbp / "imagesTr").glob("*.nii.gz"))
    start = time.perf_counter()
    import_cases(project, images, labels_dir=openkbp / "labelsTr")
    return time.perf_counter() - start


def bench_help(repeats: int) -> float:
    command = [sys.executable, "-m", "segloop.cli.main", "--help"]
    return median_seconds(lambda: subprocess.run(command, capture_output=True, check=True), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        results = bench_nifti(Path(scratch), args.repeats)
        add_seconds = bench_add_openkbp(args.data, Path(scratch))
    help_seconds = bench_help(5)

    print(f"NIfTI .nii.gz, {'x'.join(map(str, SHAPE))} int16 CT-like phantom, median of {args.repeats}")
    print(f"{'operation':<30}{'seconds':>10}")
    for key, value in results.items():
        if not key.startswith("size"):
            print(f"{key:<30}{value:>10.3f}")
    print(
        "file sizes (MiB): "
        + ", ".join(f"{k[9:]} {v:.1f}" for k, v in results.items() if k.startswith("size"))
    )
    fastest_read = min(results["read nibabel"], results["read SimpleITK"])
    fastest_write = min(results["write nibabel"], results["write SimpleITK"])
    print(f"read:  segloop is {fastest_read / results['read segloop']:.2f}x the faster peer")
    print(f"write: segloop is {fastest_write / results['write segloop']:.2f}x the faster peer")
    foreign = fastest_read / results["read segloop, nibabel's file"]
    print(f"read of a single-stream gzip written elsewhere: segloop is {foreign:.2f}x the faster peer")
    if add_seconds is not None:
        print(f"segloop add, 34 OpenKBP cases with labels: {add_seconds:.2f} s")
    print(f"segloop --help start-up: {help_seconds:.3f} s")


if __name__ == "__main__":
    main()
