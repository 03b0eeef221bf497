"""The cases API through FastAPI's TestClient: what each route answers and what it stores."""

from __future__ import annotations

import numpy as np

from segloop.io import nifti
from segloop.loop.labels import compute_effective_label, count_voxels
from segloop.server.presence import Presence
from segloop.store import NewLabel, PredictionArrays, Project

GZ = {"Content-Type": "application/gzip"}


def project_of(client) -> Project:
    return client.app.state.project


def gz(array: np.ndarray, affine: np.ndarray) -> bytes:
    return nifti.encode(nifti.Volume(array, affine))


def label_of(client, case_id: str) -> tuple[np.ndarray, str]:
    """The served effective label and its ETag."""
    response = client.get(f"/api/cases/{case_id}/label.nii.gz")
    assert response.status_code == 200, response.text
    return nifti.decode(response.content, what="label").array, response.headers["etag"]


def put_label(client, case_id: str, array: np.ndarray, etag: str | None, query: str = ""):
    affine = project_of(client).get_case(case_id).affine
    headers = GZ if etag is None else {**GZ, "If-Match": etag}
    return client.put(f"/api/cases/{case_id}/label{query}", content=gz(array, affine), headers=headers)


def add_prediction(project: Project, case_id: str, hot_slice: int) -> int:
    """A model's prediction of a case whose entropy peaks on axial slice ``hot_slice``; the model id."""
    model = project.start_model(
        author="test", mode="full", parent_id=None, config={}, label_version_ids=[], train_case_ids=[],
        val_case_ids=[],
    )  # fmt: skip
    project.finish_model(model.id, status="done", metrics={}, config={})
    case = project.get_case(case_id)
    schema = project.config.schema
    labels = np.zeros(case.shape, schema.dtype)
    labels[2:8, 2:8, 2:6] = 1
    with project.objects.stage() as staged:
        key = staged.put(labels, case.affine)
    pseudo = project.add_label_version(
        case_id, NewLabel(key, "pseudo", schema.names, count_voxels(labels, schema), "test", "model", {})
    )
    probabilities = np.zeros((len(schema.classes) + 1, *case.shape), np.float16)
    probabilities[0] = 1.0
    entropy = np.zeros(case.shape, np.float16)
    entropy[:, :, hot_slice] = 0.9
    entropy[3, 3, :] = 0.5
    project.write_prediction(
        case_id, model.id, PredictionArrays(probabilities, entropy), label_version_id=pseudo.id, params={}
    )
    return model.id


# -- the project and its cases ----------------------------------------------------------------------


def test_project_lists_classes_window_and_caller(client):
    body = client.get("/api/project").json()
    schema = project_of(client).config.schema
    assert body["name"] == "p" and body["modality"] == "CT" and body["n_cases"] == 3
    assert [c["name"] for c in body["classes"]] == list(schema.names)
    assert body["classes"][0] == {"value": 1, "name": "liver", "color": list(schema.classes[0].color)}
    assert body["ignore_value"] == schema.ignore_index and body["window"] is None
    assert body["author"] == "local" and body["sign_in_required"] is False


def test_cases_list_grids_sources_ranks_and_editors(client):
    rows = {row["id"]: row for row in client.get("/api/cases").json()["cases"]}
    assert list(rows) == ["c0", "c1", "c2"]
    assert rows["c0"]["shape"] == [24, 24, 12] and rows["c0"]["n_versions"] == 1
    assert set(rows["c0"]["sources"].values()) == {"original"}
    assert rows["c1"]["sources"]["liver"] is None and rows["c1"]["rank"] is None
    # /api/next records the whole ranking: every candidate gets its rank, not only the served one
    served = client.get("/api/next").json()
    assert served == {"case_id": "c1", "classes": list(project_of(client).config.schema.names), "rank": 1,
                      "score": None, "strategy": "uncertainty"}  # fmt: skip
    client.get("/api/cases/c2/label.nii.gz")
    rows = {row["id"]: row for row in client.get("/api/cases").json()["cases"]}
    assert (rows["c1"]["rank"], rows["c2"]["rank"], rows["c0"]["rank"]) == (1, 2, None)
    assert rows["c2"]["editing"] == ["local"] and rows["c1"]["editing"] == []


