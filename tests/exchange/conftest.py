"""A small synthetic project for the exchange tests: labelled, sparse and unlabelled phantom cases."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from segloop.io import write_volume
from segloop.loop.cases import import_cases, init_project
from segloop.loop.tools import store_tool_labels
from segloop.store import Project
from segloop.synthetic import PHANTOM_CLASSES, SCRIBBLE_BACKGROUND, make_ct_phantom, make_scribbles

SHAPE = (24, 24, 12)
SPACING = (1.5, 1.5, 3.0)
OPENKBP_CASES = ("openkbp_pt_4", "openkbp_pt_100")


@dataclass
class PhantomProject:
    """The project and the reference labels of its cases."""

    project: Project
    references: dict[str, np.ndarray]
    images: dict[str, Path]


def make_phantom_project(root: Path) -> PhantomProject:
    """Cases c0, c1 (original labels), c2 (sparse scribbles: ignore elsewhere), c3 (no label)."""
    data = root / "data"
    references, images = {}, {}
    for index in range(4):
        phantom = make_ct_phantom(SHAPE, SPACING, seed=index)
        case_id = f"c{index}"
        images[case_id] = write_volume(phantom.image, data / "images" / f"{case_id}.nii.gz")
        references[case_id] = phantom.labels.array
        if index < 2:
            write_volume(phantom.labels, data / "labels" / f"{case_id}.nii.gz")
    project = init_project(root / "proj", PHANTOM_CLASSES)
    import_cases(project, list(images.values()), labels_dir=data / "labels", author="test")
    schema = project.config.schema
    scribbles = make_scribbles(references["c2"], SPACING, slices=2)
    sparse = np.where(scribbles == 0, schema.ignore_index, scribbles).astype(schema.dtype)
    sparse[scribbles == SCRIBBLE_BACKGROUND] = 0
    store_tool_labels(
        project,
        project.get_case("c2"),
        sparse,
        source="sparse",
        classes=schema.names,
        tool="test scribbles",
        params={},
        author="test",
    )
    return PhantomProject(project, references, images)


@pytest.fixture
def phantom_project(tmp_path) -> PhantomProject:
    return make_phantom_project(tmp_path)


@pytest.fixture
def openkbp_project(openkbp, tmp_path) -> Project:
    """Two real OpenKBP cases with their original labels."""
    from tests.conftest import OPENKBP_CLASSES

    project = init_project(tmp_path / "kbp", OPENKBP_CLASSES.split(","))
    images = [openkbp / "imagesTr" / f"{case}_0000.nii.gz" for case in OPENKBP_CASES]
    import_cases(project, images, labels_dir=openkbp / "labelsTr", author="test")
    return project
