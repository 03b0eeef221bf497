"""Batch prediction: each case one task (read → predict → write), recorded by the client in batches.

One per-case function, `predict_case`, runs every case whatever the executor: in this process
(``local``, the default) or as a task on a Dask cluster (``dask``: a `distributed.LocalCluster`
on this machine, or any running scheduler). A task needs no database: the client ships it the
image's path and recorded SHA-256 (`CaseTask`), the task re-hashes the file before reading it
(a swapped image is refused, not predicted), predicts, writes the ``pseudo`` label object and the
prediction's arrays content-addressed into the project folder (a filesystem every worker shares)
and returns a small `NewPrediction` (object key, voxel counts, file, mean entropy, params). The
client records those in batches, one write transaction each (`Project.add_predictions`).

Prediction is idempotent per (case, model): a case that has a prediction by the model is skipped
(``again`` predicts it anyway), and the batch's transaction checks again under the write lock, so
a re-run after a killed worker (Dask runs its tasks elsewhere) or a killed client finishes the rest
with no duplicate versions. The checkpoint is read once, shipped to every worker once
(``scatter(broadcast=True)``) and loaded once per worker process (`load_cached_model`).

Dask is imported only here and only for ``executor="dask"``; without it a
`MissingDependencyError` names the ``scale`` extra.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segloop.core.labels import LabelSchema
from segloop.core.volume import Volume
from segloop.errors import (
    ConflictError,
    InvalidInputError,
    MissingDependencyError,
    NotFoundError,
    StoreIntegrityError,
)
from segloop.io import read_volume
from segloop.io.checks import check_scalar_image
from segloop.loop.jobs import JobReporter, ProgressCallback, run_job
from segloop.loop.labels import count_voxels
from segloop.store import CaseRecord, NewLabel, ObjectStore, PredictionArrays, PredictionRecord, Project
from segloop.store.integrity import check_recorded_grid, hash_path, matches_legacy_sha256
from segloop.store.predictions import NewPrediction, write_prediction_file

__all__ = [
    "COMMIT_EVERY",
    "COMMIT_INTERVAL_S",
    "EXECUTORS",
    "BatchPrediction",
    "CaseTask",
    "PredictionPlan",
    "load_cached_model",
    "predict_batch",
    "predict_case",
    "read_task_image",
    "select_prediction_cases",
]

EXECUTORS = ("local", "dask")
#: A batch is recorded when it holds this many results ...
COMMIT_EVERY = 16
#: ... or when its first result waited this long (seconds).
COMMIT_INTERVAL_S = 5.0
#: How long connecting to a running scheduler may take (seconds).
SCHEDULER_TIMEOUT_S = 10


@dataclass(frozen=True)
class CaseTask:
    """What a task needs to predict one case, resolved by the client (no database on a worker).

    Args:
        case_id: the case.
        image_path: its first image channel's file (or DICOM folder), absolute.
        image_sha256: the SHA-256 recorded when the image was added (`segloop.store.integrity.hash_path`).
        shape: the case grid ``(I, J, K)``.
        affine: the case grid's ``(4, 4)`` voxel → RAS mm matrix.
    """

    case_id: str
    image_path: str
    image_sha256: str
    shape: tuple[int, int, int]
    affine: np.ndarray


@dataclass(frozen=True)
class PredictionPlan:
    """What every task of one batch prediction shares (the checkpoint travels apart, once).

    Args:
        root: the project folder, as every worker sees it (a shared filesystem).
        model_id: the model predicting.
        checkpoint_sha256: SHA-256 of the checkpoint's bytes (the workers' cache key).
        schema: the project's label schema.
        infer_config: a `segloop.engine.InferConfig` (TTA, MC dropout), or None for its defaults.
        postprocess: keyword arguments of `segloop.segment.morphology.postprocess_labels`, or None.
        device: ``auto``, ``cpu`` or ``cuda``, resolved on the worker.
        author: recorded on the label versions.
    """

    root: str
    model_id: int
    checkpoint_sha256: str
    schema: LabelSchema
    infer_config: Any
    postprocess: Mapping[str, Any] | None
    device: str
    author: str


@dataclass(frozen=True)
class BatchPrediction:
    """What `predict_batch` did.

    Args:
        model_id: the model that predicted.
        records: the predictions stored, in the order they were recorded.
        skipped: cases left alone because the model had predicted them already (before the run,
            or by another client during it).
    """

    model_id: int
    records: tuple[PredictionRecord, ...]
    skipped: tuple[str, ...]


# -- one case (any process) ---------------------------------------------------------------------

_loaded: dict[str, Any] = {}
_loading = threading.Lock()


def load_cached_model(checkpoint_sha256: str, checkpoint: bytes, device: str) -> Any:
    """The `segloop.engine.infer.TrainedModel` of a checkpoint, loaded once per process and device.

    A worker keeps the newest model only (a cluster predicts with one model at a time).

    Args:
        checkpoint_sha256: SHA-256 (hex) of ``checkpoint``, the cache key.
        checkpoint: the checkpoint file's bytes.
        device: ``auto``, ``cpu`` or ``cuda``.

    Raises:
        StoreIntegrityError: ``checkpoint`` does not hash to ``checkpoint_sha256``.
    """
    key = f"{checkpoint_sha256}:{device}"
    with _loading:
        if key not in _loaded:
            found = hashlib.sha256(checkpoint).hexdigest()
            if found != checkpoint_sha256:
                msg = f"the checkpoint shipped has SHA-256 {found}; expected {checkpoint_sha256}"
                raise StoreIntegrityError(msg)
            from segloop.engine.infer import load_model

            with tempfile.TemporaryDirectory(prefix="segloop-model-") as folder:
                path = Path(folder) / "checkpoint.pt"
                path.write_bytes(checkpoint)
                trained = load_model(path, device)
            _loaded.clear()
            _loaded[key] = trained
        return _loaded[key]


def read_task_image(task: CaseTask) -> Volume:
    """A task's image, verified against the SHA-256 and grid the client shipped (no database; an
    older header-only hash is accepted as `Project.read_image` accepts it, without upgrading it).

    Raises:
        NotFoundError: the file is missing.
        StoreIntegrityError: it changed since it was added (another hash or grid).
        InvalidInputError: it does not hold one real, finite value per voxel.
    """
    path = Path(task.image_path)
    if not path.exists():
        msg = f"image of case {task.case_id!r} is missing: expected {path} (moved or deleted? restore it)"
        raise NotFoundError(msg)
    found, _ = hash_path(path)
    if found != task.image_sha256 and not matches_legacy_sha256(path, task.image_sha256):
        msg = (
            f"image {path} of case {task.case_id!r} changed since it was added: SHA-256 {found},"
            f" recorded {task.image_sha256}; it was not predicted"
        )
        raise StoreIntegrityError(msg)
    volume = read_volume(path)
    check_recorded_grid(volume.spatial_shape, task.shape, path, task.case_id)
    check_scalar_image(volume, f"image of case {task.case_id!r}")
    return volume


def predict_case(task: CaseTask, plan: PredictionPlan, checkpoint: bytes) -> NewPrediction:
    """Predict one case and publish its label object and arrays; the database is not touched.

    Args:
        task: the case (`CaseTask`).
        plan: the batch's shared settings.
        checkpoint: the model's checkpoint bytes (loaded once per process, `load_cached_model`).

    Returns:
        The prediction to record (`Project.add_predictions`): its ``pseudo`` label (object key,
        voxel counts per class) and its arrays' file with their mean entropy.
    """
    from segloop.engine.config import InferConfig, model_tta_flips
    from segloop.engine.infer import predict

    trained = load_cached_model(plan.checkpoint_sha256, checkpoint, plan.device)
    image = read_task_image(task)
    prediction = predict(
        trained.network, image.array, image.spacing, trained.config, plan.infer_config, device=trained.device
    )
    labels = prediction.labels
    if plan.postprocess:
        from segloop.segment.morphology import postprocess_labels

        labels = postprocess_labels(labels, spacing_mm=image.spacing, **plan.postprocess)
    labels = labels.astype(plan.schema.dtype, copy=False)
    params = {
        "model_id": plan.model_id,
        "tta_flips": list(model_tta_flips(trained.config, plan.infer_config or InferConfig())),
        "passes": prediction.passes,
        "postprocess": dict(plan.postprocess or {}),
    }
    root = Path(plan.root)
    with ObjectStore(root / "objects").stage() as staged:
        key = staged.put(labels, task.affine)
    arrays = PredictionArrays(prediction.probabilities, prediction.entropy, prediction.disagreement)
    file = write_prediction_file(root, plan.model_id, task.case_id, task.shape, arrays)
    label = NewLabel(
        key,
        "pseudo",
        plan.schema.names,
        count_voxels(labels, plan.schema),
        plan.author,
        f"model {plan.model_id}",
        params,
    )
    return NewPrediction(task.case_id, label, file, params)


# -- the batch (the client) ---------------------------------------------------------------------


def select_prediction_cases(
    project: Project, case_ids: Sequence[str] | None, *, unlabeled: bool, model_id: int
) -> list[str]:
    """The cases a batch prediction is asked for, in project order (named ones in their order).

    Args:
        case_ids: the named cases, or None for every case.
        unlabeled: only cases with no label version but the predictions of ``model_id`` itself
            (so a re-run after a killed run counts them as skipped, not as labelled).

    Raises:
        InvalidInputError: both ``case_ids`` and ``unlabeled``.
        NotFoundError: an unknown case.
    """
    _check_selection(case_ids, unlabeled=unlabeled)
    if case_ids is not None:
        return [project.get_case(case_id).case_id for case_id in case_ids]
    if not unlabeled:
        return project.list_case_ids()
    own = {p.label_version_id for p in project.list_predictions() if p.model_id == model_id}
    labelled = {v.case_id for v in project.list_label_versions() if v.id not in own}
    return [case_id for case_id in project.list_case_ids() if case_id not in labelled]


def predict_batch(
    project: Project,
    case_ids: Sequence[str] | None = None,
    *,
    unlabeled: bool = False,
    model_id: int | None = None,
    infer_config: Any = None,
    postprocess: Mapping[str, Any] | None = None,
    device: str = "auto",
    author: str,
    again: bool = False,
    executor: str = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    commit_every: int = COMMIT_EVERY,
    on_progress: ProgressCallback | None = None,
) -> BatchPrediction:
    """Predict cases with a model; each becomes a ``pseudo`` version with an uncertainty file.

    Args:
        project: the open project.
        case_ids: cases to predict (default: all, or the unlabelled ones with ``unlabeled``).
        unlabeled: only cases without a label version (but this model's own predictions).
        model_id: the model (default: the newest finished one).
        infer_config: a `segloop.engine.InferConfig` (TTA, MC dropout).
        postprocess: keyword arguments of `segloop.segment.morphology.postprocess_labels`
            (``close_mm``, ``open_mm``, ``keep_largest``, ``fill``), or None.
        device: ``auto``, ``cpu`` or ``cuda`` (on each worker).
        author: recorded on the versions.
        again: also predict cases the model has predicted already (a second version each).
        executor: ``local`` (this process) or ``dask``.
        scheduler: a running Dask scheduler's address (``tcp://host:8786``); default: a
            `distributed.LocalCluster` of ``workers`` processes on this machine.
        workers: the LocalCluster's worker processes (default: this machine's cores).
        commit_every: results recorded per write transaction (also every `COMMIT_INTERVAL_S`).
        on_progress: receives the job's `Progress` events (stage ``predict``, done/total in
            cases, the case in the message).

    Raises:
        NotFoundError: no finished model, an unknown case.
        ConflictError: the model is not finished, or predicts another number of classes.
        InvalidInputError: both ``case_ids`` and ``unlabeled``; an unknown executor; scheduler
            or workers without ``dask``.
        MissingDependencyError: ``dask`` without dask distributed installed.
    """
    from segloop.loop.training import finished_model

    _check_selection(case_ids, unlabeled=unlabeled)
    _check_executor(executor, scheduler, workers, commit_every)
    model = finished_model(project, model_id)
    targets = select_prediction_cases(project, case_ids, unlabeled=unlabeled, model_id=model.id)
    done = set() if again else {p.case_id for p in project.list_predictions() if p.model_id == model.id}
    skipped = [case_id for case_id in targets if case_id in done]
    checkpoint = (project.root / model.checkpoint).read_bytes()
    plan = PredictionPlan(
        str(project.root.resolve()),
        model.id,
        hashlib.sha256(checkpoint).hexdigest(),
        project.config.schema,
        infer_config,
        dict(postprocess) if postprocess else None,
        device,
        author,
    )
    _check_model(plan, checkpoint, device if executor == "local" else "cpu")
    by_id = {case.case_id: case for case in project.list_cases()}
    tasks = [case_task(project, by_id[case_id]) for case_id in targets if case_id not in done]
    params = {"model": model.id, "cases": len(tasks), "skipped": len(skipped), "executor": executor}
    with (
        run_job(project, "predict", author=author, params=params, on_progress=on_progress) as job,
        _executor_results(executor, tasks, plan, checkpoint, scheduler=scheduler, workers=workers) as results,
    ):
        job.report("predict", 0, len(tasks), f"predicting {len(tasks)} cases ({executor})")
        recorder = _BatchRecorder(project, model.id, again=again, commit_every=commit_every)
        _record_results(recorder, results, job, len(tasks))
        job.result = {
            "model": model.id,
            "predictions": [r.id for r in recorder.records],
            "skipped": len(skipped) + len(recorder.dropped),
        }
    return BatchPrediction(model.id, tuple(recorder.records), (*skipped, *recorder.dropped))


def case_task(project: Project, case: CaseRecord) -> CaseTask:
    """The `CaseTask` of a case: its first channel's path and recorded SHA-256, its grid.

    Raises:
        NotFoundError: the case has no image channel 0.
    """
    found = [image for image in case.images if image.channel == 0]
    if not found:
        msg = f"case {case.case_id!r} has no image channel 0: it has {len(case.images)} channel(s)"
        raise NotFoundError(msg)
    path = project.image_path(found[0]).resolve()
    return CaseTask(case.case_id, str(path), found[0].sha256, tuple(case.shape), np.asarray(case.affine))


def _check_selection(case_ids: Sequence[str] | None, *, unlabeled: bool) -> None:
    if unlabeled and case_ids is not None:
        msg = "predict either the named cases or the unlabelled ones; got both"
        raise InvalidInputError(msg)


def _check_executor(executor: str, scheduler: str | None, workers: int | None, commit_every: int) -> None:
    if executor not in EXECUTORS:
        msg = f"unknown executor {executor!r}: expected one of {', '.join(EXECUTORS)}"
        raise InvalidInputError(msg)
    if executor != "dask" and (scheduler is not None or workers is not None):
        msg = f"a scheduler and workers are options of the dask executor; got executor {executor!r}"
        raise InvalidInputError(msg)
    if scheduler is not None and workers is not None:
        msg = "workers sets the LocalCluster's processes; a running scheduler has its own: got both"
        raise InvalidInputError(msg)
    if workers is not None and workers < 1:
        msg = f"workers must be at least 1; got {workers}"
        raise InvalidInputError(msg)
    if commit_every < 1:
        msg = f"commit_every must be at least 1; got {commit_every}"
        raise InvalidInputError(msg)
    if executor == "dask":
        _distributed()


def _check_model(plan: PredictionPlan, checkpoint: bytes, device: str) -> None:
    """Refuse a model that predicts another number of classes than the schema, before any task."""
    trained = load_cached_model(plan.checkpoint_sha256, checkpoint, device)
    if trained.n_classes != plan.schema.ignore_index:
        msg = (
            f"model {plan.model_id} predicts {trained.n_classes} classes;"
            f" the schema has {plan.schema.ignore_index}"
        )
        raise ConflictError(msg)


class _BatchRecorder:
    """Collects results and records them, `commit_every` at a time or after `COMMIT_INTERVAL_S`."""

    def __init__(self, project: Project, model_id: int, *, again: bool, commit_every: int) -> None:
        self.project = project
        self.model_id = model_id
        self.again = again
        self.commit_every = commit_every
        self.records: list[PredictionRecord] = []
        self.dropped: list[str] = []
        self._pending: list[NewPrediction] = []
        self._since = time.monotonic()

    def add(self, result: NewPrediction) -> None:
        if not self._pending:
            self._since = time.monotonic()
        self._pending.append(result)
        waited = time.monotonic() - self._since
        if len(self._pending) >= self.commit_every or waited >= COMMIT_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        items, self._pending = self._pending, []
        if not items:
            return
        stored = self.project.add_predictions(self.model_id, items, again=self.again)
        self.records.extend(stored)
        recorded = {record.case_id for record in stored}
        self.dropped.extend(item.case_id for item in items if item.case_id not in recorded)


def _record_results(
    recorder: _BatchRecorder, results: Iterable[NewPrediction], job: JobReporter, total: int
) -> None:
    """Record results as they come; what finished is recorded even when a later case fails."""
    try:
        for done, result in enumerate(results, start=1):
            job.report("predict", done, total, f"predicted {result.case_id}")
            recorder.add(result)
    finally:
        recorder.flush()


@contextmanager
def _executor_results(
    executor: str,
    tasks: Sequence[CaseTask],
    plan: PredictionPlan,
    checkpoint: bytes,
    *,
    scheduler: str | None,
    workers: int | None,
) -> Iterator[Iterator[NewPrediction]]:
    """The tasks' results as they finish, on ``executor``; the cluster closes with the block."""
    if executor == "local" or not tasks:
        yield (predict_case(task, plan, checkpoint) for task in tasks)
        return
    with _dask_client(scheduler, workers) as (client, as_completed):
        shipped = client.scatter(checkpoint, broadcast=True)
        run = uuid.uuid4().hex[:8]
        futures = [
            client.submit(predict_case, task, plan, shipped, key=f"segloop-predict-{run}-{task.case_id}")
            for task in tasks
        ]
        try:
            yield (future.result() for future in as_completed(futures))
        finally:
            client.cancel(futures)


