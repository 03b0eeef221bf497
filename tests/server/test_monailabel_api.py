"""MONAI Label's REST API on `segloop serve` (routes/monailabel.py), through FastAPI's TestClient."""

from __future__ import annotations

import dataclasses
import json
from email import policy
from email.parser import BytesParser

import numpy as np
import pytest
from fastapi.testclient import TestClient

from segloop.core.volume import Volume
from segloop.io import write_volume
from segloop.io.nifti import decode
from segloop.loop.cases import import_cases, init_project
from segloop.loop.ranking import STRATEGIES
from segloop.loop.users import create_user
from segloop.server import Settings, create_app
from segloop.server.codec import volume_to_nifti_gz
from segloop.server.routes import monailabel as monailabel_routes
from segloop.synthetic import make_ct_phantom
from tests.conftest import SHARED_DATA
from tests.loop.test_ranking import add_prediction, blur_block, confident, start_model

SHAPE = (24, 24, 12)


@pytest.fixture
def predicted(make_client):
    """A client of three phantoms: ``c0`` labelled ``original``, ``c1`` predicted by a finished model."""
    client = make_client()
    project = client.app.state.project
    model = start_model(project)
    truth = make_ct_phantom(SHAPE, seed=1).labels.array
    probabilities = blur_block(confident(truth, project.config.schema.ignore_index), 1, (slice(2, 8),) * 3)
    add_prediction(project, "c1", probabilities, model_id=model)
    return client


def project_of(client):
    return client.app.state.project


def pseudo_of(client, case_id: str):
    [version] = [v for v in project_of(client).list_label_versions(case_id) if v.source == "pseudo"]
    return version


def label_upload(client, case_id: str, labels: np.ndarray, name: str = "label.nii.gz", affine=None):
    case = project_of(client).get_case(case_id)
    data = volume_to_nifti_gz(labels, case.affine if affine is None else affine)
    return {"label": (name, data, "application/gzip")}


def save(client, case_id: str, files, params=None, tag: str = "final"):
    return client.put(
        f"/datastore/label?image={case_id}&tag={tag}",
        files=files,
        data={"params": json.dumps({"client_id": "ann", **(params or {})})},
    )


def multipart_parts(response) -> dict[str, tuple[str | None, bytes]]:
    """``{field: (file name, bytes)}`` of a multipart response."""
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=policy.default).parsebytes(head + response.content)
    return {
        part.get_param("name", header="content-disposition"): (part.get_filename(), part.get_content())
        for part in message.iter_parts()
    }


def test_info_lists_classes_models_strategies_and_the_trainer(predicted):
    project = project_of(predicted)
    schema = project.config.schema
    for path in ("/info/", "/info"):
        response = predicted.get(path, follow_redirects=False)
        assert response.status_code == 200, path
    info = response.json()
    assert info["name"] == project.config.name and "config" not in info  # Slicer refuses a top-level config
    assert info["labels"] == {**{c.name: c.index for c in schema.classes}, "ignore": schema.ignore_index}
    model = project.list_models()[0]
    assert list(info["models"]) == ["segloop", f"segloop-{model.id}"]
    described = info["models"]["segloop"]
    assert described["type"] == "segmentation" and described["dimension"] == 3
    assert described["labels"] == {c.name: c.index for c in schema.classes}
    assert set(info["strategies"]) == set(STRATEGIES)
    assert info["strategies"]["random"]["config"] == {"seed": 0}
    assert list(info["trainers"]) == ["segloop"]
    assert info["datastore"] == {"total": 3, "completed": 1, "label_tags": {"final": 1, "original": 1}}


def test_info_without_a_model_lists_none(client):
    info = client.get("/info/").json()
    assert info["models"] == {} and info["train_stats"] == {}
    assert info["trainers"]["segloop"]["config"]["mode"][0] == "full"
    response = client.post("/infer/segloop?image=c1")
    assert response.status_code == 404 and "train one first" in response.json()["detail"]


