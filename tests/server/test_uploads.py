"""Bad uploads to the storing routes: a 4xx problem naming what was wrong, and nothing stored."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from segloop.io import nifti
from segloop.io.limits import MAX_IMAGE_BYTES_VARIABLE
from segloop.store import Project

SHAPE = (24, 24, 12)


def project_of(client) -> Project:
    return client.app.state.project


def gz(array: np.ndarray, affine: np.ndarray) -> bytes:
    return nifti.encode(nifti.Volume(array, affine))


def bomb(shape=(4096, 4096, 1024)) -> bytes:
    """A few KB of gzip whose NIfTI header declares ``shape`` uint8 voxels (16 GiB by default)."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header.set_data_offset(352)
    return gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * (1 << 20))


def bad_bodies(affine: np.ndarray) -> dict[str, tuple[bytes, int, str]]:
    """name -> (body, expected status, a word of the expected detail)."""
    good = np.zeros(SHAPE, np.uint8)
    shifted = affine.copy()
    shifted[0, 3] += 5.0
    coarse = affine.copy()
    coarse[:3, :3] *= 2
    out_of_schema = good.copy()
    out_of_schema[1, 1, 1] = 17
    fractional = good.astype(np.float32)
    fractional[2, 2, 2] = 0.5
    return {
        "wrong shape": (gz(np.zeros((24, 24, 11), np.uint8), affine), 422, "shape"),
        "wrong affine": (gz(good, shifted), 422, "affine"),
        "axes of another grid": (gz(good, np.eye(4)), 422, "affine"),
        "another spacing": (gz(good, coarse), 422, "affine"),
        "channels": (gz(np.zeros((2, *SHAPE), np.uint8), affine), 422, "shape"),
        "values outside the schema": (gz(out_of_schema, affine), 422, "17"),
        "fractional values": (gz(fractional, affine), 422, "label"),
        "corrupt gzip": (b"\x1f\x8b\x08\x00" + b"\xff" * 200, 422, "gzip"),
        "truncated gzip": (gz(good, affine)[:40], 422, "uploaded"),
        "not nifti": (b"P5\n24 24\n255\n" + b"\0" * 600, 422, "not a NIfTI file"),
        "gzip of not nifti": (gzip.compress(b"{}" * 400), 422, "not a NIfTI file"),
        "empty body": (b"", 422, ""),
        "gzip bomb": (bomb(), 413, "cap"),
        "gzip inflating past its header": (
            gzip.compress(nifti.encode(nifti.Volume(good, affine), compress=False) + b"\0" * (64 << 20)),
            422,
            "more than",
        ),
    }


@pytest.mark.parametrize("route", ["label", "draft"])
def test_bad_uploads_are_refused_and_store_nothing(client, route):
    project = project_of(client)
    affine = project.get_case("c0").affine
    before = [v.id for v in project.list_label_versions()]
    for name, (body, status, word) in bad_bodies(affine).items():
        response = client.put(
            f"/api/cases/c0/{route}",
            content=body,
            headers={"Content-Type": "application/gzip", "If-Match": '"1"'},
        )
        assert response.status_code == status, (name, response.status_code, response.text)
        problem = response.json()
        assert problem["status"] == status and "\n" not in problem["detail"], name
        assert word in problem["detail"], (name, problem["detail"])
        assert "Traceback" not in response.text
    assert [v.id for v in project.list_label_versions()] == before
    assert project.find_draft("c0", "local") is None


def test_declared_size_above_a_lowered_cap_is_413(client, monkeypatch):
    project = project_of(client)
    affine = project.get_case("c0").affine
    monkeypatch.setenv(MAX_IMAGE_BYTES_VARIABLE, "1000")  # a 24x24x12 label holds 6912 bytes
    response = client.put(
        "/api/cases/c0/label", content=gz(np.zeros(SHAPE, np.uint8), affine), headers={"If-Match": '"1"'}
    )
    assert response.status_code == 413 and "above the cap of 1000 bytes" in response.json()["detail"]
    assert len(project.list_label_versions("c0")) == 1


def test_body_over_the_server_limit_is_413_before_the_route_reads_it(make_client):
    client = make_client(max_upload_bytes=2048)
    project = project_of(client)
    noise = np.random.default_rng(0).integers(0, 5, SHAPE).astype(np.uint8)  # compresses poorly
    body = gz(noise, project.get_case("c0").affine)
    assert len(body) > 2048
    for route in ("label", "draft"):
        response = client.put(f"/api/cases/c0/{route}", content=body, headers={"If-Match": '"1"'})
        assert response.status_code == 413, response.text
        assert "expected at most 2048" in response.json()["detail"]
    streamed = client.put(
        "/api/cases/c0/label", content=iter([body[:1500], body[1500:]]), headers={"If-Match": '"1"'}
    )  # chunked: no Content-Length to refuse up front
    assert streamed.status_code == 413
    assert len(project.list_label_versions("c0")) == 1 and project.find_draft("c0", "local") is None


def test_a_flipped_upload_of_the_same_voxels_is_stored_in_case_order(client):
    project = project_of(client)
    case = project.get_case("c0")
    response = client.get("/api/cases/c0/label.nii.gz")
    labels = nifti.decode(response.content, what="label").array.copy()
    labels[0:3, 0:3, 0:3] = 3
    flipped = case.affine.copy()
    flipped[:3, 3] += flipped[:3, 1] * (SHAPE[1] - 1)
    flipped[:3, 1] *= -1
    response = client.put(
        "/api/cases/c0/label",
        content=gz(labels[:, ::-1], flipped),
        headers={"If-Match": response.headers["etag"]},
    )
    assert response.status_code == 201, response.text
    stored = project.read_labels(project.get_label_version(response.json()["version"]["id"]))
    assert np.array_equal(stored, labels)
