"""Batch prediction vs executor and workers on real CT (OpenKBP), and a projection for 8,448 CTs.

One project of OpenKBP head-and-neck CTs (128 x 128 x 128): a few labelled cases train a model for
``--train-minutes`` (the default 2D UNet; kept and reused under ``--work``), then the same model
predicts the same ``--cases`` unlabelled cases with `segloop.loop.predict.predict_batch` (what
``segloop predict P --cases ... --again`` runs) on:

- ``local``: this process (torch's default threads: every core);
- ``dask 1``: a `distributed.LocalCluster` of 1 worker process (1 torch thread);
- ``dask 2``: the same with 2 worker processes.

Each run reports its wall time (cluster start and model shipping included), cases per minute, the
steady rate (cases per minute between the first and the last result: without the start) and, for
Dask, the efficiency: steady rate / (workers x the steady rate of 1 worker); 1.0 is perfect
scaling. The machine's load is printed: on a shared machine every number moves with it.

The per-case cost is then split (in this process, a few cases): reading + hashing the image,
inference, writing the label object and the float16 prediction file; the client's recording time
per case is measured across the runs. From these the projection for AbdomenAtlas'
8,448 CTs on N GPU workers assumes (printed, and in the JSON): a CT of 512 x 512 x ``--slices``
voxels, every cost linear in voxels; inference ``--gpu-speedup`` times faster on a GPU than here
(unless ``--device cuda`` measured it); reading and writing run on the worker's CPU as here, for
as many classes as here (8; AbdomenAtlas' 25 would make the probability file ~3x larger); N GPU
workers, each with its own GPU and cores, scale with ``--efficiency`` (default 1.0: the efficiency
measured here is of 2 workers sharing 2 cores with the client and other work, printed beside);
the client records results as fast as measured (its limit is printed); the shared filesystem keeps
up (not measured).

Run from the repository root:

    .venv/bin/python benchmarks/scale_predict.py [--quick] [--cases 24] [--train-minutes 1]
        [--work DIR] [--device cpu|cuda] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "openkbp-headneck-ct"
CLASSES = ("brainstem", "spinal_cord", "parotid_r", "parotid_l", "esophagus", "larynx", "mandible")
WINDOW = (400, 1064)  # W400 / L40 HU; OpenKBP stores HU + 1024
LABELLED = 4
ATLAS_CTS = 8_448
GPU_WORKERS = (1, 2, 4, 8, 16, 32, 64)
WIDTHS = (10, 8, 7, 9, 11, 12, 12)


def machine_load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} (5 min {five:.2f}) on {os.cpu_count()} cores"


def openkbp_cases() -> list[str]:
    """OpenKBP case ids in the order of ``cases.tsv`` (train split first)."""
    rows = (DATA / "cases.tsv").read_text().splitlines()[1:]
    return [row.split("\t")[0] for row in rows]


def prepare_project(work: Path, n_cases: int, train_minutes: float, quick: bool):
    """The template project under ``work`` with a finished model and no prediction (made once, reused
    when present); each run predicts in a copy of it, so each writes every file anew."""
    from segloop.loop.cases import import_cases, init_project
    from segloop.loop.training import train_config, train_project
    from segloop.store import Project

    root = work / "template"
    ids = openkbp_cases()
    if len(ids) < LABELLED + n_cases:
        sys.exit(f"--cases {n_cases}: OpenKBP has {len(ids) - LABELLED} cases beside the {LABELLED} labelled")
    unlabelled = ids[LABELLED : LABELLED + n_cases]
    if (root / "segloop.toml").exists():
        project = Project.open(root)
        if project.find_latest_model() is not None and set(unlabelled) <= set(project.list_case_ids()):
            return root, unlabelled
        shutil.rmtree(root)
    project = init_project(root, CLASSES, defaults={"window": list(WINDOW)})
    images = DATA / "imagesTr"
    import_cases(project, [images / f"{c}_0000.nii.gz" for c in ids[:LABELLED]], labels_dir=DATA / "labelsTr")
    import_cases(project, [images / f"{c}_0000.nii.gz" for c in unlabelled])
    settings = {"epochs": 1, "steps_per_epoch": 2} if quick else {"time_budget_min": train_minutes}
    started = time.perf_counter()
    model = train_project(project, train_config(project, **settings), author="benchmark")
    seconds = time.perf_counter() - started
    print(f"trained model {model.id} in {seconds:.0f} s ({model.metrics.get('epochs')} epochs)")
    return root, unlabelled


def time_recording():
    """Wrap `Project.add_predictions` to add up the client's recording time; returns the totals."""
    from segloop.store import Project

    totals = {"seconds": 0.0, "cases": 0}
    original = Project.add_predictions

    def timed(self, model_id, items, **options):
        started = time.perf_counter()
        try:
            return original(self, model_id, items, **options)
        finally:
            totals["seconds"] += time.perf_counter() - started
            totals["cases"] += len(items)

    Project.add_predictions = timed
    return totals