def test_datastore_tags_human_and_model_labels(predicted):
    assert predicted.get("/datastore/", follow_redirects=False).json()["completed"] == 1
    everything = predicted.get("/datastore?output=all", follow_redirects=False).json()
    objects = everything["objects"]
    assert sorted(objects) == ["c0", "c1", "c2"]
    assert list(objects["c0"]["labels"]) == ["final"] and list(objects["c1"]["labels"]) == ["original"]
    assert objects["c2"]["labels"] == {}
    info = objects["c1"]["labels"]["original"]["info"]
    assert info["version"] == pseudo_of(predicted, "c1").id and info["sources"] == ["pseudo"]
    assert list(info["params"]["label_names"]) == [*project_of(predicted).config.schema.names, "ignore"]
    assert objects["c0"]["image"]["info"]["name"] == "c0.nii.gz"
    train = predicted.get("/datastore/?output=train").json()
    assert train == [{"image": "/datastore/image?image=c0", "label": "/datastore/label?label=c0&tag=final"}]
    response = predicted.get("/datastore/?output=everything")
    assert response.status_code == 422 and "stats, all, train" in response.json()["detail"]


def test_image_download_is_the_case_image_on_its_grid(client):
    project = project_of(client)
    response = client.get("/datastore/image?image=c1")
    assert response.status_code == 200
    assert 'filename="c1.nii.gz"' in response.headers["content-disposition"]
    volume = decode(response.content, what="download")
    stored = project.read_image("c1")
    np.testing.assert_array_equal(volume.array, stored.array)
    np.testing.assert_allclose(volume.affine, stored.affine, atol=1e-4)
    assert client.get("/datastore/image/info?image=c1").json()["shape"] == list(SHAPE)


def test_label_download_by_tag(predicted):
    project = project_of(predicted)
    [original] = project.list_label_versions("c0")
    final = predicted.get("/datastore/label?label=c0&tag=final")
    assert final.status_code == 200 and 'filename="c0.nii.gz"' in final.headers["content-disposition"]
    np.testing.assert_array_equal(decode(final.content, what="x").array, project.read_labels(original))
    pseudo = predicted.get("/datastore/label?label=c1&tag=original")
    np.testing.assert_array_equal(
        decode(pseudo.content, what="x").array, project.read_labels(pseudo_of(predicted, "c1"))
    )
    assert predicted.get("/datastore/label/info?label=c1&tag=original").json()["sources"] == ["pseudo"]
    assert predicted.get("/datastore/label?label=c2&tag=final").status_code == 404
    response = predicted.get("/datastore/label?label=c0&tag=draft")
    assert response.status_code == 422 and "final, original" in response.json()["detail"]


def test_next_sample_is_ranked_and_recorded(predicted):
    project = project_of(predicted)
    response = predicted.post("/activelearning/uncertainty", json={"client_id": "ann"})
    assert response.status_code == 200
    sample = response.json()
    assert sample["id"] == "c1" and sample["name"] == "c1.nii.gz" and sample["rank"] == 1
    [event] = project.list_events("served")
    assert event.actor == "ann" and event.detail["strategy"] == "uncertainty"
    assert predicted.post("/activelearning/random", json={"seed": 3}).json()["id"] in {"c1", "c2"}
    assert predicted.post("/activelearning/bogus", json={}).status_code == 422
    assert predicted.post("/activelearning/random", json={"seed": "x"}).status_code == 422
    assert predicted.post("/activelearning/random", json={"client_id": "../x"}).status_code == 422


def test_next_sample_is_empty_when_people_decided_every_case(make_client):
    client = make_client(count=1, labeled=(0,))
    assert client.post("/activelearning/random").json() == {}


def test_infer_answers_the_stored_prediction(predicted):
    project = project_of(predicted)
    expected = project.read_labels(pseudo_of(predicted, "c1"))
    response = predicted.post("/infer/segloop?image=c1", data={"params": json.dumps({"client_id": "ann"})})
    assert response.status_code == 200 and response.headers["content-type"].startswith("multipart/form-data")
    parts = multipart_parts(response)
    params = json.loads(parts["params"][1])
    assert params["label_names"] == {c.name: c.index for c in project.config.schema.classes}
    file_name, data = parts["image"]
    assert file_name == "c1.nii.gz"
    np.testing.assert_array_equal(decode(data, what="x").array, expected)
    model = project.list_models()[0].id
    image = predicted.post(f"/infer/segloop-{model}?image=c1&output=image")
    np.testing.assert_array_equal(decode(image.content, what="x").array, expected)
    assert predicted.post("/infer/segloop?image=c1&output=json").json()["model"] == model


