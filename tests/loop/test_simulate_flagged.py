"""The simulated annotator reviews the ranking's flagged slices first: coverage, cost, fixes."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.errors import InvalidInputError
from segloop.loop.labels import compute_effective_label
from segloop.loop.ranking import estimate_case, flagged_regions
from segloop.loop.simulate import CostModel, SimulatedAnnotator, run_simulated_loop
from segloop.synthetic import PHANTOM_CLASSES
from tests.loop.test_ranking import add_prediction, confident, start_model
from tests.loop.test_simulate import SHAPE, _project

WRONG = slice(8, 13)  # axial slices where the prediction misses the liver, uncertainly


def predicted_project(tmp_path, name, n_cases=1):
    """Phantom cases; c0's stored prediction misses the liver on slices 8-12 (p = 0.45 there)."""
    project, references = _project(tmp_path, name, n_cases=n_cases)
    truth = references["c0"]
    probabilities = confident(truth, project.config.schema.ignore_index)
    missed = np.zeros(SHAPE, bool)
    missed[:, :, WRONG] = truth[:, :, WRONG] == 1
    probabilities[1][missed] = 0.45
    probabilities[0][missed] = 0.55
    add_prediction(project, "c0", probabilities, model_id=start_model(project))
    return project, references


def test_flagged_review_covers_the_flagged_slices_fixes_them_and_costs_less(tmp_path):
    project, references = predicted_project(tmp_path, "flagged")
    truth = references["c0"]
    region = flagged_regions(project, "c0")
    expected = estimate_case(project, "c0")[0]
    assert [(b.offset, b.size) for b in region] == [((0, 0, 8), (SHAPE[0], SHAPE[1], 5))]
    annotator = SimulatedAnnotator(references)
    effort = annotator.review_case(project, "c0", PHANTOM_CLASSES, region=region)
    versions = [v for v in project.list_label_versions("c0") if v.source == "revised"]
    assert [v.classes for v in versions] == [(name,) for name in PHANTOM_CLASSES]
    for version in versions:  # the version speaks exactly for the reviewed slices
        assert version.params["coverage"] == [{"offset": [0, 0, 8], "size": [40, 40, 5], "border_voxels": 0}]
    labels = compute_effective_label(project, project.get_case("c0")).labels
    np.testing.assert_array_equal(labels == 1, truth == 1)  # the flagged errors are fixed
    present = {v: int((truth[:, :, WRONG] == v).any(axis=(0, 1)).sum()) for v in range(1, 5)}
    cost = CostModel()
    assert effort.cases_opened == 1 and effort.slices_reviewed == sum(present.values())
    assert effort.slices_corrected == 5 and effort.voxels_changed == int(np.sum(truth[:, :, WRONG] == 1))
    assert effort.seconds == pytest.approx(
        cost.seconds_per_case
        + sum(present.values()) * cost.seconds_per_reviewed_slice
        + 5 * cost.seconds_per_stroke
    )

    # the ranking's estimate looks at the slices the simulated person looks at (the same cost
    # model) and counts each flagged blob by the model's chance of it being wrong (1 - 0.55 here)
    assert expected.class_slices == effort.slices_reviewed
    assert expected.strokes == pytest.approx(0.45 * effort.strokes, rel=1e-3)
    unlikely_strokes = 0.55 * effort.strokes * cost.seconds_per_stroke
    assert expected.seconds == pytest.approx(effort.seconds - unlikely_strokes, rel=1e-3)

    whole_project, _ = predicted_project(tmp_path, "whole")
    whole = SimulatedAnnotator(references).review_case(whole_project, "c0", PHANTOM_CLASSES)
    assert whole.slices_corrected == effort.slices_corrected and whole.seconds > effort.seconds
    assert all("coverage" not in v.params for v in whole_project.list_label_versions("c0"))


def test_nothing_flagged_is_not_opened_and_an_unknown_review_is_refused(tmp_path):
    project, references = _project(tmp_path, "none", n_cases=1)
    annotator = SimulatedAnnotator(references)
    assert annotator.review_case(project, "c0", PHANTOM_CLASSES, region=()).seconds == 0.0
    assert project.list_label_versions("c0") == [] and annotator.log == []
    with pytest.raises(InvalidInputError, match="unknown review 'some': expected one of whole, flagged"):
        run_simulated_loop(
            project, annotator, None, start_cases=["c0"], test_cases={}, rounds=1, corrections_per_round=1,
            review="some",
        )  # fmt: skip
    assert project.list_label_versions("c0") == []  # refused before the sparse start


def test_segloop_simulate_correct_reviews_the_flagged_slices(tmp_path, run_cli):
    from segloop.io import write_volume
    from segloop.synthetic import make_ct_phantom

    project, _ = predicted_project(tmp_path, "cli")
    reference = write_volume(make_ct_phantom(SHAPE, seed=0).labels, tmp_path / "reference.nii.gz")
    result = run_cli("simulate", project.root, "c0", "correct", "--reference", reference)
    assert result.code == 0, result.err
    assert "c0: reviewed 1 runs of flagged slices" in result.out and "5 corrected" in result.out
    versions = [v for v in project.list_label_versions("c0") if v.source == "revised"]
    assert len(versions) == 4 and all(v.params["coverage"][0]["offset"] == [0, 0, 8] for v in versions)
    refused = run_cli("simulate", project.root, "c0", "correct", "--reference", reference, "--review", "all")
    assert refused.code != 0 and "unknown review 'all': expected one of whole, flagged" in refused.err


def test_the_loop_reviews_flagged_slices_and_a_case_without_prediction_whole(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from segloop.loop import rounds, simulate

    project, references = predicted_project(tmp_path, "loop", n_cases=2)
    queue = [{"case": "c0", "score": 1.0, "classes": ["liver"]}, {"case": "c1", "score": None, "classes": []}]
    played = []

    def fake_round(project, config, **options):  # the machine half, without training
        played.append(options)
        stages = {"rank": {"queue": queue}}
        return SimpleNamespace(number=len(played), summary={"model": 1, "cases_by_source": {}}, stages=stages)

    monkeypatch.setattr(rounds, "run_round", fake_round)
    monkeypatch.setattr(simulate, "score_test_cases", lambda *args, **kwargs: {"liver": 0.5})
    annotator = SimulatedAnnotator(references)
    results = run_simulated_loop(
        project, annotator, None, start_cases=[], test_cases={}, rounds=2, corrections_per_round=2,
        review="flagged", include_pseudo="confident", seed=3,
    )  # fmt: skip
    assert [o["seed"] for o in played] == [3001, 3002]
    assert [o["include_pseudo"] for o in played] == ["confident", "confident"]
    revised = [v for v in project.list_label_versions() if v.source == "revised"]
    assert {v.case_id for v in revised} == {"c0", "c1"}
    assert all(v.params["coverage"][0]["offset"] == [0, 0, 8] for v in revised if v.case_id == "c0")
    assert all("coverage" not in v.params for v in revised if v.case_id == "c1")  # no prediction: whole
    assert results[1].effort == annotator.total and annotator.total.cases_opened == 2
