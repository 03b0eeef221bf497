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
from tests.loop.conftest import PHANTOM_SHAPE as SHAPE
from tests.loop.conftest import phantom_project, tiny_config


@pytest.fixture
def project(tmp_path):
    return phantom_project(tmp_path, n_cases=4, n_labeled=2)


def test_train_records_the_model_and_predict_stores_pseudo_versions(project):
    model = train_project(project, tiny_config(), author="t")
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
    continual = train_project(project, tiny_config(), mode="continual", author="t")
    assert continual.parent_id == model.id


def test_training_refuses_what_it_cannot_do(tmp_path, project):
    empty = init_project(tmp_path / "empty", ["liver"])
    with pytest.raises(LabelValueError, match="no labelled case"):
        train_project(empty, tiny_config(), author="t")
    with pytest.raises(SegloopError, match="continual training needs a finished model"):
        train_project(project, tiny_config(), mode="continual", author="t")
    with pytest.raises(NotFoundError, match="nothing to resume"):
        train_project(project, tiny_config(), resume=True, author="t")
    with pytest.raises(NotFoundError, match="no finished model"):
        predict_cases(project, author="t")
    with pytest.raises(SegloopError, match="unknown training mode"):
        train_project(project, tiny_config(), mode="sometimes", author="t")


def test_pseudo_labels_teach_only_when_asked_and_evaluation_scores_held_out_cases(project):
    from segloop.loop.evaluation import evaluate_model, evaluation_cases, summarize_evaluations

    model = train_project(project, tiny_config(validation_case_ids=("c1",)), author="t")
    assert (model.train_case_ids, model.val_case_ids) == (("c0",), ("c1",))
    predict_cases(project, unlabeled=True, author="t")
    again = train_project(project, tiny_config(validation_case_ids=("c1",)), author="t")
    assert again.train_case_ids == ("c0",)  # c2, c3 hold only pseudo labels
    with_pseudo = train_project(
        project, tiny_config(validation_case_ids=("c1",)), include_pseudo=True, author="t"
    )
    assert with_pseudo.train_case_ids == ("c0", "c2", "c3") and with_pseudo.config["include_pseudo"]
    assert evaluation_cases(project, model) == ["c1"]
    records = evaluate_model(project, model_id=model.id, round_number=1)
    assert [r.case_id for r in records] == ["c1"] and records[0].round == 1
    assert set(records[0].metrics["per_class"]) == set(PHANTOM_CLASSES)
    assert 0.0 <= records[0].metrics["mean_entropy"] <= 1.0
    scores = records[0].metrics["per_class"][PHANTOM_CLASSES[0]]
    assert set(scores) == {"dice", "hd95_mm", "surface_dice"} and 0.0 <= scores["dice"] <= 1.0
    assert project.list_evaluations(model_id=model.id) == records
    assert summarize_evaluations(records)["mean"]["dice"] is not None
    with pytest.raises(SegloopError, match="case c2 has no original or revised label"):
        evaluate_model(project, ["c2"], model_id=model.id)
    assert len(project.list_evaluations()) == 1  # checked before anything is scored


def test_interrupted_training_stays_running_and_resumes(project):
    def interrupt_in_second_epoch(event):
        if event["epoch"] == 1:
            raise KeyboardInterrupt

    config = tiny_config(epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train_project(project, config, on_progress=interrupt_in_second_epoch, author="t")
    (interrupted,) = project.list_models()
    assert interrupted.status == "running"
    resumed = train_project(project, config, resume=True, author="t")
    assert (resumed.id, resumed.status, resumed.metrics["epochs"]) == (interrupted.id, "done", 3)


def test_a_checkpoint_of_another_schema_is_refused(tmp_path, project):
    model = train_project(project, tiny_config(), author="t")
    other = init_project(tmp_path / "other", ["liver"])
    phantom = make_ct_phantom(SHAPE, seed=9)
    labels = (np.asarray(phantom.labels.array) > 0).astype(np.uint8)
    image = write_volume(phantom.image, tmp_path / "o" / "x_0000.nii.gz")
    from segloop.core.volume import Volume

    write_volume(Volume(labels, phantom.labels.affine), tmp_path / "olab" / "x.nii.gz")
    import_cases(other, [image], labels_dir=tmp_path / "olab")
    with pytest.raises(SegloopError, match=r"trained for 4 classes .*another label schema"):
        train_project(
            other,
            tiny_config(validation_fraction=0.0),
            mode="continual",
            init_weights=project.root / model.checkpoint,
            author="t",
        )
    assert [m.status for m in other.list_models()] == ["failed"]


def test_2d_training_slices_along_the_axial_plane_by_default(tmp_path):
    """On OpenKBP-like grids (3.9 x 3.9 x 2.5 mm) the largest spacing is in-plane: still slice axially."""
    from segloop.core import Volume

    project = init_project(tmp_path / "proj", PHANTOM_CLASSES)
    affine = np.diag([3.9, 3.9, 2.5, 1.0])
    images = []
    for index in range(2):
        phantom = make_ct_phantom(SHAPE, seed=index)
        images.append(
            write_volume(Volume(phantom.image.array, affine), tmp_path / "img" / f"a{index}_0000.nii.gz")
        )
        write_volume(Volume(phantom.labels.array, affine), tmp_path / "lab" / f"a{index}.nii.gz")
    import_cases(project, images, labels_dir=tmp_path / "lab")
    model = train_project(project, tiny_config(), author="t")
    assert model.config["slice_axis"] == 2
    chosen = train_project(project, tiny_config(slice_axis=0), author="t")
    assert chosen.config["slice_axis"] == 0
