"""AbdomenAtlas case folders and MONAI Label datastores: export, import back, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segloop.core import Volume
from segloop.core.provenance import Source
from segloop.errors import GeometryMismatchError, LabelValueError, UnknownClassError
from segloop.exchange import abdomenatlas, monailabel
from segloop.io import read_volume, write_volume
from segloop.loop.cases import init_project
from segloop.loop.exchange import (
    export_abdomenatlas,
    export_monailabel,
    import_abdomenatlas,
    import_monailabel,
)
from segloop.loop.labels import compute_effective_label
from segloop.loop.tools import store_tool_labels
from segloop.synthetic import PHANTOM_CLASSES
from tests.conftest import snapshot_project


def _add_pseudo(project, case_id: str, labels: np.ndarray) -> None:
    store_tool_labels(
        project,
        project.get_case(case_id),
        labels,
        source="pseudo",
        classes=project.config.schema.names,
        tool="test",
        params={},
        author="test",
    )


def _effective(project, case_id: str) -> np.ndarray:
    return compute_effective_label(project, project.get_case(case_id)).labels


@pytest.fixture
def predicted(phantom_project):
    """The phantom project with a pseudo label (the reference, one voxel off) on every case."""
    project, references = phantom_project.project, phantom_project.references
    for case_id, labels in references.items():
        _add_pseudo(project, case_id, np.roll(labels, 1, axis=0))
    return phantom_project


def test_abdomenatlas_export_layout(predicted, tmp_path):
    project, references = predicted.project, predicted.references
    export_abdomenatlas(project, tmp_path / "human")  # the default: no model predictions
    assert not (tmp_path / "human" / "c0" / "pseudo_label.nii.gz").exists()
    assert not (tmp_path / "human" / "c3" / "segmentations").exists()  # c3 has a pseudo label only
    provenance = json.loads((tmp_path / "human" / "provenance.json").read_text())
    assert "pseudo" not in provenance["sources"] and provenance["cases"]["c3"]["versions"] == []
    export_abdomenatlas(project, tmp_path / "atlas", sources=set(Source))
    case = tmp_path / "atlas" / "c0"
    assert sorted(p.name for p in case.iterdir()) == [
        "ct.nii.gz",
        "original_label.nii.gz",
        "pseudo_label.nii.gz",
        "segmentations",
    ]
    assert sorted(p.name for p in (case / "segmentations").iterdir()) == [
        f"{n}.nii.gz" for n in sorted(PHANTOM_CLASSES)
    ]
    np.testing.assert_array_equal(read_volume(case / "original_label.nii.gz").array, references["c0"])
    np.testing.assert_array_equal(
        read_volume(case / "pseudo_label.nii.gz").array, np.roll(references["c0"], 1, 0)
    )
    spleen = read_volume(case / "segmentations" / "spleen.nii.gz").array
    np.testing.assert_array_equal(spleen, references["c0"] == 2)  # original beats pseudo
    assert not (tmp_path / "atlas" / "c3" / "original_label.nii.gz").exists()
    c2_original = tmp_path / "atlas" / "c2" / "original_label.nii.gz"
    assert not c2_original.exists()  # c2 has only sparse scribbles and a pseudo label
    assert json.loads((tmp_path / "atlas" / "labels.json").read_text())["1"] == "liver"


def test_abdomenatlas_round_trip_into_a_new_project(predicted, tmp_path):
    project = predicted.project
    export_abdomenatlas(project, tmp_path / "atlas", case_ids=["c0", "c3"], sources=set(Source))
    target = init_project(tmp_path / "copy", PHANTOM_CLASSES)
    report = import_abdomenatlas(target, tmp_path / "atlas", author="test")
    assert sorted(report.added_cases) == ["c0", "c3"]
    assert [v.source for v in target.list_label_versions("c0")] == ["original", "pseudo", "revised"]
    for case_id in ("c0", "c3"):
        np.testing.assert_array_equal(_effective(target, case_id), _effective(project, case_id))
    again = import_abdomenatlas(target, tmp_path / "atlas", author="test")
    assert again.added_cases == [] and again.versions == []


def test_abdomenatlas_names_and_bad_masks(phantom_project, tmp_path):
    project, references = phantom_project.project, phantom_project.references
    case = tmp_path / "atlas" / "new1"
    image = read_volume(phantom_project.images["c1"])
    write_volume(image, case / "ct.nii.gz")
    # values named by labels.json in another order: spleen 1, liver 2
    swapped = np.choose(references["c1"], [0, 2, 1, 3, 4]).astype(np.uint8)
    write_volume(image.with_array(swapped), case / "pseudo_label.nii.gz")
    names = {"1": "spleen", "2": "liver", "3": "kidney_left", "4": "kidney_right"}
    (tmp_path / "atlas" / "labels.json").write_text(json.dumps(names))
    report = import_abdomenatlas(project, tmp_path / "atlas", author="test")
    assert report.added_cases == ["new1"]
    np.testing.assert_array_equal(project.read_labels(report.versions[0]), references["c1"])

    before = snapshot_project(project.root)
    other = tmp_path / "atlas2" / "new2"
    write_volume(image, other / "ct.nii.gz")
    write_volume(
        image.with_array((references["c1"] == 1).astype(np.uint8)),
        other / "segmentations" / "pancreas.nii.gz",
    )
    with pytest.raises(UnknownClassError, match="pancreas"):
        import_abdomenatlas(project, tmp_path / "atlas2", author="test")
    (other / "segmentations" / "pancreas.nii.gz").unlink()
    write_volume(image.with_array(references["c1"]), other / "segmentations" / "liver.nii.gz")
    with pytest.raises(LabelValueError, match="binary"):
        import_abdomenatlas(project, tmp_path / "atlas2", author="test")
    assert snapshot_project(project.root) == before


def test_monailabel_export_layout(predicted, tmp_path):
    project, references = predicted.project, predicted.references
    export_monailabel(project, tmp_path / "store", sources=set(Source))
    store = tmp_path / "store"
    assert sorted(p.name for p in store.glob("*.nii.gz")) == [
        "c0.nii.gz",
        "c1.nii.gz",
        "c2.nii.gz",
        "c3.nii.gz",
    ]
    assert sorted(p.name for p in (store / "labels" / "final").iterdir()) == ["c0.nii.gz", "c1.nii.gz"]
    assert len(list((store / "labels" / "original").iterdir())) == 4
    np.testing.assert_array_equal(
        read_volume(store / "labels" / "final" / "c1.nii.gz").array, references["c1"]
    )
    document = json.loads((store / monailabel.DATASTORE_JSON).read_text())
    assert set(document["objects"]) == {"c0", "c1", "c2", "c3"}
    assert document["objects"]["c0"]["labels"]["final"]["info"]["label_info"][0] == {
        "name": "liver",
        "idx": 1,
    }
    assert set(document["objects"]["c3"]["labels"]) == {"original"}


def test_monailabel_round_trip_and_corrections_coming_back(predicted, tmp_path):
    project, references = predicted.project, predicted.references
    export_monailabel(project, tmp_path / "store", case_ids=["c2", "c3"], sources=set(Source))
    target = init_project(tmp_path / "copy", PHANTOM_CLASSES)
    report = import_monailabel(target, tmp_path / "store", author="test")
    assert sorted(report.added_cases) == ["c2", "c3"]
    assert [v.source for v in target.list_label_versions("c3")] == ["pseudo"]
    np.testing.assert_array_equal(_effective(target, "c3"), _effective(project, "c3"))

    # an annotator saves a final label for c3 in MONAI Label (values named in label_info)
    store = tmp_path / "store"
    swapped = np.choose(references["c3"], [0, 2, 1, 3, 4]).astype(np.uint8)
    write_volume(Volume(swapped, project.get_case("c3").affine), store / "labels" / "final" / "c3.nii.gz")
    document = json.loads((store / monailabel.DATASTORE_JSON).read_text())
    info = [
        {"name": "spleen", "idx": 1},
        {"name": "liver", "idx": 2},
        {"name": "kidney_left", "idx": 3},
        {"name": "kidney_right", "idx": 4},
    ]
    document["objects"]["c3"]["labels"]["final"] = {"ext": ".nii.gz", "info": {"label_info": info}}
    (store / monailabel.DATASTORE_JSON).write_text(json.dumps(document))
    back = import_monailabel(project, store, author="test")
    assert back.added_cases == [] and [v.source for v in back.versions] == ["revised"]
    assert back.versions[0].case_id == "c3" and "c2" in back.unchanged
    np.testing.assert_array_equal(_effective(project, "c3"), references["c3"])


def test_monailabel_label_on_another_grid_changes_nothing(predicted, tmp_path):
    project = predicted.project
    export_monailabel(project, tmp_path / "store", case_ids=["c0", "c1"], sources=set(Source))
    label = tmp_path / "store" / "labels" / "original" / "c1.nii.gz"
    write_volume(Volume(np.zeros((5, 5, 5), np.uint8), np.eye(4)), label, overwrite=True)
    (tmp_path / "store" / "labels" / "final" / "c0.nii.gz").unlink()
    before = snapshot_project(project.root)
    with pytest.raises(GeometryMismatchError, match="c1"):
        import_monailabel(project, tmp_path / "store", author="test")
    assert snapshot_project(project.root) == before
    assert abdomenatlas.CT_NAME == "ct.nii.gz"