def test_cases_list_shows_the_uncertainty_score_of_the_newest_ranking(client):
    project = project_of(client)
    add_prediction(project, "c2", hot_slice=4)
    assert client.get("/api/next").json()["case_id"] == "c2"
    rows = {row["id"]: row for row in client.get("/api/cases").json()["cases"]}
    assert rows["c2"]["rank"] == 1 and rows["c2"]["uncertainty"] is not None
    assert rows["c1"]["rank"] == 2 and rows["c1"]["uncertainty"] is None  # no prediction: unscored
    served = project.list_events("served")
    assert len(served) == 1 and served[0].detail["cases"] == ["c2"] and served[0].actor == "local"


def test_next_is_404_when_people_decided_everything_and_422_for_an_unknown_strategy(make_client):
    client = make_client(count=1, labeled=(0,))
    response = client.get("/api/next")
    assert response.status_code == 404 and "no case left to correct" in response.json()["detail"]
    response = client.get("/api/next?strategy=epistemic")
    assert response.status_code == 422 and "unknown ranking strategy" in response.json()["detail"]


def test_next_least_recent_rotates(client):
    first = client.get("/api/next?strategy=least-recent").json()["case_id"]
    second = client.get("/api/next?strategy=least-recent").json()["case_id"]
    assert {first, second} == {"c1", "c2"}


def test_case_json_versions_prediction_slice_and_draft(client):
    project = project_of(client)
    body = client.get("/api/cases/c0").json()
    assert body["id"] == "c0" and body["shape"] == [24, 24, 12] and body["spacing"] == [1.5, 1.5, 3.0]
    np.testing.assert_allclose(body["affine"], project.get_case("c0").affine)
    assert body["head"] == 1 and body["prediction"] is None and body["most_uncertain_slice"] is None
    version = body["versions"][0]
    assert {k: version[k] for k in ("id", "source", "tool", "parent")} == {
        "id": 1, "source": "original", "tool": "segloop add", "parent": None,
    }  # fmt: skip
    assert body["draft"] is None
    model = add_prediction(project, "c0", hot_slice=7)
    body = client.get("/api/cases/c0").json()
    assert body["prediction"]["model_id"] == model and body["head"] == 2
    assert body["most_uncertain_slice"] == {"axis": 2, "index": 7}


# -- volumes ------------------------------------------------------------------------------------


def test_image_full_and_preview(make_client):
    client = make_client(count=1, shape=(160, 140, 4), labeled=())
    project = project_of(client)
    case = project.get_case("c0")
    response = client.get("/api/cases/c0/image.nii.gz")
    assert response.status_code == 200 and response.headers["content-type"] == "application/gzip"
    assert response.headers["content-disposition"] == 'attachment; filename="c0_image.nii.gz"'
    full = nifti.decode(response.content, what="image")
    assert np.array_equal(full.array, project.read_image("c0").array)
    np.testing.assert_allclose(full.affine, case.affine, atol=1e-4)
    preview = nifti.decode(client.get("/api/cases/c0/image.nii.gz?preview=true").content, what="preview")
    assert preview.spatial_shape == (80, 70, 4)
    assert np.array_equal(preview.array, full.array[::2, ::2])
    np.testing.assert_allclose(preview.affine[:3, 3], case.affine[:3, 3], atol=1e-4)


def test_label_is_the_effective_label_with_its_head_as_etag(client):
    project = project_of(client)
    labels, etag = label_of(client, "c0")
    expected = compute_effective_label(project, project.get_case("c0")).labels
    assert np.array_equal(labels, expected) and labels.dtype == np.uint8
    assert etag == '"1"'
    response = client.get("/api/cases/c0/label.nii.gz")
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-disposition"] == 'attachment; filename="c0_label.nii.gz"'
    empty, etag = label_of(client, "c1")
    assert etag == '"none"' and not empty.any() and empty.shape == (24, 24, 12)


def test_entropy_of_the_newest_prediction_or_404(client):
    response = client.get("/api/cases/c1/entropy.nii.gz")
    assert response.status_code == 404 and "no stored prediction" in response.json()["detail"]
    add_prediction(project_of(client), "c1", hot_slice=3)
    entropy = nifti.decode(client.get("/api/cases/c1/entropy.nii.gz").content, what="entropy").array
    assert entropy.dtype == np.float32 and entropy.shape == (24, 24, 12)
    assert np.allclose(entropy[0, :, 3], 0.9, atol=1e-3) and entropy[0, 0, 0] == 0