def _distributed() -> Any:
    """The ``distributed`` module (Dask's), or `MissingDependencyError` naming the ``scale`` extra."""
    try:
        import distributed
    except ImportError as error:
        missing = error.name or error
        msg = f'the dask executor needs the scale extra ({missing} is missing): pip install "segloop[scale]"'
        raise MissingDependencyError(msg) from error
    return distributed


@contextmanager
def _dask_client(scheduler: str | None, workers: int | None) -> Iterator[tuple[Any, Callable[..., Any]]]:
    """A `distributed.Client` of ``scheduler``, or of a LocalCluster of ``workers`` processes."""
    distributed = _distributed()
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout=SCHEDULER_TIMEOUT_S)
        except (OSError, ValueError) as error:
            msg = (
                f"cannot reach the Dask scheduler {scheduler!r} ({str(error).splitlines()[0]}): expected a"
                " running scheduler's address such as tcp://host:8786, or none for a LocalCluster"
            )
            raise NotFoundError(msg) from error
        with client:
            yield client, distributed.as_completed
        return
    cluster = distributed.LocalCluster(
        n_workers=workers or _cores(),
        processes=True,
        threads_per_worker=1,
        dashboard_address=None,
        # one torch/BLAS thread per worker process: N workers on N cores do not oversubscribe
        env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
    )
    with cluster, distributed.Client(cluster) as client:
        yield client, distributed.as_completed


def _cores() -> int:
    """The CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
