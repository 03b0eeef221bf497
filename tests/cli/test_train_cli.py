"""`segloop train` resume and initial weights, and the top-level error lines of `segloop.cli.main`."""

from __future__ import annotations

import sqlite3

import pytest

pytest.importorskip("torch")

from segloop.cli.main import environment_failure
from segloop.loop.training import train_project
from segloop.store import Project
from tests.loop.conftest import phantom_project, tiny_config


@pytest.fixture
def project(tmp_path):
    return phantom_project(tmp_path, n_cases=3, n_labeled=2)


def _kill_in_second_epoch(event):
    if event.metrics.get("epoch") == 1:
        raise KeyboardInterrupt


def test_a_refused_resume_names_the_difference_and_leaves_the_run_resumable(run_cli, project):
    with pytest.raises(KeyboardInterrupt):
        train_project(project, tiny_config(epochs=3), on_progress=_kill_in_second_epoch, author="t")
    status = run_cli("status", project.root)
    assert "train job 1 (model 1, resume False) interrupted" in status.out and "--resume" in status.out
    refused = run_cli("train", project.root, "--resume", "--epochs", "5", "--device", "cpu")
    assert refused.code == 1 and refused.err.count("\n") == 1
    assert "epochs: run 3, asked 5" in refused.err and "--resume" in refused.err
    assert [m.status for m in Project.open(project.root).list_models()] == ["running"]
    resumed = run_cli("train", project.root, "--resume", "--epochs", "3", "--device", "cpu")
    assert resumed.code == 0, resumed.err
    [model] = Project.open(project.root).list_models()
    assert (model.status, model.metrics["epochs"], model.config["features"]) == ("done", 3, [8, 16])
    again = run_cli("train", project.root, "--resume")
    assert again.code == 1 and "nothing to resume" in again.err and "without --resume" in again.err


@pytest.mark.parametrize("content", [b"not a checkpoint\n", bytes(range(256)) * 20])
def test_init_weights_that_are_not_a_checkpoint_give_one_line(run_cli, project, tmp_path, content):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(content)
    result = run_cli("train", project.root, "--mode", "continual", "--init-weights", weights, "--epochs", "1")
    assert result.code == 1 and result.err.startswith("error: ") and result.err.count("\n") == 1
    assert "Traceback" not in result.err and Project.open(project.root).list_models() == []


def test_environment_failures_are_one_line_and_bugs_keep_their_traceback(run_cli, project, monkeypatch):
    import segloop.loop.cases

    def read_only(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied", str(project.root / "objects"))

    monkeypatch.setattr(segloop.loop.cases, "summarize_project", read_only)
    result = run_cli("status", project.root)
    assert result.code == 1 and result.err == f"error: Permission denied: {project.root / 'objects'}\n"

    def bug(*_args, **_kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(segloop.loop.cases, "summarize_project", bug)
    with pytest.raises(ZeroDivisionError):
        run_cli("status", project.root)


def test_environment_failure_recognises_database_errors_narrowly():
    import sqlalchemy.exc

    locked = sqlalchemy.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    assert environment_failure(locked) == "the project database cannot be used (database is locked)"
    corrupt = sqlite3.DatabaseError("file is not a database")
    assert "file is not a database" in environment_failure(corrupt)
    integrity = sqlalchemy.exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE failed"))
    assert environment_failure(integrity) is None and environment_failure(ValueError("x")) is None


def test_next_on_an_empty_project_says_there_are_no_cases(run_cli, tmp_path):
    assert run_cli("init", tmp_path / "empty", "--labels", "liver").code == 0
    result = run_cli("next", tmp_path / "empty")
    assert result.code == 1 and "no case in project" in result.err
    assert "labelled by a person" not in result.out + result.err


def test_the_strategy_help_names_every_registered_strategy():
    from segloop.cli.main import STRATEGY_HELP
    from segloop.loop.ranking import STRATEGIES

    names = STRATEGY_HELP.removeprefix("Ranking: ").rstrip(".").replace(" or ", ", ").split(", ")
    assert names == list(STRATEGIES)
