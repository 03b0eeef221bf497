"""Scale-out, in one run: the store's latency vs number of cases (SQLite, and PostgreSQL when given),
batch prediction vs Dask workers, training with 1 vs 2 torch.distributed processes. Run from the
repository root:

    .venv/bin/python benchmarks/scale.py [--quick] [--only store,predict,train] [--postgres URL]

Each part is its own script (`benchmarks/scale_<part>.py`, runnable alone with ``--help``) and prints
its own table; ``--json DIR`` keeps each part's numbers as ``DIR/scale_<part>.json``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PARTS = ("store", "predict", "train")


def part_command(part: str, args: argparse.Namespace) -> list[str]:
    """The command line that runs one part with the options given to this script."""
    command = [sys.executable, str(HERE / f"scale_{part}.py")]
    if args.quick:
        command.append("--quick")
    if args.json:
        command += ["--json", str(Path(args.json) / f"scale_{part}.json")]
    if part == "store" and args.postgres:
        command += ["--postgres", args.postgres]
    return command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and budgets (a smoke run)")
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts to run")
    parser.add_argument("--postgres", help="a PostgreSQL URL for the store part (an empty database)")
    parser.add_argument("--json", help="a folder for each part's JSON numbers")
    args = parser.parse_args()
    parts = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}: expected some of {', '.join(PARTS)}")
    if args.json:
        Path(args.json).mkdir(parents=True, exist_ok=True)
    failed = []
    for part in parts:
        print(f"\n== {part} ==", flush=True)
        if subprocess.run(part_command(part, args), check=False).returncode != 0:
            failed.append(part)
    if failed:
        sys.exit(f"failed part(s): {', '.join(failed)}")


if __name__ == "__main__":
    main()
