"""Labeling tools vs their peers, in one run: islands, morphology, distance maps, fill between slices,
grow from seeds, meshes. Ratios > 1 mean segloop is faster. Run from the repository root:

    .venv/bin/python benchmarks/segment.py [--repeats 3] [--only basic,interpolate,grow,mesh]

ITK's interpolator comes from the `bench` extra (`pip install -e ".[bench]"`, done by `make bench`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PARTS = ("basic", "interpolate", "grow", "mesh")


def _fmt(value: object, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts to run")
    args = parser.parse_args()
    header = f"{'operation':<64}{'segloop s':>10}{'peer s':>10}{'ratio':>8}{'Dice':>7}{'peer Dice':>10}"
    print(header + "  peer; note")
    for part in args.only.split(","):
        module = importlib.import_module(f"segment_{part}")
        for row in module.run(args.repeats):
            print(
                f"{row['operation'][:63]:<64}{_fmt(row['segloop_s'], '.3f'):>10}"
                f"{_fmt(row['peer_s'], '.3f'):>10}"
                f"{_fmt(row['ratio'], '.1f'):>8}{_fmt(row['segloop_dice'], '.3f'):>7}"
                f"{_fmt(row['peer_dice'], '.3f'):>10}  {row['peer']}; {row['note']}"
            )


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # ITK's wrappers can abort in their exit handlers (malloc_consolidate); results are printed
