"""Two rounds of the loop on a small OpenKBP subset, with corrections supplied as files (CLI)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from segloop.core import Volume
from segloop.io import read_volume, write_volume
from segloop.loop.cases import import_cases, init_project
from segloop.loop.rounds import run_round
from segloop.store import Project
from tests.conftest import OPENKBP_CLASSES
from tests.loop.conftest import tiny_config

LABELED = ("openkbp_pt_4", "openkbp_pt_13")
UNLABELED = ("openkbp_pt_17", "openkbp_pt_22")


@pytest.mark.slow
def test_two_rounds_with_corrections_from_files(run_cli, openkbp, tmp_path):
    project = init_project(tmp_path / "kbp", OPENKBP_CLASSES.split(","), defaults={"window": [400, 1064]})
    images = [openkbp / "imagesTr" / f"{c}_0000.nii.gz" for c in (*LABELED, *UNLABELED)]
    import_cases(project, images[:2], labels_dir=openkbp / "labelsTr")
    import_cases(project, images[2:])
    config = tiny_config(validation_case_ids=("openkbp_pt_13",))

    first = run_round(project, config, n_next=2, author="t")
    assert sorted(first.summary["queue"]) == sorted(UNLABELED)
    assert first.stages["evaluate"]["cases"] == ["openkbp_pt_13"]

    # a person fixes one case in 3D Slicer (a whole label file) and paints the mandible of the other
    whole, painted = first.summary["queue"]
    out = tmp_path / "slicer"
    assert run_cli("export", project.root, whole, out, "--for", "slicer").code == 0
    reference = openkbp / "labelsTr" / f"{whole}.nii.gz"
    result = run_cli("correct", project.root, whole, "--label", reference)
    assert result.code == 0, result.err
    truth = read_volume(openkbp / "labelsTr" / f"{painted}.nii.gz")
    mandible = (np.asarray(truth.array) == OPENKBP_CLASSES.split(",").index("mandible") + 1).astype(np.uint8)
    add = write_volume(Volume(mandible, truth.affine), tmp_path / "Add_mandible.nrrd")
    result = run_cli("correct", project.root, painted, "--add", add, "--class", "mandible")
    assert result.code == 0, result.err

    second = run_round(Project.open(project.root), config, n_next=2, author="t")
    model = project.get_model(second.summary["model"])
    assert model.mode == "continual" and set(model.train_case_ids) == {"openkbp_pt_4", *UNLABELED}
    assert second.summary["cases_by_source"]["revised"] == 2
    # the whole case is decided by a person now; the painted one only for its mandible
    assert second.stages["predict"]["cases"] == [painted]
    status = run_cli("status", project.root)
    assert status.code == 0 and "rounds" in status.out and "continual" in status.out and "R2" in status.out
    report = (project.root / "reports" / "index.html").read_text(encoding="utf-8")
    assert report.count("<tr><td>") == 2  # one row per round
