"""The jobs API: training, rounds and predictions in their own processes, followed, cancelled, resumed.

Each job process imports torch (seconds), so the tests share few of them: one training that
finishes and streams its progress, a round cancelled and started again (which finishes the round
and writes the report), a training stopped by the server's shutdown and resumed.
"""

from __future__ import annotations

import json
import multiprocessing
import time

import pytest

pytest.importorskip("torch")

from segloop.io.atomic import process_alive
from segloop.store import Project

#: A tiny network trained for a few CPU seconds (a number of epochs, not a time budget, ends it: a
#: busy machine makes training slower, never different).
TINY = {
    "features": [4, 8],
    "num_res_units": 1,
    "batch_size": 2,
    "steps_per_epoch": 2,
    "validation_fraction": 0.5,
    "num_threads": 1,
    "device": "cpu",
}
#: Long enough to be seen running (about a second), then cancelled, stopped or finished.
SHORT = {**TINY, "epochs": 20}
LONGER = {**TINY, "epochs": 40}
DEADLINE_S = 120.0


@pytest.fixture
def api(make_client):
    """A client of 3 phantoms, ``c0`` and ``c1`` labelled; its jobs are stopped at the end."""
    client = make_client(count=3, labeled=(0, 1))
    yield client
    client.app.state.jobs.shutdown()


def _wait(client, job_id: int, until, what: str, *, ended: bool = False) -> dict:
    """The job's JSON once ``until(job)`` holds, polled until `DEADLINE_S` (then the test fails).

    A job that ends before fails the test, unless ``ended`` (waiting for its end).
    """
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if until(job):
            return job
        if job["status"] != "running" and not ended:
            pytest.fail(f"job {job_id} is {job['status']} ({job['error']}) while waiting for {what}")
        time.sleep(0.1)
    pytest.fail(f"job {job_id} did not reach {what} in {DEADLINE_S} s")


def _training(job: dict) -> bool:
    progress = job["progress"]
    return progress is not None and progress["stage"] == "train" and "loss" in progress["metrics"]


def _events(response) -> list[dict]:
    assert response.headers["content-type"].startswith("text/event-stream")
    return [
        json.loads(line[len("data: ") :]) for line in response.text.splitlines() if line.startswith("data: ")
    ]


@pytest.mark.slow  # job processes import torch
def test_a_training_job_finishes_done_and_streams_its_progress(api):
    started = api.post("/api/jobs", json={"kind": "train", "params": SHORT})
    assert started.status_code == 202, started.text
    job = started.json()
    assert (job["kind"], job["status"], job["author"]) == ("train", "running", "local")
    assert job["params"]["request"] == SHORT and job["started_at"].endswith("+00:00")

    second = api.post("/api/jobs", json={"kind": "round", "params": SHORT})
    assert second.status_code == 409 and second.json()["job"] == job["id"]
    assert f"train job {job['id']}" in second.json()["detail"]

    events = _events(api.get(f"/api/jobs/{job['id']}/events"))
    statuses = [e["status"] for e in events]
    assert statuses[-1] == "done" and set(statuses[:-1]) <= {"running"}
    assert any(_training(e) for e in events[:-1]), "no training progress before the end"
    done = events[-1]
    assert done["result"]["model"] == done["params"]["model"] and done["finished_at"] is not None
    assert done["progress"]["stage"] == "train" and done["progress"]["done"] > 0
    assert api.get("/api/jobs?status=done").json()["jobs"] == [done]
    assert api.get("/api/jobs?status=running").json()["jobs"] == []
    # a finished job streams one event and ends
    assert _events(api.get(f"/api/jobs/{job['id']}/events")) == [done]
    again = api.post("/api/jobs", json={"kind": "predict", "params": {"cases": ["c2"], "device": "cpu"}})
    assert again.status_code == 202, again.text
    predicted = _wait(api, again.json()["id"], lambda j: j["status"] == "done", "the prediction's end")
    assert predicted["result"]["model"] == done["params"]["model"]
    assert api.delete(f"/api/jobs/{job['id']}").status_code == 409
    assert api.post(f"/api/jobs/{job['id']}/resume").status_code == 409


