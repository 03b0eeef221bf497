"""Use case: one round of the loop — train, predict, evaluate, rank, report — recorded and resumable.

A round is a row in the store whose ``stages`` grow as each stage finishes (train → predict →
evaluate → rank → report). Killed at any point, ``run_round`` continues the running round: a
finished stage is never redone, an interrupted training run resumes from its checkpoint, and cases
this round's model already predicted are not predicted twice.

What each stage works on:

- **train**: every case with a human label (pseudo labels only with ``include_pseudo``); the first
  round trains ``full`` whatever the mode, as there is nothing to continue from.
- **predict**: cases not fully decided by a person — some class that no whole-case ``original``
  or ``revised`` version annotates (`segloop.loop.ranking.list_candidate_cases`): unlabelled cases,
  and cases with only sparse, draft, pseudo or partly reviewed labels. Each gets a new ``pseudo``
  version (assembly ranks it below every human version) and an uncertainty file, so the ranking can
  score it; a sparse start's cases would otherwise never be scored.
- **evaluate**: cases with original or revised labels the model did not train on (its validation
  cases), scored against those labels only.
- **rank**: the correction queue of the next person (`segloop.loop.ranking`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from segloop.core.provenance import HUMAN_SOURCES, Source
from segloop.errors import InvalidInputError
from segloop.loop.evaluation import evaluate_model, evaluation_cases, summarize_evaluations
from segloop.loop.jobs import ProgressCallback, run_job
from segloop.loop.ranking import get_strategy, list_candidate_cases
from segloop.loop.training import MODES, predict_cases, resume_training, train_project
from segloop.store import Project, RoundRecord

__all__ = ["SOURCES_BY_TRUST", "STAGES", "count_cases_by_source", "run_round", "unlabeled_cases"]

STAGES = ("train", "predict", "evaluate", "rank", "report")
#: Label sources, most trusted first (the order of the rounds table and the report's bars).
SOURCES_BY_TRUST = tuple(sorted(Source, key=lambda s: -s.priority))


def unlabeled_cases(project: Project) -> list[str]:
    """Cases without a human label version (none at all, or only pseudo ones), in project order."""
    human = {v.case_id for v in project.list_label_versions() if v.source in HUMAN_SOURCES}
    return [case_id for case_id in project.list_case_ids() if case_id not in human]


def count_cases_by_source(project: Project) -> dict[str, int]:
    """Cases by the most trusted source among their label versions (``unlabeled``: none)."""
    best: dict[str, Source] = {}
    for version in project.list_label_versions():
        source = Source(version.source)
        if version.case_id not in best or source.priority > best[version.case_id].priority:
            best[version.case_id] = source
    counts = dict.fromkeys((*(s.value for s in SOURCES_BY_TRUST), "unlabeled"), 0)
    for case_id in project.list_case_ids():
        counts[best[case_id].value if case_id in best else "unlabeled"] += 1
    return counts


def _queue_item(row: Any) -> dict[str, Any]:
    """A ranked case as the rank stage records it (with the flagged ``regions`` a strategy names)."""
    item = {"case": row.case_id, "score": row.score, "classes": list(row.classes)}
    if "regions" in row.detail:
        item["regions"] = row.detail["regions"]
    return item


def _current_round(project: Project, mode: str) -> tuple[RoundRecord, bool]:
    """The running round (resumed) or a new one numbered after the last."""
    rounds = project.list_rounds()
    if rounds and rounds[-1].status == "running":
        return rounds[-1], True
    return project.start_round(rounds[-1].number + 1 if rounds else 1, mode=mode), False


def run_round(
    project: Project,
    train_config: Any,
    *,
    mode: str = "continual",
    strategy: str = "uncertainty",
    n_next: int = 5,
    seed: int = 0,
    include_pseudo: bool | str = False,
    device: str = "auto",
    author: str,
    on_step: Callable[[str], None] = lambda _: None,
    on_progress: ProgressCallback | None = None,
    asked: Mapping[str, Any] | None = None,
) -> RoundRecord:
    """Run (or finish an interrupted) round of the loop and write the report.

    Args:
        project: the open project.
        train_config: a `segloop.engine.TrainConfig` for this round's training.
        mode: ``continual`` (start from the newest model; ``full`` in the first round) or ``full``.
        strategy: ranking strategy for the next corrections (see `segloop.loop.ranking`).
        n_next: how many cases the queue holds.
        seed: the ranking's seed (the ``random`` strategy's permutation).
        include_pseudo: which pseudo labels teach: ``none`` (False), ``all`` (True) or ``confident``
            (`segloop.loop.training.train_project`).
        device: ``auto``, ``cpu`` or ``cuda``.
        author: who runs it.
        on_step: receives one line per stage.
        on_progress: receives the `Progress` events of the round's training and prediction jobs
            (the round itself is a job of kind ``round`` whose progress counts finished stages).
        asked: the training settings the caller gave explicitly; an interrupted training run of
            this round resumes with its own settings and refuses different ones
            (`segloop.loop.training.resume_training`).

    Returns:
        The finished round, with its stages and summary.
    """
    from segloop.loop.ranking import rank_cases, write_priority_csv
    from segloop.loop.report import write_report

    if mode not in MODES:
        msg = f"unknown training mode {mode!r}: expected one of {', '.join(MODES)}"
        raise InvalidInputError(msg)
    get_strategy(strategy)  # an unknown name fails before anything runs
    if n_next < 0:
        msg = f"the correction queue needs >= 0 cases; got {n_next}"
        raise InvalidInputError(msg)
    current, resumed = _current_round(project, mode)
    number = current.number
    params = {"round": number, "mode": mode, "strategy": strategy}
    with run_job(project, "round", author=author, params=params) as job:

        def step(stage: str, text: str) -> None:
            on_step(text)
            job.report(stage, STAGES.index(stage), len(STAGES), text)

        step("train", f"{'resuming' if resumed else 'starting'} round {number}")
        stages = dict(current.stages)

        if "train" not in stages:
            interrupted = [m for m in project.list_models() if m.round == number and m.status == "running"]
            train_mode = current.mode if project.find_latest_model() is not None else "full"
            step("train", f"training ({'resumed' if interrupted else train_mode})")
            if interrupted:
                model = resume_training(
                    project, asked=asked, device=device, on_progress=on_progress, author=author
                )
            else:
                model = train_project(
                    project,
                    train_config,
                    mode=train_mode,
                    device=device,
                    include_pseudo=include_pseudo,
                    round_number=number,
                    on_progress=on_progress,
                    author=author,
                )
            stages["train"] = {
                "model": model.id,
                "mode": model.mode,
                "train_cases": len(model.train_case_ids),
                "validation_dice": model.metrics.get("best_mean_dice"),
                "validation_dice_per_class": model.metrics.get("dice_per_class", {}),
            }
            project.record_round_stage(number, "train", stages["train"])
        model_id = int(stages["train"]["model"])

        if "predict" not in stages:
            done = {p.case_id for p in project.list_predictions() if p.model_id == model_id}
            targets = [c for c, _ in list_candidate_cases(project) if c not in done]
            step("predict", f"predicting {len(targets)} cases not fully decided by a person")
            predict_cases(
                project, targets, model_id=model_id, device=device, author=author, on_progress=on_progress
            )
            predicted = [p.case_id for p in project.list_predictions() if p.model_id == model_id]
            stages["predict"] = {"cases": predicted}
            project.record_round_stage(number, "predict", stages["predict"])

        if "evaluate" not in stages:
            model = project.get_model(model_id)
            cases = evaluation_cases(project, model)
            # an interrupted evaluation stored some cases already: score only the rest
            scored = {e.case_id for e in project.list_evaluations(model_id=model_id) if e.round == number}
            remaining = [c for c in cases if c not in scored]
            step("evaluate", f"evaluating on {len(cases)} held-out human-labelled cases")
            if remaining:
                evaluate_model(project, remaining, model_id=model_id, device=device, round_number=number)
            records = [e for e in project.list_evaluations(model_id=model_id) if e.round == number]
            summary = summarize_evaluations(records) if records else {}
            stages["evaluate"] = {"cases": [r.case_id for r in records], "summary": summary}
            project.record_round_stage(number, "evaluate", stages["evaluate"])

        if "rank" not in stages:
            ranked = rank_cases(project, strategy=strategy, count=n_next, seed=seed, author=author)
            queue = project.root / "rounds" / str(number) / "priority.csv"
            write_priority_csv(ranked, queue, overwrite=True)
            step("rank", f"ranked the next {len(ranked)} cases to correct ({strategy}): {queue}")
            stages["rank"] = {
                "strategy": strategy,
                "queue": [_queue_item(r) for r in ranked],
            }
            project.record_round_stage(number, "rank", stages["rank"])

        summary = {
            "model": model_id,
            "mode": stages["train"]["mode"],
            "cases_by_source": count_cases_by_source(project),
            "validation_dice": stages["train"]["validation_dice"],
            "validation_dice_per_class": stages["train"]["validation_dice_per_class"],
            "evaluation": stages["evaluate"]["summary"],
            "queue": [item["case"] for item in stages["rank"]["queue"]],
        }
        project.finish_round(number, summary)
        report = write_report(project)
        project.record_round_stage(number, "report", {"path": str(report.relative_to(project.root))})
        step("report", f"round {number} done; report: {report}")
        project.log_event("round", author, {"round": number, "model": model_id})
        job.result = {"round": number, "model": model_id}
    return project.get_round(number)
