"""The learning engine on real data (OpenKBP head-and-neck CT), against plain MONAI, in one run.

Parts (each prints its numbers; ``--only`` picks some):

- ``train``: train on the 30 train-split cases for a time budget (default 10 min) and report 3D
  Dice per organ on the 4 validation-split cases; 2D and 3D; then the same with only 5 training
  cases. Each run is a subprocess, so its peak RSS is its own.
- ``memory``: peak RSS of loading N cases and running a few training steps, for N = 10 and 34
  (with the float32 size of those images for comparison). Cases are loaded as training loads
  them (`segloop.loop.training.collect_labeled_cases`): each compressed right after reading.
- ``throughput``: training slices/s through segloop's pipeline (compressed cases, sampler with
  decompression + normalisation + loss + AdamW) vs a plain PyTorch/MONAI loop (pre-normalised
  float32 slices in memory, MONAI's DiceCELoss, Adam) over the same network (the loop's UNet, or
  ``--network dynunet --deep-supervision 2`` for nnU-Net's); ratio = segloop / plain (target >= 0.95).
- ``predict``: seconds per volume of ``segloop.engine.infer.predict`` (probabilities, labels,
  entropy) vs plain MONAI producing the same outputs (``sliding_window_inference`` for 3D,
  ``SliceInferer`` for 2D) on the same model; ratio = MONAI / segloop (target >= 1.0).
- ``ablation`` (not in the default parts): the accuracy ideas of the 2D config, each trained for
  ``--minutes`` on ``--train-cases`` cases with every seed of ``--seeds`` (one subprocess a run,
  seeds outer, ideas inner, so drift of the machine's load hits every idea alike), scored on the
  4 validation cases by ``predict`` with the idea's TTA: a table of mean Dice (± half the range
  over seeds), its change vs the baseline of the same run, Dice per organ and samples/s.
  ``--ideas`` picks ideas (`IDEAS`); ``--config key=value`` (repeated; values JSON) adds one
  idea named ``custom`` (an `InferConfig` key such as ``tta_flips=[1]`` sets its prediction).
  Each row also scores post-processing (largest component per class, `score_checkpoint`).
  ``--table`` prints the tables of every row in ``OUT/ablation.jsonl`` (runs of several
  invocations); ``--rescore`` scores their checkpoints again first (e.g. after a scoring change).
- ``precision`` (not in the default parts): training steps/s of the 2D UNet in float32, bfloat16
  autocast and channels-last on the CPU (about 30 s).

Run from the repository root (the CPU load of the machine is printed with every part, since
other work on a shared machine slows every number down):

    .venv/bin/python benchmarks/engine.py [--only train,memory,throughput,predict] [--minutes 10]
    .venv/bin/python benchmarks/engine.py --only ablation --minutes 12 --seeds 0,1 [--ideas a,b]
    .venv/bin/python benchmarks/engine.py --only ablation --out OUT --table   # or --rescore
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# Two OpenMP threads that spin while waiting for each other collapse (5x slower, measured here)
# when another process takes a core; passive waiting avoids that. Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = REPO_ROOT.parent / "shared" / "data" / "openkbp-headneck-ct"
ORGANS = ("Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx", "Mandible")
N_CLASSES = len(ORGANS) + 1
# OpenKBP stores CT numbers as HU + 1024; soft-tissue window W400 / L40 HU in stored units.
WINDOW = (400.0, 40.0 + 1024.0)
PARTS = ("train", "memory", "throughput", "predict")
EXTRA_PARTS = ("ablation", "precision")
# OpenKBP's grids: array axis 1 runs right-left (RAS x; axis_of_plane(affine, "sagittal") == 1 for
# every case), axis 2 is axial. Parotids: 3 right, 4 left.
LATERAL_AXIS = 1
PAROTIDS = (3, 4)
_MIRROR = {"flip_axes": [LATERAL_AXIS], "lateral_axis": LATERAL_AXIS, "mirror_pairs": [list(PAROTIDS)]}
#: the loop's defaults (2.5D, mirrored pairs with their TTA, bfloat16 autocast) as an idea: with the
#: UNet those of a run under 10 minutes; "context1_mirror_bf16_dynunet_ds" those of a longer one
_DEFAULTS = {"context_slices": 1, **_MIRROR, "tta_flips": [LATERAL_AXIS], "cpu_bfloat16": True}
#: idea -> TrainConfig changes (plus InferConfig keys) over `base_config`; "baseline" is the reference
IDEAS: dict[str, dict] = {
    "baseline": {},
    "context1": {"context_slices": 1},
    "context2": {"context_slices": 2},
    "mirror": {**_MIRROR, "tta_flips": [LATERAL_AXIS]},
    "mirror_train_only": {**_MIRROR, "tta_flips": []},
    "spatial": {"spatial_augmentation": 0.3},
    "foreground0.9": {"foreground_ratio": 0.9},
    "foreground0.33": {"foreground_ratio": 0.33},
    "average3": {"average_last": 3},
    "context1_mirror": {"context_slices": 1, **_MIRROR, "tta_flips": [LATERAL_AXIS]},
    # slices along axis 0: coronal planes (3.9-5.1 x 2.5 mm, finer than the axial 3.9-5.1 mm squares)
    "coronal": {"slice_axis": 0},
    # two networks, axial and coronal, half the budget each; their probabilities averaged
    "views2": {"views": [2, 0]},
    "views2_context1_mirror": {"views": [2, 0], "context_slices": 1, **_MIRROR, "tta_flips": [LATERAL_AXIS]},
    "combined": {"context_slices": 1, **_MIRROR, "tta_flips": [LATERAL_AXIS], "spatial_augmentation": 0.3},
    # bfloat16 autocast (training, validation, prediction) where the CPU has it natively
    "bf16": {"cpu_bfloat16": True},
    "context1_mirror_bf16": _DEFAULTS,
    # nnU-Net's network on top of the defaults: DynUNet (residual blocks), then with deep supervision
    # of its two next-coarser decoder levels
    "context1_mirror_bf16_dynunet": {**_DEFAULTS, "network": "dynunet"},
    "context1_mirror_bf16_dynunet_ds": {**_DEFAULTS, "network": "dynunet", "deep_supervision": 2},
}


def load_load() -> str:
    """The machine's 1-minute load average and core count, for the record."""
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} (5 min {five:.2f}) on {os.cpu_count()} cores"


