"""`segloop demo`: the most complete path that exists so far, on a synthetic cohort.

It writes a small synthetic CT cohort in nnU-Net's raw layout, creates a project, adds the cases
(two with original labels), exports an effective label as a Slicer segmentation, trains a 2D
network for a short time budget and predicts the unlabelled cases as pseudo labels. It grows into
the whole loop (rank, correct, retrain, measure) as those parts land.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from segloop.io import write_volume
from segloop.loop.cases import CaseSummary, export_label, import_cases, init_project, summarize_cases
from segloop.store import Project
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom

__all__ = ["run_demo"]

_N_CASES = 6
_N_LABELED = 2


def write_synthetic_cohort(folder: Path, n_cases: int, n_labeled: int) -> None:
    """Write ``imagesTr/synth_NNN_0000.nii.gz`` and, for the first ``n_labeled``, ``labelsTr``."""
    for index in range(n_cases):
        phantom = make_ct_phantom(seed=index)
        write_volume(phantom.image, folder / "imagesTr" / f"synth_{index:03d}_0000.nii.gz")
        if index < n_labeled:
            write_volume(phantom.labels, folder / "labelsTr" / f"synth_{index:03d}.nii.gz")


def run_demo(
    folder: Path | None = None,
    on_step: Callable[[str], None] = lambda _: None,
    *,
    minutes: float = 1.0,
    on_progress: Callable[[dict], None] | None = None,
) -> tuple[Project, list[CaseSummary]]:
    """Run the demo in ``folder`` (a new temporary folder if None); returns the project.

    Args:
        folder: where to write the data and the project.
        on_step: receives one line per step.
        minutes: training budget (0: skip training and prediction).
        on_progress: the engine's training progress callback.
    """
    root = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="segloop-demo-"))
    data = root / "synthetic-data"
    on_step(f"writing {_N_CASES} SYNTHETIC CT phantoms to {data}")
    write_synthetic_cohort(data, _N_CASES, _N_LABELED)
    project = init_project(root / "project", PHANTOM_CLASSES, modality="CT", name="synthetic-demo")
    images = sorted((data / "imagesTr").glob("*.nii.gz"))
    report = import_cases(project, images, labels_dir=data / "labelsTr", author="demo")
    on_step(f"added {len(report.added)} cases, {len(report.labeled)} with original labels")
    out = root / "synth_000.seg.nrrd"
    export_label(project, "synth_000", out)
    on_step(f"exported the effective label of synth_000 as a Slicer segmentation: {out}")
    if minutes > 0:
        from segloop.engine.config import TrainConfig
        from segloop.loop.training import predict_cases, train_project

        config = TrainConfig(time_budget_min=minutes, epochs=None, validation_fraction=0.5, seed=0)
        model = train_project(project, config, author="demo", on_progress=on_progress)
        dice = model.metrics.get("dice_per_class", {})
        on_step(
            f"trained model {model.id} for {model.metrics['elapsed_s']:.0f} s; validation Dice "
            + ", ".join(f"{name} {value:.2f}" for name, value in dice.items())
        )
        predictions = predict_cases(project, unlabeled=True, author="demo")
        on_step(f"predicted {len(predictions)} unlabelled cases as pseudo labels (with entropy maps)")
    return project, summarize_cases(project)
