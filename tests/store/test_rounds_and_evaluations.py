"""Rounds, evaluations and the event journal in the store."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.core.volume import Volume
from segloop.errors import ConflictError, NotFoundError
from segloop.io import write_volume
from segloop.loop.cases import import_cases, init_project


def test_evaluations_are_kept_per_model_and_case(tmp_path):
    project = init_project(tmp_path / "p", ["a"])
    write_volume(Volume(np.zeros((4, 4, 2), np.int16), np.eye(4)), tmp_path / "c1.nii.gz")
    import_cases(project, [tmp_path / "c1.nii.gz"], author="me")
    model = project.start_model(
        author="me",
        mode="full",
        parent_id=None,
        config={},
        label_version_ids=[],
        train_case_ids=[],
        val_case_ids=[],
    )
    metrics = {"a": {"dice": 0.8, "hd95_mm": 2.0, "surface_dice": 0.9}}
    record = project.add_evaluation(
        "c1", model_id=model.id, reference_version_ids=[7], metrics=metrics, round_number=2
    )
    assert (record.case_id, record.reference_version_ids, record.metrics, record.round) == (
        "c1",
        (7,),
        metrics,
        2,
    )
    assert project.list_evaluations(model_id=model.id + 1) == []
    assert project.list_evaluations() == [record]


def test_rounds_record_stages_then_finish_and_never_repeat(tmp_path):
    project = init_project(tmp_path / "p", ["a"])
    started = project.start_round(1, mode="continual")
    assert (started.status, started.stages, started.finished_at) == ("running", {}, None)
    project.record_round_stage(1, "train", {"model": 3})
    project.record_round_stage(1, "predict", {"cases": ["x"]})
    done = project.finish_round(1, {"dice": 0.5})
    assert done.status == "done" and list(done.stages) == ["train", "predict"]
    assert done.summary == {"dice": 0.5} and done.finished_at is not None
    with pytest.raises(ConflictError, match="round 1 exists"):
        project.start_round(1, mode="full")
    with pytest.raises(NotFoundError, match="no round 2"):
        project.get_round(2)


def test_events_are_listed_by_kind_in_order(tmp_path):
    project = init_project(tmp_path / "p", ["a"])
    project.log_event("served", "me", {"case": "x"})
    project.log_event("train", "me", {})
    project.log_event("served", "you", {"case": "y"})
    assert [e.detail["case"] for e in project.list_events("served")] == ["x", "y"]
    assert len(project.list_events()) == 3
