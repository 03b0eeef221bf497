"""Use cases of the learning engine: train a model on the project's labels, predict cases.

The engine (`segloop.engine`, torch + MONAI) is imported inside these functions, so the rest of
segloop starts without torch. Training sees each labelled case's effective label (assembly rules)
with *ignore* where nobody annotated; the model row records the config, the label versions and
cases it saw, and its validation metrics. A prediction is stored as a ``pseudo`` label version
plus an uncertainty file (float16 probabilities and entropy) under ``predictions/<model>/``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segloop.core.geometry import axis_of_plane
from segloop.errors import LabelValueError, NotFoundError, SegloopError
from segloop.loop.labels import compute_effective_label
from segloop.loop.tools import read_case_image, store_tool_labels
from segloop.store import ModelRecord, PredictionArrays, PredictionRecord, Project

__all__ = ["axial_slice_axis", "collect_labeled_cases", "finished_model", "predict_cases", "train_project"]

MODES = ("full", "continual")


def collect_labeled_cases(project: Project, *, include_pseudo: bool = False) -> tuple[list[Any], list[int]]:
    """Engine `Case`s of every case with an effective label that is not all *ignore*.

    Args:
        project: the open project.
        include_pseudo: also learn from ``pseudo`` versions (model predictions, or labels imported
            as pseudo such as TotalSegmentator's). Off by default: a loop that trains on its own
            predictions learns its own mistakes; classes decided only by pseudo labels are ignored.

    Returns:
        ``(cases, label_version_ids)``: the cases (image in its stored dtype, image and labels
        compressed in memory: `segloop.engine.data.compress_case`) and the ids of the label
        versions they were assembled from.
    """
    from segloop.engine.data import Case, compress_case

    versions_by_case: dict[str, list] = {}
    for version in project.list_label_versions():
        if include_pseudo or version.source != "pseudo":
            versions_by_case.setdefault(version.case_id, []).append(version)
    cases, seen = [], []
    for case in project.list_cases():
        versions = versions_by_case.get(case.case_id)
        if not versions:
            continue
        assembly = compute_effective_label(project, case, versions)
        if assembly is None or assembly.ignore_mask.all():
            continue
        image = read_case_image(project, case)
        # compressed at once: the raw arrays of all cases never exist together (the memory peak);
        # in axial planes, the ones 2D training reads by default (`axial_slice_axis`)
        engine_case = Case(case.case_id, image.array, assembly.labels, image.spacing)
        cases.append(compress_case(engine_case, axis_of_plane(case.affine, "axial")))
        del image, assembly
        seen.extend(v.id for v in versions)
    return cases, seen


def axial_slice_axis(affines: Sequence[np.ndarray]) -> int:
    """The voxel axis of the axial plane, the most common one over ``affines`` (a project's cases).

    2D networks of a project slice along it unless the config names an axis: a person draws and
    reviews axial slices (the simulated annotator too), and the engine's own default, the axis of
    the largest spacing, is a sagittal plane on grids such as OpenKBP's 3.9 x 3.9 x 2.5 mm.

    Examples:
        >>> axial_slice_axis([np.diag([3.9, 3.9, 2.5, 1.0])])
        2
    """
    return Counter(axis_of_plane(affine, "axial") for affine in affines).most_common(1)[0][0]


def train_project(
    project: Project,
    config: Any,
    *,
    mode: str = "full",
    device: str = "auto",
    init_weights: Path | None = None,
    resume: bool = False,
    include_pseudo: bool = False,
    round_number: int | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    author: str,
) -> ModelRecord:
    """Train a model on every labelled case and record it.

    Args:
        project: the open project.
        config: a `segloop.engine.TrainConfig`; 2D without a ``slice_axis`` slices along the
            axial plane (`axial_slice_axis`).
        mode: ``full`` (fresh weights) or ``continual`` (start from the newest finished model, or
            ``init_weights``, and train on all current labels — the old ones are the replay).
        device: ``auto``, ``cpu`` or ``cuda``.
        init_weights: a local checkpoint to start from (continual training from elsewhere).
        resume: continue the newest interrupted (``running``) training run.
        include_pseudo: also learn from ``pseudo`` versions (see `collect_labeled_cases`).
        round_number: the loop round this model belongs to, if any.
        on_progress: receives the engine's progress dicts.
        author: who started it.

    Raises:
        SegloopError: no labelled case, an unknown mode, nothing to resume.
    """
    from segloop.engine.data import split_cases
    from segloop.engine.train import train

    if mode not in MODES:
        msg = f"unknown training mode {mode!r}: expected one of {', '.join(MODES)}"
        raise SegloopError(msg)
    schema = project.config.schema
    if config.dims == 2 and config.slice_axis is None and project.list_case_ids():
        config = config.replace(slice_axis=axial_slice_axis([c.affine for c in project.list_cases()]))
    if resume:
        record = project.find_latest_model(status="running")
        if record is None:
            msg = "nothing to resume: no interrupted training run in this project"
            raise NotFoundError(msg)
        include_pseudo = bool(record.config.get("include_pseudo", False))
        cases, _ = collect_labeled_cases(project, include_pseudo=include_pseudo)
        by_id = {case.case_id: case for case in cases}
        train_ids, val_ids = list(record.train_case_ids), list(record.val_case_ids)
        parent = project.get_model(record.parent_id) if record.parent_id else None
    else:
        cases, seen = collect_labeled_cases(project, include_pseudo=include_pseudo)
        if not cases:
            msg = (
                "no labelled case to train on: add labels (segloop add --labels-dir, segloop segment ...)"
                + ("" if include_pseudo else "; pseudo labels count only with --include-pseudo")
            )
            raise LabelValueError(msg)
        by_id = {case.case_id: case for case in cases}
        train_ids, val_ids = split_cases(list(by_id), config)
        parent = project.find_latest_model() if mode == "continual" and init_weights is None else None
        if mode == "continual" and parent is None and init_weights is None:
            msg = "continual training needs a finished model or --init-weights; train with --mode full first"
            raise SegloopError(msg)
        record = project.start_model(
            author=author,
            mode=mode,
            parent_id=parent.id if parent else None,
            config={**config.to_dict(), "include_pseudo": include_pseudo},
            label_version_ids=seen,
            train_case_ids=train_ids,
            val_case_ids=val_ids,
            round_number=round_number,
        )
    missing = [case_id for case_id in [*train_ids, *val_ids] if case_id not in by_id]
    if missing:
        msg = f"cases {', '.join(missing)} of the interrupted run have no usable label any more"
        raise SegloopError(msg)
    start_from = init_weights or (project.root / parent.checkpoint if parent else None)
    try:
        result = train(
            config,
            [by_id[i] for i in train_ids],
            [by_id[i] for i in val_ids],
            n_classes=schema.ignore_index,
            device=device,
            checkpoint_path=project.root / record.checkpoint,
            init_weights=start_from,
            resume=resume,
            on_progress=on_progress,
        )
    except KeyboardInterrupt:
        raise  # the run stays `running`: `--resume` continues it
    except Exception:
        project.finish_model(record.id, status="failed", metrics={}, config=record.config)
        raise
    metrics = {
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "best_mean_dice": result.best_metric,
        "dice_per_class": {schema.name_of(k): v for k, v in result.best_dice_per_class.items() if k > 0},
        "stopped_by": result.stopped_by,
        "elapsed_s": result.elapsed_s,
        "samples_per_s": result.samples_per_s,
        "unseen_classes": [schema.name_of(k) for k in result.unseen_classes if k > 0],
    }
    resolved = {**result.config.to_dict(), "include_pseudo": record.config.get("include_pseudo", False)}
    project.finish_model(record.id, status="done", metrics=metrics, config=resolved)
    project.log_event("train", author, {"model": record.id, "mode": mode, "cases": len(train_ids)})
    return project.get_model(record.id)


def finished_model(project: Project, model_id: int | None = None) -> ModelRecord:
    """Model ``model_id`` (default: the newest finished one), which must be done training.

    Raises:
        NotFoundError: no such model, or none finished.
        SegloopError: the model is still running or failed.
    """
    model = project.get_model(model_id) if model_id is not None else project.find_latest_model()
    if model is None:
        msg = "no finished model in this project: run `segloop train` first"
        raise NotFoundError(msg)
    if model.status != "done":
        msg = f"model {model.id} is {model.status}, not done: resume or retrain it"
        raise SegloopError(msg)
    return model


def predict_cases(
    project: Project,
    case_ids: Sequence[str] | None = None,
    *,
    unlabeled: bool = False,
    model_id: int | None = None,
    infer_config: Any = None,
    postprocess: dict[str, Any] | None = None,
    device: str = "auto",
    author: str,
    on_case: Callable[[str], None] | None = None,
) -> list[PredictionRecord]:
    """Predict cases with a model; each becomes a ``pseudo`` version with an uncertainty file.

    Args:
        project: the open project.
        case_ids: cases to predict (default: all, or the unlabelled ones with ``unlabeled``).
        unlabeled: only cases without any label version.
        model_id: the model (default: the newest finished one).
        infer_config: a `segloop.engine.InferConfig` (TTA, MC dropout).
        postprocess: keyword arguments of `segloop.segment.morphology.postprocess_labels`
            (``close_mm``, ``open_mm``, ``keep_largest``, ``fill``), or None.
        device: ``auto``, ``cpu`` or ``cuda``.
        author: recorded on the versions.
        on_case: called with each case id before it is predicted (progress).
    """
    from segloop.engine.infer import load_model, predict

    model = finished_model(project, model_id)
    schema = project.config.schema
    labelled = {v.case_id for v in project.list_label_versions()}
    if case_ids is None:
        case_ids = [c for c in project.list_case_ids() if not unlabeled or c not in labelled]
    cases = [project.get_case(case_id) for case_id in case_ids]
    trained = load_model(project.root / model.checkpoint, device)
    if trained.n_classes != schema.ignore_index:
        msg = f"model {model.id} predicts {trained.n_classes} classes; the schema has {schema.ignore_index}"
        raise SegloopError(msg)
    records = []
    for case in cases:
        if on_case is not None:
            on_case(case.case_id)
        image = read_case_image(project, case)
        prediction = predict(
            trained.network, image.array, image.spacing, trained.config, infer_config, device=trained.device
        )
        labels = prediction.labels
        if postprocess:
            from segloop.segment.morphology import postprocess_labels

            labels = postprocess_labels(labels, spacing_mm=image.spacing, **postprocess)
        params = {
            "model_id": model.id,
            "tta_flips": list(getattr(infer_config, "tta_flips", ())),
            "passes": prediction.passes,
            "postprocess": postprocess or {},
        }
        version = store_tool_labels(
            project,
            case,
            labels.astype(schema.dtype),
            source="pseudo",
            classes=schema.names,
            tool=f"model {model.id}",
            params=params,
            author=author,
            allow_empty=True,
        )
        records.append(
            project.write_prediction(
                case.case_id,
                model.id,
                PredictionArrays(prediction.probabilities, prediction.entropy, prediction.disagreement),
                label_version_id=version.id,
                params=params,
            )
        )
    return records
