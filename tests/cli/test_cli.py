"""The README's commands, in-process, on real OpenKBP and TotalSegmentator data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom

from segloop.io import read_volume
from segloop.store import Project
from tests.conftest import OPENKBP_CLASSES, snapshot_project


def test_help_starts_without_importing_torch_numpy_or_sqlalchemy():
    code = (
        "import sys, typer.main; from segloop.cli.main import app; typer.main.get_command(app); "
        "print(sorted(m for m in ('torch', 'monai', 'numpy', 'sqlalchemy', 'nibabel') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_wrong_arguments_exit_non_zero(run_cli, tmp_path):
    assert run_cli("init", tmp_path / "p").code == 2  # neither --labels nor --labels-file
    result = run_cli("status", tmp_path / "nothing-here")
    assert result.code == 1
    assert result.err.startswith("error: ") and result.err.count("\n") == 1
    bad_window = run_cli("init", tmp_path / "w", "--labels", "a", "--window", "400")
    assert bad_window.code == 2 and "WIDTH,LEVEL" in bad_window.err and not (tmp_path / "w").exists()


def test_init_keeps_the_training_window_in_the_project(run_cli, tmp_path):
    assert run_cli("init", tmp_path / "p", "--labels", "a", "--window", "400,1064").code == 0
    assert Project.open(tmp_path / "p").config.defaults["window"] == [400.0, 1064.0]


def test_openkbp_init_add_status_show_export(run_cli, openkbp, tmp_path):
    project = tmp_path / "kbp"
    assert run_cli("init", project, "--labels", OPENKBP_CLASSES, "--modality", "CT").code == 0
    images = sorted((openkbp / "imagesTr").glob("*.nii.gz"))
    result = run_cli("add", project, *images, "--labels-dir", openkbp / "labelsTr", "--source", "original")
    assert result.code == 0, result.err
    assert "added 34 cases (34 with original labels)" in result.out

    status = run_cli("status", project)
    assert status.code == 0 and "34 cases" in status.out and "openkbp_pt_4" not in status.out  # a summary
    table = run_cli("status", project, "--cases", "openkbp_pt_4")
    assert table.code == 0 and "openkbp_pt_4" in table.out and table.out.splitlines()[0].strip() == "1 case"

    show = run_cli("show", project, "openkbp_pt_4")
    assert show.code == 0 and "original" in show.out and "segloop add" in show.out

    out = tmp_path / "pt4.seg.nrrd"
    assert run_cli("export", project, "openkbp_pt_4", out).code == 0
    exported = read_volume(out)
    reference = nib.load(openkbp / "labelsTr" / "openkbp_pt_4.nii.gz")
    np.testing.assert_array_equal(exported.array, np.asanyarray(reference.dataobj))
    np.testing.assert_allclose(exported.affine, reference.affine, atol=1e-4)
    assert [s["name"] for s in exported.meta["segments"]] == OPENKBP_CLASSES.split(",")

    # bad input through the CLI: one line, exit 1, nothing changed
    before = snapshot_project(project)
    again = run_cli("add", project, images[0], "--labels-dir", openkbp / "labelsTr")
    assert again.code == 1 and "already in the project" in again.err and again.err.count("\n") == 1
    wrong_class = run_cli("add", project, tmp_path / "x.nii.gz", "--classes", "liver")
    assert wrong_class.code == 1 and "unknown class 'liver'" in wrong_class.err
    assert run_cli("export", project, "openkbp_pt_4", out).code == 1  # exists: not overwritten
    assert snapshot_project(project) == before


def test_totalsegmentator_dicom_series_and_nifti_with_pseudo_labels(run_cli, totalseg, tmp_path):
    classes = json.loads((totalseg / "class_maps.json").read_text())["total"]
    labels_file = tmp_path / "total.json"
    labels_file.write_text(json.dumps(classes))
    project = tmp_path / "ts"
    assert run_cli("init", project, "--labels-file", labels_file).code == 0
    series = totalseg / "ct_dicom_series"
    result = run_cli(
        "add",
        project,
        series / "dicom",
        "--case-id",
        "ct_dicom",
        "--label",
        series / "label_totalseg_fast.nii.gz",
        "--source",
        "pseudo",
    )
    assert result.code == 0, result.err
    result = run_cli(
        "add",
        project,
        totalseg / "ct_small" / "image.nii.gz",
        "--case-id",
        "ct_small",
        "--label",
        totalseg / "ct_small" / "label_totalseg.nii.gz",
        "--source",
        "pseudo",
    )
    assert result.code == 0, result.err
    opened = Project.open(project)
    [version] = opened.list_label_versions("ct_dicom")
    labels = opened.read_labels(version)
    image = read_volume(series / "dicom").array
    # the label NIfTI stores the rows reversed; once aligned, the liver is soft tissue, air is outside
    liver = list(classes.values()).index("liver") + 1
    assert 40 < image[labels == liver].mean() < 200
    assert image[labels == 0].mean() < -300
    status = run_cli("status", project, "--class", "liver,spleen")  # 117 classes: rows, not columns
    assert status.code == 0 and re.search(r"liver\s+│\s+2\s+│", status.out) and "kidney" not in status.out
    assert "pseudo 117/117" in run_cli("status", project, "--table").out


def test_a_dicom_folder_with_two_series_is_refused(run_cli, totalseg, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    files = sorted((totalseg / "ct_dicom_series" / "dicom").iterdir())
    for path in files[:3]:
        shutil.copy(path, folder / path.name)
    for path in files[3:6]:
        dataset = pydicom.dcmread(path)
        dataset.SeriesInstanceUID = pydicom.uid.generate_uid()
        dataset.save_as(folder / path.name)
    assert run_cli("init", tmp_path / "p", "--labels", "liver").code == 0
    before = snapshot_project(tmp_path / "p")
    result = run_cli("add", tmp_path / "p", folder)
    assert result.code == 1 and "series" in result.err and result.err.count("\n") == 1
    assert snapshot_project(tmp_path / "p") == before


def test_add_maps_mask_values_of_a_2d_image_folder(run_cli, tmp_path):
    from tests.conftest import shared_dataset

    nuclei = shared_dataset("nih3t3-nuclei-2d")
    project = tmp_path / "my2d"
    assert run_cli("init", project, "--labels", "nucleus", "--modality", "microscopy").code == 0
    images = sorted((nuclei / "images").glob("*.png"))[:3]
    refused = run_cli("add", project, *images, "--labels-dir", nuclei / "labels")
    assert refused.code == 1 and "255" in refused.err  # 0/255 masks are not schema values
    added = run_cli(
        "add", project, *images, "--labels-dir", nuclei / "labels", "--label-values", "255=nucleus"
    )
    assert added.code == 0, added.err
    assert "3 with original labels" in added.out
    opened = Project.open(project)
    (version,) = opened.list_label_versions(images[0].stem)
    mask = np.asarray(read_volume(nuclei / "labels" / images[0].name).array) == 255
    np.testing.assert_array_equal(
        opened.read_labels(version) == 1, mask.reshape(opened.read_labels(version).shape)
    )
