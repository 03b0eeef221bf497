"""Helpers of the loop tests: tiny training settings and small phantom projects."""

from __future__ import annotations

from pathlib import Path

from segloop.io import write_volume
from segloop.loop.cases import import_cases, init_project
from segloop.store import Project
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom

PHANTOM_SHAPE = (32, 32, 16)


def tiny_config(**changes):
    """A `TrainConfig` that trains a tiny network for two steps (tests of the plumbing, not of learning)."""
    from segloop.engine.config import TrainConfig

    settings = {
        "features": (8, 16),
        "epochs": 1,
        "steps_per_epoch": 2,
        "batch_size": 2,
        "validation_fraction": 0.5,
        "time_budget_min": None,
    }
    return TrainConfig(**{**settings, **changes})


def phantom_project(folder: Path, n_cases: int, n_labeled: int) -> Project:
    """A project of phantoms ``c0..`` whose first ``n_labeled`` have original labels."""
    project = init_project(folder / "proj", PHANTOM_CLASSES)
    images = []
    for index in range(n_cases):
        phantom = make_ct_phantom(PHANTOM_SHAPE, seed=index)
        images.append(write_volume(phantom.image, folder / "img" / f"c{index}_0000.nii.gz"))
        if index < n_labeled:
            write_volume(phantom.labels, folder / "lab" / f"c{index}.nii.gz")
    import_cases(project, images, labels_dir=folder / "lab")
    return project