def list_cases(split: str | None = None) -> list[str]:
    """OpenKBP case ids of ``split`` (``train-pats`` / ``validation-pats``; None: all), in file order."""
    with open(DATA / "cases.tsv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [row["case"] for row in rows if split is None or row["source_split"] == split]


def load_case(case_id: str, *, compress: bool = False):
    """A `segloop.engine.data.Case`: int16 CT clipped to [0, 4095] (the dataset's advice), uint8 labels.

    With ``compress``, compressed right after reading (`compress_case`, default axis), as
    `segloop.loop.training.collect_labeled_cases` does: the raw arrays are dropped at once.
    """
    from segloop.engine.data import Case, compress_case
    from segloop.io import read_volume

    image = read_volume(DATA / "imagesTr" / f"{case_id}_0000.nii.gz")
    labels = read_volume(DATA / "labelsTr" / f"{case_id}.nii.gz")
    array = np.clip(np.asarray(image.array), 0, 4095).astype(np.int16)
    case = Case(case_id, array, np.asarray(labels.array).astype(np.uint8), image.spacing)
    return compress_case(case) if compress else case


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def base_config(dims: int, minutes: float):
    from segloop.engine.config import TrainConfig

    if dims == 2:
        return TrainConfig(
            dims=2,
            slice_axis=2,  # axial, as the MONAI peer (the largest spacing here is in-plane)
            patch_size=(80, 80),  # crops around foreground; prediction on whole 128 x 128 slices
            norm="batch",
            window=WINDOW,
            epochs=None,
            time_budget_min=minutes,
            num_threads=2,
        )
    return TrainConfig(
        dims=3,
        features=(16, 32, 64, 128),
        num_res_units=1,
        patch_size=(64, 64, 64),
        batch_size=2,
        norm="instance",
        learning_rate=3e-3,
        window=WINDOW,
        epochs=None,
        time_budget_min=minutes,
        steps_per_epoch=100,
        num_threads=2,
    )


def run_training(dims: int, n_train: int, minutes: float, out: Path, threads: int) -> dict:
    """Train (in this process) and return Dice per organ on the validation split, time, peak RSS."""
    from segloop.engine.train import train

    started = time.perf_counter()
    train_ids = list_cases("train-pats")[:n_train]
    train_cases = [load_case(c, compress=True) for c in train_ids]
    val_cases = [load_case(c, compress=True) for c in list_cases("validation-pats")]
    load_s = time.perf_counter() - started
    config = base_config(dims, minutes).replace(num_threads=threads)
    epochs = []

    def progress(event: dict) -> None:
        if event["phase"] == "epoch":
            epochs.append((event["epoch"], round(event["elapsed_s"], 1), event["val_dice"]))
            print(
                f"    epoch {event['epoch']}: {event['elapsed_s']:.0f} s, step {event['step']},"
                f" loss {event['loss']:.3f}, val Dice {event['val_dice']:.3f} ({load_load()})",
                file=sys.stderr,
                flush=True,
            )

    result = train(
        config,
        train_cases,
        val_cases,
        n_classes=N_CLASSES,
        device="cpu",
        checkpoint_path=out / f"engine_{dims}d_{n_train}.pt",
        on_progress=progress,
    )
    return {
        "dims": dims,
        "train_cases": n_train,
        "budget_min": minutes,
        "load_s": load_s,
        "train_s": result.elapsed_s,
        "epochs": result.epochs,
        "steps": result.steps,
        "samples_per_s": result.samples_per_s,
        "best_epoch": result.best_epoch,
        "mean_dice": result.best_metric,
        "dice": {ORGANS[c - 1]: d for c, d in result.best_dice_per_class.items()},
        "peak_rss_mib": peak_rss_mib(),
        "curve": epochs,
        "config": result.config.to_dict(),
    }


def part_train(minutes: float, out: Path, runs: list[tuple[int, int]], threads: int) -> None:
    print(f"== train: Dice per organ on the 4 validation cases ({minutes:g} min budget each)")
    for dims, n_train in runs:
        print(f"  {dims}D, {n_train} training cases ({load_load()})", flush=True)
        command = [
            sys.executable,
            __file__,
            "_train",
            str(dims),
            str(n_train),
            str(minutes),
            str(out),
            str(threads),
        ]
        completed = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)  # epochs: stderr
        row = json.loads(completed.stdout.strip().splitlines()[-1])
        dice = "  ".join(f"{k} {v:.3f}" for k, v in row["dice"].items())
        print(
            f"  -> mean Dice {row['mean_dice']:.3f}  [{dice}]  train {row['train_s']:.0f} s"
            f" ({row['epochs']} epochs, {row['steps']} steps, {row['samples_per_s']:.1f} samples/s),"
            f" load {row['load_s']:.1f} s, peak RSS {row['peak_rss_mib']:.0f} MiB",
            flush=True,
        )


