"""Grow from seeds and fast marching: segloop vs scikit-image's seeded watershed (and ITK's FastGrowCut).

Scribbles are made from the reference labels as a user would paint them: per organ, strokes on 3
axial slices (the skeleton of the organ eroded by up to 3 mm plus a cross through it), and a
background scribble away from all organs: a ring 6-8 mm out on those slices (phantom), or a 3D
shell 6-10 mm out (OpenKBP, whose small low-contrast organs need it).

- the CT-like phantom ``make_ct_phantom((256, 256, 128), (1.6, 1.6, 2.5))``, 4 organs at once;
- OpenKBP head-and-neck (128^3, 7 organs at once), per-organ Dice over ``--cases`` cases.

The peer is ``skimage.segmentation.watershed`` on ``sobel(gaussian(image, 1 voxel))`` with the same
seeds (the baseline of shared/research/perf-baselines.md, section 4); its time includes its
gradient, as segloop's does. Where ``itk-growcut`` is installed, ITK's FastGrowCut (the engine of
Slicer's *Grow from seeds*, run here on the whole image, without Slicer's crop) is a second peer
on the phantom. Fast marching is compared with the same scikit-fmm march run to the end.
Times are medians over ``repeats`` runs; ratios > 1 mean segloop is faster. Run from the
repository root:

    .venv/bin/python benchmarks/segment_grow.py [--repeats 3] [--data ../shared/data] [--cases 8]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.filters import sobel
from skimage.segmentation import watershed

from segloop.core.geometry import spacing_from_affine
from segloop.io import read_volume
from segloop.metrics import dice
from segloop.segment.grow import fast_marching, grow_from_seeds
from segloop.synthetic import PHANTOM_CLASSES, SCRIBBLE_BACKGROUND, make_ct_phantom, make_scribbles

PHANTOM_SHAPE = (256, 256, 128)
PHANTOM_SPACING_MM = (1.6, 1.6, 2.5)
OPENKBP_ORGANS = ["brainstem", "spinal_cord", "parotid_r", "parotid_l", "esophagus", "larynx", "mandible"]
BACKGROUND = SCRIBBLE_BACKGROUND
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def skimage_watershed(image: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The peer: scikit-image's seeded watershed on the Sobel gradient of the 1-voxel Gaussian."""
    return watershed(sobel(ndimage.gaussian_filter(image.astype(np.float32), 1.0)), seeds)


def itk_fast_grow_cut(image: np.ndarray, seeds: np.ndarray, spacing_mm: tuple) -> np.ndarray:
    """ITK's FastGrowCut (Slicer's Grow from seeds) on numpy ``(I, J, K)`` arrays."""
    import itk

    # itk.image_view_from_array reads numpy axes in reverse: hand it (K, J, I)
    itk_image = itk.image_view_from_array(np.ascontiguousarray(image.transpose(2, 1, 0)))
    itk_image.SetSpacing(spacing_mm)
    itk_seeds = itk.image_view_from_array(np.ascontiguousarray(seeds.transpose(2, 1, 0), np.uint8))
    itk_seeds.SetSpacing(spacing_mm)
    grow = itk.FastGrowCut[type(itk_image), type(itk_seeds)].New()
    grow.SetInput(itk_image)
    grow.SetSeedImage(itk_seeds)
    grow.SetDistancePenalty(0.0)
    grow.Update()
    return itk.array_from_image(grow.GetOutput()).transpose(2, 1, 0)


def _median_seconds(
    action: Callable[[], object], repeats: int, warm_up: bool = False
) -> tuple[float, object]:
    """Median wall time of ``action`` over ``repeats`` calls (after one untimed call if asked)."""
    result = action() if warm_up else None
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def organ_dice(grown: np.ndarray, labels: np.ndarray) -> list[float]:
    return [dice(grown == v, labels == v) for v in range(1, int(labels.max()) + 1)]


def _row(operation, seconds, peer, peer_seconds, ours_dice, peer_dice, note=""):
    return {
        "operation": operation,
        "segloop_s": seconds,
        "peer": peer,
        "peer_s": peer_seconds,
        "ratio": peer_seconds / seconds if seconds else float("nan"),
        "segloop_dice": ours_dice,
        "peer_dice": peer_dice,
        "note": note,
    }


