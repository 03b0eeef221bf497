"""Training and prediction through the project store (tiny networks, a few steps)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from segloop.errors import ConflictError, CorruptFileError, InvalidInputError, LabelValueError, NotFoundError
from segloop.io import write_volume
from segloop.loop.cases import import_cases, init_project
from segloop.loop.training import predict_cases, resume_training, train_config, train_project
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
    with pytest.raises(NotFoundError, match="continual training needs a finished model"):
        train_project(project, tiny_config(), mode="continual", author="t")
    with pytest.raises(NotFoundError, match="nothing to resume"):
        resume_training(project, author="t")
    with pytest.raises(NotFoundError, match="no finished model"):
        predict_cases(project, author="t")
    with pytest.raises(InvalidInputError, match="named cases or the unlabelled ones; got both"):
        predict_cases(project, ["c0"], unlabeled=True, author="t")
    with pytest.raises(InvalidInputError, match="unknown training mode"):
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
    with pytest.raises(InvalidInputError, match="tolerance must be a finite number of mm >= 0; got -1"):
        evaluate_model(project, ["c1"], model_id=model.id, tolerance_mm=-1.0)
    with pytest.raises(LabelValueError, match="case c2 has no original or revised label"):
        evaluate_model(project, ["c2"], model_id=model.id)
    assert len(project.list_evaluations()) == 1  # checked before anything is scored


def _interrupt_in_epoch(index):
    def interrupt(event):
        if event.metrics.get("epoch") == index:
            raise KeyboardInterrupt

    return interrupt


def test_interrupted_training_stays_running_and_resumes(project):
    config = tiny_config(epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train_project(project, config, on_progress=_interrupt_in_epoch(1), author="t")
    (interrupted,) = project.list_models()
    assert interrupted.status == "running"
    [job] = project.list_jobs(kind="train")
    assert (job.status, job.params["model"]) == ("interrupted", interrupted.id)
    resumed = resume_training(project, author="t")
    assert (resumed.id, resumed.status, resumed.metrics["epochs"]) == (interrupted.id, "done", 3)
    assert [j.status for j in project.list_jobs(kind="train")] == ["interrupted", "done"]


def test_resume_keeps_the_run_settings_and_refuses_others_without_failing_the_run(project):
    """Issue 18 #11, killed after epoch 1: a plain resume continues with the run's own settings."""
    config = train_config(project, epochs=3, validation_case_ids=["c1"], features=(8, 16), steps_per_epoch=2)
    config = config.replace(batch_size=2, time_budget_min=None)
    with pytest.raises(KeyboardInterrupt):
        train_project(project, config, on_progress=_interrupt_in_epoch(1), author="t")
    with pytest.raises(ConflictError, match=r"other settings \(epochs: run 3, asked 5; validation_case_ids"):
        resume_training(project, asked={"epochs": 5, "validation_case_ids": ["c0"]}, author="t")
    (run,) = project.list_models()
    assert run.status == "running"  # a refused resume leaves the run resumable
    same = {"epochs": 3, "validation_case_ids": ["c1"], "mode": "full", "dims": None}
    resumed = resume_training(project, asked=same, author="t")
    assert (resumed.id, resumed.status, resumed.metrics["epochs"]) == (run.id, "done", 3)
    assert (resumed.train_case_ids, resumed.val_case_ids) == (("c0",), ("c1",))


def test_resume_before_the_first_checkpoint_restarts_with_the_stored_settings(project):
    """Issue 18 #11, killed before any checkpoint: the resumed run is the run that was asked for."""
    config = tiny_config(epochs=2, validation_case_ids=("c0",))
    with pytest.raises(KeyboardInterrupt):
        train_project(project, config, on_progress=_interrupt_in_epoch(0), author="t")
    (run,) = project.list_models()
    assert not (project.root / run.checkpoint).exists()
    resumed = resume_training(project, author="t")
    assert (resumed.id, resumed.metrics["epochs"], resumed.val_case_ids) == (run.id, 2, ("c0",))
    assert resumed.config["epochs"] == 2 and resumed.config["steps_per_epoch"] == 2


@pytest.mark.parametrize("content", ["text", "random", "state_dict", "fake"])
def test_init_weights_that_are_not_a_checkpoint_are_refused_before_a_run_is_recorded(
    tmp_path, project, content
):
    import torch

    path = tmp_path / "weights.pt"
    if content == "text":
        path.write_text("hello\n")
    elif content == "random":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif content == "state_dict":
        torch.save(torch.nn.Conv2d(1, 2, 3).state_dict(), path)
    else:  # the format marker, nothing else
        torch.save({"format": "segloop-engine-checkpoint", "version": 1}, path)
    # a state dict of another network is read, and refused by its keys
    refusal = (InvalidInputError, "do not fit") if content == "state_dict" else (CorruptFileError, "segloop")
    with pytest.raises(refusal[0], match=refusal[1]) as caught:
        train_project(project, tiny_config(), mode="continual", init_weights=path, author="t")
    assert "\n" not in str(caught.value) and "weights_only" not in str(caught.value)
    assert project.list_models() == []


def test_a_checkpoint_of_another_schema_is_refused(tmp_path, project):
    model = train_project(project, tiny_config(), author="t")
    other = init_project(tmp_path / "other", ["liver"])
    phantom = make_ct_phantom(SHAPE, seed=9)
    labels = (np.asarray(phantom.labels.array) > 0).astype(np.uint8)
    image = write_volume(phantom.image, tmp_path / "o" / "x_0000.nii.gz")
    from segloop.core.volume import Volume

    write_volume(Volume(labels, phantom.labels.affine), tmp_path / "olab" / "x.nii.gz")
    import_cases(other, [image], labels_dir=tmp_path / "olab")
    with pytest.raises(InvalidInputError, match=r"trained for 4 classes .*another label schema"):
        train_project(
            other,
            tiny_config(validation_fraction=0.0),
            mode="continual",
            init_weights=project.root / model.checkpoint,
            author="t",
        )
    assert other.list_models() == []  # refused before a run was recorded


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
