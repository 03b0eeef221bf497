from __future__ import annotations

import numpy as np
import pytest
import torch

from segloop.engine.checkpoint import read_checkpoint, save_checkpoint
from segloop.engine.data import Case
from segloop.engine.train import train
from segloop.errors import CorruptFileError, InvalidInputError, SegloopError
from tests.engine.conftest import N_CLASSES, tiny_config


class KilledError(Exception):
    """Stands for a kill in the middle of a run."""


def _weights(path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model_state"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_steps_run_validate_and_report_progress(cases, val_case, tmp_path):
    events = []
    result = train(
        tiny_config(),
        cases,
        [val_case],
        n_classes=N_CLASSES,
        device="cpu",
        checkpoint_path=tmp_path / "model.pt",
        on_progress=events.append,
    )
    assert result.epochs == 2 and result.steps == 4 and result.stopped_by == "epochs"
    assert result.config.slice_axis == 2 and result.config.patch_size == (20, 20)  # 5/8 of 32² slices
    assert result.best_metric is not None and 0.0 <= result.best_metric <= 1.0
    assert set(result.best_dice_per_class) == {1, 2, 3, 4}
    assert [e["phase"] for e in events] == ["train", "train", "epoch", "train", "train", "epoch"]
    assert [e["epoch"] for e in events] == [0, 0, 0, 1, 1, 1]
    assert {"epoch", "step", "loss", "val_dice", "elapsed_s", "eta_s"} <= set(events[-1])
    payload = read_checkpoint(tmp_path / "model.pt")
    assert payload["finished"] and payload["epoch"] == 2
    assert list(tmp_path.iterdir()) == [tmp_path / "model.pt"]  # no temporary file left


def test_training_is_deterministic_given_the_seed(cases, tmp_path):
    config = tiny_config(dropout=0.1)
    train(config, cases, n_classes=N_CLASSES, device="cpu", checkpoint_path=tmp_path / "a.pt")
    train(config, cases, n_classes=N_CLASSES, device="cpu", checkpoint_path=tmp_path / "b.pt")
    train(config.replace(seed=1), cases, n_classes=N_CLASSES, device="cpu", checkpoint_path=tmp_path / "c.pt")
    assert _same(_weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt"))
    assert not _same(_weights(tmp_path / "a.pt"), _weights(tmp_path / "c.pt"))


def test_resume_after_a_kill_gives_the_same_weights_as_an_uninterrupted_run(cases, val_case, tmp_path):
    config = tiny_config(epochs=3, dropout=0.1)
    whole = train(
        config, cases, [val_case], n_classes=N_CLASSES, device="cpu", checkpoint_path=tmp_path / "a.pt"
    )

    def kill_in_second_epoch(event):
        if event["phase"] == "train" and event["epoch"] == 1 and event["epoch_step"] == 1:
            raise KilledError

    with pytest.raises(KilledError):
        train(
            config,
            cases,
            [val_case],
            n_classes=N_CLASSES,
            device="cpu",
            checkpoint_path=tmp_path / "b.pt",
            on_progress=kill_in_second_epoch,
        )
    assert read_checkpoint(tmp_path / "b.pt")["epoch"] == 1  # the last finished epoch is on disk
    resumed = train(
        config,
        cases,
        [val_case],
        n_classes=N_CLASSES,
        device="cpu",
        checkpoint_path=tmp_path / "b.pt",
        resume=True,
    )
    assert resumed.epochs == whole.epochs == 3 and resumed.steps == whole.steps
    assert _same(_weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt"))
    assert resumed.best_metric == whole.best_metric and len(resumed.history) == 3


def test_resume_with_other_settings_fails_clearly(cases, tmp_path):
    train(tiny_config(epochs=1), cases, n_classes=N_CLASSES, device="cpu", checkpoint_path=tmp_path / "m.pt")
    with pytest.raises(SegloopError, match=r"cannot resume .*learning_rate"):
        train(
            tiny_config(epochs=2, learning_rate=0.1),
            cases,
            n_classes=N_CLASSES,
            device="cpu",
            checkpoint_path=tmp_path / "m.pt",
            resume=True,
        )


def test_init_weights_start_from_a_previous_model_and_reject_other_schemas(cases, tmp_path):
    train(
        tiny_config(epochs=1), cases, n_classes=N_CLASSES, device="cpu", checkpoint_path=tmp_path / "old.pt"
    )
    # continual training starts from the old weights: with a zero learning rate nothing moves
    train(
        tiny_config(epochs=1, learning_rate=1e-12),
        cases,
        n_classes=N_CLASSES,
        device="cpu",
        checkpoint_path=tmp_path / "new.pt",
        init_weights=tmp_path / "old.pt",
    )
    old, new = read_checkpoint(tmp_path / "old.pt")["best_state"], _weights(tmp_path / "new.pt")
    weights = [k for k in old if "running_" not in k and "num_batches" not in k]  # batch-norm stats move
    assert weights and all(torch.allclose(old[k], new[k], atol=1e-6) for k in weights)
    three_classes = [
        Case(c.case_id, c.image, np.minimum(c.labels, 2).astype(np.uint8), c.spacing) for c in cases
    ]
    with pytest.raises(SegloopError, match=r"trained for 4 classes .* this run has 2 classes") as error:
        train(
            tiny_config(epochs=1),
            three_classes,
            n_classes=3,
            device="cpu",
            checkpoint_path=tmp_path / "x.pt",
            init_weights=tmp_path / "old.pt",
        )
    assert "\n" not in str(error.value)
    with pytest.raises(SegloopError, match="another architecture .*features"):
        train(
            tiny_config(epochs=1, features=(8, 16, 32)),
            cases,
            n_classes=N_CLASSES,
            device="cpu",
            checkpoint_path=tmp_path / "y.pt",
            init_weights=tmp_path / "old.pt",
        )
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "y.pt").exists()


def test_init_weights_that_are_not_a_segloop_checkpoint_fail_clearly(cases, tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptFileError, match="cannot be read"):
        train(
            tiny_config(),
            cases,
            n_classes=N_CLASSES,
            checkpoint_path=tmp_path / "m.pt",
            init_weights=tmp_path / "junk.pt",
        )
    torch.save({"weight": torch.zeros(1)}, tmp_path / "bare.pt")  # a state dict of another network
    with pytest.raises(InvalidInputError, match=r"do not fit this unet network: \d+ missing .*1 unexpected"):
        train(
            tiny_config(),
            cases,
            n_classes=N_CLASSES,
            checkpoint_path=tmp_path / "m.pt",
            init_weights=tmp_path / "bare.pt",
        )


def test_bad_inputs_fail_with_one_line_errors(cases, tmp_path):
    with pytest.raises(SegloopError, match="no labelled training cases"):
        train(tiny_config(), [], n_classes=N_CLASSES, device="cpu", checkpoint_path=tmp_path / "m.pt")
    background = [Case(c.case_id, c.image, np.zeros_like(c.labels), c.spacing) for c in cases]
    with pytest.raises(SegloopError, match="no training case holds a voxel of any class"):
        train(tiny_config(), background, n_classes=N_CLASSES, device="cpu", checkpoint_path=tmp_path / "m.pt")
    if not torch.cuda.is_available():
        with pytest.raises(SegloopError, match="no CUDA GPU"):
            train(tiny_config(), cases, n_classes=N_CLASSES, device="cuda", checkpoint_path=tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_classes_missing_from_every_case_are_reported(cases, tmp_path):
    no_spleen = [Case(c.case_id, c.image, np.where(c.labels == 2, 0, c.labels), c.spacing) for c in cases]
    result = train(
        tiny_config(epochs=1), no_spleen, n_classes=N_CLASSES, device="cpu", checkpoint_path=tmp_path / "m.pt"
    )
    assert result.unseen_classes == (2,)


def test_time_budget_stops_training(cases, tmp_path):
    config = tiny_config(epochs=None, time_budget_min=0.02, steps_per_epoch=1000)  # 1.2 s
    result = train(config, cases, n_classes=N_CLASSES, device="cpu", checkpoint_path=tmp_path / "m.pt")
    assert result.stopped_by == "time" and result.epochs == 1
    assert result.elapsed_s < 1.2 + 1.0
    assert read_checkpoint(tmp_path / "m.pt")["finished"]


def test_three_dimensional_training_runs(cases, val_case, tmp_path):
    config = tiny_config(dims=3, patch_size=(16, 16, 16), epochs=1)
    result = train(
        config, cases, [val_case], n_classes=N_CLASSES, device="cpu", checkpoint_path=tmp_path / "m.pt"
    )
    assert result.config.patch_size == (16, 16, 16) and result.best_metric is not None


def test_checkpoint_write_is_atomic_on_failure(tmp_path):
    save_checkpoint(tmp_path / "m.pt", {"format": "x", "value": torch.ones(2)})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(tmp_path / "m.pt", {"value": Unpicklable()})
    assert list(tmp_path.iterdir()) == [tmp_path / "m.pt"]
    assert torch.equal(torch.load(tmp_path / "m.pt", weights_only=True)["value"], torch.ones(2))