def test_infer_refuses_unknown_models_and_inputs(predicted):
    assert predicted.post("/infer/segloop-999?image=c1").status_code == 404
    response = predicted.post("/infer/deepedit?image=c1")
    assert response.status_code == 404 and "segloop-<id>" in response.json()["detail"]
    assert predicted.post("/infer/segloop?image=c1&output=dicom_seg").status_code == 422
    assert predicted.post("/infer/segloop?image=c1", data={"params": "{not json"}).status_code == 422
    assert predicted.post("/infer/segloop?image=c1&session_id=s").status_code == 501


def test_saved_final_label_is_a_revised_version_of_the_served_head(predicted):
    project = project_of(predicted)
    pseudo = pseudo_of(predicted, "c1")
    predicted.post("/infer/segloop?image=c1", data={"params": json.dumps({"client_id": "ann"})})
    labels = project.read_labels(pseudo).copy()
    labels[10:14, 10:14, 4:8] = 2
    names = [*project.config.schema.names, "ignore"]  # Slicer's segments, in /info/ order
    label_info = [{"name": name, "idx": index} for index, name in enumerate(names, start=1)]
    response = save(predicted, "c1", label_upload(predicted, "c1", labels), {"label_info": label_info})
    assert response.status_code == 200, response.text
    answer = response.json()
    version = project.get_label_version(answer["version"])
    assert answer["image"] == "c1" and answer["head"] == version.id and answer["created"]
    assert version.source == "revised" and version.author == "ann"
    assert version.classes == project.config.schema.names
    assert version.parent_id == pseudo.id and version.params["based_on"] == pseudo.id
    assert version.params["client"] == "monailabel"
    np.testing.assert_array_equal(project.read_labels(version), labels)
    datastore = predicted.get("/datastore/?output=all").json()["objects"]["c1"]["labels"]
    assert set(datastore) == {"final", "original"}
    # the same client saves again on top of its own version
    labels[0:2, 0:2, 0:2] = 3
    again = save(predicted, "c1", label_upload(predicted, "c1", labels))
    assert again.status_code == 200
    assert project.get_label_version(again.json()["version"]).params["based_on"] == version.id


def test_slicer_segment_values_are_named_by_label_info_order(predicted):
    project = project_of(predicted)
    exported = np.zeros(SHAPE, np.uint8)
    exported[2:6, 2:6, 2:6] = 1  # the first exported segment: spleen
    exported[8:12, 8:12, 2:6] = 2  # the second: liver
    exported[14:16, 14:16, 2:4] = 3  # the third: ignore
    label_info = [{"name": "spleen", "idx": 2}, {"name": "liver", "idx": 3}, {"name": "ignore", "idx": 6}]
    response = save(predicted, "c2", label_upload(predicted, "c2", exported), {"label_info": label_info})
    assert response.status_code == 200, response.text
    version = project.get_label_version(response.json()["version"])
    assert version.classes == ("liver", "spleen")  # in schema order
    expected = np.choose(exported, [0, 2, 1, project.config.schema.ignore_index]).astype(np.uint8)
    np.testing.assert_array_equal(project.read_labels(version), expected)
    exported[0, 0, 0] = 4  # a value no exported segment has
    response = save(predicted, "c2", label_upload(predicted, "c2", exported), {"label_info": label_info})
    assert response.status_code == 422 and "4" in response.json()["detail"]