# -- saving -------------------------------------------------------------------------------------


def test_put_label_stores_a_revised_version_with_the_voxels_sent(client):
    project = project_of(client)
    labels, etag = label_of(client, "c0")
    edited = labels.copy()
    edited[0:4, 0:4, 0:2] = 2
    response = put_label(client, "c0", edited, etag, "?classes=liver,spleen")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["created"] is True and body["head"] == body["version"]["id"] == 2
    version = project.get_label_version(2)
    assert (
        version.source == "revised" and version.author == "local" and version.classes == ("liver", "spleen")
    )
    assert version.params["via"] == "editor" and version.params["based_on"] == 1
    assert np.array_equal(project.read_labels(version), edited)
    assert label_of(client, "c0")[1] == '"2"'
    again = put_label(client, "c0", edited, etag, "?classes=liver,spleen")  # the same save twice
    assert again.status_code == 200 and again.json()["created"] is False
    assert len(project.list_label_versions("c0")) == 2


def test_put_label_on_a_case_without_versions_sends_none(client):
    labels, etag = label_of(client, "c1")
    labels[5:9, 5:9, 3:5] = 1
    response = put_label(client, "c1", labels, etag, "?classes=liver")
    assert response.status_code == 201 and response.json()["version"]["classes"] == ["liver"]


def test_stale_put_is_409_listing_the_newer_versions_and_stores_nothing(client):
    project = project_of(client)
    labels, etag = label_of(client, "c0")
    first = labels.copy()
    first[0:2, 0:2, 0:2] = 1
    assert put_label(client, "c0", first, etag).status_code == 201
    second = labels.copy()
    second[10:12, 0:2, 0:2] = 3
    response = put_label(client, "c0", second, etag)  # still the ETag of version 1
    assert response.status_code == 409
    body = response.json()
    assert (
        body["status"] == 409 and "changed since" in body["detail"] and "nothing was stored" in body["detail"]
    )
    assert body["head"] == 2
    assert [v["id"] for v in body["versions_since"]] == [2]
    assert body["versions_since"][0]["author"] == "local" and body["versions_since"][0]["source"] == "revised"
    assert len(project.list_label_versions("c0")) == 2


def test_put_without_if_match_is_428_and_a_bad_one_422(client):
    project = project_of(client)
    labels, _ = label_of(client, "c0")
    response = put_label(client, "c0", labels, None)
    assert response.status_code == 428
    assert response.json()["title"] == "Precondition required" and "If-Match" in response.json()["detail"]
    for bad in ('"abc"', '"-1"', '"1' + "0" * 30 + '"'):
        assert put_label(client, "c0", labels, bad).status_code == 422
    assert put_label(client, "c0", labels, '"99"').status_code == 422  # no version of this case
    assert len(project.list_label_versions("c0")) == 1


def test_put_with_an_unknown_class_is_422(client):
    labels, etag = label_of(client, "c0")
    response = put_label(client, "c0", labels, etag, "?classes=liver,heart")
    assert response.status_code == 422 and "heart" in response.json()["detail"]


def test_approve_stores_the_shown_label_for_the_given_or_present_classes(client):
    project = project_of(client)
    labels, etag = label_of(client, "c0")
    response = client.post("/api/cases/c0/approve", json={"classes": ["spleen"]}, headers={"If-Match": etag})
    assert response.status_code == 201, response.text
    version = project.get_label_version(response.json()["version"]["id"])
    assert version.tool == "approve" and version.classes == ("spleen",) and version.source == "revised"
    assert np.array_equal(project.read_labels(version), np.where(labels == 2, 2, 0))
    stale = client.post("/api/cases/c0/approve", headers={"If-Match": etag})
    assert stale.status_code == 409 and stale.json()["head"] == version.id
    response = client.post("/api/cases/c0/approve", headers={"If-Match": f'"{version.id}"'})
    assert response.status_code == 201
    present = [name for value, name in enumerate(project.config.schema.names, 1) if (labels == value).any()]
    assert response.json()["version"]["classes"] == present
    assert client.post("/api/cases/c0/approve").status_code == 428


def test_approve_of_a_case_without_label_is_404(client):
    response = client.post("/api/cases/c1/approve", headers={"If-Match": '"none"'})
    assert response.status_code == 404 and "nothing to approve" in response.json()["detail"]


