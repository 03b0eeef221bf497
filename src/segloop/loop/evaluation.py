"""Use case: score a model on cases with human reference labels, and keep the scores per model.

The reference of a case is its effective label assembled from ``original`` and ``revised``
versions only (what a person made or confirmed); classes nobody annotated there are ignored, as
are explicit Ignore voxels. The model predicts each case in memory (nothing is stored but the
scores), so evaluating never adds label versions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from segloop.core.provenance import REFERENCE_SOURCES
from segloop.errors import InvalidInputError, LabelValueError, NotFoundError
from segloop.loop.labels import compute_effective_label
from segloop.loop.tools import read_case_image
from segloop.loop.training import finished_model
from segloop.store import EvaluationRecord, ModelRecord, Project

__all__ = ["evaluate_model", "evaluation_cases", "summarize_evaluations"]

METRICS = ("dice", "hd95_mm", "surface_dice")


def _finite_or_none(value: float) -> float | None:
    """JSON-safe metric: NaN (class absent from both maps) and inf (absent from one) become None."""
    return float(value) if math.isfinite(value) else None


def evaluation_cases(project: Project, model: ModelRecord) -> list[str]:
    """Cases with a human reference label that ``model`` did not train on, in project order."""
    referenced = {v.case_id for v in project.list_label_versions() if v.source in REFERENCE_SOURCES}
    trained = set(model.train_case_ids)
    return [
        case_id for case_id in project.list_case_ids() if case_id in referenced and case_id not in trained
    ]


def evaluate_model(
    project: Project,
    case_ids: Sequence[str] | None = None,
    *,
    model_id: int | None = None,
    device: str = "auto",
    round_number: int | None = None,
    tolerance_mm: float = 2.0,
    on_case: Callable[[str], None] | None = None,
) -> list[EvaluationRecord]:
    """Predict cases with a model and store Dice, HD95 and surface Dice per class and case.

    Args:
        project: the open project.
        case_ids: cases to score (default: `evaluation_cases`).
        model_id: the model (default: the newest finished one).
        device: ``auto``, ``cpu`` or ``cuda``.
        round_number: the loop round this belongs to, if any.
        tolerance_mm: surface Dice tolerance.
        on_case: called with each case id before it is scored (progress).

    Returns:
        One record per case; its ``metrics`` hold ``per_class``: class name -> ``{"dice", "hd95_mm",
        "surface_dice"}`` (None where the class is in neither map, or HD95 where it is in one only),
        and ``mean_entropy``: the prediction's mean normalised voxel entropy (0..1).

    Raises:
        NotFoundError: no finished model, an unknown case, no case to score.
        LabelValueError: a case without a human reference.
        InvalidInputError: a negative or non-finite tolerance.
    """
    from segloop.engine.evaluate import evaluate_labels
    from segloop.engine.infer import load_model, predict

    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        msg = f"the surface Dice tolerance must be a finite number of mm >= 0; got {tolerance_mm}"
        raise InvalidInputError(msg)
    model = finished_model(project, model_id)
    schema = project.config.schema
    case_ids = list(case_ids) if case_ids is not None else evaluation_cases(project, model)
    if not case_ids:
        msg = (
            f"no case to evaluate model {model.id} on: it needs cases with original or revised labels"
            " that it did not train on"
        )
        raise NotFoundError(msg)
    references = {}
    for case_id in case_ids:  # every reference is checked before the (slow) predictions start
        case = project.get_case(case_id)
        versions = [v for v in project.list_label_versions(case_id) if v.source in REFERENCE_SOURCES]
        assembly = compute_effective_label(project, case, versions) if versions else None
        if assembly is None or assembly.ignore_mask.all():
            msg = f"case {case_id} has no original or revised label to evaluate against"
            raise LabelValueError(msg)
        references[case_id] = (case, versions)
    trained = load_model(project.root / model.checkpoint, device)
    records = []
    for case_id, (case, versions) in references.items():
        if on_case is not None:
            on_case(case_id)
        assembly = compute_effective_label(project, case, versions)
        image = read_case_image(project, case)
        prediction = predict(
            trained.network, image.array, image.spacing, trained.config, device=trained.device
        )
        scores = evaluate_labels(
            prediction.labels,
            assembly.labels,
            n_classes=schema.ignore_index,
            spacing=image.spacing,
            tolerance_mm=tolerance_mm,
        )
        metrics = {
            "per_class": {
                schema.name_of(value): {name: _finite_or_none(score[name]) for name in METRICS}
                for value, score in scores.items()
            },
            "mean_entropy": float(np.mean(prediction.entropy, dtype=np.float64)),
        }
        records.append(
            project.add_evaluation(
                case_id,
                model_id=model.id,
                reference_version_ids=[v.id for v in versions],
                metrics=metrics,
                round_number=round_number,
            )
        )
    return records


def summarize_evaluations(records: Sequence[EvaluationRecord]) -> dict[str, dict[str, float | None]]:
    """Mean of each metric per class over cases (cases where a class is absent are skipped).

    Returns:
        ``{class name: {"dice": mean, "hd95_mm": mean, "surface_dice": mean}}`` plus ``"mean"``:
        the mean over classes of those means (None where nothing was scored).

    Examples:
        >>> from types import SimpleNamespace as S
        >>> summary = summarize_evaluations(
        ...     [S(metrics={"per_class": {"a": {"dice": 0.5, "hd95_mm": None, "surface_dice": 1.0}}}),
        ...      S(metrics={"per_class": {"a": {"dice": 1.0, "hd95_mm": 2.0, "surface_dice": None}}})])
        >>> summary["a"]
        {'dice': 0.75, 'hd95_mm': 2.0, 'surface_dice': 1.0}
    """
    values: dict[str, dict[str, list[float]]] = {}
    for record in records:
        for name, scores in record.metrics["per_class"].items():
            for metric in METRICS:
                values.setdefault(name, {}).setdefault(metric, []).append(scores.get(metric))
    summary: dict[str, dict[str, Any]] = {
        name: {metric: _mean(scores) for metric, scores in per.items()} for name, per in values.items()
    }
    summary["mean"] = {metric: _mean([s[metric] for s in summary.values()]) for metric in METRICS}
    return summary


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None