def test_a_slicer_segmentation_is_read_by_segment_name(predicted, tmp_path):
    project = project_of(predicted)
    case = project.get_case("c2")
    labels = np.zeros(SHAPE, np.uint8)
    labels[2:6, 2:6, 2:6] = 2  # spleen
    labels[10:12, 10:12, 2:4] = project.config.schema.ignore_index
    segments = [  # spleen first, with another label value than the schema's: the name decides
        {"id": "s1", "name": "spleen", "color": (0, 1, 0), "label_value": 7, "layer": 0},
        {"id": "s2", "name": "ignore", "color": (1, 1, 1), "label_value": 9, "layer": 0},
    ]
    written = np.select([labels == 2, labels == 5], [7, 9], 0).astype(np.uint8)
    path = write_volume(Volume(written, case.affine, {"segments": segments}), tmp_path / "c2.seg.nrrd")
    files = {"label": ("c2.seg.nrrd", path.read_bytes(), "application/octet-stream")}
    response = save(predicted, "c2", files)
    assert response.status_code == 200, response.text
    version = project.get_label_version(response.json()["version"])
    assert version.classes == ("spleen",) and version.parent_id is None
    np.testing.assert_array_equal(project.read_labels(version), labels)


def test_a_save_after_someone_elses_version_is_a_conflict(predicted):
    project = project_of(predicted)
    predicted.post("/activelearning/uncertainty", json={"client_id": "ann"})  # ann is served c1
    labels = project.read_labels(pseudo_of(predicted, "c1"))
    assert (
        save(predicted, "c1", label_upload(predicted, "c1", labels), {"client_id": "bob"}).status_code == 200
    )
    count = len(project.list_label_versions("c1"))
    response = save(predicted, "c1", label_upload(predicted, "c1", labels + (labels == 0)))
    assert response.status_code == 409 and "bob" in response.json()["detail"]
    assert len(project.list_label_versions("c1")) == count


def test_bad_labels_store_nothing(predicted):
    project = project_of(predicted)
    labels = np.zeros(SHAPE, np.uint8)
    shifted = project.get_case("c1").affine.copy()
    shifted[0, 3] += 7.5
    bad_values = labels.copy()
    bad_values[0, 0, 0] = 99
    cases = [
        (label_upload(predicted, "c1", np.zeros((24, 24, 11), np.uint8)), {}, "final", "shape"),
        (label_upload(predicted, "c1", labels, affine=shifted), {}, "final", ""),
        (label_upload(predicted, "c1", bad_values), {}, "final", "99"),
        (label_upload(predicted, "c1", labels, name="label.mha"), {}, "final", ".nii.gz"),
        (
            label_upload(predicted, "c1", labels),
            {"label_info": [{"name": "tumour", "idx": 1}]},
            "final",
            "tumour",
        ),
        (label_upload(predicted, "c1", labels), {"label_info": "liver"}, "final", "label_info"),
        (label_upload(predicted, "c1", labels), {}, "original", "final"),
        ({"label": ("l.nii.gz", b"\x1f\x8bnot a nifti", "application/gzip")}, {}, "final", ""),
    ]
    before = len(project.list_label_versions())
    for files, params, tag, detail in cases:
        response = save(predicted, "c1", files, params, tag=tag)
        assert response.status_code == 422, (tag, params, response.text)
        assert detail in response.json()["detail"]
        assert "/tmp" not in response.json()["detail"]
    assert len(project.list_label_versions()) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/datastore/image?image={}"),
        ("get", "/datastore/image/info?image={}"),
        ("get", "/datastore/label?label={}&tag=final"),
        ("get", "/datastore/label/info?label={}&tag=final"),
        ("post", "/infer/segloop?image={}"),
    ],
)
def test_case_ids_are_checked(predicted, method, path):
    assert getattr(predicted, method)(path.format("nope")).status_code == 404
    for bad in ("..%2Fsecret", "%2Fetc%2Fpasswd", ".hidden"):
        assert getattr(predicted, method)(path.format(bad)).status_code == 422
    response = predicted.put(
        "/datastore/label?image=..%2Fx", files=label_upload(predicted, "c1", np.zeros(SHAPE))
    )
    assert response.status_code == 422


