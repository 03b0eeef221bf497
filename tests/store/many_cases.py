"""A project of many tiny cases with random label versions, stored through the real insert path.

Every version of every case points at one tiny label object (the summaries read rows, not voxels);
the images are recorded but never written (nothing here reads them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segloop.core.labels import LabelSchema
from segloop.core.provenance import Source
from segloop.store import ImageRecord, NewCase, NewLabel, Project, ProjectConfig

CLASSES = ("liver", "spleen", "kidney_left", "kidney_right")
SHAPE = (4, 4, 2)


def random_label(rng: np.random.Generator, key: str, classes: tuple[str, ...]) -> NewLabel:
    """A version of a random source annotating a random non-empty subset of ``classes``."""
    source = str(rng.choice([s.value for s in Source]))
    chosen = tuple(c for c in classes if rng.random() < 0.6) or (classes[int(rng.integers(len(classes)))],)
    params = {"patches": [{"offset": [0, 0, 0], "size": [2, 2, 2]}]} if rng.random() < 0.3 else {}
    return NewLabel(key, source, chosen, dict.fromkeys(chosen, 1), "ann", "test", params)


def make_many_cases_project(
    root: Path, count: int, *, seed: int = 0, classes: tuple[str, ...] = CLASSES, max_versions: int = 3
) -> Project:
    """A new project of ``count`` cases ``case0000..`` (`add_random_cases`)."""
    project = Project.create(root, ProjectConfig(name=root.name, schema=LabelSchema.from_names(classes)))
    add_random_cases(project, count, seed=seed, max_versions=max_versions)
    return project


def add_random_cases(
    project: Project, count: int, *, first: int = 0, seed: int = 0, max_versions: int = 3
) -> None:
    """Add cases ``case{first}..`` with 0..``max_versions`` random versions each, in one transaction."""
    if count == 0:
        return
    classes = project.config.schema.names
    labels = np.zeros(SHAPE, np.uint8)
    labels[0, 0, 0] = 1
    with project.objects.stage() as staged:
        key = staged.put(labels, np.eye(4))
    rng = np.random.default_rng(seed)
    new_cases, versions = [], []
    for index in range(first, first + count):
        case_id = f"case{index:04d}"
        image = ImageRecord(0, str(project.root / "images" / f"{case_id}.nii.gz"), 10, "0" * 64)
        new_cases.append(NewCase(case_id, SHAPE, np.eye(4), "int16", (image,), "ann"))
        versions += [
            (case_id, random_label(rng, key, classes)) for _ in range(rng.integers(0, max_versions + 1))
        ]
    project.add_cases(new_cases, versions)
