"""Batch prediction (`segloop.loop.predict`): idempotent per (case, model), batches recorded in one
transaction, a swapped image refused, and a Dask worker killed mid-batch."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from segloop.errors import ConflictError, StoreIntegrityError
from segloop.io import write_volume
from segloop.loop import predict as batch_predict
from segloop.loop.predict import predict_batch
from segloop.loop.training import train_project
from segloop.store import PredictionArrays, Project, check_project
from segloop.store.predictions import NewPrediction, StoredPredictionFile, write_prediction_file
from segloop.synthetic import make_ct_phantom
from tests.loop.conftest import PHANTOM_SHAPE, phantom_project, tiny_config
from tests.store.test_legacy_image_hash import nhdr_project  # noqa: F401 (a fixture)

#: The folder where `slow_predict_case` marks each task it starts (set in the workers' environment).
STARTED_DIR = "SEGLOOP_TEST_STARTED_DIR"


def slow_predict_case(task, plan, checkpoint):
    """`predict_case` that first marks its start (``<case>.<pid>``: the torch threads) and waits 1 s.

    Runs on Dask workers (imported there by reference): the wait is when a test kills a worker.
    """
    import torch

    folder = Path(os.environ[STARTED_DIR])
    (folder / f"{task.case_id}.{os.getpid()}").write_text(str(torch.get_num_threads()))
    time.sleep(1.0)
    return batch_predict.predict_case(task, plan, checkpoint)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A phantom project (c0, c1 labelled; c2..c5 not) with a tiny finished model."""
    folder = tmp_path_factory.mktemp("trained")
    project = phantom_project(folder, n_cases=6, n_labeled=2)
    train_project(project, tiny_config(), author="t", device="cpu")
    project.engine.dispose()
    return folder


@pytest.fixture
def project(trained, tmp_path):
    shutil.copytree(trained / "proj", tmp_path / "proj")
    return Project.open(tmp_path / "proj")


def _predictions_per_case(project: Project) -> Counter:
    return Counter(p.case_id for p in project.list_predictions())


def _pseudo_versions_per_case(project: Project) -> Counter:
    return Counter(v.case_id for v in project.list_label_versions() if v.source == "pseudo")


def test_a_rerun_skips_what_the_model_predicted_and_again_predicts_it(project):
    events = []
    first = predict_batch(
        project, unlabeled=True, author="t", device="cpu", commit_every=3, on_progress=events.append
    )
    assert [r.case_id for r in first.records] == ["c2", "c3", "c4", "c5"] and first.skipped == ()
    assert [(e.done, e.total) for e in events] == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    # a batch of 3 then 1: the first three share one transaction's timestamp
    assert len({r.created_at for r in first.records[:3]}) == 1
    version = project.get_label_version(first.records[0].label_version_id)
    assert (version.source, version.tool, version.params["model_id"]) == ("pseudo", "model 1", 1)
    labels = project.read_labels(version)
    assert version.voxel_counts == {
        n: int((labels == i).sum()) for i, n in enumerate((*version.classes, "ignore"), 1)
    }
    stored = project.read_prediction("c2", 1)
    assert stored.probabilities.shape == (5, *PHANTOM_SHAPE) and stored.probabilities.dtype == np.float16
    assert first.records[0].uncertainty.startswith("predictions/1/c2.")

    rerun = predict_batch(project, unlabeled=True, author="t", device="cpu")
    assert rerun.records == () and rerun.skipped == ("c2", "c3", "c4", "c5")
    named = predict_batch(project, ["c0", "c2"], author="t", device="cpu")
    assert [r.case_id for r in named.records] == ["c0"] and named.skipped == ("c2",)
    job = project.list_jobs(kind="predict")[-1]
    assert job.status == "done" and job.result["skipped"] == 1 and job.result["predictions"] == [5]
    again = predict_batch(project, ["c2"], author="t", device="cpu", again=True)
    assert [r.case_id for r in again.records] == ["c2"]
    assert _predictions_per_case(project) == {"c2": 2, "c3": 1, "c4": 1, "c5": 1, "c0": 1}
    assert _pseudo_versions_per_case(project) == _predictions_per_case(project)
    assert check_project(project).ok