@pytest.mark.slow  # job processes import torch
def test_a_cancelled_round_stops_its_process_and_a_new_round_finishes_it(api):
    params = {**LONGER, "n": 2}
    started = api.post("/api/jobs", json={"kind": "round", "params": params})
    assert started.status_code == 202, started.text
    round_job = started.json()
    refused = api.post("/api/jobs", json={"kind": "train", "params": SHORT})
    assert refused.status_code == 409 and refused.json()["job"] == round_job["id"]
    _wait(api, round_job["id"], _training, "training progress on the round job")  # a nested job's
    project: Project = api.app.state.project
    pid = project.get_job(round_job["id"]).pid

    cancelled = api.delete(f"/api/jobs/{round_job['id']}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and not process_alive(pid)
    [training] = project.list_jobs(kind="train")
    assert (training.status, training.params["within"]) == ("cancelled", round_job["id"])
    assert api.delete(f"/api/jobs/{round_job['id']}").status_code == 409
    assert api.get("/api/rounds").json()["rounds"][0]["status"] == "running"

    other = api.post("/api/jobs", json={"kind": "round", "params": {**params, "epochs": 41}})
    assert other.status_code == 409 and "epochs: run 40, asked 41" in other.json()["detail"]
    again = api.post("/api/jobs", json={"kind": "round", "params": params})
    assert again.status_code == 202, again.text
    done = _wait(api, again.json()["id"], lambda j: j["status"] == "done", "the round's end")
    assert done["result"]["round"] == 1 and len(project.list_models()) == 1  # resumed, not retrained
    [row] = api.get("/api/rounds").json()["rounds"]
    assert (row["number"], row["status"], row["model"]) == (1, "done", done["result"]["model"])
    assert row["stages"] == ["train", "predict", "evaluate", "rank", "report"]
    assert sum(row["cases_by_source"].values()) == 3 and row["cases_by_source"]["original"] == 2
    assert set(row["validation_dice_per_class"]) <= set(project.config.schema.names)
    assert len(row["queue"]) <= 2

    page = api.get("/api/report/index.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    plot = api.get("/api/report/dice_per_round.png")
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
    assert api.get("/api/report/segloop.toml").status_code == 422
    assert api.get("/api/report/..%2Fsegloop.toml").status_code in (404, 422)
    assert api.get("/api/report/missing.png").status_code == 404


@pytest.mark.slow  # job processes import torch
def test_shutdown_interrupts_jobs_and_resume_finishes_them(api):
    started = api.post("/api/jobs", json={"kind": "train", "params": LONGER})
    assert started.status_code == 202, started.text
    job_id = started.json()["id"]
    _wait(api, job_id, _training, "training progress")
    project: Project = api.app.state.project
    pid = project.get_job(job_id).pid

    api.app.state.jobs.shutdown()
    stopped = api.get(f"/api/jobs/{job_id}").json()
    assert (stopped["status"], stopped["error"]) == ("interrupted", "interrupted") and not process_alive(pid)
    assert stopped["finished_at"] is not None
    [model] = project.list_models()
    assert model.status == "running"  # resumable

    resumed = api.post(f"/api/jobs/{job_id}/resume")
    assert resumed.status_code == 202, resumed.text
    assert resumed.json()["params"] == {"request": LONGER, "resumes": job_id}
    done = _wait(api, resumed.json()["id"], lambda j: j["status"] == "done", "the resumed training's end")
    assert done["params"]["resume"] is True
    assert done["result"]["model"] == model.id and project.get_model(model.id).status == "done"
    assert api.post(f"/api/jobs/{job_id}/resume").status_code == 409  # its model is done now
    assert api.post(f"/api/jobs/{done['id']}/resume").status_code == 409


def test_jobs_stopped_while_their_process_starts_can_be_resumed(api):
    first = api.post("/api/jobs", json={"kind": "train", "params": SHORT}).json()
    cancelled = api.delete(f"/api/jobs/{first['id']}")  # its process is still importing
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    resumed = api.post(f"/api/jobs/{first['id']}/resume")
    assert resumed.status_code == 202, resumed.text
    assert resumed.json()["params"] == {"request": SHORT, "resumes": first["id"]}

    [process] = multiprocessing.active_children()
    process.kill()  # from outside: out of memory, a signal
    killed = _wait(api, resumed.json()["id"], lambda j: j["status"] != "running", "its end", ended=True)
    assert (killed["status"], killed["error"]) == ("interrupted", "its process ended (exit code -9)")
    again = api.post(f"/api/jobs/{killed['id']}/resume")
    assert again.status_code == 202, again.text
    assert api.delete(f"/api/jobs/{again.json()['id']}").json()["status"] == "cancelled"
    assert multiprocessing.active_children() == []


@pytest.mark.slow  # the job process imports torch before it finds nothing to learn from
def test_work_refused_in_its_process_fails_its_job_with_the_reason(make_client):
    client = make_client(count=2, labeled=())
    response = client.post("/api/jobs", json={"kind": "train", "params": SHORT})
    assert response.status_code == 202, response.text
    failed = _wait(
        client, response.json()["id"], lambda j: j["status"] != "running", "the refusal", ended=True
    )
    assert failed["status"] == "failed" and failed["error"].startswith("no labelled case to train on")
    assert failed["params"] == {"request": SHORT}  # the training never recorded a model
    deadline = time.monotonic() + DEADLINE_S
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert multiprocessing.active_children() == [] and client.app.state.jobs.running() == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"kind": "sleep", "params": {}}, "unknown job kind 'sleep'"),
        ({"kind": "train", "params": {"epochs": "many"}}, "epochs"),
        ({"kind": "train", "params": {"epochs": 0}}, "epochs"),
        ({"kind": "train", "params": {"colour": "blue"}}, "colour"),
        ({"kind": "train", "params": {"minutes": 1, "time_budget_min": 2}}, "given twice"),
        ({"kind": "train", "params": {"mode": "sideways"}}, "sideways"),
        ({"kind": "train", "params": {"device": "tpu"}}, "tpu"),
        ({"kind": "train", "params": {"features": {"a": 1}}}, "features"),
        ({"kind": "train", "params": {"network": {"a": 1}}}, "network={'a': 1} is not valid"),
        ({"kind": "round", "params": {"strategy": "luck"}}, "luck"),
        ({"kind": "round", "params": {"n": -1}}, "n >= 0"),
        ({"kind": "round", "params": {"include_pseudo": "yes"}}, "expected one of none, all, confident"),
        ({"kind": "train", "params": {"include_pseudo": 1}}, "include_pseudo must be true or false or text"),
        ({"kind": "train", "params": {"include_pseudo": "all", "pseudo_entropy": 0.2}}, "'confident'"),
        ({"kind": "train", "params": {"include_pseudo": "confident", "pseudo_entropy": 2}}, "in (0, 1]"),
        ({"kind": "train", "params": {"include_pseudo": "confident", "pseudo_entropy": "low"}}, "a number"),
        ({"kind": "round", "params": {"include_pseudo": "confident", "pseudo_entropy": 0.2}}, "settings"),
        ({"kind": "predict", "params": {"epochs": 3}}, "unknown params epochs"),
        ({"kind": "predict", "params": {"cases": "c0"}}, "a list of text"),
        ({"kind": "predict", "params": {"cases": ["../x"]}}, "../x"),
        ({"kind": "predict", "params": {"cases": ["c0"], "unlabeled": True}}, "got both"),
        ({"kind": "predict", "params": {"postprocess": ["melt"]}}, "melt"),
        ({"kind": "train", "params": []}, "params"),
        ({"params": {}}, "kind"),
    ],
)
def test_bad_job_requests_are_422_and_start_nothing(client, body, expected):
    response = client.post("/api/jobs", json=body)
    assert response.status_code == 422, response.text
    assert expected in response.json()["detail"] and "\n" not in response.json()["detail"]
    assert client.get("/api/jobs").json() == {"jobs": []}