# -- drafts ---------------------------------------------------------------------------------------


def test_draft_put_get_delete(client):
    project = project_of(client)
    labels, etag = label_of(client, "c0")
    labels[0:3, 0:3, 0:3] = 4
    affine = project.get_case("c0").affine
    assert client.get("/api/cases/c0/draft").status_code == 404
    response = client.put("/api/cases/c0/draft", content=gz(labels, affine), headers={**GZ, "If-Match": etag})
    assert response.status_code == 201, response.text
    assert response.json()["parent"] == 1
    stored = project.find_draft("c0", "local")
    assert stored is not None and np.array_equal(project.read_draft(stored), labels)
    response = client.get("/api/cases/c0/draft")
    assert response.headers["x-segloop-parent"] == "1" and response.headers["cache-control"] == "no-store"
    assert np.array_equal(nifti.decode(response.content, what="draft").array, labels)
    assert client.get("/api/cases/c0").json()["draft"]["parent"] == 1
    assert len(project.list_label_versions("c0")) == 1  # a draft is no version
    assert client.delete("/api/cases/c0/draft").status_code == 204
    assert project.find_draft("c0", "local") is None
    assert client.get("/api/cases/c0/draft").status_code == 404
    assert client.delete("/api/cases/c0/draft").status_code == 404


def test_draft_of_a_case_without_versions_and_without_if_match(client):
    affine = project_of(client).get_case("c1").affine
    body = gz(np.zeros((24, 24, 12), np.uint8), affine)
    assert client.put("/api/cases/c1/draft", content=body, headers=GZ).status_code == 428
    response = client.put("/api/cases/c1/draft", content=body, headers={**GZ, "If-Match": '"none"'})
    assert response.status_code == 201 and response.json()["parent"] is None
    assert client.get("/api/cases/c1/draft").headers["x-segloop-parent"] == "none"


# -- ids from the URL ---------------------------------------------------------------------------------

ROUTES = [
    ("get", "/api/cases/{}"),
    ("get", "/api/cases/{}/image.nii.gz"),
    ("get", "/api/cases/{}/label.nii.gz"),
    ("get", "/api/cases/{}/entropy.nii.gz"),
    ("get", "/api/cases/{}/draft"),
    ("delete", "/api/cases/{}/draft"),
    ("post", "/api/cases/{}/approve"),
]


UNSAFE_IDS = [
    ("..%2F..%2Fetc", {404}),
    ("..", {404, 422}),
    ("%2E%2E", {404, 422}),
    ("a" * 300, {422}),
    ("-rf", {422}),
    ("nope", {404}),
    ("c0%00", {404, 422}),
]


def test_unsafe_or_unknown_ids_are_404_or_422_never_500(client):
    for method, route in ROUTES:
        for case_id, statuses in UNSAFE_IDS:
            response = client.request(method, route.format(case_id), headers={"If-Match": '"1"'})
            assert response.status_code in statuses, (
                method,
                route,
                case_id,
                response.status_code,
                response.text,
            )
            assert response.headers["content-type"].startswith("application/problem+json")
    for route in ("/api/cases/{}/label", "/api/cases/{}/draft"):
        for case_id, statuses in UNSAFE_IDS:
            response = client.put(route.format(case_id), content=b"x", headers={**GZ, "If-Match": '"1"'})
            assert response.status_code in statuses, (route, case_id, response.status_code, response.text)


def test_sign_in_required_refuses_anonymous_requests(make_client):
    client = make_client(require_sign_in=True)
    for path in ("/api/project", "/api/cases", "/api/cases/c0", "/api/cases/c0/label.nii.gz"):
        assert client.get(path).status_code == 401


def test_presence_forgets_idle_authors_and_one_case_per_author():
    now = [0.0]
    presence = Presence(timeout_s=600, clock=lambda: now[0])
    presence.touch("ana", "c0")
    presence.touch("ben", "c0")
    now[0] = 300
    presence.touch("ana", "c1")
    assert presence.editors() == {"c0": ["ben"], "c1": ["ana"]}
    now[0] = 601
    assert presence.editors() == {"c1": ["ana"]}
    presence.leave("ana", "c0")  # moved on already: nothing to forget
    assert presence.editors() == {"c1": ["ana"]}
    presence.leave("ana", "c1")
    assert presence.editors() == {}
