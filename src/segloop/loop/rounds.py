"""Use case: one round of the loop — train, predict, evaluate, rank, report — recorded and resumable.

A round is a row in the store whose ``stages`` grow as each stage finishes (train → predict →
evaluate → rank → report). Killed at any point, ``run_round`` continues the running round: a
finished stage is never redone, an interrupted training run resumes from its checkpoint, and cases
this round's model already predicted are not predicted twice.

What each stage works on:

- **train**: every case with a human label (pseudo labels only with ``include_pseudo``); the first
  round trains ``full`` whatever the mode, as there is nothing to continue from.
- **predict**: cases without any human label version (only pseudo versions, or none): each gets a
  new ``pseudo`` version and an uncertainty file.
- **evaluate**: cases with original or revised labels the model did not train on (its validation
  cases), scored against those labels only.
- **rank**: the correction queue of the next person (`segloop.loop.ranking`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from segloop.errors import SegloopError
from segloop.loop.evaluation import evaluate_model, evaluation_cases, summarize_evaluations
from segloop.loop.training import MODES, predict_cases, train_project
from segloop.store import Project, RoundRecord
from segloop.store.records import SOURCES

__all__ = ["HUMAN_SOURCES", "STAGES", "count_cases_by_source", "run_round", "unlabeled_cases"]

STAGES = ("train", "predict", "evaluate", "rank", "report")

#: Sources a person made (the rest, ``pseudo``, a model made).
HUMAN_SOURCES = ("original", "revised", "sparse", "draft")


def unlabeled_cases(project: Project) -> list[str]:
    """Cases without a human label version (none at all, or only pseudo ones), in project order."""
    human = {v.case_id for v in project.list_label_versions() if v.source in HUMAN_SOURCES}
    return [case_id for case_id in project.list_case_ids() if case_id not in human]


def count_cases_by_source(project: Project) -> dict[str, int]:
    """Cases by the most trusted source among their label versions (``unlabeled``: none)."""
    best: dict[str, int] = {}
    for version in project.list_label_versions():
        rank = SOURCES.index(version.source)
        best[version.case_id] = min(rank, best.get(version.case_id, rank))
    counts = dict.fromkeys((*SOURCES, "unlabeled"), 0)
    for case_id in project.list_case_ids():
        counts[SOURCES[best[case_id]] if case_id in best else "unlabeled"] += 1
    return counts


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
    include_pseudo: bool = False,
    device: str = "auto",
    author: str,
    on_step: Callable[[str], None] = lambda _: None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> RoundRecord:
    """Run (or finish an interrupted) round of the loop and write the report.

    Args:
        project: the open project.
        train_config: a `segloop.engine.TrainConfig` for this round's training.
        mode: ``continual`` (start from the newest model; ``full`` in the first round) or ``full``.
        strategy: ranking strategy for the next corrections (see `segloop.loop.ranking`).
        n_next: how many cases the queue holds.
        include_pseudo: also learn from pseudo labels.
        device: ``auto``, ``cpu`` or ``cuda``.
        author: who runs it.
        on_step: receives one line per stage.
        on_progress: the engine's training progress callback.

    Returns:
        The finished round, with its stages and summary.
    """
    from segloop.loop.ranking import STRATEGIES, rank_cases, write_priority_csv
    from segloop.loop.report import write_report

    if mode not in MODES:
        msg = f"unknown training mode {mode!r}: expected one of {', '.join(MODES)}"
        raise SegloopError(msg)
    if strategy not in STRATEGIES:
        msg = f"unknown ranking strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}"
        raise SegloopError(msg)
    current, resumed = _current_round(project, mode)
    number = current.number
    on_step(f"{'resuming' if resumed else 'starting'} round {number}")
    stages = dict(current.stages)

    if "train" not in stages:
        interrupted = [m for m in project.list_models() if m.round == number and m.status == "running"]
        train_mode = current.mode if project.find_latest_model() is not None else "full"
        on_step(f"training ({'resumed' if interrupted else train_mode})")
        model = train_project(
            project,
            train_config,
            mode=train_mode,
            device=device,
            resume=bool(interrupted),
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
        targets = [c for c in unlabeled_cases(project) if c not in done]
        on_step(f"predicting {len(targets)} cases without human labels")
        predict_cases(project, targets, model_id=model_id, device=device, author=author)
        predicted = [p.case_id for p in project.list_predictions() if p.model_id == model_id]
        stages["predict"] = {"cases": predicted}
        project.record_round_stage(number, "predict", stages["predict"])

    if "evaluate" not in stages:
        model = project.get_model(model_id)
        cases = evaluation_cases(project, model)
        # an interrupted evaluation stored some cases already: score only the rest
        scored = {e.case_id for e in project.list_evaluations(model_id=model_id) if e.round == number}
        remaining = [c for c in cases if c not in scored]
        on_step(f"evaluating on {len(cases)} held-out human-labelled cases")
        if remaining:
            evaluate_model(project, remaining, model_id=model_id, device=device, round_number=number)
        records = [e for e in project.list_evaluations(model_id=model_id) if e.round == number]
        summary = summarize_evaluations(records) if records else {}
        stages["evaluate"] = {"cases": [r.case_id for r in records], "summary": summary}
        project.record_round_stage(number, "evaluate", stages["evaluate"])

    if "rank" not in stages:
        ranked = rank_cases(project, strategy=strategy, count=n_next, author=author)
        queue = project.root / "rounds" / str(number) / "priority.csv"
        write_priority_csv(ranked, queue, overwrite=True)
        on_step(f"ranked the next {len(ranked)} cases to correct ({strategy}): {queue}")
        stages["rank"] = {
            "strategy": strategy,
            "queue": [{"case": r.case_id, "score": r.score, "classes": list(r.classes)} for r in ranked],
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
    finished = project.finish_round(number, summary)
    report = write_report(project)
    project.record_round_stage(number, "report", {"path": str(report.relative_to(project.root))})
    on_step(f"round {number} done; report: {report}")
    project.log_event("round", author, {"round": number, "model": model_id})
    return project.get_round(finished.number)
