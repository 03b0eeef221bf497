"""Issue 12: the store owns prediction files; `predict --tta` then ranking uses what predict wrote."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.errors import GeometryMismatchError, NotFoundError, StoreIntegrityError
from segloop.store import PredictionArrays, Project
from tests.loop.conftest import PHANTOM_SHAPE as SHAPE
from tests.loop.conftest import phantom_project, tiny_config


def _finished_model(project: Project) -> int:
    model = project.start_model(
        author="t", mode="full", parent_id=None, config={}, label_version_ids=[], train_case_ids=[],
        val_case_ids=[],
    )  # fmt: skip
    project.finish_model(model.id, status="done", metrics={}, config={})
    return model.id


def _arrays(n_classes: int, *, passes: int) -> PredictionArrays:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(n_classes), size=SHAPE).transpose(3, 0, 1, 2)
    entropy = rng.random(SHAPE)
    disagreement = rng.random(SHAPE) * 0.3 if passes > 1 else None
    return PredictionArrays(probabilities.astype(np.float32), entropy, disagreement)


@pytest.fixture
def project(tmp_path):
    return phantom_project(tmp_path, n_cases=2, n_labeled=1)


def test_write_and_read_a_prediction(project):
    model_id = _finished_model(project)
    version = project.list_label_versions("c0")[0]
    arrays = _arrays(5, passes=2)
    record = project.write_prediction(
        "c1", model_id, arrays, label_version_id=version.id, params={"passes": 2}
    )
    assert record.uncertainty == f"predictions/{model_id}/c1.npz"
    assert record.mean_entropy == pytest.approx(float(arrays.entropy.mean()), abs=1e-3)
    read = project.read_prediction("c1")
    assert read.probabilities.dtype == np.float16 and read.probabilities.shape == (5, *SHAPE)
    np.testing.assert_allclose(read.disagreement, arrays.disagreement, atol=1e-3)
    single = project.write_prediction(
        "c1", model_id, _arrays(5, passes=1), label_version_id=version.id, params={}
    )
    assert project.read_prediction("c1", model_id).disagreement is None
    assert single.id > record.id


def test_prediction_errors_name_what_is_wrong(project):
    model_id = _finished_model(project)
    version = project.list_label_versions("c0")[0]
    with pytest.raises(NotFoundError, match="case 'c1' has no stored prediction by model 1"):
        project.read_prediction("c1", model_id)
    wrong = PredictionArrays(np.zeros((5, 4, 4, 4)), np.zeros(SHAPE))
    with pytest.raises(
        GeometryMismatchError, match=r"probabilities has shape \(5, 4, 4, 4\); expected \(C, 32"
    ):
        project.write_prediction("c1", model_id, wrong, label_version_id=version.id, params={})
    assert not (project.root / "predictions").exists()
    record = project.write_prediction(
        "c1", model_id, _arrays(5, passes=1), label_version_id=version.id, params={}
    )
    (project.root / record.uncertainty).write_bytes(b"truncated")
    with pytest.raises(StoreIntegrityError, match="c1.npz cannot be read"):
        project.read_prediction("c1")
    (project.root / record.uncertainty).unlink()
    with pytest.raises(StoreIntegrityError, match="c1.npz of case 'c1' .* is missing"):
        project.read_prediction("c1")


def test_tta_disagreement_is_written_by_predict_and_read_by_ranking(tmp_path):
    """Issue 12: `predict --tta` computed the pass disagreement but saved only probabilities and entropy."""
    pytest.importorskip("torch")
    from segloop.engine.config import InferConfig
    from segloop.loop.ranking import rank_cases
    from segloop.loop.training import predict_cases, train_project

    project = phantom_project(tmp_path, n_cases=3, n_labeled=2)
    train_project(project, tiny_config(), author="t")
    (record,) = predict_cases(project, unlabeled=True, infer_config=InferConfig(tta_flips=(0,)), author="t")
    stored = project.read_prediction(record.case_id)
    assert stored.disagreement is not None and stored.disagreement.shape == SHAPE
    assert float(stored.disagreement.max()) > 0.0
    (ranked,) = [row for row in rank_cases(project, record=False) if row.case_id == record.case_id]
    assert ranked.note == "disagreement: passes"  # before: "disagreement: none"
