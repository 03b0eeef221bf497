"""Training throughput with 1 vs 2 torch.distributed processes on real data (OpenKBP head-and-neck CT).

Each run trains segloop's default 2D UNet (batch norm, 80² crops of axial slices, a global batch of
16: 8 per process with 2) on the 30 train-split cases for a fixed time budget, without validation,
through `segloop.engine.train.train` (``nproc=2``: two spawned processes, gloo on the CPU, DDP,
one torch thread each; ``nproc=1``: one process with every core). Reported per run:

- ``samples/s``: slices trained per second over the optimiser steps (all processes together;
  `TrainResult.samples_per_s`), and the speed-up over 1 process;
- ``steps``, ``wall s`` (including the workers' start: importing torch and MONAI, joining the group).

On a 2-core CPU two processes share the same two cores that one process already uses with two
threads, and add a gradient allreduce per step: expect little or no gain. The point of ``--nproc``
there is that it is correct (tests/engine/test_distributed.py: the weights of one process); the
gain comes with more cores or one GPU per process (``--device cuda``, nccl).

Run from the repository root:

    .venv/bin/python benchmarks/scale_train.py [--quick] [--seconds 75] [--nproc 1,2]
        [--device cpu] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from engine import (  # benchmarks/engine.py (this folder is on sys.path)
    DATA,
    N_CLASSES,
    base_config,
    list_cases,
    load_case,
    load_load,
)


def run(nproc: int, seconds: float, device: str, cases: list, out: Path) -> dict:
    """One timed run with ``nproc`` processes; its throughput and counts."""
    from segloop.engine.train import train

    threads = max(1, (os.cpu_count() or 1) // nproc)
    config = base_config(2, seconds / 60.0).replace(num_threads=threads)
    started = time.perf_counter()
    result = train(
        config, cases, n_classes=N_CLASSES, device=device, checkpoint_path=out / f"{nproc}.pt", nproc=nproc
    )
    return {
        "nproc": nproc,
        "threads_per_process": threads,
        "samples_per_s": result.samples_per_s,
        "steps": result.steps,
        "samples": result.steps * config.batch_size,
        "wall_s": time.perf_counter() - started,
        "load": load_load(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 20 s budget and 6 cases (a smoke run)")
    parser.add_argument("--seconds", type=float, default=75.0, help="time budget of each run")
    parser.add_argument("--nproc", default="1,2", help="process counts to compare, comma-separated")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (one GPU per process)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"no OpenKBP data at {DATA}: expected the shared data folder (see INVENTORY.md)")
    seconds = 20.0 if args.quick else args.seconds
    counts = [int(n) for n in args.nproc.split(",")]
    case_ids = list_cases("train-pats")[: 6 if args.quick else None]
    cases = [load_case(case_id, compress=True) for case_id in case_ids]
    print(f"{len(cases)} OpenKBP cases, {seconds:.0f} s per run, device {args.device}; {load_load()}")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for nproc in counts:
            rows.append(run(nproc, seconds, args.device, cases, Path(folder)))
    base = rows[0]["samples_per_s"]
    print(f"\n{'processes':>9} {'threads':>7} {'samples/s':>10} {'speed-up':>8} {'steps':>6} {'wall s':>7}")
    for row in rows:
        row["speed_up"] = row["samples_per_s"] / base if base else None
        print(
            f"{row['nproc']:>9} {row['threads_per_process']:>7} {row['samples_per_s']:>10.1f}"
            f" {row['speed_up']:>8.2f} {row['steps']:>6} {row['wall_s']:>7.1f}"
        )
    print(f"({os.cpu_count()} cores; {load_load()} at the end)")
    if args.json:
        args.json.write_text(json.dumps({"seconds": seconds, "cases": len(cases), "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
