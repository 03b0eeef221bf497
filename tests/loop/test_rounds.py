"""Rounds of the loop (train, predict, evaluate, rank, report) on tiny phantoms, and the report."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from segloop.errors import SegloopError
from segloop.loop.rounds import count_cases_by_source, run_round, unlabeled_cases
from tests.loop.conftest import phantom_project, tiny_config


def _tiny_config(**changes):
    return tiny_config(**{"validation_case_ids": ("c1",), **changes})


@pytest.fixture
def project(tmp_path):
    return phantom_project(tmp_path, n_cases=5, n_labeled=2)


def test_two_rounds_record_every_stage_and_write_the_report(project):
    assert unlabeled_cases(project) == ["c2", "c3", "c4"]
    first = run_round(project, _tiny_config(), n_next=2, author="t")
    assert first.number == 1 and first.status == "done"
    assert list(first.stages) == ["train", "predict", "evaluate", "rank", "report"]
    assert first.stages["train"]["mode"] == "full"  # nothing to continue from in round 1
    assert first.stages["predict"]["cases"] == ["c2", "c3", "c4"]
    assert first.stages["evaluate"]["cases"] == ["c1"]  # held out: the model did not train on it
    assert 0.0 <= first.summary["evaluation"]["mean"]["dice"] <= 1.0
    assert len(first.summary["queue"]) == 2 and set(first.summary["queue"]) <= {"c2", "c3", "c4"}
    assert first.summary["cases_by_source"]["original"] == 2
    assert first.summary["cases_by_source"]["pseudo"] == 3
    assert (project.root / "rounds" / "1" / "priority.csv").is_file()

    second = run_round(project, _tiny_config(), n_next=2, author="t")
    model = project.get_model(second.summary["model"])
    assert (second.number, model.mode, model.round) == (2, "continual", 2)
    assert model.parent_id == first.summary["model"]
    report = project.root / first.stages["report"]["path"]
    text = report.read_text(encoding="utf-8")
    for image in ("dice_per_round.png", "sources_per_round.png", "uncertainty_vs_dice.png"):
        assert f'src="{image}"' in text and (report.parent / image).stat().st_size > 1000
    assert "<td>2</td>" in text  # one row per round
    assert count_cases_by_source(project) == second.summary["cases_by_source"]


def test_a_killed_round_resumes_without_redoing_finished_stages(project):
    def kill_at_evaluation(text):
        if text.startswith("evaluating"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_round(project, _tiny_config(), author="t", on_step=kill_at_evaluation)
    (interrupted,) = project.list_rounds()
    assert interrupted.status == "running" and list(interrupted.stages) == ["train", "predict"]
    resumed = run_round(project, _tiny_config(), author="t")
    assert resumed.number == 1 and resumed.status == "done"
    assert len(project.list_models()) == 1  # the model was not trained again
    assert len(project.list_predictions()) == 3  # nor the cases predicted twice
    rounds = project.list_jobs(kind="round")
    assert [j.status for j in rounds] == ["interrupted", "done"]
    assert rounds[1].progress.stage == "report" and rounds[1].result["round"] == 1
    assert [j.status for j in project.list_jobs(kind="train")] == ["done"]
    [predict] = project.list_jobs(kind="predict")
    assert (predict.progress.done, predict.progress.total) == (3, 3)


def test_a_round_reports_typed_progress_of_its_training_and_prediction(project):
    from segloop.store import Progress

    events = []
    run_round(project, _tiny_config(), author="t", on_progress=events.append)
    assert events and all(isinstance(e, Progress) for e in events)
    assert [e.stage for e in events if e.stage != "train"][-1] == "predict"
    last_train = [e for e in events if e.stage == "train"][-1]
    assert last_train.done == last_train.total == 2 and "loss" in last_train.metrics


def test_round_rejects_unknown_modes_and_strategies(project):
    with pytest.raises(SegloopError, match="unknown ranking strategy 'smart'"):
        run_round(project, _tiny_config(), strategy="smart", author="t")
    with pytest.raises(SegloopError, match="unknown training mode"):
        run_round(project, _tiny_config(), mode="partial", author="t")
    with pytest.raises(SegloopError, match="queue needs >= 0 cases; got -1"):
        run_round(project, _tiny_config(), n_next=-1, author="t")
    assert project.list_rounds() == [] and project.list_models() == []


def test_a_round_predicts_cases_a_person_labelled_only_in_part(project):
    """A sparse start's cases are predicted (and so scored by the ranking); whole originals are not."""
    from segloop.loop.tools import store_tool_labels
    from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom

    sparse = make_ct_phantom((32, 32, 16), seed=2).labels.array.copy()
    sparse[:, :, :6] = 0  # a person painted a few slices only
    sparse[:, :, 10:] = 0
    painted = [name for value, name in enumerate(PHANTOM_CLASSES, 1) if (sparse == value).any()]
    assert painted
    store_tool_labels(
        project,
        project.get_case("c2"),
        sparse,
        source="sparse",
        classes=painted,
        tool="paint",
        params={},
        author="t",
    )
    first = run_round(project, _tiny_config(), n_next=3, author="t")
    assert first.stages["predict"]["cases"] == ["c2", "c3", "c4"]
    assert "c2" not in unlabeled_cases(project)
    versions = [v.source for v in project.list_label_versions("c2")]
    assert versions == ["sparse", "pseudo"]  # the prediction ranks below the person's strokes
    scored = {item["case"]: item["score"] for item in first.stages["rank"]["queue"]}
    assert scored["c2"] is not None  # the ranking scores it from its prediction