def test_a_batch_records_each_case_and_model_once_under_the_write_lock(project):
    """Two clients that predicted the same case: the second's record is dropped with its files."""
    checkpoint = (project.root / project.get_model(1).checkpoint).read_bytes()
    plan = batch_predict.PredictionPlan(
        str(project.root),
        1,
        hashlib.sha256(checkpoint).hexdigest(),
        project.config.schema,
        None,
        None,
        "cpu",
        "t",
    )
    cases = {c.case_id: c for c in project.list_cases()}
    ours, other = (
        batch_predict.predict_case(batch_predict.case_task(project, cases[c]), plan, checkpoint)
        for c in ("c2", "c3")
    )
    # another client's prediction of c2, with other labels and arrays (as with other settings)
    labels = project.objects.read(ours.label.object_key).copy()
    labels[0, 0, 0] = 2 if labels[0, 0, 0] != 2 else 1
    with project.objects.stage() as staged:
        key = staged.put(labels, cases["c2"].affine)
    rng = np.random.default_rng(0)
    arrays = PredictionArrays(rng.random((5, *PHANTOM_SHAPE)), rng.random(PHANTOM_SHAPE))
    theirs = NewPrediction(
        "c2",
        dataclasses.replace(ours.label, object_key=key),
        write_prediction_file(project.root, 1, "c2", PHANTOM_SHAPE, arrays),
        ours.params,
    )
    assert theirs.file.relative != ours.file.relative

    missing = NewPrediction("c3", other.label, StoredPredictionFile("predictions/1/x.npz", 0.5), {})
    with pytest.raises(ConflictError, match="prediction file predictions/1/x.npz of case 'c3' is not stored"):
        project.add_predictions(1, [ours, missing])
    assert project.list_predictions() == []  # all or none

    stored = project.add_predictions(1, [ours, other, ours])  # a case twice in one batch: once
    assert [r.case_id for r in stored] == ["c2", "c3"]
    assert project.add_predictions(1, [theirs]) == []
    assert not project.objects.has(theirs.label.object_key)
    assert not (project.root / theirs.file.relative).exists()
    assert project.objects.has(ours.label.object_key) and (project.root / ours.file.relative).is_file()
    with pytest.raises(
        ConflictError, match=f"label object {theirs.label.object_key} of case 'c2' is not stored"
    ):
        project.add_predictions(1, [theirs], again=True)
    assert [r.case_id for r in project.add_predictions(1, [ours], again=True)] == ["c2"]
    assert check_project(project).ok


def test_a_swapped_image_is_not_predicted_and_the_cases_before_it_are_recorded(project):
    image = Path(project.get_case("c3").images[0].path)
    original = image.read_bytes()
    try:
        write_volume(make_ct_phantom(PHANTOM_SHAPE, seed=99).image, image, overwrite=True)
        with pytest.raises(
            StoreIntegrityError, match=r"image .*c3_0000.nii.gz of case 'c3' changed since it was added"
        ):
            predict_batch(project, ["c2", "c3", "c4"], author="t", device="cpu")
    finally:
        image.write_bytes(original)
    assert _predictions_per_case(project) == {"c2": 1}
    [job] = project.list_jobs(kind="predict")
    assert job.status == "failed" and "changed since it was added" in job.error
    rerun = predict_batch(project, ["c2", "c3", "c4"], author="t", device="cpu")
    assert [r.case_id for r in rerun.records] == ["c3", "c4"] and rerun.skipped == ("c2",)


@pytest.mark.slow  # a LocalCluster of 2 worker processes that import torch (~15 s on 2 cores)
def test_a_worker_killed_mid_batch_leaves_every_case_predicted_once(project, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    started = tmp_path / "started"
    started.mkdir()
    monkeypatch.setenv(STARTED_DIR, str(started))
    monkeypatch.setattr(batch_predict, "predict_case", slow_predict_case)
    killed = []

    def kill_the_first_worker_that_starts() -> None:
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            marks = sorted(started.iterdir())
            if marks:
                pid = int(marks[0].name.rsplit(".", 1)[1])
                os.kill(pid, signal.SIGKILL)  # inside its task's wait: nothing half written
                killed.append((marks[0].name.rsplit(".", 1)[0], pid))
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_first_worker_that_starts)
    killer.start()
    try:
        batch = predict_batch(
            project, unlabeled=True, author="t", device="cpu", executor="dask", workers=2, commit_every=2
        )
    finally:
        killed.append(None)
        killer.join()
    (case_id, pid), *_ = killed
    runs = [p.name for p in started.iterdir() if p.name.startswith(f"{case_id}.")]
    assert f"{case_id}.{pid}" in runs and len(runs) >= 2, "the killed worker's task ran again elsewhere"
    assert {p.read_text() for p in started.iterdir()} == {"1"}  # one torch thread per worker process
    assert sorted(r.case_id for r in batch.records) == ["c2", "c3", "c4", "c5"] and batch.skipped == ()
    assert _predictions_per_case(project) == dict.fromkeys(["c2", "c3", "c4", "c5"], 1)
    assert _pseudo_versions_per_case(project) == _predictions_per_case(project)
    [job] = project.list_jobs(kind="predict")
    assert job.status == "done" and job.params["executor"] == "dask" and len(job.result["predictions"]) == 4
    assert check_project(project).ok


def test_a_worker_accepts_an_older_header_only_hash_as_the_store_does(nhdr_project):  # noqa: F811
    """A detached NRRD recorded with its header's hash alone (older projects) is read, not refused,
    as `Project.read_image` reads it (`tests/store/test_legacy_image_hash.py`); another hash is not."""
    project, _, data, old = nhdr_project
    task = batch_predict.case_task(project, project.list_cases()[0])
    assert task.image_sha256 == old
    np.testing.assert_array_equal(batch_predict.read_task_image(task).array, data)
    with pytest.raises(StoreIntegrityError, match="changed since it was added"):
        batch_predict.read_task_image(dataclasses.replace(task, image_sha256="0" * 64))
