"""Effort benchmark: how much human work segloop's loop needs, against contouring from scratch.

On OpenKBP (nnU-Net raw layout with ``cases.tsv``): the 30 ``train-pats`` cases are the pool the
simulated annotator labels, the 4 ``validation-pats`` cases the test set every round's model is
measured on. In one run:

(a) from scratch: contouring every slice of every organ of the pool (the cost model of
    `segloop.loop.simulate`);
(b) segloop with random selection and (c) with uncertainty ranking, each with continual and with
    full training: a sparse start (7 contoured slices per organ + fill between) on a few cases,
    then rounds of train → predict → rank → simulated corrections of the queue.

Prints a table per configuration and the headline (effort to reach a mean test Dice of 0.80, or
the best reached, as a fraction of (a)); writes ``effort.csv`` and ``effort.png`` (test Dice vs
cumulative effort) to ``--out``.

    .venv/bin/python benchmarks/effort.py --data ../shared/data/openkbp-headneck-ct [--rounds 4]
        [--minutes-per-round 2] [--configs uncertainty:continual,random:continual,...]
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ORGANS = ("Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx", "Mandible")
TARGET_DICE = 0.80


def read_split(data: Path) -> tuple[list[str], list[str]]:
    """Pool (train-pats) and test (validation-pats) case ids from OpenKBP's cases.tsv."""
    with open(data / "cases.tsv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    pool = [r["case"] for r in rows if r["source_split"] == "train-pats"]
    test = [r["case"] for r in rows if r["source_split"] == "validation-pats"]
    return pool, test


def run_config(args, strategy: str, mode: str, pool: list[str], test_data: dict, references: dict):
    from segloop.engine.config import TrainConfig
    from segloop.loop.cases import import_cases, init_project
    from segloop.loop.simulate import SimulatedAnnotator, run_simulated_loop

    root = args.out / f"{strategy}-{mode}"
    shutil.rmtree(root, ignore_errors=True)
    window = tuple(float(v) for v in args.window.split(","))
    project = init_project(
        root, [o.lower() for o in ORGANS], modality="CT", defaults={"window": list(window)}
    )
    import_cases(project, [args.data / "imagesTr" / f"{c}_0000.nii.gz" for c in pool], author="benchmark")
    annotator = SimulatedAnnotator({c: references[c] for c in pool})
    config = TrainConfig(
        time_budget_min=args.minutes_per_round,
        epochs=None,
        seed=args.seed,
        window=window,
        slice_axis=2,
        patch_size=(80, 80),
        num_threads=args.threads or None,
    )
    started = time.perf_counter()
    results = run_simulated_loop(
        project,
        annotator,
        config,
        start_cases=pool[: args.start],
        test_cases=test_data,
        rounds=args.rounds,
        corrections_per_round=args.per_round,
        mode=mode,
        strategy=strategy,
        on_step=lambda text: print(f"    {text}", flush=True),
    )
    return results, time.perf_counter() - started


def effort_to_reach(results, target: float) -> tuple[float, float, int]:
    """(seconds, Dice, round) of the first round reaching ``target``, else of the best round."""
    for item in results:
        if item.mean_test_dice >= target:
            return item.effort.seconds, item.mean_test_dice, item.round
    best = max(results, key=lambda item: item.mean_test_dice)
    return best.effort.seconds, best.mean_test_dice, best.round


def plot(curves: dict, manual_hours: float, path: Path) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    axes = figure.subplots()
    for name, results in curves.items():
        axes.plot(
            [r.effort.hours for r in results], [r.mean_test_dice for r in results], marker="o", label=name
        )
    axes.axhline(TARGET_DICE, color="grey", linestyle="--", linewidth=1, label=f"target Dice {TARGET_DICE}")
    axes.set(
        xlabel="cumulative simulated annotation effort (h)", ylabel="mean test Dice (4 cases)", ylim=(0, 1)
    )
    axes.set_title(f"OpenKBP: test Dice vs effort (from scratch: {manual_hours:.1f} h)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=100, bbox_inches="tight")


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=repo.parent / "shared" / "data" / "openkbp-headneck-ct")
    parser.add_argument("--out", type=Path, default=Path("/tmp/segloop-bench-effort"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--minutes-per-round", type=float, default=2.0)
    parser.add_argument("--start", type=int, default=5, help="cases annotated sparsely before round 1")
    parser.add_argument("--per-round", type=int, default=5, help="cases corrected after each round")
    parser.add_argument(
        "--configs",
        default="uncertainty:continual,random:continual,uncertainty:full,random:full",
        help="strategy:mode pairs, comma-separated",
    )
    parser.add_argument("--window", default="400,1064", help="CT window in stored units (OpenKBP: HU + 1024)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not (args.data / "cases.tsv").is_file():
        sys.exit(f"error: {args.data} is not the OpenKBP folder (expected cases.tsv, imagesTr/, labelsTr/)")
    args.out.mkdir(parents=True, exist_ok=True)

    from segloop.core.geometry import axis_of_plane
    from segloop.io import read_volume
    from segloop.loop.simulate import CostModel, Effort, manual_effort

    pool, test = read_split(args.data)
    references = {c: np.asarray(read_volume(args.data / "labelsTr" / f"{c}.nii.gz").array) for c in pool}
    test_data = {
        c: (
            read_volume(args.data / "imagesTr" / f"{c}_0000.nii.gz"),
            np.asarray(read_volume(args.data / "labelsTr" / f"{c}.nii.gz").array),
        )
        for c in test
    }
    manual = Effort()
    for case_id, reference in references.items():
        affine = read_volume(args.data / "labelsTr" / f"{case_id}.nii.gz").affine
        manual += manual_effort(
            reference, range(1, len(ORGANS) + 1), axis_of_plane(affine, "axial"), CostModel()
        )
    print(
        f"(a) from scratch, {len(pool)} cases: {manual.hours:.1f} h"
        f" ({manual.slices_drawn} slices, {manual.contour_points} contour points)",
        flush=True,
    )
    curves, rows = {}, []
    for pair in args.configs.split(","):
        strategy, mode = pair.split(":")
        print(f"== {strategy} ranking, {mode} training ({os.getloadavg()[0]:.2f} load)", flush=True)
        results, seconds = run_config(args, strategy, mode, pool, test_data, references)
        curves[f"{strategy}, {mode}"] = results
        for item in results:
            rows.append(
                [
                    strategy,
                    mode,
                    item.round,
                    f"{item.effort.hours:.3f}",
                    f"{item.effort.seconds / manual.seconds:.4f}",
                    f"{item.mean_test_dice:.4f}",
                    ";".join(f"{k}={v:.3f}" for k, v in item.test_dice.items()),
                ]
            )
            print(
                f"  round {item.round}: test Dice {item.mean_test_dice:.3f}, effort {item.effort.hours:.2f} h"
                f" = {item.effort.seconds / manual.seconds:.1%} of from scratch ({item.cases_by_source})",
                flush=True,
            )
        print(f"  {seconds / 60:.1f} min", flush=True)
    with open(args.out / "effort.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["strategy", "mode", "round", "effort_h", "fraction_of_scratch", "mean_test_dice", "per_class"]
        )
        writer.writerows(rows)
    plot(curves, manual.hours, args.out / "effort.png")
    print(f"headline (target mean test Dice {TARGET_DICE}; from scratch {manual.hours:.1f} h):")
    for name, results in curves.items():
        seconds, dice, number = effort_to_reach(results, TARGET_DICE)
        reached = "reached" if dice >= TARGET_DICE else "best reached"
        print(
            f"  {name}: {reached} Dice {dice:.3f} in round {number}"
            f" at {seconds / manual.seconds:.1%} of the effort"
        )
    print(f"wrote {args.out / 'effort.csv'} and {args.out / 'effort.png'}")


if __name__ == "__main__":
    main()
