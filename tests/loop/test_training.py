"""Training and prediction through the project store (tiny networks, a few steps)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from segloop.errors import LabelValueError, NotFoundError, SegloopError
from segloop.io import write_volume
from segloop.loop.cases import import_cases, init_project
from segloop.loop.training import predict_cases, train_project
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom

SHAPE = (32, 32, 16)


def _tiny_config(**changes):
    from segloop.engine.config import TrainConfig

    settings = {
        "features": (8, 16),
        "epochs": 1,
        "steps_per_epoch": 2,
        "batch_size": 2,
        "validation_fraction": 0.5,
        "time_budget_min": None,
    }
    return TrainConfig(**{**settings, **changes})


@pytest.fixture
def project(tmp_path):
    project = init_project(tmp_path / "proj", PHANTOM_CLASSES)
    images = []
    for index in range(4):
        phantom = make_ct_phantom(SHAPE, seed=index)
        images.append(write_volume(phantom.image, tmp_path / "img" / f"c{index}_0000.nii.gz"))
        if index < 2:
            write_volume(phantom.labels, tmp_path / "lab" / f"c{index}.nii.gz")
    import_cases(project, images, labels_dir=tmp_path / "lab")
    return project


def test_train_records_the_model_and_predict_stores_pseudo_versions(project):
    model = train_project(project, _tiny_config(), author="t")
    assert model.status == "done" and model.mode == "full"
    assert sorted([*model.train_case_ids, *model.val_case_ids]) == ["c0", "c1"]
    assert len(model.label_version_ids) == 2
    assert (project.root / model.checkpoint).is_file()
    assert set(model.metrics["dice_per_class"]) <= set(PHANTOM_CLASSES)
    records = predict_cases(project, unlabeled=True, author="t")
    assert [r.case_id for r in records] == ["c2", "c3"]
    version = project.get_label_version(records[0].label_version_id)
    assert (version.source, version.classes, version.params["model_id"]) == (
        "pseudo",
        PHANTOM_CLASSES,
        model.id,
    )
    stored = np.load(project.root / records[0].uncertainty)
    assert stored["probabilities"].dtype == np.float16 and stored["probabilities"].shape == (5, *SHAPE)
    assert float(stored["entropy"].min()) >= 0.0 and float(stored["entropy"].max()) <= 1.0
    continual = train_project(project, _tiny_config(), mode="continual", author="t")
    assert continual.parent_id == model.id


def test_training_refuses_what_it_cannot_do(tmp_path, project):
    empty = init_project(tmp_path / "empty", ["liver"])
    with pytest.raises(LabelValueError, match="no labelled case"):
        train_project(empty, _tiny_config(), author="t")
    with pytest.raises(SegloopError, match="continual training needs a finished model"):
        train_project(project, _tiny_config(), mode="continual", author="t")
    with pytest.raises(NotFoundError, match="nothing to resume"):
        train_project(project, _tiny_config(), resume=True, author="t")
    with pytest.raises(NotFoundError, match="no finished model"):
        predict_cases(project, author="t")
    with pytest.raises(SegloopError, match="unknown training mode"):
        train_project(project, _tiny_config(), mode="sometimes", author="t")