def choose_threads() -> int:
    """1 or 2 torch threads, whichever trains the 2D UNet faster right now.

    On a machine shared with other busy processes, two OpenMP threads that keep waiting for each
    other can be several times slower than one; the probe picks what this moment allows.
    """
    import torch

    from segloop.engine.losses import dice_ce_loss
    from segloop.engine.networks import build_network

    network = build_network(base_config(2, 1.0), 1, N_CLASSES)
    optimizer = torch.optim.AdamW(network.parameters())
    images, labels = torch.randn(16, 1, 96, 96), torch.randint(0, N_CLASSES, (16, 96, 96))
    times = {}
    previous = torch.get_num_threads()
    for threads in (2, 1, 2, 1):
        torch.set_num_threads(threads)
        tick = time.perf_counter()
        for _ in range(3):
            optimizer.zero_grad()
            dice_ce_loss(network(images), labels, ignore_index=N_CLASSES).backward()
            optimizer.step()
        times[threads] = min(times.get(threads, math.inf), time.perf_counter() - tick)
    torch.set_num_threads(previous)
    return min(times, key=times.get)


def run_memory(n_cases: int) -> dict:
    """Peak RSS of loading ``n_cases`` cases and 5 training steps of the 2D config."""
    import torch

    from segloop.engine.train import train

    baseline = peak_rss_mib()
    ids = list_cases()[:n_cases]
    cases = [load_case(c, compress=True) for c in ids]  # one at a time, compressed at once
    image_mib = sum(c.image.raw_nbytes for c in cases) / 2**20
    labels_mib = sum(c.labels.raw_nbytes for c in cases) / 2**20
    compressed_mib = sum(c.image.nbytes + c.labels.nbytes for c in cases) / 2**20
    loaded = peak_rss_mib()
    config = base_config(2, 10.0).replace(epochs=1, time_budget_min=None, steps_per_epoch=5)
    train(
        config,
        cases,
        n_classes=N_CLASSES,
        device="cpu",
        checkpoint_path=Path(f"/tmp/segloop-mem-{n_cases}.pt"),
    )
    return {
        "cases": n_cases,
        "peak_rss_mib": peak_rss_mib(),
        "rss_after_imports_mib": baseline,
        "peak_rss_after_loading_mib": loaded,
        "images_stored_mib": image_mib,
        "labels_stored_mib": labels_mib,
        "compressed_mib": compressed_mib,
        "images_float32_mib": image_mib * 4 / cases[0].image.itemsize,
        "torch_threads": torch.get_num_threads(),
    }


def part_memory() -> None:
    print(f"== memory: peak RSS of loading N cases + 5 training steps (2D) ({load_load()})")
    rows = []
    for n_cases in (10, 34):
        completed = subprocess.run(
            [sys.executable, __file__, "_memory", str(n_cases)], stdout=subprocess.PIPE, text=True, check=True
        )
        rows.append(json.loads(completed.stdout.strip().splitlines()[-1]))
        row = rows[-1]
        print(
            f"  {row['cases']:>3} cases: peak RSS {row['peak_rss_mib']:.0f} MiB (after imports"
            f" {row['rss_after_imports_mib']:.0f} MiB, after loading {row['peak_rss_after_loading_mib']:.0f}"
            f" MiB); images int16 {row['images_stored_mib']:.0f} MiB + labels uint8"
            f" {row['labels_stored_mib']:.0f} MiB held compressed in {row['compressed_mib']:.1f} MiB;"
            f" images as float32 {row['images_float32_mib']:.0f} MiB"
        )
    grown = rows[1]["peak_rss_mib"] - rows[0]["peak_rss_mib"]
    float_grown = rows[1]["images_float32_mib"] - rows[0]["images_float32_mib"]
    compressed_grown = rows[1]["compressed_mib"] - rows[0]["compressed_mib"]
    print(
        f"  10 -> 34 cases: +{grown:.0f} MiB peak RSS vs +{float_grown:.0f} MiB of float32 images"
        f" (+{compressed_grown:.1f} MiB compressed)"
    )