def run_batch(template: Path, cases: list[str], executor: str, workers: int | None, device: str) -> dict:
    """One `predict_batch` of ``cases`` in a fresh copy of the ``template`` project; its timings."""
    from segloop.loop.predict import predict_batch
    from segloop.store import Project

    root = template.parent / "runs" / f"{executor}-{workers or 1}"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(template, root)
    project = Project.open(root)

    finished: list[float] = []

    def on_progress(event) -> None:
        if event.done > len(finished):
            finished.append(time.perf_counter())

    started = time.perf_counter()
    batch = predict_batch(
        project, cases, author="benchmark", device=device,
        executor=executor, workers=workers, on_progress=on_progress,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if len(batch.records) != len(cases):
        sys.exit(f"{executor} {workers}: {len(batch.records)} predictions recorded for {len(cases)} cases")
    steady = (len(finished) - 1) / (finished[-1] - finished[0]) * 60 if len(finished) > 1 else None
    return {
        "executor": executor,
        "workers": workers or 1,
        "cases": len(cases),
        "wall_s": wall,
        "first_result_s": finished[0] - started,
        "cases_per_min": len(cases) / wall * 60,
        "steady_cases_per_min": steady,
    }


def split_case_cost(project, cases: list[str], device: str) -> dict:
    """Median seconds per case of each step of `predict_case`, in this process: reading (hash +
    decode), inference, writing (the label object and the float16 prediction file, to a scratch
    folder)."""
    import hashlib

    from segloop.engine.infer import predict
    from segloop.loop.predict import case_task, load_cached_model, read_task_image
    from segloop.store import ObjectStore, PredictionArrays
    from segloop.store.predictions import write_prediction_file

    model = project.find_latest_model()
    checkpoint = (project.root / model.checkpoint).read_bytes()
    trained = load_cached_model(hashlib.sha256(checkpoint).hexdigest(), checkpoint, device)
    by_id = {case.case_id: case for case in project.list_cases()}
    steps: dict[str, list[float]] = {"read_s": [], "infer_s": [], "write_s": []}
    voxels = []
    with tempfile.TemporaryDirectory(prefix="segloop-write-") as scratch:
        for case_id in cases:
            task = case_task(project, by_id[case_id])
            started = time.perf_counter()
            image = read_task_image(task)
            steps["read_s"].append(time.perf_counter() - started)
            started = time.perf_counter()
            out = predict(trained.network, image.array, image.spacing, trained.config, device=trained.device)
            steps["infer_s"].append(time.perf_counter() - started)
            started = time.perf_counter()
            with ObjectStore(Path(scratch) / "objects").stage() as staged:
                staged.put(out.labels.astype(project.config.schema.dtype), task.affine)
            arrays = PredictionArrays(out.probabilities, out.entropy, out.disagreement)
            write_prediction_file(Path(scratch), model.id, case_id, task.shape, arrays)
            steps["write_s"].append(time.perf_counter() - started)
            voxels.append(math.prod(image.spatial_shape))
    return {
        **{name: statistics.median(values) for name, values in steps.items()},
        "voxels": statistics.median(voxels),
        "device": str(trained.device),
    }


def project_atlas(runs: list[dict], costs: dict, record: dict, args: argparse.Namespace) -> dict:
    """Hours for 8,448 CTs on N GPU workers from the measured per-case costs (assumptions listed)."""
    scale = 512 * 512 * args.slices / costs["voxels"]
    speedup = 1.0 if costs["device"].startswith("cuda") else args.gpu_speedup
    split = {
        "read": costs["read_s"] * scale,
        "inference": costs["infer_s"] * scale / speedup,
        "write": costs["write_s"] * scale,
    }
    worker_case_s = sum(split.values())
    one = next((r for r in runs if r["executor"] == "dask" and r["workers"] == 1), None)
    efficiency = args.efficiency
    start_s = one["first_result_s"] if one else 0.0
    record_case_s = record["seconds"] / max(record["cases"], 1)
    client_cases_per_s = 1 / record_case_s if record_case_s > 0 else math.inf
    rows = []
    for n in GPU_WORKERS:
        rate = min(n * efficiency / worker_case_s, client_cases_per_s)  # cases per second
        rows.append(
            {"gpu_workers": n, "hours": (ATLAS_CTS / rate + start_s) / 3600, "cases_per_min": rate * 60}
        )
    return {
        "assumptions": {
            "ct_voxels": 512 * 512 * args.slices,
            "voxel_scale_vs_measured": scale,
            "gpu_inference_speedup": speedup,
            "efficiency_of_n_workers": efficiency,
            "worker_start_s": start_s,
            "filesystem": "keeps up (not measured)",
        },
        "measured_per_case_s": {
            "read": costs["read_s"],
            "inference": costs["infer_s"],
            "write": costs["write_s"],
            "client_record": record_case_s,
        },
        "worker_case_s_at_atlas_size": worker_case_s,
        "worker_case_split_s_at_atlas_size": split,
        "client_limit_cases_per_min": client_cases_per_s * 60,
        "rows": rows,
    }


def print_tables(runs: list[dict], projection: dict) -> None:
    header = ("executor", "workers", "cases", "wall s", "cases/min", "steady/min", "efficiency")
    print("\n" + "".join(f"{h:<10}" if i == 0 else f"{h:>{WIDTHS[i]}}" for i, h in enumerate(header)))
    for r in runs:
        steady = f"{r['steady_cases_per_min']:.1f}" if r["steady_cases_per_min"] else "-"
        efficiency = f"{r['efficiency']:.2f}" if r.get("efficiency") else "-"
        print(
            f"{r['executor']:<10}{r['workers']:>8}{r['cases']:>7}{r['wall_s']:>9.1f}"
            f"{r['cases_per_min']:>11.1f}{steady:>12}{efficiency:>12}"
        )
    cost = projection["measured_per_case_s"]
    print(
        f"\nper case here: read+hash {cost['read'] * 1000:.0f} ms, inference {cost['inference']:.2f} s,"
        f" write {cost['write']:.2f} s; the client records {cost['client_record'] * 1000:.1f} ms"
    )
    a = projection["assumptions"]
    print(
        f"projection for {ATLAS_CTS:,} CTs of {a['ct_voxels'] / 1e6:.0f} M voxels"
        f" ({a['voxel_scale_vs_measured']:.0f}x the cases here, costs linear in voxels), inference"
        f" {a['gpu_inference_speedup']:.0f}x faster on a GPU, efficiency {a['efficiency_of_n_workers']:.2f}"
        f" per worker, worker start {a['worker_start_s']:.0f} s:"
        f" {projection['worker_case_s_at_atlas_size']:.1f} s per CT per worker (inference"
        f" {projection['worker_case_split_s_at_atlas_size']['inference']:.1f} s, writing"
        f" {projection['worker_case_split_s_at_atlas_size']['write']:.1f} s); the client records at most"
        f" {projection['client_limit_cases_per_min']:,.0f} cases/min; the filesystem is assumed to keep up"
    )
    print(f"{'GPU workers':>12}{'hours':>9}{'cases/min':>11}")
    for row in projection["rows"]:
        print(f"{row['gpu_workers']:>12}{row['hours']:>9.2f}{row['cases_per_min']:>11.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 cases, a 2-step model (a smoke run)")
    parser.add_argument("--cases", type=int, default=None, help="unlabelled cases predicted per run (24)")
    parser.add_argument("--train-minutes", type=float, default=1.0, help="training budget of the model")
    parser.add_argument(
        "--work", help="folder keeping the project and model between runs (default: temporary)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the workers' and the split's device)")
    parser.add_argument("--slices", type=int, default=300, help="axial slices of a projected 512x512 CT")
    parser.add_argument("--gpu-speedup", type=float, default=25.0, help="assumed GPU/CPU inference ratio")
    parser.add_argument("--efficiency", type=float, default=1.0, help="assumed efficiency of N GPU workers")
    parser.add_argument("--json", help="write the numbers to this JSON file")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"OpenKBP data not found: expected {DATA} (see shared/data/INVENTORY.md)")
    from segloop.store import Project

    n_cases = args.cases or (4 if args.quick else 24)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="segloop-scale-predict-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"batch prediction of {n_cases} OpenKBP CTs, {machine_load()}", flush=True)
        template, cases = prepare_project(work, n_cases, args.train_minutes, args.quick)
        record = time_recording()
        runs = []
        for executor, workers in (("local", None), ("dask", 1), ("dask", 2)):
            runs.append(run_batch(template, cases, executor, workers, args.device))
            print(f"{executor} {workers or ''}: {runs[-1]['wall_s']:.1f} s, {machine_load()}", flush=True)
        one = runs[1]["steady_cases_per_min"]
        for run in runs[1:]:
            if one and run["steady_cases_per_min"]:
                run["efficiency"] = run["steady_cases_per_min"] / (run["workers"] * one)
        costs = split_case_cost(Project.open(template), cases[:3], args.device)
        projection = project_atlas(runs, costs, record, args)
        print_tables(runs, projection)
        if args.json:
            result = {"load": machine_load(), "runs": runs, "projection": projection}
            Path(args.json).write_text(json.dumps(result, indent=2))
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
