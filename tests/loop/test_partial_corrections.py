"""A correction of part of a case (slices, a box, one class) teaches exactly what was reviewed."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from segloop.errors import InvalidInputError
from segloop.loop.corrections import Corrections, apply, apply_label, reviewed_region
from segloop.loop.training import collect_labeled_cases
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom
from tests.conftest import make_phantom_project

SHAPE = (24, 20, 16)
SLICES = slice(5, 8)  # the 3 reviewed axial slices (axis 2)


@pytest.fixture
def project(tmp_path):
    """Two phantoms; c0 has only a model's prediction (pseudo), which a person then corrects."""
    return make_phantom_project(tmp_path, 2, SHAPE, labeled=[0], source="pseudo")


def _learned(project, **options) -> np.ndarray:
    """The training target of c0 as training sees it (ignore = the schema's ignore index)."""
    cases, _ = collect_labeled_cases(project, **options)
    (case,) = [c for c in cases if c.case_id == "c0"]
    return np.asarray(case.labels)


def _in_slices() -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[:, :, SLICES] = True
    return mask


def test_a_version_covering_3_slices_teaches_only_those_slices(project):
    truth = make_ct_phantom(SHAPE, seed=0).labels.array
    ignore = project.config.schema.ignore_index
    case = project.get_case("c0")
    region = reviewed_region(case, slices="5:8", axis=2)
    result = apply_label(project, "c0", truth, parent=project.find_head("c0"), author="t", region=region)
    assert result.version.params["coverage"] == [
        {"offset": [0, 0, 5], "size": [SHAPE[0], SHAPE[1], 3], "border_voxels": 0}
    ]
    assert result.changed_voxels == 0  # the prediction was the truth: reviewed, accepted
    learned = _learned(project)
    # every class reviewed on 3 slices: exactly their voxels teach, with the person's values
    np.testing.assert_array_equal(learned != ignore, _in_slices())
    np.testing.assert_array_equal(learned[:, :, SLICES], truth[:, :, SLICES])
    # pseudo is learned only when asked: then the prediction speaks outside the reviewed slices
    with_pseudo = _learned(project, include_pseudo=True)
    np.testing.assert_array_equal(with_pseudo, truth)


def test_a_one_class_correction_of_3_slices_teaches_that_class_there_only(project):
    truth = make_ct_phantom(SHAPE, seed=0).labels.array
    ignore = project.config.schema.ignore_index
    liver = project.config.schema.index_of(PHANTOM_CLASSES[0])
    painted = np.zeros(SHAPE, dtype=bool)
    painted[2:6, 2:6, 6] = True  # the person adds a few voxels of liver on slice 6
    region = reviewed_region(project.get_case("c0"), slices="5:8")  # the axial axis: 2
    result = apply(
        project,
        "c0",
        Corrections(add=painted, class_name=PHANTOM_CLASSES[0]),
        parent=project.find_head("c0"),
        author="t",
        region=region,
    )
    assert result.version.classes == (PHANTOM_CLASSES[0],)
    liver_there = ((truth == liver) | painted) & _in_slices()
    learned = _learned(project)
    # the other classes were not reviewed: their absence is unknown, so only liver voxels teach
    np.testing.assert_array_equal(learned != ignore, liver_there)
    assert np.all(learned[liver_there] == liver)


def test_training_on_a_partial_version_learns_nothing_elsewhere(project):
    import torch

    from segloop.engine.losses import dice_ce_loss

    truth = make_ct_phantom(SHAPE, seed=0).labels.array
    region = reviewed_region(project.get_case("c0"), boxes=["4:20,:,5:8"])
    apply_label(project, "c0", truth, parent=project.find_head("c0"), author="t", region=region)
    learned = _learned(project)
    n_classes = project.config.schema.ignore_index
    # the 2D training step's loss: slices along axis 2 as a batch; its gradient is the learning
    labels = torch.from_numpy(np.moveaxis(learned, 2, 0).astype(np.int64))
    logits = torch.randn(SHAPE[2], n_classes, SHAPE[0], SHAPE[1], requires_grad=True)
    dice_ce_loss(logits, labels, ignore_index=n_classes).backward()
    moved = logits.grad.abs().sum(dim=1).numpy() > 0
    box = np.zeros(SHAPE, dtype=bool)
    box[4:20, :, SLICES] = True
    np.testing.assert_array_equal(np.moveaxis(moved, 0, 2), box)


def test_regions_outside_the_grid_or_corrections_outside_the_region_are_refused(project):
    case = project.get_case("c0")
    with pytest.raises(InvalidInputError, match=r"slices along axis 2 '10:20'.*<= 16"):
        reviewed_region(case, slices="10:20")
    with pytest.raises(InvalidInputError, match="expected three ranges"):
        reviewed_region(case, boxes=["0:4,0:4"])
    with pytest.raises(InvalidInputError, match="box axis 0 '0:99'"):
        reviewed_region(case, boxes=["0:99,:,:"])
    with pytest.raises(InvalidInputError, match="without reviewed slices"):
        reviewed_region(case, axis=1)
    painted = np.zeros(SHAPE, dtype=bool)
    painted[0, 0, 12] = True
    before = len(project.list_label_versions("c0"))
    with pytest.raises(InvalidInputError, match="add mask marks 1 voxels outside the reviewed region"):
        apply(
            project,
            "c0",
            Corrections(add=painted, class_name=PHANTOM_CLASSES[0]),
            parent=project.find_head("c0"),
            author="t",
            region=reviewed_region(case, slices="5:8"),
        )
    assert len(project.list_label_versions("c0")) == before


def test_a_reviewed_region_keeps_the_case_in_the_queue_with_that_region_excluded(project):
    from segloop.loop.ranking import _reviewed_boxes, list_candidate_cases

    truth = make_ct_phantom(SHAPE, seed=0).labels.array
    region = reviewed_region(project.get_case("c0"), slices="5:8", axis=2)
    apply_label(project, "c0", truth, parent=project.find_head("c0"), author="t", region=region)
    # a person saw 3 slices, not the case: every class of c0 is still open to correction ...
    assert dict(list_candidate_cases(project))["c0"] == tuple(PHANTOM_CLASSES)
    assert project.list_reviewed_classes().get("c0") in (None, set(), ())
    # ... and ranking leaves out the slices already reviewed
    excluded = _reviewed_boxes(project.list_label_versions("c0"), SHAPE)
    np.testing.assert_array_equal(excluded, _in_slices())