def part_throughput(
    threads: int, network: str = "unet", deep_supervision: int = 0, steps: int = 25, repeats: int = 8
) -> None:
    """segloop's training loop vs a plain PyTorch/MONAI loop on in-memory float32 slices.

    Args:
        threads: torch threads.
        network: ``unet`` or ``dynunet`` (both loops train the same one).
        deep_supervision: DynUNet's deeply supervised levels; the plain loop trains them with MONAI's
            ``DeepSupervisionLoss`` (weights 2^-i).
    """
    import torch
    from monai.losses import DeepSupervisionLoss, DiceCELoss

    from segloop.engine.data import compress_case, compute_intensity_parameters
    from segloop.engine.networks import build_network
    from segloop.engine.train import train

    heads = f" (deep supervision {deep_supervision})" if deep_supervision else ""
    print(
        f"== throughput: training samples/s, segloop vs plain loop, {network}{heads},"
        f" {threads} thread(s) ({load_load()})"
    )
    cases = [load_case(c) for c in list_cases("train-pats")]
    compressed = [compress_case(c) for c in cases]  # segloop trains as the loop does: compressed
    config = base_config(2, 10.0).replace(
        epochs=1, time_budget_min=None, steps_per_epoch=steps, num_threads=threads, network=network,
        deep_supervision=deep_supervision,
    )  # fmt: skip
    patch = config.patch_size or (128, 128)
    # plain: every axial slice, centre-cropped to the patch, normalised, float32, in memory
    slices, targets = [], []
    for case in cases:
        p = compute_intensity_parameters(case.image, config)
        image = (np.clip(case.image.astype(np.float32), p.low, p.high) - p.shift) * p.scale
        lo = [(n - s) // 2 for n, s in zip(case.image.shape[:2], patch, strict=True)]
        crop = (slice(lo[0], lo[0] + patch[0]), slice(lo[1], lo[1] + patch[1]))
        slices.append(torch.from_numpy(np.moveaxis(image[crop], 2, 0).copy()))
        targets.append(torch.from_numpy(np.moveaxis(case.labels[crop], 2, 0).astype(np.int64)))
    images, labels = torch.cat(slices)[:, None], torch.cat(targets)[:, None]
    print(f"  plain loop data: {tuple(images.shape)} float32 ({images.nbytes / 2**20:.0f} MiB) in memory")
    torch.set_num_threads(threads)
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
    supervised = DeepSupervisionLoss(dice_ce, weights=[0.5**i for i in range(deep_supervision + 1)])

    def loss_function(output, target):  # DynUNet stacks its deep-supervision heads on axis 1
        return (
            supervised(list(torch.unbind(output, 1)), target) if deep_supervision else dice_ce(output, target)
        )

    generator = torch.Generator().manual_seed(0)

    def plain() -> float:
        # a fresh network and optimiser each run, as train() builds them (first steps are slower)
        torch.manual_seed(0)
        network = build_network(config.replace(slice_axis=2, patch_size=patch), 1, N_CLASSES).train()
        optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
        tick = time.perf_counter()
        for _ in range(steps):
            index = torch.randint(0, images.shape[0], (config.batch_size,), generator=generator)
            optimizer.zero_grad()
            loss = loss_function(network(images[index]), labels[index])
            loss.backward()
            optimizer.step()
        return steps * config.batch_size / (time.perf_counter() - tick)

    def segloop() -> float:
        result = train(
            config, compressed, n_classes=N_CLASSES, device="cpu", checkpoint_path=Path("/tmp/segloop-tp.pt")
        )
        return result.samples_per_s

    ours, theirs = [], []
    for repeat in range(repeats):  # short interleaved pairs, alternating who goes first: drift hits both
        if repeat % 2 == 0:
            ours.append(segloop())
            theirs.append(plain())
        else:
            theirs.append(plain())
            ours.append(segloop())
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    raw_ms, compressed_ms = (
        sampler_ms(source, config.replace(slice_axis=2, patch_size=patch)) for source in (cases, compressed)
    )
    print(
        f"  sampler alone: {compressed_ms:.1f} ms a batch from compressed cases, {raw_ms:.1f} ms from"
        f" raw int16 arrays (decompression: {compressed_ms - raw_ms:.1f} ms of a"
        f" {1000 * config.batch_size / np.median(ours):.0f} ms step)"
    )
    print(f"  segloop {np.median(ours):.1f} samples/s median (runs {', '.join(f'{v:.1f}' for v in ours)})")
    print(
        f"  plain   {np.median(theirs):.1f} samples/s median (runs {', '.join(f'{v:.1f}' for v in theirs)})"
    )
    print(
        f"  ratio segloop / plain = {np.median(ratios):.2f} (median of {repeats} paired runs;"
        f" range {min(ratios):.2f}-{max(ratios):.2f}; target >= 0.95)"
    )


def sampler_ms(cases, config, batches: int = 20, repeats: int = 5) -> float:
    """Milliseconds one `PatchSampler.sample` takes on ``cases`` (best of ``repeats`` rounds)."""
    from segloop.engine.data import CompressedVolume, PatchSampler, compress_case, prepare_case

    # compressed planes along the slice axis, as train() makes them
    cases = [compress_case(c, 2) if isinstance(c.image, CompressedVolume) else c for c in cases]
    prepared = [prepare_case(c, config, N_CLASSES, seed=i) for i, c in enumerate(cases)]
    sampler = PatchSampler(
        prepared, config, n_classes=N_CLASSES, patch_size=config.patch_size, slice_axis=2, seed=0
    )
    best = math.inf
    for _ in range(repeats):
        tick = time.perf_counter()
        for _ in range(batches):
            sampler.sample()
        best = min(best, (time.perf_counter() - tick) / batches)
    return 1000 * best


def _plain_outputs(probabilities, torch):
    """What segloop's Prediction holds, made from plain MONAI probabilities."""
    labels = probabilities.argmax(0).numpy().astype(np.uint8)
    entropy = -(probabilities * torch.log(probabilities.clamp_min(1e-7))).sum(0) / math.log(
        probabilities.shape[0]
    )
    return labels, probabilities.to(torch.float16).numpy(), entropy.to(torch.float16).numpy()


def part_predict(threads: int, out: Path, repeats: int = 7) -> None:
    """Seconds per volume: segloop.predict vs plain MONAI producing the same outputs."""
    import torch
    from monai.inferers import SliceInferer, sliding_window_inference

    from segloop.engine.config import InferConfig
    from segloop.engine.data import compute_intensity_parameters
    from segloop.engine.infer import load_model, predict
    from segloop.engine.networks import build_network

    print(f"== predict: seconds per 128^3 volume, {threads} thread(s) ({load_load()})")
    torch.set_num_threads(threads)
    case = load_case(list_cases("validation-pats")[0])
    for dims in (2, 3):
        checkpoint = out / f"engine_{dims}d_30.pt"
        if checkpoint.exists():
            model = load_model(checkpoint, "cpu")
            network, config = model.network, model.config
        else:  # untrained weights time the same
            config = base_config(dims, 1.0)
            config = config.replace(slice_axis=2, patch_size=config.patch_size or (128, 128))
            torch.manual_seed(0)
            network = build_network(config, 1, N_CLASSES).eval()
        infer_config = InferConfig(batch_size=config.batch_size if dims == 2 else 2, overlap=0.25)

        def ours(network=network, config=config, infer_config=infer_config):
            return predict(network, case.image, case.spacing, config, infer_config, device="cpu")

        def plain(network=network, config=config, infer_config=infer_config, dims=dims):
            p = compute_intensity_parameters(case.image, config)
            image = (np.clip(case.image.astype(np.float32), p.low, p.high) - p.shift) * p.scale
            volume = torch.from_numpy(image)[None, None]
            with torch.no_grad():
                if dims == 3:
                    logits = sliding_window_inference(
                        volume,
                        config.patch_size,
                        infer_config.batch_size,
                        network,
                        overlap=infer_config.overlap,
                        mode="gaussian",
                    )
                else:
                    inferer = SliceInferer(  # whole slices, as segloop predicts them
                        roi_size=case.image.shape[:2], sw_batch_size=infer_config.batch_size, spatial_dim=2
                    )
                    logits = inferer(volume, network)
                return _plain_outputs(torch.softmax(logits[0], 0), torch)

        ours_s, plain_s = [], []
        for repeat in range(repeats):  # alternate which goes first, so that load changes hit both alike
            for name in ("ours", "plain") if repeat % 2 == 0 else ("plain", "ours"):
                tick = time.perf_counter()
                if name == "ours":
                    prediction = ours()
                    ours_s.append(time.perf_counter() - tick)
                else:
                    labels, _, _ = plain()
                    plain_s.append(time.perf_counter() - tick)
        agree = float(np.mean(prediction.labels == labels))
        a, b = float(np.median(ours_s)), float(np.median(plain_s))
        ratios = [p / o for p, o in zip(plain_s, ours_s, strict=True)]
        peer = "SliceInferer" if dims == 2 else "sliding_window_inference"
        print(
            f"  {dims}D: segloop {a:.2f} s, MONAI {peer} {b:.2f} s (medians of {repeats}),"
            f" ratio MONAI / segloop = {np.median(ratios):.2f} (median of paired runs,"
            f" range {min(ratios):.2f}-{max(ratios):.2f}; target >= 1.0);"
            f" labels agree on {agree:.4f} of voxels"
        )


def split_changes(changes: dict) -> tuple[dict, dict]:
    """An idea's changes as (TrainConfig changes, InferConfig fields), lists turned to tuples."""
    from dataclasses import fields

    from segloop.engine.config import InferConfig

    def plain(value):
        return tuple(plain(v) for v in value) if isinstance(value, list) else value

    infer_keys = {f.name for f in fields(InferConfig)}
    train = {k: plain(v) for k, v in changes.items() if k not in infer_keys}
    infer = {k: plain(v) for k, v in changes.items() if k in infer_keys}
    return train, infer


def score_checkpoint(checkpoints: list[Path], infer_changes: dict, val_cases: list) -> dict:
    """Dice per organ of checkpoints on the validation cases: as predicted, and post-processed.

    Several checkpoints (an idea of several ``views``) predict together: their probabilities averaged.

    Post-processing (`segloop.engine.postprocess`) is scored two ways: ``dice_post`` keeps the largest
    component of the classes the training rule picks on these same 4 cases (what a model trained now
    stores in ``keep_largest``; picked and scored on the same cases, so an upper bound), and
    ``dice_largest_all`` of every class (no choice made on the scored cases).
    """
    from segloop.engine.config import InferConfig
    from segloop.engine.infer import load_model, predict
    from segloop.engine.postprocess import choose_keep_largest, largest_component_scores
    from segloop.metrics import dice_per_class

    models = [load_model(checkpoint, "cpu") for checkpoint in checkpoints]
    infer_config = InferConfig(batch_size=16, **infer_changes)
    tick = time.perf_counter()
    plain, kept, one_piece = [], [], []
    for case in val_cases:
        predictions = [
            predict(
                model.network,
                np.asarray(case.image),
                case.spacing,
                model.config.replace(keep_largest=()),  # as predicted: post-processing scored below
                infer_config,
                device="cpu",
            )
            for model in models
        ]
        if len(predictions) == 1:
            labels = predictions[0].labels
        else:
            mean = np.mean([p.probabilities.astype(np.float32) for p in predictions], axis=0)
            labels = np.argmax(mean, axis=0).astype(np.uint8)
        reference = np.asarray(case.labels)
        plain.append(dice_per_class(labels, reference, N_CLASSES))
        case_kept, case_one_piece = largest_component_scores(labels, reference, N_CLASSES)
        kept.append(case_kept)
        one_piece.append(case_one_piece)
    seconds = (time.perf_counter() - tick) / len(val_cases)
    plain, kept = np.asarray(plain), np.asarray(kept)
    chosen = choose_keep_largest(plain, kept, np.asarray(one_piece))
    post = plain.copy()
    post[:, [v - 1 for v in chosen]] = kept[:, [v - 1 for v in chosen]]

    def organs(table: np.ndarray) -> dict:
        return dict(zip(ORGANS, (float(v) for v in np.nanmean(table, axis=0)), strict=True))

    return {
        "mean_dice": float(np.mean(list(organs(plain).values()))),
        "dice": organs(plain),
        "keep_largest": [ORGANS[v - 1] for v in chosen],
        "mean_dice_post": float(np.mean(list(organs(post).values()))),
        "dice_post": organs(post),
        "mean_dice_largest_all": float(np.mean(list(organs(kept).values()))),
        "predict_s_per_case": seconds,
    }


def checkpoint_paths(out: Path, idea: str, seed: int, train_cases: int, views: list | None) -> list[Path]:
    """An ablation run's checkpoints: one, or one per view (30 training cases: no suffix)."""
    stem = f"ablation_{idea}_{seed}{'' if train_cases == 30 else f'_{train_cases}cases'}"
    return [out / f"{stem}.pt"] if not views else [out / f"{stem}_view{axis}.pt" for axis in views]


def run_ablation(spec: dict) -> dict:
    """Train one idea with one seed (in this process) and score the best model (`score_checkpoint`)."""
    from segloop.engine.train import train

    train_changes, infer_changes = split_changes(spec["changes"])
    views = train_changes.pop("views", None)
    config = base_config(2, spec["minutes"] / len(views or [0])).replace(
        seed=spec["seed"], num_threads=spec["threads"], **train_changes
    )
    train_cases = [load_case(c, compress=True) for c in list_cases("train-pats")[: spec["train_cases"]]]
    val_cases = [load_case(c, compress=True) for c in list_cases("validation-pats")]
    checkpoints = checkpoint_paths(Path(spec["out"]), spec["idea"], spec["seed"], spec["train_cases"], views)
    results = [
        train(
            config if not views else config.replace(slice_axis=axis),
            train_cases,
            val_cases,
            n_classes=N_CLASSES,
            device="cpu",
            checkpoint_path=checkpoint,
        )
        for axis, checkpoint in zip(views or [None], checkpoints, strict=True)
    ]
    return {
        "idea": spec["idea"],
        "seed": spec["seed"],
        "changes": spec["changes"],
        "train_cases": spec["train_cases"],
        **score_checkpoint(checkpoints, infer_changes, val_cases),
        "validation_dice": float(np.mean([r.best_metric for r in results])),
        "samples_per_s": float(np.mean([r.samples_per_s for r in results])),
        "epochs": sum(r.epochs for r in results),
        "best_epoch": [r.best_epoch for r in results],
        "train_s": sum(r.elapsed_s for r in results),
        "load": os.getloadavg()[0],
    }


def rescore_ablation(out: Path) -> list[dict]:
    """Score every row's checkpoint in ``out/ablation.jsonl`` again (`score_checkpoint`); rows rewritten.

    Rows whose checkpoint is gone (a later run of the same idea and seed replaced it: the one
    recorded last) are kept as they are.
    """
    log = out / "ablation.jsonl"
    rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    val_cases = [load_case(c, compress=True) for c in list_cases("validation-pats")]
    last = {(row["idea"], row["seed"], row.get("train_cases", 30)): i for i, row in enumerate(rows)}
    for index in last.values():
        row = rows[index]
        changes = row.get("changes", IDEAS.get(row["idea"], {}))
        views = changes.get("views")
        checkpoints = checkpoint_paths(out, row["idea"], row["seed"], row.get("train_cases", 30), views)
        if all(checkpoint.exists() for checkpoint in checkpoints):
            row.update(score_checkpoint(checkpoints, split_changes(changes)[1], val_cases))
            print(f"  rescored {row['idea']} seed {row['seed']}: {row['mean_dice']:.3f}", flush=True)
    staged = log.with_suffix(".jsonl.tmp")
    staged.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    staged.replace(log)
    return rows


def summarize_ablation(rows: list[dict]) -> list[str]:
    """The ablation tables (markdown), one per number of training cases, one line per idea.

    ``+ largest`` columns: mean Dice with post-processing (`score_checkpoint`), where the rows have it.
    """
    lines = []
    for count in sorted({row.get("train_cases", 30) for row in rows}, reverse=True):
        lines.append(f"{count} training cases:")
        lines.extend(_ablation_table([row for row in rows if row.get("train_cases", 30) == count]))
    return lines


def _ablation_table(rows: list[dict]) -> list[str]:
    ideas = list(dict.fromkeys(row["idea"] for row in rows))
    by_idea = {idea: [row for row in rows if row["idea"] == idea] for idea in ideas}

    def mean(idea: str, key: str) -> float:
        values = [row[key] for row in by_idea[idea] if key in row]
        return float(np.mean(values)) if len(values) == len(by_idea[idea]) else math.nan

    reference = "baseline" if "baseline" in by_idea else ideas[0]
    header = "| idea | mean Dice ± half range | vs " + reference + " | " + " | ".join(ORGANS)
    lines = [
        header + " | + largest (chosen) | + largest (all) | samples/s (vs) | epochs | seeds |",
        "|" + "---|" * (len(ORGANS) + 8),
    ]
    for idea in ideas:
        dice = [row["mean_dice"] for row in by_idea[idea]]
        organs = " | ".join(
            f"{np.mean([row['dice'][organ] for row in by_idea[idea]]):.3f}" for organ in ORGANS
        )
        speed = mean(idea, "samples_per_s")
        lines.append(
            f"| {idea} | {np.mean(dice):.3f} ± {(max(dice) - min(dice)) / 2:.3f}"
            f" | {np.mean(dice) - mean(reference, 'mean_dice'):+.3f} | {organs}"
            f" | {mean(idea, 'mean_dice_post'):.3f} | {mean(idea, 'mean_dice_largest_all'):.3f}"
            f" | {speed:.1f} ({speed / mean(reference, 'samples_per_s'):.2f}x)"
            f" | {mean(idea, 'epochs'):.1f} | {len(dice)} |"
        )
    return lines


def part_ablation(args: argparse.Namespace, threads: int) -> None:
    """Every idea x seed as a subprocess; the table at the end (and the rows as JSON lines)."""
    ideas = {name: IDEAS[name] for name in args.ideas.split(",")} if args.ideas else dict(IDEAS)
    if args.config:
        ideas["custom"] = {
            key: _json_value(value) for key, value in (item.split("=", 1) for item in args.config)
        }
    seeds = [int(s) for s in args.seeds.split(",")]
    print(
        f"== ablation: {len(ideas)} ideas x {len(seeds)} seeds, {args.minutes:g} min each on"
        f" {args.train_cases} training cases, Dice on the 4 validation cases ({load_load()})",
        flush=True,
    )
    rows = []
    log = args.out / "ablation.jsonl"
    for seed in seeds:
        for idea, changes in ideas.items():
            spec = {
                "idea": idea,
                "changes": changes,
                "seed": seed,
                "minutes": args.minutes,
                "train_cases": args.train_cases,
                "out": str(args.out),
                "threads": threads,
            }
            completed = subprocess.run(
                [sys.executable, __file__, "_ablation", json.dumps(spec)],
                stdout=subprocess.PIPE,
                text=True,
                check=True,
            )
            row = json.loads(completed.stdout.strip().splitlines()[-1])
            rows.append(row)
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
            print(
                f"  {idea} seed {seed}: mean Dice {row['mean_dice']:.3f} (validation during training"
                f" {row['validation_dice']:.3f}), {row['samples_per_s']:.1f} samples/s,"
                f" {row['epochs']} epochs, load {row['load']:.2f}",
                flush=True,
            )
    print("\n".join(summarize_ablation(rows)))
    print(f"  rows: {log} ({load_load()})")


def _json_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def part_precision(threads: int, seconds: float = 6.0) -> None:
    """Training steps/s of the 2D UNet: float32, bfloat16 autocast, channels-last (CPU)."""
    import torch

    from segloop.engine.losses import dice_ce_loss
    from segloop.engine.networks import build_network

    print(
        f"== precision: 2D UNet training steps/s on the CPU, batch 16 of 80x80, {threads} thread(s)"
        f" ({load_load()})"
    )
    torch.set_num_threads(threads)
    images, labels = torch.rand(16, 1, 80, 80), torch.randint(0, N_CLASSES, (16, 80, 80))
    variants = {"float32": (False, False), "bfloat16 autocast": (True, False), "channels-last": (False, True)}
    variants["bfloat16 + channels-last"] = (True, True)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(2):  # two interleaved rounds
        for name, (bf16, channels_last) in variants.items():
            torch.manual_seed(0)
            network = build_network(base_config(2, 1.0), 1, N_CLASSES)
            batch = images
            if channels_last:
                network, batch = (
                    network.to(memory_format=torch.channels_last),
                    images.to(memory_format=torch.channels_last),
                )
            optimizer = torch.optim.AdamW(network.parameters(), fused=True)
            steps, tick = 0, time.perf_counter()
            while time.perf_counter() - tick < seconds / 2 or steps < 3:
                optimizer.zero_grad()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    logits = network(batch)
                dice_ce_loss(logits, labels, ignore_index=N_CLASSES).backward()
                optimizer.step()
                steps += 1
            rates[name].append(steps / (time.perf_counter() - tick))
    base = max(rates["float32"])
    for name, values in rates.items():
        print(f"  {name}: {max(values):.2f} steps/s (best of 2; {max(values) / base:.2f}x float32)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_memory":
        print(json.dumps(run_memory(int(sys.argv[2]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_ablation":
        print(json.dumps(run_ablation(json.loads(sys.argv[2]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_train":
        dims, n_train, minutes, out = (
            int(sys.argv[2]),
            int(sys.argv[3]),
            float(sys.argv[4]),
            Path(sys.argv[5]),
        )
        print(json.dumps(run_training(dims, n_train, minutes, out, int(sys.argv[6]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts among {', '.join(PARTS + EXTRA_PARTS)}",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per run")
    parser.add_argument(
        "--runs", default="2x30,3x30,2x5,3x5", help="training runs as DIMSxCASES, comma-separated"
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/segloop-bench-engine"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: probe 1 vs 2)")
    parser.add_argument("--seeds", default="0,1", help="ablation: comma-separated seeds")
    parser.add_argument(
        "--ideas", default="", help=f"ablation: comma-separated among {', '.join(IDEAS)} (all)"
    )
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="ablation: an idea 'custom' (repeat)",
    )
    parser.add_argument("--train-cases", type=int, default=30, help="ablation: training cases (5 or 30)")
    parser.add_argument(
        "--network", choices=("unet", "dynunet"), default="unet", help="throughput: the network"
    )
    parser.add_argument(
        "--deep-supervision", type=int, default=0, help="throughput: DynUNet's deeply supervised levels"
    )
    parser.add_argument(
        "--table", action="store_true", help="ablation: print the tables of every row in OUT/ablation.jsonl"
    )
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="ablation: score the checkpoints of OUT/ablation.jsonl again (post-processing), then --table",
    )
    args = parser.parse_args()
    if args.table or args.rescore:
        log = args.out / "ablation.jsonl"
        if not log.is_file():
            parser.error(f"no ablation rows at {log}: run --only ablation --out {args.out} first")
        rows = (
            rescore_ablation(args.out)
            if args.rescore
            else [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
        )
        print("\n".join(summarize_ablation(rows)))
        return
    from segloop.errors import InvalidInputError

    try:
        base_config(2, args.minutes).replace(network=args.network, deep_supervision=args.deep_supervision)
    except InvalidInputError as error:
        parser.error(f"--network {args.network} --deep-supervision {args.deep_supervision}: {error}")
    unknown = sorted(set(args.ideas.split(",")) - set(IDEAS)) if args.ideas else []
    if unknown:
        parser.error(f"unknown ideas {', '.join(unknown)}: expected some of {', '.join(IDEAS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    parts = args.only.split(",")
    threads = args.threads or choose_threads()
    print(f"torch threads: {threads} ({'given' if args.threads else 'probed: the faster of 1 and 2 now'})")
    if "train" in parts:
        runs = [tuple(int(v) for v in run.split("x")) for run in args.runs.split(",")]
        part_train(args.minutes, args.out, runs, threads)  # type: ignore[arg-type]
    if "memory" in parts:
        part_memory()
    if "throughput" in parts:
        part_throughput(threads, args.network, args.deep_supervision)
    if "predict" in parts:
        part_predict(threads, args.out)
    if "precision" in parts:
        part_precision(threads)
    if "ablation" in parts:
        part_ablation(args, threads)


if __name__ == "__main__":
    main()