class RecordingRunner:
    """A job runner that records jobs in the store; a prediction is a stored one, ``predict_status``."""

    def __init__(self, project, predict_status="done"):
        self.project = project
        self.predict_status = predict_status
        self.started = []

    def start(self, kind, params, *, author):
        self.started.append((kind, dict(params), author))
        job = self.project.start_job(kind, author=author, params={"request": dict(params)})
        if kind != "predict":
            return job
        for case_id in params["cases"]:
            probabilities = confident(np.full(SHAPE, 2, np.uint8), self.project.config.schema.ignore_index)
            add_prediction(self.project, case_id, probabilities, model_id=params["model"])
        error = None if self.predict_status == "done" else "no checkpoint"
        return self.project.finish_job(job.id, status=self.predict_status, error=error)

    def running(self, kinds=None):
        return [j for j in self.project.list_jobs(status="running") if kinds is None or j.kind in kinds]

    def cancel(self, job_id, *, author=None):
        job = self.project.finish_job(job_id, status="interrupted", error="cancelled")
        return dataclasses.replace(job, status="cancelled")


def test_infer_runs_a_prediction_job_for_a_case_without_one(predicted):
    project = project_of(predicted)
    runner = predicted.app.state.jobs = RecordingRunner(project)
    model = project.list_models()[0].id
    response = predicted.post("/infer/segloop?image=c2&output=image", data={"params": '{"client_id": "ann"}'})
    assert response.status_code == 200
    assert runner.started == [("predict", {"cases": ["c2"], "model": model}, "ann")]
    np.testing.assert_array_equal(decode(response.content, what="x").array, np.full(SHAPE, 2))
    predicted.app.state.jobs = RecordingRunner(project, predict_status="failed")
    response = predicted.post("/infer/segloop?image=c0")
    assert response.status_code == 409 and "failed: no checkpoint" in response.json()["detail"]


class SlowRunner(RecordingRunner):
    """A job runner whose predictions run until the test finishes them (`finish`)."""

    def start(self, kind, params, *, author):
        self.started.append((kind, dict(params), author))
        return self.project.start_job(kind, author=author, params={"request": dict(params)})

    def finish(self, job_id, case_id, model_id):
        probabilities = confident(np.full(SHAPE, 3, np.uint8), self.project.config.schema.ignore_index)
        add_prediction(self.project, case_id, probabilities, model_id=model_id)
        self.project.finish_job(job_id, status="done")


@pytest.fixture
def short_waits(monkeypatch):
    """``/infer`` waits 0.3 s for a prediction, reading its job every 0.05 s."""
    monkeypatch.setattr(monailabel_routes, "PREDICT_WAIT_S", 0.3)
    monkeypatch.setattr(monailabel_routes, "PREDICT_POLL_S", 0.05)


def test_infer_reuses_the_running_prediction_and_waits_a_bounded_time(predicted, short_waits):
    project = project_of(predicted)
    runner = predicted.app.state.jobs = SlowRunner(project)
    model = project.list_models()[0].id
    first = predicted.post("/infer/segloop?image=c2", data={"params": '{"client_id": "ann"}'})
    assert first.status_code == 409 and "still predicting case 'c2'" in first.json()["detail"]
    job = first.json()["job"]
    again = predicted.post("/infer/segloop?image=c2", data={"params": '{"client_id": "bob"}'})
    assert again.status_code == 409 and again.json()["job"] == job  # the same job, not a second one
    assert runner.started == [("predict", {"cases": ["c2"], "model": model}, "ann")]
    runner.finish(job, "c2", model)
    done = predicted.post("/infer/segloop?image=c2&output=image")
    assert done.status_code == 200 and len(runner.started) == 1
    np.testing.assert_array_equal(decode(done.content, what="x").array, np.full(SHAPE, 3))


def test_infer_starts_no_prediction_beyond_the_limit(predicted, short_waits, monkeypatch):
    monkeypatch.setattr(monailabel_routes, "MAX_PREDICT_JOBS", 1)
    runner = predicted.app.state.jobs = SlowRunner(project_of(predicted))
    job = predicted.post("/infer/segloop?image=c2").json()["job"]
    response = predicted.post("/infer/segloop?image=c0")
    assert response.status_code == 409 and response.json()["jobs"] == [job]
    assert "too many predictions at once" in response.json()["detail"]
    assert [params["cases"] for _, params, _ in runner.started] == [["c2"]]