def phantom_rows(repeats: int) -> list[dict]:
    phantom = make_ct_phantom(PHANTOM_SHAPE, PHANTOM_SPACING_MM, seed=0)
    image, labels = phantom.image.array, phantom.labels.array
    spacing = spacing_from_affine(phantom.image.affine)
    seeds = make_scribbles(labels, spacing)
    ours_s, ours = _median_seconds(lambda: grow_from_seeds(image, seeds, spacing_mm=spacing), repeats, True)
    peer_s, peer = _median_seconds(lambda: skimage_watershed(image, seeds), repeats)
    ours_dice, peer_dice = organ_dice(ours, labels), organ_dice(peer, labels)
    per_organ = ", ".join(
        f"{name} {a:.4f}/{b:.4f}" for name, a, b in zip(PHANTOM_CLASSES, ours_dice, peer_dice, strict=True)
    )
    counts = np.bincount(seeds.ravel(), minlength=BACKGROUND + 1)
    rows = [
        _row("grow_from_seeds phantom 256x256x128, 4 organs", ours_s, "skimage watershed", peer_s,
             float(np.mean(ours_dice)), float(np.mean(peer_dice)),
             f"Dice segloop/peer: {per_organ}; seed voxels organs {counts[1:5].tolist()},"
             f" background {counts[BACKGROUND]}")
    ]  # fmt: skip
    try:
        import itk  # noqa: F401
    except ImportError:
        rows.append(_row("grow_from_seeds phantom vs FastGrowCut", ours_s, "ITK FastGrowCut", float("nan"),
                         float(np.mean(ours_dice)), None, "itk-growcut is not installed"))  # fmt: skip
    else:
        itk_s, grown = _median_seconds(lambda: itk_fast_grow_cut(image, seeds, spacing), 1, True)
        itk_dice = organ_dice(grown, labels)
        rows.append(_row("grow_from_seeds phantom vs FastGrowCut", ours_s, "ITK FastGrowCut", itk_s,
                         float(np.mean(ours_dice)), float(np.mean(itk_dice)),
                         "Slicer's engine on the whole image (Slicer crops to the seeds' box + 20 %); Dice "
                         + ", ".join(f"{d:.4f}" for d in itk_dice)))  # fmt: skip

    liver = labels == 1
    fraction = float(liver.mean())
    fm_s, mask = _median_seconds(
        lambda: fast_marching(image, seeds == 1, spacing_mm=spacing, volume_fraction=fraction), repeats, True
    )
    full_s, full = _median_seconds(lambda: _fast_marching_to_the_end(image, seeds == 1, spacing, fraction), 1)
    rows.append(_row(f"fast_marching phantom liver, volume {fraction:.3%}", fm_s, "skfmm march to the end",
                     full_s, dice(mask, liver), dice(full, liver),
                     "the target volume is the true liver's; segloop stops the front early"))  # fmt: skip
    return rows


def _fast_marching_to_the_end(image, seed_mask, spacing, fraction) -> np.ndarray:
    """scikit-fmm with `fast_marching`'s documented speed and threshold, marching the whole image."""
    import skfmm

    smooth = ndimage.gaussian_filter(
        image.astype(np.float32), [min(spacing) / s for s in spacing], mode="nearest", truncate=2.5
    )
    inside = smooth[seed_mask]
    low, high = np.percentile(smooth[:: max(1, smooth.shape[0] // 32)], [1, 99])
    spread = max(float(inside.std()), 0.01 * float(high - low), 1e-6)
    speed = np.maximum(np.exp(-0.5 * ((smooth - inside.mean()) / (1.5 * spread)) ** 2), 1e-3)
    times = skfmm.travel_time(np.where(seed_mask, -1.0, 1.0), speed, dx=list(spacing), order=1)
    times = np.asarray(times, dtype=np.float64)
    times[seed_mask] = 0.0
    target = round(fraction * image.size)
    return (times <= np.partition(times.ravel(), target - 1)[target - 1]) | seed_mask


def openkbp_rows(folder: Path, repeats: int, cases: int) -> list[dict]:
    names = sorted(p.name.removesuffix("_0000.nii.gz") for p in (folder / "imagesTr").glob("*.nii.gz"))
    chosen = names[:: max(1, len(names) // cases)][:cases]
    ours_times, peer_times, ours_scores, peer_scores = [], [], [], []
    for case in chosen:
        volume = read_volume(folder / "imagesTr" / f"{case}_0000.nii.gz")
        labels = read_volume(folder / "labelsTr" / f"{case}.nii.gz").array
        image, spacing = volume.array, spacing_from_affine(volume.affine)
        seeds = make_scribbles(labels, spacing, ring_mm=(6.0, 10.0), shell=True)
        seconds, grown = _median_seconds(
            partial(grow_from_seeds, image, seeds, spacing_mm=spacing), repeats, True
        )
        ours_times.append(seconds)
        ours_scores.append(organ_dice(grown, labels))
        seconds, grown = _median_seconds(partial(skimage_watershed, image, seeds), repeats)
        peer_times.append(seconds)
        peer_scores.append(organ_dice(grown, labels))
    ours_scores, peer_scores = np.array(ours_scores), np.array(peer_scores)
    ours_s, peer_s = statistics.median(ours_times), statistics.median(peer_times)
    rows = [
        _row(f"grow_from_seeds OpenKBP 128^3, 7 organs, {len(chosen)} cases", ours_s, "skimage watershed",
             peer_s, float(ours_scores.mean()), float(peer_scores.mean()),
             "median time per case; Dice = mean over organs and cases; cases " + " ".join(chosen))
    ]  # fmt: skip
    for index, name in enumerate(OPENKBP_ORGANS):
        mine, theirs = ours_scores[:, index], peer_scores[:, index]
        note = f"min Dice segloop {mine.min():.3f}, peer {theirs.min():.3f}"
        rows.append(_row(f"  OpenKBP {name}", ours_s, "skimage watershed", peer_s, float(mine.mean()),
                         float(theirs.mean()), note))  # fmt: skip
    return rows


def run(repeats: int = 3, data: Path = DEFAULT_DATA, cases: int = 8) -> list[dict]:
    """All rows: the phantom (grow, FastGrowCut, fast marching), then OpenKBP when the data is there."""
    rows = phantom_rows(repeats)
    folder = Path(data) / "openkbp-headneck-ct"
    if folder.is_dir():
        rows += openkbp_rows(folder, repeats, cases)
    else:
        rows.append(_row("OpenKBP", float("nan"), "skimage watershed", float("nan"), None, None,
                         f"{folder} is absent"))  # fmt: skip
    return rows


def _format(value: object, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if np.isnan(value) else f"{value:.{digits}g}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cases", type=int, default=8, help="OpenKBP cases, evenly spaced (default 8)")
    arguments = parser.parse_args()
    rows = run(arguments.repeats, arguments.data, arguments.cases)
    header = ["operation", "segloop_s", "peer", "peer_s", "ratio", "segloop_dice", "peer_dice", "note"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(_format(row[key]) for key in header) + " |")


if __name__ == "__main__":
    main()
