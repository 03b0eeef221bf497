"""``include_pseudo="confident"``: training learns the pseudo-label voxels whose stored entropy is low."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from segloop.errors import InvalidInputError
from segloop.loop.corrections import apply_label, reviewed_region
from segloop.loop.labels import count_voxels
from segloop.loop.training import collect_labeled_cases, pseudo_policy
from segloop.store import NewLabel, PredictionArrays
from segloop.synthetic import make_ct_phantom
from tests.conftest import make_phantom_project

SHAPE = (24, 20, 16)


def add_prediction(project, case_id: str, labels: np.ndarray, entropy: np.ndarray) -> int:
    """A finished model's prediction of a case: its pseudo version and a stored entropy map."""
    schema = project.config.schema
    model = project.start_model(
        author="t", mode="full", parent_id=None, config={}, label_version_ids=[], train_case_ids=[],
        val_case_ids=[],
    )  # fmt: skip
    project.finish_model(model.id, status="done", metrics={}, config={})
    case = project.get_case(case_id)
    with project.objects.stage() as staged:
        key = staged.put(labels.astype(schema.dtype), case.affine)
    label = NewLabel(key, "pseudo", schema.names, count_voxels(labels, schema), "t", "model", {})
    version = project.add_label_version(case_id, label)
    probabilities = np.zeros((len(schema.classes) + 1, *case.shape), np.float16)
    arrays = PredictionArrays(probabilities, entropy)
    project.write_prediction(case_id, model.id, arrays, label_version_id=version.id, params={})
    return version.id


@pytest.fixture
def predicted(tmp_path):
    """c0: a prediction (the phantom's truth) with a random entropy map; c1: an imported pseudo label."""
    project = make_phantom_project(tmp_path, 2, SHAPE, labeled=[1], source="pseudo")
    truth = make_ct_phantom(SHAPE, seed=0).labels.array
    entropy = np.random.default_rng(7).uniform(0.0, 0.4, SHAPE).astype(np.float16)
    add_prediction(project, "c0", truth, entropy)
    return project, truth, entropy


def _targets(project, **options) -> dict[str, np.ndarray]:
    cases, _ = collect_labeled_cases(project, **options)
    return {case.case_id: np.asarray(case.labels) for case in cases}


def test_confident_pseudo_learns_exactly_the_low_entropy_voxels(predicted):
    project, truth, entropy = predicted
    ignore = project.config.schema.ignore_index
    for threshold in (0.1, 0.25):
        targets = _targets(project, include_pseudo="confident", pseudo_entropy=threshold)
        confident = entropy < threshold
        assert 0 < confident.sum() < confident.size
        np.testing.assert_array_equal(targets["c0"] != ignore, confident)
        np.testing.assert_array_equal(targets["c0"][confident], truth[confident])
        # a pseudo label with no stored prediction has no confidence: not learned
        assert "c1" not in targets
    everything = _targets(project, include_pseudo="all")
    np.testing.assert_array_equal(everything["c0"], truth)
    assert "c1" in everything
    assert _targets(project) == {}  # pseudo off (the default): nothing to learn
    assert set(_targets(project, include_pseudo=True)) == {"c0", "c1"}  # the old flag: all


def test_human_versions_win_over_confident_pseudo(predicted):
    project, truth, entropy = predicted
    ignore = project.config.schema.ignore_index
    person = np.zeros_like(truth)  # a person says: no organ at all on slices 5-7
    region = reviewed_region(project.get_case("c0"), slices="5:8", axis=2)
    apply_label(project, "c0", person, parent=project.find_head("c0"), author="t", region=region)
    target = _targets(project, include_pseudo="confident", pseudo_entropy=0.1)["c0"]
    reviewed = np.zeros(SHAPE, dtype=bool)
    reviewed[:, :, 5:8] = True
    np.testing.assert_array_equal(target[reviewed], 0)
    confident = (entropy < 0.1) & ~reviewed
    np.testing.assert_array_equal((target != ignore) & ~reviewed, confident)
    np.testing.assert_array_equal(target[confident], truth[confident])


def test_unknown_policies_and_thresholds_are_refused(predicted):
    project, _, _ = predicted
    with pytest.raises(InvalidInputError, match="expected one of none, all, confident"):
        pseudo_policy("sometimes")
    with pytest.raises(InvalidInputError, match=r"expected a number in \(0, 1\]"):
        collect_labeled_cases(project, include_pseudo="confident", pseudo_entropy=0.0)