def test_each_anonymous_client_saves_on_the_head_it_was_served(predicted):
    project = project_of(predicted)
    pseudo = pseudo_of(predicted, "c1")
    labels = project.read_labels(pseudo)
    for client_id in ("ann", "bob"):  # both are served c1 at the pseudo version
        answer = predicted.post(
            "/infer/segloop?image=c1", data={"params": json.dumps({"client_id": client_id})}
        )
        assert answer.status_code == 200
    saved = save(predicted, "c1", label_upload(predicted, "c1", labels), {"client_id": "bob"})
    assert saved.status_code == 200
    # ann downloads the label (MONAI Label's client sends no client_id there): it names nobody
    assert predicted.get("/datastore/label?label=c1&tag=final").status_code == 200
    stale = save(predicted, "c1", label_upload(predicted, "c1", labels + (labels == 0)), {"client_id": "ann"})
    assert stale.status_code == 409 and "bob" in stale.json()["detail"]
    # bob saves again on top of his own version; a download naming ann serves her the new head
    changed = labels.copy()
    changed[0:2, 0:2, 0:2] = 1
    again = save(predicted, "c1", label_upload(predicted, "c1", changed), {"client_id": "bob"})
    assert project.get_label_version(again.json()["version"]).params["based_on"] == saved.json()["version"]
    predicted.get("/datastore/label?label=c1&tag=final&client_id=ann")
    fresh = save(predicted, "c1", label_upload(predicted, "c1", labels + (labels == 0)), {"client_id": "ann"})
    assert fresh.status_code == 200


def test_an_anonymous_download_does_not_move_another_clients_parent(predicted):
    """A client without a client_id (the server's local author) keeps the head it was served."""
    project = project_of(predicted)
    labels = project.read_labels(pseudo_of(predicted, "c1"))
    assert predicted.post("/infer/segloop?image=c1").status_code == 200  # served the pseudo version
    assert (
        save(predicted, "c1", label_upload(predicted, "c1", labels), {"client_id": "bob"}).status_code == 200
    )
    predicted.get("/datastore/label?label=c1&tag=final")  # someone downloads the new head
    response = predicted.put(
        "/datastore/label?image=c1&tag=final", files=label_upload(predicted, "c1", labels + (labels == 0))
    )
    assert response.status_code == 409 and "bob" in response.json()["detail"]


def test_training_routes_drive_the_job_runner(client):
    runner = client.app.state.jobs = RecordingRunner(project_of(client))
    assert client.get("/train/?check_if_running=true").status_code == 404
    assert client.get("/train/").status_code == 404
    assert client.delete("/train/").json() == {}
    response = client.post("/train/segloop", json={"client_id": "ann", "mode": "full", "epochs": 1})
    assert response.status_code == 200
    task = response.json()
    assert task["status"] == "RUNNING" and task["request"] == {"request": {"mode": "full", "epochs": 1}}
    assert runner.started == [("train", {"mode": "full", "epochs": 1}, "ann")]
    assert client.get("/train?check_if_running=true", follow_redirects=False).json()["id"] == task["id"]
    stopped = client.delete("/train").json()
    assert stopped["status"] == "STOPPED" and stopped["details"] == ["cancelled"]
    assert client.get("/train/?check_if_running=true").status_code == 404
    assert client.get("/train/").json()["status"] == "INTERRUPTED"
    assert len(client.get("/train/?all=true").json()) == 1
    assert client.post("/train/deepedit", json={}).status_code == 404
    everything = client.post("/train/", json={"segloop": {"epochs": 2}}).json()
    assert everything["segloop"]["result"]["status"] == "RUNNING" and runner.started[-1][1] == {"epochs": 2}
    assert client.post("/train/", json={"segloop": "fast"}).status_code == 422


