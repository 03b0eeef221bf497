"""Gain-per-cost ranking: the cost estimate, cheap uncertain cases first, near-duplicates spread."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from segloop.errors import InvalidInputError
from segloop.io import write_volume
from segloop.loop.cases import import_cases, init_project
from segloop.loop.ranking import (
    STRATEGIES,
    GainPerCostStrategy,
    cleaning_radii,
    estimate_correction,
    flagged_regions,
    list_candidate_cases,
    open_mask_iterations,
    rank_cases,
    select_diverse,
    slice_regions,
)
from segloop.loop.simulate import CostModel
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom
from tests.loop.test_ranking import add_prediction, blur_block, confident, start_model

SHAPE = (32, 32, 16)


@pytest.fixture
def project(tmp_path):
    project = init_project(tmp_path / "proj", PHANTOM_CLASSES)
    images = [
        write_volume(make_ct_phantom(SHAPE, seed=seed).image, tmp_path / "data" / f"c{seed}.nii.gz")
        for seed in range(4)
    ]
    import_cases(project, images)
    return project


def uncertain(project, value: int, box: tuple[slice, ...]) -> np.ndarray:
    """Probabilities: background everywhere, class ``value`` at p = 0.5 inside ``box`` (1 bit a voxel)."""
    return blur_block(confident(np.zeros(SHAPE, np.uint8), project.config.schema.ignore_index), value, box)


def test_the_estimate_prices_slices_looked_at_and_blobs_fixed_with_the_cost_model():
    cost = CostModel()
    liver = np.zeros(SHAPE, bool)
    liver[2:8, 2:8, 3:6] = True  # one blob on each of 3 slices
    liver[20:26, 20:26, 4] = True  # a second blob on slice 4
    spleen = np.zeros(SHAPE, bool)
    spleen[10:15, 10:15, 9:11] = True
    estimate = estimate_correction({1: liver, 2: spleen}, 100.0, 2, cost)
    assert (estimate.class_slices, estimate.strokes) == (3 + 2, 4 + 2)
    assert estimate.slices == (3, 4, 5, 9, 10) and estimate.axis == 2
    expected = cost.seconds_per_case + 5 * cost.seconds_per_reviewed_slice + 6 * cost.seconds_per_stroke
    assert estimate.seconds == pytest.approx(expected) == pytest.approx(20 + 10 + 18)
    assert estimate.gain_per_second == pytest.approx(100.0 / expected)
    predicted = np.zeros(SHAPE, bool)
    predicted[10:20, 10:20, 2:6] = True  # a confident kidney, also on the flagged slices 3-5
    with_kidney = estimate_correction({1: liver, 2: spleen}, 100.0, 2, cost, {3: predicted, 2: spleen})
    assert (with_kidney.class_slices, with_kidney.strokes) == (3 + 2 + 3, 4 + 2)
    nothing = estimate_correction({}, 0.0, 2, cost)
    assert nothing.seconds == cost.seconds_per_case and nothing.gain_per_second == 0.0


def test_slice_regions_are_whole_slices_per_run():
    boxes = slice_regions([7, 5, 6, 12], 2, SHAPE)
    assert [(b.offset, b.size) for b in boxes] == [((0, 0, 5), (32, 32, 3)), ((0, 0, 12), (32, 32, 1))]
    assert slice_regions([], 2, SHAPE) == ()


def test_diversity_spreads_duplicates_and_weight_zero_orders_by_score():
    profiles = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.0, 0.0]])
    scores = np.array([3.0, 2.9, 2.0, 0.0])
    assert [i for i, _ in select_diverse(scores, profiles, 0.0)] == [0, 1, 2, 3]
    picks = select_diverse(scores, profiles, 0.5)
    assert [i for i, _ in picks] == [0, 2, 1, 3]
    adjusted = [a for _, a in picks]
    assert adjusted == sorted(adjusted, reverse=True) and adjusted[0] == 3.0


def test_a_cheap_uncertain_case_beats_a_costly_slightly_more_uncertain_one(project):
    model = start_model(project)
    # c0: 12 x 12 x 5 uncertain voxels on 5 slices (720 bits); c1: 7 x 7 x 16 on every slice (784 bits)
    add_prediction(
        project, "c0", uncertain(project, 1, (slice(2, 14), slice(2, 14), slice(5, 10))), model_id=model
    )
    add_prediction(
        project, "c1", uncertain(project, 1, (slice(2, 9), slice(2, 9), slice(0, 16))), model_id=model
    )
    by_uncertainty = rank_cases(project, strategy="uncertainty", count=2, record=False)
    assert [r.case_id for r in by_uncertainty] == ["c1", "c0"]
    ranked = rank_cases(project, strategy="gain-per-cost", record=False)
    assert [r.case_id for r in ranked] == ["c0", "c1", "c2", "c3"]  # unpredicted cases last, unscored
    assert ranked[2].score is None and ranked[2].note == "no prediction"
    cost = CostModel()
    first = ranked[0]
    assert first.detail["gain"] == pytest.approx(720.0, rel=1e-3)
    # 5 flagged blobs, each wrong with chance 0.5 (the model's top probability there is 0.5)
    assert first.detail["seconds"] == pytest.approx(cost.seconds_per_case + 5 * 2.0 + 5 * 0.5 * 3.0)
    assert first.score == pytest.approx(720.0 / first.detail["seconds"], rel=1e-3)
    assert first.detail["regions"] == [{"offset": [0, 0, 5], "size": [32, 32, 5]}]
    assert first.classes == ("liver",)
    assert [(b.offset, b.size) for b in flagged_regions(project, "c0")] == [((0, 0, 5), (32, 32, 5))]
    assert flagged_regions(project, "c2") == ()


def test_near_duplicates_are_spread_and_the_ranking_is_recorded(project):
    model = start_model(project)
    liver = (slice(2, 14), slice(2, 14), slice(5, 10))
    add_prediction(project, "c0", uncertain(project, 1, liver), model_id=model)
    add_prediction(project, "c1", uncertain(project, 1, liver), model_id=model)  # a near-duplicate of c0
    add_prediction(
        project, "c2", uncertain(project, 2, (slice(2, 12), slice(2, 12), slice(5, 10))), model_id=model
    )
    add_prediction(
        project, "c3", uncertain(project, 3, (slice(2, 7), slice(2, 7), slice(2, 14))), model_id=model
    )
    candidates = list_candidate_cases(project)
    plain = GainPerCostStrategy(diversity=0.0).rank(project, candidates, count=None, seed=0)
    assert [r.case_id for r in plain] == ["c0", "c1", "c2", "c3"]
    spread = rank_cases(project, strategy="gain-per-cost", count=3, author="me")
    assert [r.case_id for r in spread] == ["c0", "c2", "c1"]
    assert isinstance(STRATEGIES["gain-per-cost"], GainPerCostStrategy)
    served = project.list_events("served")
    assert served[-1].detail["strategy"] == "gain-per-cost"
    assert project.list_ranking(served[-1].id)[1][:3] == [(r.rank, r.case_id, r.score) for r in spread]


def test_a_coarse_grid_keeps_uncertain_regions_two_voxel_openings_would_erase(tmp_path):
    # OpenKBP's 3.9 x 3.9 x 2.5 mm voxels: AbdomenAtlas's 2-voxel opening needs regions 5 voxels
    # (2 cm) thick; the opening in millimetres erodes 1 voxel, so a 3-voxel-thick region stays.
    project = init_project(tmp_path / "coarse", PHANTOM_CLASSES)
    phantom = make_ct_phantom(SHAPE, (3.9, 3.9, 2.5), seed=0)
    import_cases(project, [write_volume(phantom.image, tmp_path / "c0.nii.gz")])
    add_prediction(
        project,
        "c0",
        uncertain(project, 1, (slice(4, 7), slice(4, 7), slice(6, 9))),
        model_id=start_model(project),
    )
    assert [(b.offset, b.size) for b in flagged_regions(project, "c0")] == [((0, 0, 6), (32, 32, 3))]
    ranked = rank_cases(project, strategy="gain-per-cost", record=False)
    assert ranked[0].detail["gain"] == pytest.approx(27.0, rel=1e-3)


def test_cleaning_radii_cover_abdomenatlas_millimetres_and_per_axis_openings_match_iterations():
    assert cleaning_radii((0.8, 0.8, 0.8)) == (2, 2, 2)
    assert cleaning_radii((1.5, 1.5, 3.0)) == (2, 2, 1)
    assert cleaning_radii((3.9, 3.9, 2.5)) == (1, 1, 1)
    rng = np.random.default_rng(0)
    mask = ndimage.binary_dilation(rng.random((20, 18, 12)) < 0.05, iterations=2)
    for n in (1, 2):
        iterated = ndimage.binary_dilation(
            ndimage.binary_erosion(mask, np.ones((3, 3, 3), bool), iterations=n),
            np.ones((3, 3, 3), bool),
            iterations=n,
        )
        assert np.array_equal(open_mask_iterations(mask, (n, n, n)), iterated)
        assert np.array_equal(open_mask_iterations(mask, n), iterated)
    slab = np.zeros((9, 9, 9), bool)
    slab[:, :, 3:6] = True  # 3 voxels thick along the last axis only
    assert open_mask_iterations(slab, (2, 2, 1)).sum() == slab.sum()
    assert not open_mask_iterations(slab, (1, 1, 2)).any()
    with pytest.raises(InvalidInputError, match="one iteration count per axis"):
        open_mask_iterations(slab, (1, 1))
