"""The tools API: registry, preview (nothing stored), run with If-Match, contours, bad input → 4xx."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from segloop.io.nifti import decode
from segloop.loop import tools
from segloop.metrics import dice
from segloop.server.codec import volume_to_nifti_gz
from segloop.synthetic import make_ct_phantom
from tests.conftest import liver_scribbles, snapshot_project

SHAPE = (24, 24, 12)
LIVER, KIDNEY_LEFT, KIDNEY_RIGHT = 1, 3, 4


def _project(client):
    project = client.app.state.project
    for case in project.list_cases():  # the store caches an image's verified hash: not a tool's doing
        project.read_image(case.case_id)
    return project


def _nifti(client, case_id: str, array: np.ndarray) -> bytes:
    return volume_to_nifti_gz(array.astype(np.uint8), _project(client).get_case(case_id).affine)


def _truth(seed: int, shape=SHAPE) -> np.ndarray:
    return make_ct_phantom(shape, seed=seed).labels.array


def _post(client, case_id, name, params=None, *, preview=False, files=None, if_match=None):
    url = f"/api/cases/{case_id}/tools/{name}" + ("/preview" if preview else "")
    headers = {"If-Match": if_match} if if_match is not None else {}
    data = {"params": json.dumps(params or {})}
    files = {key: (f"{key}.nii.gz", value, "application/gzip") for key, value in (files or {}).items()}
    return client.post(url, data=data, files=files or None, headers=headers)


def test_the_registry_lists_every_tool_with_its_fields_and_the_presets(client):
    response = client.get("/api/tools")
    assert response.status_code == 200
    body = response.json()
    assert set(body["tools"]) == set(tools.TOOLS)
    threshold = body["tools"]["threshold"]["fields"]
    assert threshold["class_name"]["required"] and not threshold["class_name"]["from_file"]
    assert threshold["seeds"] == {**threshold["seeds"], "default": [], "from_file": False}
    assert "keep the islands under them" in threshold["seeds"]["description"]
    grow = body["tools"]["grow"]
    assert grow["upload"] == "seeds" and grow["fields"]["seeds"]["from_file"]
    assert body["tools"]["mesh"]["available"] is False
    assert body["threshold_presets"]["lung"] == list(tools.THRESHOLD_PRESETS_HU["lung"])
    assert body["postprocess_presets"]["largest"] == {"largest": True}


def test_grow_preview_stores_nothing_and_is_what_the_run_stores(client):
    project = _project(client)
    seeds = liver_scribbles(_truth(1), project.config.schema.ignore_index)
    files = {"seeds": _nifti(client, "c1", seeds)}
    before = snapshot_project(project.root)
    response = _post(client, "c1", "grow", preview=True, files=files)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    shown = decode(response.content, what="preview")
    np.testing.assert_array_equal(shown.affine, project.get_case("c1").affine)
    assert int(response.headers["X-Segloop-Voxels"]) == np.count_nonzero(shown.array) > 0
    assert set(np.unique(shown.array).tolist()) == {0, LIVER}
    assert snapshot_project(project.root) == before
    stored = _post(client, "c1", "grow", files=files, if_match='"none"')
    assert stored.status_code == 201, stored.text
    sparse, draft = stored.json()["versions"]
    assert (sparse["source"], draft["source"], draft["parent"]) == ("sparse", "draft", sparse["id"])
    assert stored.json()["head"] == draft["id"] and draft["author"] == "local"
    np.testing.assert_array_equal(project.read_labels(project.get_label_version(draft["id"])), shown.array)


def test_seeds_drawn_on_a_base_label_are_only_what_differs(client):
    project = _project(client)
    truth = _truth(0)
    scribbles = liver_scribbles(truth, project.config.schema.ignore_index)
    base = np.where(truth == LIVER, 0, truth)  # the label shown: its liver is missing
    drawn = np.where(scribbles > 0, scribbles, base)  # the person scribbled on it
    files = {"seeds": _nifti(client, "c0", drawn), "base": _nifti(client, "c0", base)}
    with_base = _post(client, "c0", "grow", preview=True, files=files)
    alone = _post(client, "c0", "grow", preview=True, files={"seeds": _nifti(client, "c0", scribbles)})
    assert with_base.status_code == alone.status_code == 200, with_base.text
    np.testing.assert_array_equal(
        decode(with_base.content, what="a").array, decode(alone.content, what="b").array
    )


def test_a_threshold_click_keeps_the_island_clicked(client):
    truth = _truth(1)
    depth = ndimage.distance_transform_edt(truth == KIDNEY_LEFT)
    click = [int(v) for v in np.unravel_index(np.argmax(depth), truth.shape)]
    params = {"class_name": "kidney_left", "value_range": [110, 190], "seeds": [click]}
    response = _post(client, "c1", "threshold", params, preview=True)
    assert response.status_code == 200, response.text
    shown = decode(response.content, what="preview").array == KIDNEY_LEFT
    assert dice(shown, truth == KIDNEY_LEFT) > 0.7 and not (shown & (truth == KIDNEY_RIGHT)).any()
    stored = _post(client, "c1", "threshold", params, if_match='"none"')
    assert stored.status_code == 201 and stored.json()["versions"][0]["tool"] == "threshold"


def test_contours_on_three_slices_reinterpolate_the_class(make_client):
    client = make_client(count=1, shape=(32, 32, 16))
    project = _project(client)
    liver = _truth(0, (32, 32, 16)) == LIVER
    present = np.flatnonzero(liver.any(axis=(0, 1)))
    picked = np.round(np.linspace(present[0], present[-1], 3)).astype(int).tolist()
    polygons = []
    for k in picked:
        response = client.get(
            "/api/cases/c0/contours", params={"class_name": "liver", "axis": "axial", "index": k}
        )
        assert response.status_code == 200, response.text
        document = response.json()
        polygons += document["classes"]["liver"]
    assert sorted({p["slice"] for p in polygons}) == picked
    params = {
        "polygons": {**document, "classes": {"liver": polygons}},
        "class_name": "liver",
        "fill_between": True,
    }
    head = str(project.find_head("c0"))
    response = _post(client, "c0", "contours", params, if_match=f'"{head}"')
    assert response.status_code == 201, response.text
    sparse, draft = response.json()["versions"]
    assert sparse["parent"] == int(head) and draft["tool"] == "fill-between-slices"
    filled = project.read_labels(project.get_label_version(draft["id"])) == LIVER
    assert dice(filled, liver) > 0.9


def test_a_stale_or_missing_if_match_stores_nothing(client):
    project = _project(client)
    params = {"class_name": "liver", "value_range": [40, 80], "keep_largest": True}
    head = project.find_head("c0")
    first = _post(client, "c0", "threshold", params, if_match=f'"{head}"')
    assert first.status_code == 201
    before = snapshot_project(project.root)
    stale = _post(client, "c0", "threshold", params, if_match=f'"{head}"')
    assert stale.status_code == 409
    body = stale.json()
    assert body["head"] == first.json()["head"] and [v["id"] for v in body["versions_since"]] == [
        body["head"]
    ]
    missing = _post(client, "c0", "threshold", params)
    assert missing.status_code == 428 and "If-Match" in missing.json()["detail"]
    assert snapshot_project(project.root) == before


@pytest.mark.parametrize(
    ("name", "params", "status", "detail"),
    [
        ("paint", {}, 404, "no tool 'paint': expected one of threshold"),
        (
            "threshold",
            {"class_name": "liver", "range": [1, 2]},
            422,
            "no field range: expected fields class_name",
        ),
        ("threshold", {"value_range": [1, 2]}, 422, "needs the fields class_name"),
        ("threshold", {"class_name": "liver", "value_range": "low"}, 422, "field 'value_range' of tool"),
        ("threshold", {"class_name": "liver", "otsu": True, "seeds": [[99, 0, 0]]}, 422, "outside the image"),
        ("threshold", {"class_name": "lungs", "otsu": True}, 422, "lungs"),
        ("grow", {}, 422, "needs the file 'seeds'"),
        ("grow", {"seeds": [[1, 2, 3]]}, 422, "send the file 'seeds'"),
        ("postprocess", {"close_mm": "wide"}, 422, "field 'close_mm'"),
        ("mesh", {"class_name": "liver"}, 422, "does not accept"),
    ],
)
def test_bad_parameters_are_one_line_problems_and_store_nothing(client, name, params, status, detail):
    project = _project(client)
    before = snapshot_project(project.root)
    for preview in (True, False):
        response = _post(client, "c1", name, params, preview=preview, if_match='"none"')
        assert response.status_code == status, response.text
        assert detail in response.json()["detail"] and "\n" not in response.json()["detail"]
    assert snapshot_project(project.root) == before


def test_uploads_off_the_case_grid_or_corrupt_are_refused(client):
    project = _project(client)
    before = snapshot_project(project.root)
    wrong = volume_to_nifti_gz(np.zeros((24, 24, 11), np.uint8), project.get_case("c1").affine)
    for files in (
        {"seeds": wrong},
        {"seeds": b"not a nifti"},
        {"seeds": _nifti(client, "c1", np.full(SHAPE, 9))},
    ):
        response = _post(client, "c1", "grow", preview=True, files=files)
        assert response.status_code == 422, response.text
    response = _post(
        client, "c1", "threshold", {"class_name": "liver", "otsu": True}, preview=True, files={"seeds": wrong}
    )
    assert response.status_code == 422 and "takes no file" in response.json()["detail"]
    assert snapshot_project(project.root) == before


def test_contours_of_bad_slices_classes_and_versions(client):
    assert (
        client.get("/api/cases/c0/contours", params={"class_name": "liver", "index": 12}).status_code == 422
    )
    assert client.get("/api/cases/c0/contours", params={"class_name": "lungs", "index": 2}).status_code == 422
    assert (
        client.get(
            "/api/cases/c0/contours", params={"class_name": "liver", "index": 2, "axis": "oblique"}
        ).status_code
        == 422
    )
    assert (
        client.get(
            "/api/cases/c0/contours", params={"class_name": "liver", "index": 2, "version": 999}
        ).status_code
        == 404
    )
    assert (
        client.get("/api/cases/nope/contours", params={"class_name": "liver", "index": 2}).status_code == 404
    )
    huge = {"class_name": "liver", "index": 2, "version": 10**30}
    assert client.get("/api/cases/c0/contours", params=huge).status_code == 404
    assert _post(client, "c0", "postprocess", {"version": 10**30}, preview=True).status_code == 404
    empty = client.get("/api/cases/c1/contours", params={"class_name": "liver", "index": 2, "axis": "2"})
    assert empty.status_code == 200 and empty.json() == {
        "axis": 2,
        "coordinates": "voxel",
        "classes": {"liver": []},
    }


def test_interpolate_reads_the_drawn_class_only_from_the_seeds(client):
    project = _project(client)
    truth = _truth(1)
    present = np.flatnonzero((truth == LIVER).any(axis=(0, 1)))
    drawn = np.zeros_like(truth)
    for k in (present[0], present[-1]):
        drawn[:, :, k] = truth[:, :, k]  # every class drawn on two slices; the tool takes the liver's
    files = {"seeds": _nifti(client, "c1", drawn)}
    response = _post(client, "c1", "interpolate", {"class_name": "liver"}, preview=True, files=files)
    assert response.status_code == 200, response.text
    filled = decode(response.content, what="preview").array
    assert set(np.unique(filled).tolist()) == {0, LIVER}
    expected = tools.preview(project, "c1", tools.Interpolate("liver", drawn == LIVER))
    np.testing.assert_array_equal(filled, expected)
    huge = _post(
        client, "c1", "interpolate", {"class_name": "liver", "smooth_mm": 1e9}, preview=True, files=files
    )
    assert (
        huge.status_code == 422 and "must lie in 0..20 mm" in huge.json()["detail"]
    )  # refused, not computed
    assert project.list_label_versions("c1") == []
