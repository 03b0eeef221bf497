"""Jobs inside jobs, jobs a face started (`job_scope`), and cancelled jobs: what the store keeps."""

from __future__ import annotations

import pytest

from segloop.errors import ConflictError
from segloop.loop.jobs import job_scope, run_job
from segloop.store import JobStatus, Progress
from tests.conftest import make_phantom_project


@pytest.fixture
def project(tmp_path):
    return make_phantom_project(tmp_path, 1, (8, 8, 4))


def test_a_nested_job_names_its_outer_job_and_its_progress_shows_there(project):
    seen = []
    with run_job(project, "round", author="t", params={"round": 1}) as outer:
        outer.report("train", 0, 5, "starting")
        with run_job(project, "train", author="t", params={"model": 1}, on_progress=seen.append) as inner:
            inner.report("train", 4, 4, "epoch 2/2", {"loss": 0.5, "val_dice": None})
            inner.result = {"model": 1}
            shown = project.get_job(outer.job_id).progress
        outer.result = {"round": 1}
    round_job, train_job = project.list_jobs()
    assert round_job.params == {"round": 1} and train_job.params == {"model": 1, "within": round_job.id}
    assert shown == Progress(round_job.id, "train", 4, 4, "epoch 2/2", {"loss": 0.5})
    assert seen == [Progress(train_job.id, "train", 4, 4, "epoch 2/2", {"loss": 0.5})]  # its own id
    assert (round_job.status, train_job.status) == (JobStatus.DONE, JobStatus.DONE)
    # after the block, a new job is top-level again
    with run_job(project, "predict", author="t"):
        pass
    assert "within" not in project.list_jobs(kind="predict")[0].params


def test_a_scope_marks_the_outermost_job_and_hands_it_over_before_the_work(project):
    started = []
    with (
        job_scope(params={"request": {"epochs": 3}}, on_start=started.append),
        run_job(project, "round", author="t", params={"round": 2}) as outer,
    ):
        assert [job.id for job in started] == [outer.job_id]
        assert started[0].status == JobStatus.RUNNING and started[0].progress is None
        with run_job(project, "train", author="t", params={"model": 7}):
            pass
    round_job, train_job = project.list_jobs()
    assert round_job.params == {"round": 2, "request": {"epochs": 3}}
    assert train_job.params == {"model": 7, "within": round_job.id}  # not the face's
    assert len(started) == 1
    with run_job(project, "predict", author="t"):  # outside the scope: nothing added
        pass
    assert project.list_jobs(kind="predict")[0].params == {}


def test_the_work_takes_over_the_job_its_face_recorded(project):
    import os

    recorded = project.start_job("round", author="ann", params={"request": {"n": 2}})
    with (
        job_scope(recorded.id, params={"ignored": True}),
        run_job(project, "round", author="t", params={"round": 1}),
    ):
        with run_job(project, "train", author="t", params={"model": 1}):
            pass
        running = project.get_job(recorded.id)
    round_job, train_job = project.list_jobs()
    assert round_job.id == recorded.id and round_job.status == JobStatus.DONE
    assert running.params == {"request": {"n": 2}, "round": 1, "ignored": True} and running.pid == os.getpid()
    assert round_job.author == "ann" and train_job.params["within"] == recorded.id
    with (
        pytest.raises(ConflictError, match="done round job"),
        job_scope(recorded.id),
        run_job(project, "round", author="t"),
    ):
        pass  # a finished job is not taken over
    other = project.start_job("predict", author="ann")
    with pytest.raises(ConflictError, match="running predict job: expected a running train"):
        project.claim_job(other.id, kind="train")


def test_a_failed_nested_job_fails_its_outer_job_too(project):
    with (
        pytest.raises(ValueError, match="no labels"),
        run_job(project, "round", author="t"),
        run_job(project, "train", author="t"),
    ):
        raise ValueError("no labels\nmore")
    assert [(j.kind, j.status, j.error) for j in project.list_jobs()] == [
        ("round", JobStatus.FAILED, "no labels"),
        ("train", JobStatus.FAILED, "no labels"),
    ]


def test_a_cancelled_job_stays_cancelled(project):
    job = project.start_job("train", author="t", params={"model": 1})
    cancelled = project.finish_job(job.id, status=JobStatus.CANCELLED, error="cancelled")
    assert (cancelled.status, cancelled.error) == (JobStatus.CANCELLED, "cancelled")
    assert cancelled.finished_at is not None
    assert project.list_jobs(status="cancelled") == [cancelled]
    assert project.mark_interrupted_jobs() == [] and project.get_job(job.id) == cancelled
    with pytest.raises(ConflictError, match="cancelled"):
        project.update_job(Progress(job.id, "train", 1, 2))
    with pytest.raises(ConflictError, match="cancelled already"):
        project.finish_job(job.id, status=JobStatus.INTERRUPTED)
