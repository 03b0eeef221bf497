"""nnU-Net v2 raw datasets and prediction folders: export, import, bad input that changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813 (its usual name)

from segloop.core import Volume
from segloop.errors import (
    CorruptFileError,
    GeometryMismatchError,
    NotFoundError,
    UnknownClassError,
    UnsupportedFormatError,
)
from segloop.exchange.nnunet import dataset_folder_name, read_dataset_json
from segloop.io import read_volume, write_volume
from segloop.loop.cases import init_project
from segloop.loop.exchange import export_nnunet, import_nnunet_dataset, import_nnunet_predictions
from segloop.loop.labels import compute_effective_label
from segloop.synthetic import PHANTOM_CLASSES
from tests.conftest import snapshot_project
from tests.exchange.conftest import OPENKBP_CASES

_NNUNET_CHECK = """
import sys, types
try:
    import blosc2  # noqa: F401
except ImportError:  # acvl_utils imports it for type hints only
    stub = types.ModuleType("blosc2"); stub.ndarray = types.SimpleNamespace(NDArray=object)
    sys.modules["blosc2"] = stub
if __name__ == "__main__":
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(sys.argv[1], num_processes=1)
"""


def check_nnunet_rules(dataset: Path) -> dict:
    """nnU-Net v2's documented rules for a raw dataset, as its ``verify_dataset_integrity`` checks them.

    ``documentation/dataset_format.md`` and ``ignore_label.md``: dataset.json has channel_names,
    labels, numTraining and file_ending; labels are consecutive integers from background 0, with
    ``ignore`` the highest; ``numTraining`` labels in labelsTr; every training case has one image per
    channel ``<case>_XXXX`` in imagesTr and nothing else is there; a label holds only declared
    values; image and label share size, spacing, origin and direction (read with SimpleITK, nnU-Net's
    default reader).
    """
    document = json.loads((dataset / "dataset.json").read_text())
    assert {"channel_names", "labels", "numTraining", "file_ending"} <= set(document)
    labels = document["labels"]
    values = sorted(labels.values())
    assert labels["background"] == 0 and values == list(range(len(values)))
    if "ignore" in labels:
        assert labels["ignore"] == values[-1]
    ending = document["file_ending"]
    label_files = sorted((dataset / "labelsTr").glob(f"*{ending}"))
    assert len(label_files) == document["numTraining"]
    channels = len(document["channel_names"])
    cases = {f.name[: -len(ending)] for f in label_files}
    images = {f.name[: -len(ending)] for f in (dataset / "imagesTr").glob(f"*{ending}")}
    assert images == {f"{case}_{c:04d}" for case in cases for c in range(channels)}
    for label_file in label_files:
        label = sitk.ReadImage(str(label_file))
        assert set(np.unique(sitk.GetArrayViewFromImage(label)).tolist()) <= set(values)
        for channel in range(channels):
            image = sitk.ReadImage(
                str(dataset / "imagesTr" / f"{label_file.name[: -len(ending)]}_{channel:04d}{ending}")
            )
            assert image.GetSize() == label.GetSize()
            np.testing.assert_allclose(image.GetSpacing(), label.GetSpacing(), atol=1e-5)
            np.testing.assert_allclose(image.GetOrigin(), label.GetOrigin(), atol=1e-4)
            np.testing.assert_allclose(image.GetDirection(), label.GetDirection(), atol=1e-5)
    return document


def test_export_follows_nnunets_rules_with_ignore_and_test_cases(phantom_project, tmp_path):
    project = phantom_project.project
    report = export_nnunet(project, tmp_path / "raw", dataset_id=7, name="phantom")
    dataset = tmp_path / "raw" / "Dataset007_phantom"
    assert report.path == dataset
    assert report.details == {"training cases": 3, "cases in imagesTs": 1, "with ignore label": 1}
    document = check_nnunet_rules(dataset)
    assert document["labels"] == {
        "background": 0,
        **{n: i for i, n in enumerate(PHANTOM_CLASSES, 1)},
        "ignore": 5,
    }
    assert document["channel_names"] == {"0": "CT"} and document["numTraining"] == 3
    assert sorted(p.name for p in (dataset / "imagesTs").iterdir()) == ["c3_0000.nii.gz"]
    exported = read_volume(dataset / "labelsTr" / "c2.nii.gz")
    expected = compute_effective_label(project, project.get_case("c2")).labels
    np.testing.assert_array_equal(exported.array, expected)
    np.testing.assert_allclose(exported.affine, project.get_case("c2").affine)


def test_export_without_ignore_declares_none_and_refuses_an_existing_folder(phantom_project, tmp_path):
    project = phantom_project.project
    export_nnunet(project, tmp_path, dataset_id=501, case_ids=["c0", "c1"])
    assert "ignore" not in check_nnunet_rules(tmp_path / "Dataset501_proj")["labels"]
    with pytest.raises(Exception, match="exists already"):
        export_nnunet(project, tmp_path, dataset_id=501)
    assert dataset_folder_name(42, "a b") == "Dataset042_a_b"


def test_export_passes_nnunets_own_integrity_check(phantom_project, tmp_path):
    """Runs nnU-Net's verify_dataset_integrity when nnunetv2 is importable (it is not a dependency:
    its pip install pulls a CUDA torch and torchvision); the rules above are checked always."""
    pytest.importorskip("nnunetv2")
    export_nnunet(phantom_project.project, tmp_path, dataset_id=8)
    environment = {
        **os.environ,
        **{k: str(tmp_path) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")},
    }
    script = tmp_path / "check.py"
    script.write_text(_NNUNET_CHECK)
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "Dataset008_proj")],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Error" not in result.stdout


def _write_predictions(folder: Path, project, labels_by_case: dict, dataset_labels: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for case_id, labels in labels_by_case.items():
        write_volume(Volume(labels, project.get_case(case_id).affine), folder / f"{case_id}.nii.gz")
    document = {
        "channel_names": {"0": "CT"},
        "labels": dataset_labels,
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(document))


def test_predictions_become_pseudo_versions_mapped_by_name(phantom_project, tmp_path):
    project, references = phantom_project.project, phantom_project.references
    # nnU-Net's dataset numbered the classes in another order: liver 2, spleen 1, kidneys 3 and 4
    permuted = {"background": 0, "spleen": 1, "liver": 2, "kidney_left": 3, "kidney_right": 4}
    to_file = np.array([0, 2, 1, 3, 4], dtype=np.uint8)
    predictions = {case: to_file[references[case]] for case in ("c2", "c3")}
    _write_predictions(tmp_path / "pred", project, predictions, permuted)
    report = import_nnunet_predictions(project, tmp_path / "pred", author="test")
    assert [v.source for v in report.versions] == ["pseudo", "pseudo"]
    for version in report.versions:
        np.testing.assert_array_equal(project.read_labels(version), references[version.case_id])
        assert version.tool == "nnU-Net" and version.params["sha256"]
        assert set(version.classes) == set(PHANTOM_CLASSES)
    again = import_nnunet_predictions(project, tmp_path / "pred", author="test")
    assert again.versions == [] and sorted(again.unchanged) == ["c2", "c3"]


@pytest.mark.parametrize(
    ("labels", "error", "message"),
    [
        ({"background": 0, "liver": 1, "pancreas": 2}, UnknownClassError, "pancreas"),
        ({"background": 0, "liver": [1, 2]}, UnsupportedFormatError, "region"),
        ({"background": 0, "ignore": 1, "liver": 2}, CorruptFileError, "highest"),
    ],
)
def test_a_dataset_json_that_does_not_match_the_schema_changes_nothing(
    phantom_project, tmp_path, labels, error, message
):
    project = phantom_project.project
    _write_predictions(tmp_path / "pred", project, {"c3": phantom_project.references["c3"]}, labels)
    before = snapshot_project(project.root)
    with pytest.raises(error, match=message):
        import_nnunet_predictions(project, tmp_path / "pred", author="test")
    assert snapshot_project(project.root) == before


def test_one_bad_prediction_file_stops_the_whole_import(phantom_project, tmp_path):
    project, references = phantom_project.project, phantom_project.references
    folder = tmp_path / "pred"
    folder.mkdir()
    write_volume(Volume(references["c2"], project.get_case("c2").affine), folder / "c2.nii.gz")
    write_volume(Volume(references["c3"][:, :, :-1], project.get_case("c3").affine), folder / "c3.nii.gz")
    before = snapshot_project(project.root)
    with pytest.raises(GeometryMismatchError, match="c3"):
        import_nnunet_predictions(project, folder, author="test")
    write_volume(Volume(references["c3"], np.eye(4)), folder / "zz_unknown.nii.gz")
    with pytest.raises(NotFoundError, match="zz_unknown"):
        import_nnunet_predictions(project, folder, author="test")
    assert snapshot_project(project.root) == before


def test_raw_dataset_round_trip_keeps_labels_and_ignore(phantom_project, tmp_path):
    source = phantom_project.project
    export_nnunet(source, tmp_path, dataset_id=9)
    target = init_project(tmp_path / "copy", PHANTOM_CLASSES)
    report = import_nnunet_dataset(target, tmp_path / "Dataset009_proj", author="test")
    assert sorted(report.added_cases) == ["c0", "c1", "c2", "c3"]
    assert [v.source for v in target.list_label_versions("c2")] == ["original"]
    for case_id in ("c0", "c2"):
        expected = compute_effective_label(source, source.get_case(case_id)).labels
        got = compute_effective_label(target, target.get_case(case_id)).labels
        np.testing.assert_array_equal(got, expected)
    assert read_dataset_json(tmp_path / "Dataset009_proj" / "dataset.json").num_training == 3


def test_openkbp_export_from_the_cli(run_cli, openkbp_project, tmp_path):
    result = run_cli(
        "exchange", "export", openkbp_project.root, tmp_path, "--format", "nnunet", "--dataset-id", "501"
    )
    assert result.code == 0, result.err
    assert "2 training cases" in " ".join(result.out.split())
    document = check_nnunet_rules(tmp_path / "Dataset501_kbp")
    assert document["numTraining"] == len(OPENKBP_CASES) and "ignore" not in document["labels"]
