"""Effort benchmark: how much human work segloop's loop needs, against contouring from scratch.

On OpenKBP (nnU-Net raw layout with ``cases.tsv``): the 30 ``train-pats`` cases are the pool the
simulated annotator labels, the 4 ``validation-pats`` cases the test set every round's model is
measured on. The effort is the simulated annotator's (`segloop.loop.simulate.CostModel`):

(a) from scratch: contouring every slice of every organ of the pool;
(b) segloop: a sparse start (7 contoured slices per organ + fill between) on ``--start`` cases
    (a seeded draw from the pool), then rounds of train (``--minutes-per-round`` of CPU) →
    predict → rank → simulated corrections of the ``--per-round`` queued cases.

Each run is a configuration ``strategy:mode:review`` and a seed: the ranking strategy
(``gain-per-cost``, ``uncertainty`` = AbdomenAtlas, ``random``, ...), continual or full retraining
(seed 002's comparison), and what the simulated person reviews of a queued case (``flagged``: the
slices the ranking flagged, the version covering exactly those; ``whole``: every slice), and
optionally which pseudo labels teach (``:confident``, goal 4's self-training: the confident voxels of
every prediction a person has not replaced; ``:all``; default ``none``). A seed
sets the start cases, the training seed and the random ranking; the same seed gives every
configuration the same start (paired comparison).

Prints per configuration and round the test Dice and cumulative effort (mean ± standard deviation
over seeds, and % of (a)); then the Dice each configuration reaches within 5/10/15/20 % of the
from-scratch effort (the last round whose effort fits), the targets of issue 15 (Dice >= 0.75 at
<= 15 %; gain-per-cost above random by more than the seeds' spread at equal effort). Writes
``effort.json`` (every round of every run, the load averages), ``effort.csv`` and ``effort.png``
(Dice vs hours, mean and min-max band per configuration) to ``--out``. A finished run's
``result.json`` is reused when the benchmark is run again with the same settings (``--fresh``: rerun).

    .venv/bin/python benchmarks/effort.py                      # the full grid: 18 runs, about 10 h
    nice -n 10 .venv/bin/python benchmarks/effort.py --quick   # smoke run: 2 rounds x 1 min, 1 seed

The full grid may be run in parts into the same ``--out`` (finished runs are reused, and the last
call's tables cover every configuration it names), e.g. ``--configs`` of the three strategies
first (9 runs, about 5 h), then the full-retraining and whole-review comparisons.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ORGANS = ("Brainstem", "SpinalCord", "RightParotid", "LeftParotid", "Esophagus", "Larynx", "Mandible")
TARGET_DICE = 0.75
TARGET_FRACTION = 0.15
FRACTIONS = (0.05, 0.10, 0.15, 0.20)
#: Every strategy on continual training with flagged review; the cost-aware one also with full
#: retraining and with whole-case review (the two comparisons), each over the seeds.
DEFAULT_CONFIGS = (
    "gain-per-cost:continual:flagged,uncertainty:continual:flagged,random:continual:flagged,"
    "gain-per-cost:full:flagged,gain-per-cost:continual:whole,random:continual:whole"
)
QUICK_CONFIGS = "gain-per-cost:continual:flagged,random:continual:whole"


def read_split(data: Path) -> tuple[list[str], list[str]]:
    """Pool (train-pats) and test (validation-pats) case ids from OpenKBP's cases.tsv."""
    with open(data / "cases.tsv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    pool = [r["case"] for r in rows if r["source_split"] == "train-pats"]
    test = [r["case"] for r in rows if r["source_split"] == "validation-pats"]
    return pool, test


def parse_configs(text: str) -> list[tuple[str, str, str, str]]:
    """``strategy:mode:review[:pseudo]`` (``review`` defaults to ``flagged``, ``pseudo`` to ``none``)."""
    from segloop.loop.ranking import get_strategy
    from segloop.loop.simulate import REVIEWS
    from segloop.loop.training import MODES, PSEUDO_POLICIES

    configs = []
    for part in text.split(","):
        fields = part.strip().split(":")
        strategy, mode, review, pseudo = (
            [*fields, *("flagged", "none")[len(fields) - 2 :]] if 2 <= len(fields) <= 4 else [""] * 4
        )
        if strategy:
            get_strategy(strategy)
        if mode not in MODES or review not in REVIEWS or pseudo not in PSEUDO_POLICIES:
            sys.exit(
                f"error: configuration {part!r}: expected strategy:{'|'.join(MODES)}:{'|'.join(REVIEWS)}"
                f"[:{'|'.join(PSEUDO_POLICIES)}]"
            )
        configs.append((strategy, mode, review, pseudo))
    return configs


def run_one(
    args, config: tuple[str, str, str], seed: int, pool: list[str], test_data: dict, references: dict
):
    """One configuration and seed in a fresh project: the rounds as dicts (reused when done before)."""
    from segloop.loop.cases import import_cases, init_project
    from segloop.loop.ranking import order_random
    from segloop.loop.simulate import SimulatedAnnotator, run_simulated_loop
    from segloop.loop.training import train_config

    strategy, mode, review, pseudo = config
    held_out = args.validation_fraction
    suffix = "" if held_out is None else f"-val{held_out:g}"
    root = args.out / f"{name_of(config).replace(':', '-')}{suffix}-seed{seed}"
    settings = {
        "rounds": args.rounds, "minutes_per_round": args.minutes_per_round, "start": args.start,
        "per_round": args.per_round, "pool": len(pool), "threads": args.threads,
    }  # fmt: skip
    if held_out is not None:
        settings["validation_fraction"] = held_out
    saved = root / "result.json"
    if saved.is_file() and not args.fresh:
        result = json.loads(saved.read_text(encoding="utf-8"))
        if result["settings"] == settings:
            print(f"    reused {saved}", flush=True)
            return result
    shutil.rmtree(root, ignore_errors=True)
    window = tuple(float(v) for v in args.window.split(","))
    names = [o.lower() for o in ORGANS]
    project = init_project(
        root, names, modality="CT", defaults={"window": list(window)}, pairs=[("rightparotid", "leftparotid")]
    )
    import_cases(project, [args.data / "imagesTr" / f"{c}_0000.nii.gz" for c in pool], author="benchmark")
    annotator = SimulatedAnnotator({c: references[c] for c in pool})
    # the loop's defaults (2.5D; mirroring, as the schema pairs the parotids), on axial 80² crops
    training = train_config(
        project,
        time_budget_min=args.minutes_per_round,
        seed=seed,
        slice_axis=2,
        patch_size=(80, 80),
        num_threads=args.threads or None,
        **({} if held_out is None else {"validation_fraction": held_out}),
    ).replace(epochs=None)  # the budget alone stops each round
    started, load = time.perf_counter(), os.getloadavg()[0]
    rounds = run_simulated_loop(
        project,
        annotator,
        training,
        start_cases=order_random(pool, seed)[: args.start],
        test_cases=test_data,
        rounds=args.rounds,
        corrections_per_round=args.per_round,
        mode=mode,
        strategy=strategy,
        review=review,
        include_pseudo=pseudo,
        seed=seed,
        on_step=lambda text: print(f"    {text}", flush=True),
    )
    result = {
        "config": list(config),
        "seed": seed,
        "settings": settings,
        "minutes": (time.perf_counter() - started) / 60,
        "load_average": [load, os.getloadavg()[0]],
        "rounds": [
            {
                "round": r.round,
                "hours": r.effort.hours,
                "mean_test_dice": r.mean_test_dice,
                "test_dice": r.test_dice,
                "cases_by_source": r.cases_by_source,
                "slices_reviewed": r.effort.slices_reviewed,
                "cases_opened": r.effort.cases_opened,
            }
            for r in rounds
        ],
    }
    saved.write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result


def dice_at(rounds: list[dict], hours: float) -> float:
    """Test Dice of the last round whose cumulative effort is within ``hours`` (NaN: none is)."""
    within = [r["mean_test_dice"] for r in rounds if r["hours"] <= hours]
    return within[-1] if within else float("nan")


def mean_spread(values) -> tuple[float, float]:
    """Mean and standard deviation (ddof 1; 0 for one value) of the finite values (NaN: none)."""
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if finite.size == 0:
        return float("nan"), float("nan")
    return float(finite.mean()), float(finite.std(ddof=1)) if finite.size > 1 else 0.0


def name_of(config) -> str:
    """``strategy:mode:review``, with ``:pseudo`` when pseudo labels teach."""
    return ":".join(config if config[3] != "none" else config[:3])


def plot(runs: dict, manual_hours: float, path: Path) -> None:
    """Mean test Dice vs mean cumulative hours per configuration, min-max band over seeds."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5))
    axes = figure.subplots()
    for name, results in runs.items():
        count = min(len(r["rounds"]) for r in results)
        hours = np.array([[r["rounds"][i]["hours"] for i in range(count)] for r in results])
        dice = np.array([[r["rounds"][i]["mean_test_dice"] for i in range(count)] for r in results])
        line = axes.plot(hours.mean(0), dice.mean(0), marker="o", label=f"{name} ({len(results)} seeds)")[0]
        if len(results) > 1:
            axes.fill_between(hours.mean(0), dice.min(0), dice.max(0), color=line.get_color(), alpha=0.15)
    axes.axhline(TARGET_DICE, color="grey", linestyle="--", linewidth=1, label=f"target Dice {TARGET_DICE}")
    axes.axvline(TARGET_FRACTION * manual_hours, color="grey", linestyle=":", linewidth=1,
                 label=f"{TARGET_FRACTION:.0%} of from scratch")  # fmt: skip
    axes.set(
        xlabel="cumulative simulated annotation effort (h)", ylabel="mean test Dice (4 cases)", ylim=(0, 1)
    )
    axes.set_title(f"OpenKBP: test Dice vs effort (from scratch: {manual_hours:.1f} h)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.savefig(path, dpi=100, bbox_inches="tight")


def summarize(runs: dict, manual_hours: float) -> dict:
    """Dice at fixed fractions of the from-scratch effort per configuration, and the two targets."""
    at_effort = {
        name: {
            f"{f:.2f}": mean_spread([dice_at(r["rounds"], f * manual_hours) for r in results])
            for f in FRACTIONS
        }
        for name, results in runs.items()
    }
    targets = {}
    key = f"{TARGET_FRACTION:.2f}"
    for name, values in at_effort.items():
        targets[name] = {"dice_at_target_effort": values[key], "reached": values[key][0] >= TARGET_DICE}
    pairs = [(a, b) for a in runs for b in runs if a.startswith("gain-per-cost:") and b.startswith("random:")
             and a.split(":")[1:] == b.split(":")[1:]]  # fmt: skip
    comparisons = {}
    for cost_aware, random in pairs:
        rows = {}
        for fraction in FRACTIONS:
            (a, sa), (b, sb) = at_effort[cost_aware][f"{fraction:.2f}"], at_effort[random][f"{fraction:.2f}"]
            rows[f"{fraction:.2f}"] = {
                "difference": a - b,
                "spread": max(sa, sb),
                # one seed has no spread to beat: a difference alone decides nothing
                "beats": a - b > max(sa, sb) and min(len(runs[cost_aware]), len(runs[random])) > 1,
            }
        comparisons[f"{cost_aware} vs {random}"] = rows
    return {"at_effort": at_effort, "targets": targets, "comparisons": comparisons}


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Duration: about runs x rounds x (minutes per round + 1-2 min of prediction and scoring); "
        "the default grid (6 configurations x 3 seeds x 4 rounds x 5 min) takes about 9-10 h on 2 cores.",
    )
    parser.add_argument("--data", type=Path, default=repo.parent / "shared" / "data" / "openkbp-headneck-ct")
    parser.add_argument("--out", type=Path, default=Path("/tmp/segloop-bench-effort"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--minutes-per-round", type=float, default=5.0, help="CPU minutes of training a round"
    )
    parser.add_argument("--start", type=int, default=5, help="cases annotated sparsely before round 1")
    parser.add_argument("--per-round", type=int, default=5, help="cases corrected after each round")
    parser.add_argument(
        "--pool", type=int, default=0, help="use only the first N train-pats cases (0: all 30)"
    )
    parser.add_argument(
        "--configs",
        default=DEFAULT_CONFIGS,
        help="strategy:mode:review[:pseudo] (pseudo: none, all or confident; default none), comma-separated",
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--window", default="400,1064", help="CT window in stored units (OpenKBP: HU + 1024)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=None,
        help="labelled cases each round holds out to pick its best epoch (default: the loop's 0.2;"
        " 0: train on every labelled case, keep the last weights)",
    )
    parser.add_argument("--fresh", action="store_true", help="rerun runs whose result.json exists")
    quick = "smoke run: 2 rounds x 1 min, seed 0, a pool of 10, 3 cases a round, 2 configurations"
    parser.add_argument("--quick", action="store_true", help=quick)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.minutes_per_round, args.seeds, args.pool, args.per_round = 2, 1.0, "0", 10, 3
        args.configs = QUICK_CONFIGS if args.configs == DEFAULT_CONFIGS else args.configs
    if not (args.data / "cases.tsv").is_file():
        sys.exit(f"error: {args.data} is not the OpenKBP folder (expected cases.tsv, imagesTr/, labelsTr/)")
    if args.validation_fraction is not None and not 0.0 <= args.validation_fraction < 1.0:
        parser.error(f"--validation-fraction {args.validation_fraction:g}: expected a number in [0, 1)")
    configs = parse_configs(args.configs)
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)

    from segloop.core.geometry import axis_of_plane
    from segloop.io import read_volume
    from segloop.loop.simulate import CostModel, Effort, manual_effort

    pool, test = read_split(args.data)
    pool = pool[: args.pool] if args.pool else pool
    references, manual = {}, Effort()
    for case_id in pool:
        volume = read_volume(args.data / "labelsTr" / f"{case_id}.nii.gz")
        references[case_id] = np.asarray(volume.array)
        axis = axis_of_plane(volume.affine, "axial")
        manual += manual_effort(references[case_id], range(1, len(ORGANS) + 1), axis, CostModel())
    test_data = {
        c: (
            read_volume(args.data / "imagesTr" / f"{c}_0000.nii.gz"),
            np.asarray(read_volume(args.data / "labelsTr" / f"{c}.nii.gz").array),
        )
        for c in test
    }
    print(
        f"(a) from scratch, {len(pool)} cases: {manual.hours:.1f} h"
        f" ({manual.slices_drawn} slices, {manual.contour_points} contour points)",
        flush=True,
    )
    if args.validation_fraction is not None:
        print(f"every round holds out {args.validation_fraction:g} of its labelled cases for validation")
    runs: dict[str, list[dict]] = {}
    for config in configs:
        for seed in seeds:
            print(f"== {name_of(config)} seed {seed} (load {os.getloadavg()[0]:.2f})", flush=True)
            runs.setdefault(name_of(config), []).append(
                run_one(args, config, seed, pool, test_data, references)
            )
    rows = []
    width = max(len("configuration"), *(len(name) for name in runs))
    print(f"\n{'configuration':<{width}} round  effort h (mean ± sd)   % of scratch  test Dice (mean ± sd)")
    for name, results in runs.items():
        for index in range(min(len(r["rounds"]) for r in results)):
            hours = mean_spread([r["rounds"][index]["hours"] for r in results])
            dice = mean_spread([r["rounds"][index]["mean_test_dice"] for r in results])
            print(f"{name:<{width}} {index + 1:>5}  {hours[0]:6.2f} ± {hours[1]:5.2f}"
                  f"       {hours[0] / manual.hours:10.1%}  {dice[0]:.3f} ± {dice[1]:.3f}")  # fmt: skip
            fraction = hours[0] / manual.hours
            rows.append([name, index + 1, f"{hours[0]:.3f}", f"{hours[1]:.3f}", f"{fraction:.4f}",
                         f"{dice[0]:.4f}", f"{dice[1]:.4f}", len(results)])  # fmt: skip
    summary = summarize(runs, manual.hours)
    print(
        f"\ntest Dice within a fraction of the from-scratch effort ({manual.hours:.1f} h),"
        " mean ± sd over seeds:"
    )
    print(f"{'configuration':<{width}} " + "  ".join(f"{f:>13.0%}" for f in FRACTIONS))
    for name, values in summary["at_effort"].items():
        print(f"{name:<{width}} " + "  ".join(f"{m:5.3f} ± {s:.3f}" for m, s in values.values()))
    print(f"\ntargets: test Dice >= {TARGET_DICE} at <= {TARGET_FRACTION:.0%} of the from-scratch effort")
    for name, target in summary["targets"].items():
        mean, spread = target["dice_at_target_effort"]
        verdict = "reached" if target["reached"] else f"missed by {TARGET_DICE - mean:.3f}"
        print(f"  {name}: {mean:.3f} ± {spread:.3f} ({verdict})")
    for pair, values in summary["comparisons"].items():
        print(f"  {pair}: " + ", ".join(
            f"at {f}: {v['difference']:+.3f} (spread {v['spread']:.3f}{', beats' if v['beats'] else ''})"
            for f, v in values.items()
        ))  # fmt: skip
    with open(args.out / "effort.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["configuration", "round", "effort_h", "effort_h_sd", "fraction_of_scratch",
                         "mean_test_dice", "mean_test_dice_sd", "seeds"])  # fmt: skip
        writer.writerows(rows)
    report = {"manual_hours": manual.hours, "pool": len(pool), "runs": runs, **summary}
    (args.out / "effort.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    plot(runs, manual.hours, args.out / "effort.png")
    print(f"wrote {args.out / 'effort.json'}, {args.out / 'effort.csv'} and {args.out / 'effort.png'}")


if __name__ == "__main__":
    main()