@pytest.mark.parametrize(
    ("kind", "params", "expected"),
    [
        ("train", {"include_pseudo": True}, {"include_pseudo": True, "pseudo_entropy": None}),
        ("train", {"include_pseudo": "none"}, {"include_pseudo": "none", "pseudo_entropy": None}),
        (
            "train",
            {"include_pseudo": "confident", "pseudo_entropy": 0.2},
            {"include_pseudo": "confident", "pseudo_entropy": 0.2},
        ),
        ("train", {}, {"include_pseudo": False, "pseudo_entropy": None}),
        ("round", {"include_pseudo": "confident"}, {"include_pseudo": "confident"}),
        ("round", {"include_pseudo": False}, {"include_pseudo": False}),
    ],
)
def test_train_and_round_jobs_take_the_pseudo_label_policies(client, monkeypatch, kind, params, expected):
    import segloop.loop.rounds as rounds
    import segloop.loop.training as training
    from segloop.server.jobs import check_request, run_request

    project = client.app.state.project
    request = check_request(project, kind, {**params, "epochs": 1})
    assert request == {**params, "epochs": 1}
    called: dict = {}
    target = (rounds, "run_round") if kind == "round" else (training, "train_project")
    monkeypatch.setattr(*target, lambda _project, _config, **options: called.update(options))
    run_request(project, kind, request, author="ana", resume=False)
    assert {name: called[name] for name in expected} == expected


def test_unknown_jobs_are_404_and_unready_requests_name_what_is_missing(client):
    for response in (
        client.get("/api/jobs/99"),
        client.get("/api/jobs/99/events"),
        client.delete("/api/jobs/99"),
        client.post("/api/jobs/99/resume"),
        client.post("/api/jobs", json={"kind": "predict", "params": {"cases": ["nope"]}}),
        client.post("/api/jobs", json={"kind": "predict", "params": {}}),  # no model yet
        client.get("/api/report/index.html"),  # no round yet
    ):
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/problem+json"
    assert client.get("/api/jobs/x").status_code == 422
    assert client.get("/api/jobs?status=sleeping").status_code == 422
    assert client.get("/api/rounds").json() == {"rounds": []}
    assert client.get("/api/jobs").json() == {"jobs": []}


def test_a_third_prediction_at_once_is_409_naming_the_running_ones(client, monkeypatch):
    import os

    from segloop.server import jobs as server_jobs

    project = client.app.state.project
    running = [
        project.start_job("predict", author="ana", params={}) for _ in range(server_jobs.MAX_PREDICT_JOBS)
    ]
    assert all(job.pid == os.getpid() for job in running)  # alive: they count as running
    monkeypatch.setattr(server_jobs, "check_request", lambda _project, _kind, params: dict(params))
    response = client.post("/api/jobs", json={"kind": "predict", "params": {"unlabeled": True}})
    assert response.status_code == 409, response.text
    assert response.json()["jobs"] == [job.id for job in running]
    assert len(project.list_jobs(kind="predict")) == server_jobs.MAX_PREDICT_JOBS  # nothing started
