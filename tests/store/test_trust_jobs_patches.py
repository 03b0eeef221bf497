"""Issue 12: jobs with typed progress, and patches as a table (migrated from the journal)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from segloop.errors import ConflictError, InvalidInputError, NotFoundError
from segloop.loop.cases import init_project
from segloop.store import (
    ImageRecord,
    JobStatus,
    ModelStatus,
    NewCase,
    NewPatch,
    Progress,
    Project,
    RoundStatus,
)
from segloop.store.database import SCHEMA_VERSION


@pytest.fixture
def project(tmp_path):
    project = init_project(tmp_path / "p", ["liver"])
    image = ImageRecord(0, str(tmp_path / "c0.nii.gz"), 1, "0" * 64)
    project.add_cases([NewCase("c0", (8, 8, 4), np.eye(4), "int16", (image,), "t")])
    return project


def _patch(patch_id: str, case_id: str = "c0") -> NewPatch:
    return NewPatch(
        patch_id=patch_id,
        case_id=case_id,
        offset=(-2, 0, 0),
        size=(8, 8, 4),
        border_voxels=1,
        parent_version_id=None,
        version_ids=(),
        region_sha256="a" * 64,
        label_sha256="b" * 64,
        affine=np.diag([2.0, 2.0, 3.0, 1.0]),
        author="ana",
        detail={"reason": "center", "center": [2, 4, 2]},
    )


def test_a_job_runs_reports_progress_and_finishes(project):
    job = project.start_job("train", author="ana", params={"epochs": 3})
    assert (job.status, job.progress, job.params) == (JobStatus.RUNNING, None, {"epochs": 3})
    project.update_job(Progress(job.id, "train", 1, 3, "epoch 1/3", {"loss": 0.5}))
    assert project.get_job(job.id).progress == Progress(job.id, "train", 1, 3, "epoch 1/3", {"loss": 0.5})
    done = project.finish_job(job.id, result={"model_id": 4})
    assert (done.status, done.result) == (JobStatus.DONE, {"model_id": 4}) and done.finished_at is not None
    with pytest.raises(ConflictError, match="is done, not running"):
        project.update_job(Progress(job.id, "train", 2, 3))
    with pytest.raises(ConflictError, match="is done already"):
        project.finish_job(job.id, status=JobStatus.FAILED, error="x")
    with pytest.raises(InvalidInputError, match="got running"):
        project.finish_job(job.id, status=JobStatus.RUNNING)
    with pytest.raises(NotFoundError, match="no job 99"):
        project.get_job(99)
    assert [j.id for j in project.list_jobs(kind="train", status="done")] == [job.id]


def test_a_job_whose_process_died_reads_as_interrupted(project):
    code = (
        "import sys; from segloop.store import Project; "
        "p = Project.open(sys.argv[1]); print(p.start_job('round', author='t').id)"
    )
    ran = subprocess.run(
        [sys.executable, "-c", code, str(project.root)], capture_output=True, text=True, check=True
    )
    job_id = int(ran.stdout)
    alive = project.start_job("predict", author="t")
    states = {job.id: job.status for job in project.list_jobs()}
    assert states == {job_id: JobStatus.INTERRUPTED, alive.id: JobStatus.RUNNING}
    (marked,) = project.mark_interrupted_jobs()
    assert marked.id == job_id and marked.finished_at is not None
    assert project.list_jobs(status=JobStatus.INTERRUPTED)[0].id == job_id


def test_patches_are_a_table(project):
    (first,) = project.add_patches([_patch("c0_patch1")])
    assert first.offset == (-2, 0, 0) and first.detail["reason"] == "center" and first.created_at
    np.testing.assert_array_equal(first.affine, np.diag([2.0, 2.0, 3.0, 1.0]))
    with pytest.raises(ConflictError, match="already in the project: c0_patch1"):
        project.add_patches([_patch("c0_patch2"), _patch("c0_patch1")])
    with pytest.raises(ConflictError, match="repeated in one batch"):
        project.add_patches([_patch("x"), _patch("x")])
    with pytest.raises(NotFoundError, match="no case 'nope'"):
        project.add_patches([_patch("c0_patch3", case_id="nope")])
    assert [p.patch_id for p in project.list_patches()] == ["c0_patch1"]  # nothing half-recorded
    assert project.get_patch("c0_patch1") == first and project.find_patch("c0_patch9") is None
    with pytest.raises(NotFoundError, match="no patch 'c0_patch9'"):
        project.get_patch("c0_patch9")


def test_migration_4_copies_patch_manifests_from_the_journal(project):
    manifest = {
        "patch": "c0_patch1",
        "case": "c0",
        "center": [1, 2, 3],
        "offset": [0, 0, 0],
        "size": [8, 8, 4],
        "border_voxels": 2,
        "reason": "center",
        "parent_version_id": None,
        "version_ids": [],
        "label_sha256": "c" * 64,
        "region_sha256": "d" * 64,
        "label_patch_sha256": "e" * 64,
        "affine": np.eye(4).tolist(),
    }
    project.log_event("patch-extracted", "ana", manifest)
    project.log_event("patch-extracted", "ana", {"patch": "odd"})  # not a manifest: stays in the journal
    with project.engine.begin() as connection:
        for table in ("jobs", "patches", "file_hashes"):
            connection.exec_driver_sql(f"DROP TABLE {table}")
        connection.exec_driver_sql("UPDATE schema_info SET version = 3")
    project.engine.dispose()
    reopened = Project.open(project.root)
    (patch,) = reopened.list_patches("c0")
    assert (patch.patch_id, patch.border_voxels, patch.author) == ("c0_patch1", 2, "ana")
    assert patch.detail == {"center": [1, 2, 3], "reason": "center", "label_patch_sha256": "e" * 64}
    assert reopened.list_jobs() == [] and SCHEMA_VERSION >= 4


def test_model_and_round_statuses_are_typed(project):
    model = project.start_model(
        author="t", mode="full", parent_id=None, config={}, label_version_ids=[], train_case_ids=[],
        val_case_ids=[],
    )  # fmt: skip
    assert model.status is ModelStatus.RUNNING and model.status == "running"
    with pytest.raises(
        InvalidInputError, match="unknown ModelStatus 'finished': expected one of running, done"
    ):
        project.finish_model(model.id, status="finished", metrics={}, config={})
    with pytest.raises(InvalidInputError, match="got running"):
        project.finish_model(model.id, status="running", metrics={}, config={})
    project.finish_model(model.id, status="done", metrics={}, config={})
    assert project.find_latest_model().status is ModelStatus.DONE
    assert project.start_round(1, mode="full").status is RoundStatus.RUNNING
    with pytest.raises(InvalidInputError, match="unknown JobStatus 'paused'"):
        project.list_jobs(status="paused")
