"""`segloop demo`: the whole loop with a simulated annotator, on synthetic or real data.

The data is a folder in nnU-Net's raw layout (``imagesTr/<case>_0000.nii.gz`` and
``labelsTr/<case>.nii.gz``); with none, a SYNTHETIC CT-like cohort is written first. The reference
labels stay with the simulated annotator (`segloop.loop.simulate`); the project sees only images
and what the annotator submits. The last cases are test cases kept out of the project, to measure
every round's model. Then: a sparse start on a few cases, and rounds of train → predict → evaluate
→ rank → simulated corrections of the queue, each measured, and the HTML report.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segloop.core.geometry import axis_of_plane
from segloop.core.volume import Volume
from segloop.errors import InvalidInputError, NotFoundError
from segloop.io import read_volume, write_volume
from segloop.io.checks import check_scalar_image
from segloop.loop.cases import import_cases, init_project, strip_suffix
from segloop.loop.jobs import ProgressCallback
from segloop.loop.simulate import (
    Effort,
    SimulatedAnnotator,
    SimulatedRound,
    manual_effort,
    run_simulated_loop,
)
from segloop.loop.training import train_config
from segloop.store import Project
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom

__all__ = ["DemoResult", "read_raw_dataset", "run_demo", "write_synthetic_cohort"]

_SYNTHETIC_CASES = 10
_SYNTHETIC_SHAPE = (80, 80, 40)


def write_synthetic_cohort(folder: Path, n_cases: int, shape: Sequence[int] = _SYNTHETIC_SHAPE) -> None:
    """Write ``imagesTr/synth_NNN_0000.nii.gz``, ``labelsTr/synth_NNN.nii.gz`` and a dataset.json."""
    for index in range(n_cases):
        phantom = make_ct_phantom(tuple(shape), seed=index)
        write_volume(phantom.image, folder / "imagesTr" / f"synth_{index:03d}_0000.nii.gz")
        write_volume(phantom.labels, folder / "labelsTr" / f"synth_{index:03d}.nii.gz")
    labels = {"background": 0, **{name: i for i, name in enumerate(PHANTOM_CLASSES, start=1)}}
    document = {"name": "SYNTHETIC phantoms", "channel_names": {"0": "CT"}, "labels": labels}
    (folder / "dataset.json").write_text(json.dumps(document, indent=2), encoding="utf-8")


def read_raw_dataset(folder: Path) -> tuple[list[str], dict[str, Path], dict[str, Path]]:
    """Class names, images and labels of an nnU-Net raw folder.

    Class names come from ``dataset.json`` (``labels``: name -> value) when present, else
    ``class_1..N`` for the largest label value.

    Returns:
        ``(class names in value order, case id -> image path, case id -> label path)``: cases with
        both, sorted by id.
    """
    images_dir, labels_dir = folder / "imagesTr", folder / "labelsTr"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        msg = f"{folder} is not an nnU-Net raw dataset: expected imagesTr/ and labelsTr/ in it"
        raise NotFoundError(msg)
    images = {strip_suffix(p).removesuffix("_0000"): p for p in sorted(images_dir.glob("*_0000.*"))}
    labels = {strip_suffix(p): p for p in sorted(labels_dir.iterdir()) if p.is_file()}
    shared = sorted(set(images) & set(labels))
    if not shared:
        msg = f"{folder}: no case has both imagesTr/<case>_0000.* and labelsTr/<case>.*"
        raise NotFoundError(msg)
    dataset_json = folder / "dataset.json"
    if dataset_json.is_file():
        values = json.loads(dataset_json.read_text(encoding="utf-8"))["labels"]
        names = [
            name for name, value in sorted(values.items(), key=lambda item: int(item[1])) if int(value) > 0
        ]
        names = [n for n in names if n != "ignore"]
    else:
        top = max(int(np.asarray(read_volume(labels[c]).array).max()) for c in shared)
        names = [f"class_{value}" for value in range(1, top + 1)]
    return names, {c: images[c] for c in shared}, {c: labels[c] for c in shared}


@dataclass(frozen=True)
class DemoResult:
    """What `run_demo` made.

    Attributes:
        project: the demo project.
        rounds: one entry per round.
        manual: the effort of contouring every slice of every pool case from scratch.
        report: the HTML report.
        synthetic: whether the data was the synthetic cohort.
    """

    project: Project
    rounds: list[SimulatedRound]
    manual: Effort
    report: Path
    synthetic: bool


def _scalar_image(path: Path) -> Volume:
    """A test image read as the import pipeline reads images: one finite number per voxel."""
    volume = read_volume(path)
    check_scalar_image(volume, f"image {path}")
    return volume


def run_demo(
    folder: Path | None = None,
    *,
    data: Path | None = None,
    rounds: int = 3,
    budget_minutes: float = 3.0,
    start_cases: int = 2,
    corrections_per_round: int = 2,
    test_cases: int = 2,
    strategy: str = "uncertainty",
    mode: str = "continual",
    window: tuple[float, float] | None = None,
    on_step: Callable[[str], None] = lambda _: None,
    on_progress: ProgressCallback | None = None,
) -> DemoResult:
    """Run the loop with a simulated annotator in ``folder`` (a new temporary folder if None).

    Args:
        folder: where to write the project (and the synthetic data).
        data: an nnU-Net raw folder (imagesTr/, labelsTr/); None: the synthetic cohort.
        rounds: rounds of the loop.
        budget_minutes: training time of all rounds together (split evenly).
        start_cases: cases annotated sparsely (7 contoured slices per organ) before round 1.
        corrections_per_round: top-ranked cases corrected after each round but the last.
        test_cases: the last cases, kept out of the project to measure each model.
        strategy: ranking strategy.
        mode: ``continual`` or ``full`` training.
        window: CT window (width, level) in stored units (default W400/L40 HU).
        on_step: receives one line per step.
        on_progress: receives the `Progress` events of training and prediction jobs.

    Raises:
        InvalidInputError: no round or no budget, too few cases in ``data``.
    """
    from segloop.loop.report import write_report

    if rounds < 1 or budget_minutes <= 0:
        msg = (
            f"the demo needs rounds >= 1 and a budget > 0 minutes; got {rounds} rounds, {budget_minutes} min"
        )
        raise InvalidInputError(msg)
    root = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="segloop-demo-"))
    synthetic = data is None
    if synthetic:
        data = root / "synthetic-data"
        on_step(f"writing {_SYNTHETIC_CASES} SYNTHETIC CT phantoms (not real patients) to {data}")
        write_synthetic_cohort(data, _SYNTHETIC_CASES)
    names, images, labels = read_raw_dataset(Path(data))
    case_ids = list(images)
    if len(case_ids) < start_cases + test_cases + 1:
        msg = (
            f"{data} holds {len(case_ids)} cases; the demo needs at least {start_cases + test_cases + 1}"
            f" ({start_cases} to start, {test_cases} to test, one to predict)"
        )
        raise InvalidInputError(msg)
    pool, tests = case_ids[: len(case_ids) - test_cases], case_ids[len(case_ids) - test_cases :]
    defaults = {"window": list(window)} if window else {}
    project = init_project(root / "project", names, modality="CT", name="demo", defaults=defaults)
    import_cases(project, [images[c] for c in pool], author="demo")
    references = {c: np.asarray(read_volume(labels[c]).array) for c in pool}
    annotator = SimulatedAnnotator(references)
    test_data = {c: (_scalar_image(images[c]), np.asarray(read_volume(labels[c]).array)) for c in tests}
    on_step(f"project {project.root}: {len(pool)} images (no labels), {len(tests)} test cases kept aside")
    settings: dict = {"time_budget_min": budget_minutes / rounds, "seed": 0}
    if synthetic:  # simple shapes: a small network learns them in the demo's minutes on a CPU
        settings.update(features=(8, 16, 32, 64), num_res_units=1, batch_size=8)
    config = train_config(project, **settings).replace(epochs=None)  # the time budget alone stops
    results = run_simulated_loop(
        project,
        annotator,
        config,
        start_cases=pool[:start_cases],
        test_cases=test_data,
        rounds=rounds,
        corrections_per_round=corrections_per_round,
        mode=mode,
        strategy=strategy,
        on_step=on_step,
        on_progress=on_progress,
    )
    manual = Effort()
    for case_id, reference in references.items():
        axis = axis_of_plane(project.get_case(case_id).affine, annotator.plane)
        manual += manual_effort(reference, range(1, len(names) + 1), axis, annotator.cost)
    return DemoResult(project, results, manual, write_report(project), synthetic)
