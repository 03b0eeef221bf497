"""The editor's label (``GET label.nii.gz``) and MONAI Label's download hold no auto-ignore."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.io.nifti import decode
from segloop.loop.labels import compute_effective_label
from tests.loop.test_editable_label import SHAPE, add_version
from tests.server.test_cases_api import label_of, project_of, put_label


@pytest.fixture
def liver_only(make_client):
    """A client whose case ``c0`` has only the liver annotated (original), other classes by nobody."""
    client = make_client(count=1, shape=SHAPE, labeled=())
    liver = np.zeros(SHAPE, np.uint8)
    liver[2:8, 2:8, 1:5] = 1
    add_version(project_of(client), "c0", liver, "original", ("liver",))
    return client


def test_the_editor_gets_no_auto_ignore_and_a_save_back_stores_none(liver_only):
    client = liver_only
    project = project_of(client)
    ignore = project.config.schema.ignore_index
    assert np.any(compute_effective_label(project, project.get_case("c0")).labels == ignore)
    labels, etag = label_of(client, "c0")
    assert not np.any(labels == ignore)
    edited = labels.copy()
    edited[12:14, 12:14, 2] = ignore  # a person's deliberate ignore
    response = put_label(client, "c0", edited, etag)
    assert response.status_code == 201, response.text
    version = project.get_label_version(response.json()["version"]["id"])
    assert np.count_nonzero(project.read_labels(version) == ignore) == 4
    served, _ = label_of(client, "c0")
    np.testing.assert_array_equal(served, edited)  # the painted ignore survives, nothing else ignored


def test_monai_label_download_holds_no_auto_ignore(liver_only):
    client = liver_only
    project = project_of(client)
    response = client.get("/datastore/label?label=c0&tag=final")
    assert response.status_code == 200, response.text
    labels = decode(response.content, what="label").array
    assert not np.any(labels == project.config.schema.ignore_index)
    assert np.count_nonzero(labels == 1) == 6 * 6 * 4
