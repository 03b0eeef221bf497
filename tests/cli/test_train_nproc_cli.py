"""`segloop train --nproc N` and under torchrun: one model, recorded once, that predicts; bad counts."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("torch")

from segloop.loop.tools import read_case_image
from segloop.loop.training import train_project
from segloop.store import Project
from tests.loop.conftest import phantom_project, tiny_config

TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")


@pytest.fixture
def project(tmp_path):
    return phantom_project(tmp_path, n_cases=4, n_labeled=3)


@pytest.mark.slow
def test_an_interrupted_two_process_run_resumes_under_torchrun_and_records_a_model_that_predicts(project):
    from segloop.engine.checkpoint import read_checkpoint
    from segloop.engine.infer import load_model, predict

    def interrupt(event):
        if event.metrics.get("epoch") == 1:
            raise KeyboardInterrupt  # the workers are terminated with this process

    config = tiny_config(epochs=8, batch_size=4, validation_fraction=0.2)  # 2 training cases
    with pytest.raises(KeyboardInterrupt):
        train_project(project, config, device="cpu", nproc=2, on_progress=interrupt, author="t")
    [running] = Project.open(project.root).list_models()
    # the workers run ahead of their progress events: usually some epochs are left, on a busy machine none
    stopped_at = read_checkpoint(project.root / running.checkpoint)["epoch"]
    assert running.status == "running" and stopped_at >= 1
    # resumed by torchrun: each of its 2 processes runs `segloop train`, rank 0 records and prints
    resumed = subprocess.run(
        [*TORCHRUN, "-m", "segloop.cli.main", "train", str(project.root), "--resume", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("model 1: 8 epochs") == 1
    opened = Project.open(project.root)
    [model] = opened.list_models()
    assert (model.status, model.metrics["epochs"], model.metrics["processes"]) == ("done", 8, 2)
    assert (model.metrics["samples_per_s"] > 0) == (stopped_at < 8)  # the resumed processes trained
    assert model.config["batch_size"] == 4  # the global batch
    # one row per run and per job: written by the parent, then by rank 0 alone
    assert [(j.kind, j.status) for j in opened.list_jobs()] == [("train", "interrupted"), ("train", "done")]
    trained = load_model(project.root / model.checkpoint, "cpu")
    image = read_case_image(opened, opened.get_case("c3"))
    prediction = predict(trained.network, image.array, image.spacing, trained.config, device=trained.device)
    assert prediction.labels.shape == image.array.shape


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (("--nproc", "0"), "expected a whole number of processes >= 1"),
        (("--nproc", "4"), "4 processes for 2 training cases"),  # 3 labelled: 2 train, 1 validates
        (("--nproc", "2", "--batch-size", "3"), "a batch of 3 does not split over 2 processes"),
    ],
)
def test_a_process_count_the_run_cannot_use_is_one_line(run_cli, project, options, expected):
    result = run_cli("train", project.root, "--epochs", "1", "--device", "cpu", *options)
    assert result.code == 1 and result.err.startswith("error: ") and result.err.count("\n") == 1
    assert expected in result.err
    assert Project.open(project.root).list_models() == [] and Project.open(project.root).list_jobs() == []