def test_uploads_and_sessions_answer_501(client):
    files = {"file": ("x.nii.gz", b"", "application/gzip")}
    for path in ("/datastore/?image=x", "/datastore?image=x", "/datastore/image?image=x"):
        response = client.put(path, files=files)
        assert response.status_code == 501 and "segloop add" in response.json()["detail"]
    assert client.put("/session/", files=files).status_code == 501
    assert client.get("/session/abc").status_code == 501
    assert (
        client.post(
            "/infer/segloop?image=c0", files={"file": ("x.nii.gz", b"", "application/gzip")}
        ).status_code
        == 501
    )


def test_sign_in_with_a_segloop_token_as_the_password(make_client):
    client = make_client(require_sign_in=True)
    assert client.get("/auth/").json() == {"enabled": True}
    assert client.get("/info/").status_code == 401
    assert client.post("/activelearning/random", json={"client_id": "ann"}).status_code == 401
    _, token = create_user(project_of(client), "ana")
    refused = client.post("/auth/token", data={"username": "ana", "password": "wrong"})
    assert refused.status_code == 401
    granted = client.post(
        "/auth/token", data={"username": "ana", "password": token, "grant_type": "password"}
    )
    assert granted.status_code == 200
    headers = {"Authorization": f"{granted.json()['token_type']} {granted.json()['access_token']}"}
    assert client.get("/auth/token/valid", headers=headers).json() == {"user": "ana"}
    sample = client.post("/activelearning/random", json={"client_id": "bob"}, headers=headers)
    assert sample.status_code == 200
    [event] = project_of(client).list_events("served")
    assert event.actor == "ana"  # a signed-in user is the author, whatever client_id says


def test_loopback_without_sign_in_says_so(client):
    assert client.get("/auth").json() == {"enabled": False}


@pytest.mark.parametrize(
    "image", ["mr_small/image.nii.gz", pytest.param("ct_dicom_series/dicom", marks=pytest.mark.slow)]
)
def test_a_label_written_by_itk_on_the_served_image_lands_on_the_case(tmp_path, image):
    """Slicer reads the served image and writes its label through ITK: real LPS NIfTI and DICOM headers."""
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK (dev extra) is not installed")
    source = SHARED_DATA / "totalsegmentator-examples" / image
    if not source.exists():
        pytest.skip(f"real data {source} is absent")
    project = init_project(tmp_path / "p", ["spleen", "kidney_right", "kidney_left"])
    import_cases(project, [source], case_id="real")
    client = TestClient(create_app(project, Settings()))
    served = tmp_path / "real.nii.gz"
    served.write_bytes(client.get("/datastore/image?image=real").content)
    itk_image = sitk.ReadImage(str(served))
    shape = project.get_case("real").shape
    assert itk_image.GetSize() == shape
    painted = np.zeros(shape[::-1], np.int16)  # ITK's array order: (K, J, I)
    painted[2:6, 10:40, 20:50] = 1
    painted[8:10, 30:60, 5:25] = 3
    label = sitk.GetImageFromArray(painted)
    label.CopyInformation(itk_image)
    written = tmp_path / "label.nii.gz"
    sitk.WriteImage(label, str(written))
    files = {"label": ("label.nii.gz", written.read_bytes(), "application/gzip")}
    label_info = [{"name": name, "idx": i} for i, name in enumerate(project.config.schema.names, start=1)]
    response = client.put(
        "/datastore/label?image=real&tag=final",
        files=files,
        data={"params": json.dumps({"label_info": label_info})},
    )
    assert response.status_code == 200, response.text
    stored = project.read_labels(project.get_label_version(response.json()["version"]))
    np.testing.assert_array_equal(stored, painted.transpose(2, 1, 0))
    # and the label served back overlays the image where ITK (Slicer) puts it
    back = tmp_path / "back.nii.gz"
    back.write_bytes(client.get("/datastore/label?label=real&tag=final").content)
    again = sitk.ReadImage(str(back))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(again), painted)
    np.testing.assert_allclose(again.GetOrigin(), itk_image.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(again.GetDirection(), itk_image.GetDirection(), atol=1e-5)
