"""The simulated annotator: what it submits, what it costs, and that only submissions reach training."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.io import write_volume
from segloop.loop.cases import import_cases, init_project
from segloop.loop.labels import compute_effective_label
from segloop.loop.simulate import CostModel, Effort, SimulatedAnnotator, manual_effort
from segloop.loop.tools import store_tool_labels
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom

SHAPE = (40, 40, 24)


def _project(tmp_path, name="proj", n_cases=2):
    project = init_project(tmp_path / name, PHANTOM_CLASSES)
    references, images = {}, []
    for index in range(n_cases):
        phantom = make_ct_phantom(SHAPE, seed=index)
        images.append(write_volume(phantom.image, tmp_path / name / "img" / f"c{index}_0000.nii.gz"))
        references[f"c{index}"] = np.asarray(phantom.labels.array)
    import_cases(project, images)
    return project, references


def test_sparse_start_contours_seven_slices_per_organ_and_fills_between(tmp_path):
    project, references = _project(tmp_path)
    annotator = SimulatedAnnotator(references)
    versions, effort = annotator.annotate_sparse(project, "c0", slices_per_class=7)
    assert sorted(v.source for v in versions) == ["draft"] * 4 + ["sparse"] * 4
    extents = [int((references["c0"] == v).any(axis=(0, 1)).sum()) for v in range(1, 5)]
    assert effort.slices_drawn == sum(min(7, n) for n in extents) and effort.contour_points > 3 * 20
    assert effort.seconds == pytest.approx(effort.contour_points * CostModel().seconds_per_contour_point)
    labels = compute_effective_label(project, project.get_case("c0")).labels
    truth = references["c0"]
    for value in range(1, 5):  # filled between seven slices: close to the organ, not identical
        overlap = np.sum((labels == value) & (truth == value))
        assert 2 * overlap / (np.sum(labels == value) + np.sum(truth == value)) > 0.85
    assert annotator.total == effort


def test_a_correction_fixes_the_wrong_slices_and_counts_strokes(tmp_path):
    project, references = _project(tmp_path)
    truth = references["c0"]
    predicted = truth.copy()
    liver = truth == 1
    predicted[:, :, 10][liver[:, :, 10]] = 0  # one slice of the liver missed entirely
    case = project.get_case("c0")
    store_tool_labels(
        project, case, predicted, source="pseudo", classes=PHANTOM_CLASSES, tool="m", params={}, author="m"
    )
    annotator = SimulatedAnnotator(references)
    version, effort = annotator.correct_class(project, "c0", "liver")
    assert version.source == "revised" and version.classes == ("liver",)
    assert effort.slices_corrected == 1 and effort.strokes == 1
    assert effort.voxels_changed == int(liver[:, :, 10].sum())
    assert effort.slices_reviewed == int(liver.any(axis=(0, 1)).sum())
    labels = compute_effective_label(project, case).labels
    np.testing.assert_array_equal(labels == 1, liver)
    accepted, cost = annotator.correct_class(project, "c0", "spleen")  # already right: reviewed, accepted
    assert accepted.source == "revised" and cost.strokes == 0 and cost.slices_reviewed > 0


def test_training_sees_only_what_the_annotator_submitted(tmp_path):
    """Two annotators whose references differ outside the slices they contour give identical training data."""
    from segloop.loop.training import collect_labeled_cases

    first, references = _project(tmp_path, "a", n_cases=1)
    second, _ = _project(tmp_path, "b", n_cases=1)
    altered = references["c0"].copy()
    annotator = SimulatedAnnotator(references)
    versions, _ = annotator.annotate_sparse(first, "c0", slices_per_class=3)
    drawn = {s for v in versions if v.source == "sparse" for s in v.params["annotated_slices"]}
    hidden = [k for k in range(SHAPE[2]) if k not in drawn]
    altered[:, :, hidden] = np.roll(altered[:, :, hidden], 5, axis=0)  # never submitted: must not matter
    SimulatedAnnotator({"c0": altered}).annotate_sparse(second, "c0", slices_per_class=3)
    pytest.importorskip("torch")
    (case_a,), _ = collect_labeled_cases(first)
    (case_b,), _ = collect_labeled_cases(second)
    np.testing.assert_array_equal(case_a.labels, case_b.labels)
    assert not np.array_equal(altered, references["c0"])


def test_manual_effort_contours_every_slice_of_every_organ():
    truth = np.asarray(make_ct_phantom(SHAPE, seed=0).labels.array)
    effort = manual_effort(truth, range(1, 5), axis=2, cost=CostModel())
    assert effort.slices_drawn == sum(int((truth == v).any(axis=(0, 1)).sum()) for v in range(1, 5))
    assert Effort(seconds=1.0) + Effort(seconds=2.0, strokes=1) == Effort(strokes=1, seconds=3.0)


def test_a_thin_structure_missed_entirely_is_corrected_an_edge_one_voxel_off_is_not(tmp_path):
    """On a coarse grid a 2-voxel-wide organ lies within one voxel of its own outline: still visible."""
    project, _ = _project(tmp_path, n_cases=1)
    truth = np.zeros(SHAPE, np.uint8)
    truth[10:12, 20:27, 4:20] = 2  # a thin tube, 2 x 7 voxels on 16 axial slices
    truth[24:34, 8:18, 4:20] = 1  # a block, 10 x 10 voxels
    predicted = truth.copy()
    predicted[:, :, 4:8][truth[:, :, 4:8] == 2] = 0  # the tube missed on 4 slices
    predicted[23:33, 8:18, 4:20][truth[24:34, 8:18, 4:20] == 1] = 1  # the block's edge one voxel off
    predicted[33, 8:18, 4:20] = 0
    store_tool_labels(
        project, project.get_case("c0"), predicted, source="pseudo", classes=PHANTOM_CLASSES,
        tool="m", params={}, author="m",
    )  # fmt: skip
    annotator = SimulatedAnnotator({"c0": truth})
    _, tube = annotator.correct_class(project, "c0", PHANTOM_CLASSES[1])
    _, block = annotator.correct_class(project, "c0", PHANTOM_CLASSES[0])
    assert tube.slices_corrected == 4 and tube.voxels_changed == 4 * 14
    assert block.slices_corrected == 0 and block.slices_reviewed == 16
