"""MONAI Label's ``label_info``: entry k names the value k, in a datastore on disk as in Slicer's uploads.

Slicer's module exports the kept segments with the values 1, 2, ... in the order of its
``label_info``, whose ``idx`` counts the skipped ``background`` / scribble segments too; MONAI
Label's datastore stores the file and the ``label_info`` as the client sent them.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from segloop.core import Volume
from segloop.errors import InvalidInputError, UnknownClassError
from segloop.exchange import monailabel
from segloop.io import write_volume
from segloop.loop.exchange import export_monailabel, import_monailabel
from segloop.loop.exchange.monailabel import read_uploaded_label
from tests.conftest import snapshot_project

#: A Slicer segmentation "background, kidney_left, scribbles, liver" saved with its first and third
#: segments skipped: kidney_left is exported as 1 and liver as 2, their idx are 2 and 4.
SLICER_LABEL_INFO = [{"name": "kidney_left", "idx": 2}, {"name": "liver", "idx": 4}]


def _slicer_export(shape) -> np.ndarray:
    """A label map as Slicer exports `SLICER_LABEL_INFO`'s segments: values 1 and 2 by position."""
    exported = np.zeros(shape, np.uint8)
    exported[2:6, 2:6, 2:6] = 1  # kidney_left
    exported[10:14, 10:14, 4:8] = 2  # liver
    return exported


def _expected(project, exported: np.ndarray) -> np.ndarray:
    schema = project.config.schema
    values = [0, schema.index_of("kidney_left"), schema.index_of("liver")]
    return np.choose(exported, values).astype(schema.dtype)


def _datastore_with_final(project, tmp_path, case_id: str, exported: np.ndarray, label_info):
    """A datastore of ``case_id`` whose final label is ``exported`` and ``label_info``, as Slicer saved."""
    store = tmp_path / "store"
    export_monailabel(project, store, case_ids=[case_id])
    path = store / "labels" / monailabel.FINAL_TAG / f"{case_id}.nii.gz"
    write_volume(Volume(exported, project.get_case(case_id).affine), path, overwrite=True)
    document = json.loads((store / monailabel.DATASTORE_JSON).read_text())
    info = {"ext": ".nii.gz", "info": {"label_info": label_info, "client_id": "ann"}}
    document["objects"][case_id]["labels"][monailabel.FINAL_TAG] = info
    (store / monailabel.DATASTORE_JSON).write_text(json.dumps(document))
    return store


def test_label_info_names_values_by_position_not_idx():
    assert monailabel.label_info_names(SLICER_LABEL_INFO, "x") == {1: "kidney_left", 2: "liver"}
    assert monailabel.label_info_names(None, "x") is None
    assert monailabel.label_info_names([], "x") is None
    for bad in ("liver", [{"idx": 1}], [{"name": 3}], {"name": "liver"}):
        with pytest.raises(InvalidInputError, match="x: label_info must be a list"):
            monailabel.label_info_names(bad, "x")


def test_a_datastore_label_saved_by_slicer_after_a_skipped_segment(phantom_project, tmp_path):
    project = phantom_project.project
    exported = _slicer_export(project.get_case("c3").shape)
    store = _datastore_with_final(project, tmp_path, "c3", exported, SLICER_LABEL_INFO)
    report = import_monailabel(project, store, author="test")
    [version] = report.versions
    assert version.case_id == "c3" and version.source == "revised"
    assert version.classes == ("liver", "kidney_left")  # the segments kept, in schema order
    np.testing.assert_array_equal(project.read_labels(version), _expected(project, exported))


def test_an_upload_and_a_datastore_read_the_same_label_alike(phantom_project, tmp_path):
    project = phantom_project.project
    case = project.get_case("c3")
    exported = _slicer_export(case.shape)
    path = write_volume(Volume(exported, case.affine), tmp_path / "upload.nii.gz")
    labels, classes = read_uploaded_label(
        project, case, "label.nii.gz", io.BytesIO(path.read_bytes()), SLICER_LABEL_INFO
    )
    store = _datastore_with_final(project, tmp_path, "c3", exported, SLICER_LABEL_INFO)
    [version] = import_monailabel(project, store, author="test").versions
    np.testing.assert_array_equal(labels, project.read_labels(version))
    assert classes == version.classes


def test_an_unknown_segment_in_a_datastore_stores_nothing(phantom_project, tmp_path):
    project = phantom_project.project
    exported = _slicer_export(project.get_case("c3").shape)
    label_info = [{"name": "kidney_left", "idx": 1}, {"name": "tumour", "idx": 2}]
    store = _datastore_with_final(project, tmp_path, "c3", exported, label_info)
    before = snapshot_project(project.root)
    with pytest.raises(UnknownClassError, match="'tumour' is not a class"):
        import_monailabel(project, store, author="test")
    assert snapshot_project(project.root) == before
