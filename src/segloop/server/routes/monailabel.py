"""MONAI Label's REST API over a segloop project, so that 3D Slicer's and OHIF's MONAI Label clients work.

The reference is MONAI Label 0.8's client (``monailabel/client/client.py``) and the calls of its
Slicer module. Every route is thin over `segloop.loop` and the store:

- ``GET /info/``: the schema's classes as ``labels`` (``{name: value}``, ``ignore`` included), each
  finished model as a ``segmentation`` model (``segloop`` = the newest, ``segloop-<id>`` each one),
  the ranking strategies, the one trainer ``segloop`` and the datastore's counts.
- ``GET /datastore/?output=stats|all|train``: the cases as MONAI Label images; label tags: ``final``
  when a person vouches for a label of the case (an ``original`` or ``revised`` version), and
  ``original`` when the case has a model's (``pseudo``) version.
- ``GET /datastore/image?image=ID``: the image as gzip NIfTI on the case's grid (channel 0);
  ``GET /datastore/label?label=ID&tag=T``: ``final`` = the human versions assembled, ``original``
  = the case's effective label (the newest prediction under every human correction).
- ``POST /activelearning/{strategy}``: `segloop.loop.ranking.rank_cases` (recorded as ``served``).
- ``POST /infer/{model}?image=ID``: the model's stored prediction (its ``pseudo`` version), or a
  prediction made now: a ``predict`` job of the server's runner (one already running for the case
  and model is reused; at most `MAX_PREDICT_JOBS` at once), awaited without holding a worker
  thread for at most `PREDICT_WAIT_S` (then 409: still predicting, press Run again).
- ``PUT /datastore/label?image=ID&tag=final``: a ``revised`` version (`segloop.loop.corrections.apply_label`)
  of the label read by `segloop.loop.exchange.monailabel.read_uploaded_label` (Slicer's
  ``label_info``: entry k names the value k).
- ``POST /train/{model}``, ``GET /train/``, ``DELETE /train/``: a training job of the server's runner.
- ``GET /auth/``, ``POST /auth/token``, ``GET /auth/token/valid``: a segloop token as the password.
- image upload (``PUT /datastore/``) and ``/session/``: 501 (segloop labels the project's cases).

Who: the signed-in user; on loopback without a token, the client's ``client_id`` (else the
server's local author). Which version a correction was made from (its parent): MONAI Label's
client does not send it back, so the server remembers the case's head version it served to each
client, keyed as its saves are (`_client_author`): at ``/activelearning`` and ``/infer``, which
carry the client's id, and at label downloads by a signed-in user or with a ``client_id`` query
(an anonymous download names nobody: MONAI Label's client sends no id there, so it is not
recorded). When that client saves, the head it was served is the parent: if someone stored a
version of the case since, the save is refused (409) and nothing is stored. A client that was
never served the case saves on top of the current head.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from segloop.core.provenance import REFERENCE_SOURCES, Source
from segloop.core.volume import Volume
from segloop.errors import ConflictError, InvalidInputError, NotFoundError
from segloop.exchange.monailabel import FINAL_TAG, ORIGINAL_TAG, TAGS
from segloop.loop.corrections import apply_label
from segloop.loop.exchange.monailabel import read_uploaded_label
from segloop.loop.labels import editable_label
from segloop.loop.ranking import STRATEGIES, list_versions_by_case, rank_cases
from segloop.loop.training import find_prediction_job, finished_model, stored_prediction_labels
from segloop.loop.users import authenticate, validate_user_name
from segloop.server.codec import volume_to_nifti_gz
from segloop.server.deps import AppSettings, Author, Jobs, OpenProject
from segloop.server.jobs import MAX_PREDICT_JOBS, TRAINING_KINDS, JobRunner
from segloop.server.problems import problem
from segloop.server.routes.common import find_case, nifti_response, parse_json_object
from segloop.store import CaseRecord, JobRecord, JobStatus, LabelVersionRecord, ModelRecord, Project

__all__ = ["router"]

router = APIRouter(tags=["MONAI Label"])

#: The one trainer: a training job of the project (`segloop.server.jobs.JobRunner`).
TRAINER = "segloop"
#: The newest finished model; ``segloop-<id>`` names each finished model.
NEWEST_MODEL = "segloop"
#: MONAI Label task status of each segloop job status.
TASK_STATUS = {"running": "RUNNING", "done": "DONE", "failed": "ERROR", "cancelled": "STOPPED"}
_MODEL_NAME = re.compile(rf"{NEWEST_MODEL}(?:-(\d{{1,18}}))?")
_JSON_TYPE = "application/json"
#: Longest wait of ``/infer`` for a prediction job (the person waits in the client; then 409).
PREDICT_WAIT_S = 600.0
#: How often ``/infer`` reads the prediction job's row while it waits.
PREDICT_POLL_S = 0.5
#: A JSON object body, as MONAI Label's client posts its params.
_JsonBody = Annotated[dict[str, Any] | None, Body()]
_NO_UPLOAD = (
    "uploading images is not available: segloop labels the project's own cases;"
    " add images with `segloop add <project> <files>`, then they are listed here"
)
_NO_SESSION = (
    "sessions are not available: segloop labels the project's own cases;"
    " add the image with `segloop add <project> <file>` and open it with Next Sample"
)


def _get_route(*paths: str):
    """Register a GET route under each path (``/info/`` and ``/info``: no redirect either way)."""
    return _route_under_paths(["GET"], paths)


def _route_under_paths(methods: list[str], paths: Sequence[str], *, in_schema: bool = True):
    """Register a route under each path; the first is the one in the OpenAPI schema (if ``in_schema``).

    Args:
        methods: the HTTP methods.
        paths: the paths, the one to document first.
        in_schema: whether the first path is in the OpenAPI schema.
    """

    def register(function):
        for index, path in enumerate(paths):
            router.add_api_route(path, function, methods=methods, include_in_schema=in_schema and index == 0)
        return function

    return register


# -- who, and which version they were served -------------------------------------------------------


def _is_anonymous(request: Request) -> bool:
    """Whether the request names nobody: loopback without sign-in and without a token."""
    return not request.app.state.settings.sign_in_required and "authorization" not in request.headers


def _client_author(request: Request, author: str, client_id: Any) -> str:
    """Who a MONAI Label request is from: what its versions and served heads are recorded under.

    Args:
        request: the request.
        author: the request's author (`segloop.server.deps.Author`: the signed-in user, or the
            server's local author).
        client_id: the client's ``client_id`` param, or None.

    Returns:
        The signed-in user, or on anonymous loopback the client's id (a valid user name) if it
        sent one, else ``author``.

    Raises:
        InvalidInputError: a ``client_id`` that is not a valid user name.
    """
    if _is_anonymous(request) and client_id:
        return validate_user_name(client_id)
    return author


class ServedHeads:
    """The head version of each case as last served to each client (a correction's parent).

    MONAI Label's client does not send back which label it was given; the server remembers it.
    Memory only: after a restart, a client saves on top of the case's current head. On anonymous
    loopback the clients name themselves (``client_id``), so the oldest entries past `max_entries`
    are forgotten (those clients then save on top of the current head).

    Args:
        max_entries: the most ``(case, client)`` pairs remembered.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._heads: dict[tuple[str, str], int | None] = {}
        self._lock = threading.Lock()
        self._max_entries = max_entries

    def record(self, case_id: str, who: str, head: int | None) -> None:
        """Remember that ``who`` was served ``case_id`` at version ``head`` (None: no version)."""
        with self._lock:
            self._heads.pop((case_id, who), None)  # re-inserted as the newest
            self._heads[(case_id, who)] = head
            if len(self._heads) > self._max_entries:
                del self._heads[next(iter(self._heads))]

    def parent(self, project: Project, case_id: str, who: str) -> int | None:
        """The head served to ``who``, or the case's current head if none was."""
        with self._lock:
            if (case_id, who) in self._heads:
                return self._heads[(case_id, who)]
        return project.find_head(case_id)


_SERVED_LOCK = threading.Lock()


def _served_heads(request: Request) -> ServedHeads:
    """The app's `ServedHeads` (made on first use)."""
    with _SERVED_LOCK:
        served = getattr(request.app.state, "monailabel_served", None)
        if served is None:
            served = request.app.state.monailabel_served = ServedHeads()
        return served


def _remember_served_head(request: Request, project: Project, case_id: str, client: str) -> None:
    """Remember the case's current head as served to ``client`` (see `_client_author`)."""
    _served_heads(request).record(case_id, client, project.find_head(case_id))


# -- reading the project --------------------------------------------------------------------------


def class_values(project: Project) -> dict[str, int]:
    """``{class name: label value}`` of the schema's classes (what a model's label map holds)."""
    return {c.name: c.index for c in project.config.schema.classes}


def label_values(project: Project) -> dict[str, int]:
    """`class_values` and the ignore value as ``ignore`` (what a person's label map may hold)."""
    return {**class_values(project), "ignore": project.config.schema.ignore_index}


def _final_versions(versions: Sequence[LabelVersionRecord]) -> list[LabelVersionRecord]:
    return [v for v in versions if Source(v.source) in REFERENCE_SOURCES]


def case_tags(versions: Sequence[LabelVersionRecord]) -> list[str]:
    """The MONAI Label tags a case's label versions give it (see `TAGS`)."""
    tags = [FINAL_TAG] if _final_versions(versions) else []
    return [*tags, ORIGINAL_TAG] if any(v.source == Source.PSEUDO for v in versions) else tags


def _tagged_label(project: Project, tag: str, versions: Sequence[LabelVersionRecord]) -> dict[str, Any]:
    """The datastore entry ``{ext, info}`` of a case's ``tag`` label (newest version, sources, names)."""
    chosen = _final_versions(versions) if tag == FINAL_TAG else list(versions)
    newest = chosen[-1]
    return {
        "ext": ".nii.gz",
        "info": {
            "version": newest.id,
            "sources": sorted({v.source for v in chosen}),
            "author": newest.author,
            "ts": int(newest.created_at.timestamp()),
            "params": {"label_names": label_values(project)},
        },
    }


def _image_info(case: CaseRecord) -> dict[str, Any]:
    return {"name": f"{case.case_id}.nii.gz", "shape": list(case.shape), "ts": int(case.added_at.timestamp())}


def datastore_stats(project: Project) -> dict[str, Any]:
    """MONAI Label's datastore summary: ``{total, completed, label_tags: {tag: cases}}``."""
    grouped = list_versions_by_case(project)
    counts: dict[str, int] = {}
    for versions in grouped.values():
        for tag in case_tags(versions):
            counts[tag] = counts.get(tag, 0) + 1
    total = len(project.list_case_ids())
    return {"total": total, "completed": counts.get(FINAL_TAG, 0), "label_tags": counts}


def _datastore_all(project: Project) -> dict[str, Any]:
    grouped = list_versions_by_case(project)
    objects = {}
    for case in project.list_cases():
        versions = grouped.get(case.case_id, [])
        objects[case.case_id] = {
            "image": {"ext": ".nii.gz", "info": _image_info(case)},
            "labels": {tag: _tagged_label(project, tag, versions) for tag in case_tags(versions)},
        }
    return {"name": project.config.name, "description": "a segloop project", "objects": objects}


def _datastore_train(project: Project) -> list[dict[str, str]]:
    return [
        {"image": f"/datastore/image?image={case_id}", "label": f"/datastore/label?label={case_id}&tag=final"}
        for case_id, versions in list_versions_by_case(project).items()
        if _final_versions(versions)
    ]


def finished_models(project: Project) -> list[ModelRecord]:
    """The project's finished models, newest first."""
    return sorted((m for m in project.list_models() if m.status == "done"), key=lambda m: -m.id)


def _model_info(project: Project, model: ModelRecord) -> dict[str, Any]:
    round_text = f", round {model.round}" if model.round is not None else ""
    return {
        "type": "segmentation",
        "labels": class_values(project),
        "dimension": 3,
        "description": f"segloop model {model.id} ({model.mode} training{round_text},"
        f" {len(model.train_case_ids)} cases)",
        "segloop_model": model.id,
    }


def get_model(project: Project, name: str) -> ModelRecord:
    """The finished model a MONAI Label model name means (``segloop`` or ``segloop-<id>``).

    Raises:
        NotFoundError: an unknown name, no finished model, or no such model.
        ConflictError: the model is not finished.
    """
    match = _MODEL_NAME.fullmatch(name)
    if match is None:
        msg = f"unknown model {name[:80]!r}: expected {NEWEST_MODEL} or {NEWEST_MODEL}-<id> (see /info/)"
        raise NotFoundError(msg)
    return finished_model(project, int(match.group(1)) if match.group(1) else None)


def _train_stats(project: Project, jobs: JobRunner) -> dict[str, Any]:
    """MONAI Label's ``train_stats``: the running training's epoch, else the newest model's best Dice."""
    running = jobs.running(TRAINING_KINDS)
    if running and running[0].progress is not None:
        metrics = running[0].progress.metrics
        model = project.find_latest_model(status="running")
        total = (model.config.get("epochs") if model else None) or 1
        epoch = int(metrics.get("epoch") or 0) + 1
        best = metrics.get("best_dice") or 0
        return {TRAINER: {"epoch": epoch, "total_epochs": total, "best_metric": best}}
    models = finished_models(project)
    if not models:
        return {}
    newest = models[0]
    seconds = (newest.finished_at - newest.created_at).total_seconds() if newest.finished_at else 0
    epochs = newest.metrics.get("epochs") or 0
    return {
        TRAINER: {
            "best_metric": newest.metrics.get("best_mean_dice") or 0,
            "epoch": epochs,
            "total_epochs": epochs,
            "total_time": f"{seconds:.0f}s",
        }
    }


# -- responses ------------------------------------------------------------------------------------


def multipart_response(fields: Mapping[str, Any], files: Mapping[str, tuple[str, bytes]]) -> Response:
    """A ``multipart/form-data`` response: JSON ``fields`` and ``files`` (``{field: (file name, bytes)}``).

    MONAI Label's infer answers so; its client keeps parts with a file name as files (by name)
    and the others as form fields.
    """
    boundary = f"segloop-{uuid.uuid4().hex}"
    parts: list[bytes] = []
    for name, value in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\nContent-Type: {_JSON_TYPE}'
        parts.append(f"{head}\r\n\r\n".encode() + json.dumps(value).encode() + b"\r\n")
    for name, (file_name, data) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{file_name}"'
            "\r\nContent-Type: application/gzip"
        )
        parts.append(f"{head}\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return Response(body, media_type=f"multipart/form-data; boundary={boundary}")


def _timestamp(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else None


def task_json(job: JobRecord) -> dict[str, Any]:
    """A segloop job as MONAI Label's task JSON (``id``, ``status``, ``start_ts``, ``details``...)."""
    line = job.error or (job.progress.message if job.progress and job.progress.message else str(job.status))
    progress = None
    if job.progress is not None:
        progress = {"stage": job.progress.stage, "done": job.progress.done, "total": job.progress.total}
    return {
        "id": str(job.id),
        "status": TASK_STATUS.get(str(job.status), str(job.status).upper()),
        "request": job.params,
        "start_ts": _timestamp(job.started_at),
        "end_ts": _timestamp(job.finished_at),
        "result": job.result,
        "details": [line],
        "kind": job.kind,
        "progress": progress,
    }


def _first_line(docstring: str) -> str:
    return docstring.strip().splitlines()[0].replace(" (module docstring)", "")


# -- info -----------------------------------------------------------------------------------------


@_get_route("/info/", "/info")
def info(request: Request, project: OpenProject, jobs: Jobs, _: Author) -> dict[str, Any]:
    """The app: labels, models, strategies, trainers and the datastore's counts (MONAI Label's ``/info/``)."""
    models = finished_models(project)
    described = {f"{NEWEST_MODEL}-{m.id}": _model_info(project, m) for m in models}
    if models:
        described = {NEWEST_MODEL: _model_info(project, models[0]), **described}
    strategies = {
        name: {"description": _first_line(type(strategy).__doc__ or name), "config": {}}
        for name, strategy in STRATEGIES.items()
    }
    strategies["random"]["config"] = {"seed": 0}
    return {
        "name": project.config.name,
        "description": f"segloop project {project.config.name} ({project.config.modality})",
        "version": request.app.version,
        "labels": label_values(project),
        "models": described,
        "trainers": {
            TRAINER: {
                "description": "train a model on every case a person labelled (a segloop training job)",
                "config": {
                    "mode": ["continual", "full"] if models else ["full", "continual"],
                    "include_pseudo": False,
                },
            }
        },
        "strategies": strategies,
        "scoring": {},
        "train_stats": _train_stats(project, jobs),
        "datastore": datastore_stats(project),
    }


# -- datastore ------------------------------------------------------------------------------------


@_get_route("/datastore/", "/datastore")
def datastore(project: OpenProject, _: Author, output: str = "stats") -> Any:
    """The cases and their label tags: ``stats`` (counts), ``all`` (every case) or ``train`` (final pairs)."""
    answers = {"stats": datastore_stats, "all": _datastore_all, "train": _datastore_train}
    if output not in answers:
        msg = f"unknown datastore output {output[:40]!r}: expected one of {', '.join(answers)}"
        raise InvalidInputError(msg)
    return answers[output](project)


@_get_route("/datastore/image")
def download_image(project: OpenProject, _: Author, image: str) -> Response:
    """The case's image (channel 0) as gzip NIfTI on its grid."""
    case = find_case(project, image)
    return nifti_response(volume_to_nifti_gz(project.read_image(case.case_id)), f"{case.case_id}.nii.gz")


@_get_route("/datastore/image/info")
def image_info(project: OpenProject, _: Author, image: str) -> dict[str, Any]:
    """The case's name, shape and the time it was added."""
    return _image_info(find_case(project, image))


def _tag_label(project: Project, case: CaseRecord, tag: str) -> tuple[np.ndarray, list[LabelVersionRecord]]:
    if tag not in TAGS:
        msg = f"unknown label tag {tag[:40]!r}: expected one of {', '.join(TAGS)}"
        raise InvalidInputError(msg)
    versions = project.list_label_versions(case.case_id)
    if tag not in case_tags(versions):
        msg = f"case {case.case_id!r} has no {tag} label"
        raise NotFoundError(msg)
    chosen = _final_versions(versions) if tag == FINAL_TAG else versions
    return editable_label(project, case, chosen)[1], chosen


@_get_route("/datastore/label")
def download_label(
    request: Request,
    project: OpenProject,
    author: Author,
    label: str,
    tag: str = FINAL_TAG,
    client_id: str | None = None,
) -> Response:
    """A case's label: ``final`` (the human versions assembled) or ``original`` (its effective label).

    The case's head is remembered as served to the client (`_client_author`) when the request
    names it: signed in, or with a ``client_id`` query. An anonymous download without one names
    nobody (MONAI Label's client sends none here): nothing is recorded, and the client's saves
    keep the head it was served at Next Sample or Run.
    """
    case = find_case(project, label)
    labels, _versions = _tag_label(project, case, tag)
    if not _is_anonymous(request) or client_id:
        _remember_served_head(request, project, case.case_id, _client_author(request, author, client_id))
    return nifti_response(volume_to_nifti_gz(Volume(labels, case.affine)), f"{case.case_id}.nii.gz")


@_get_route("/datastore/label/info")
def label_info(project: OpenProject, _: Author, label: str, tag: str = FINAL_TAG) -> dict[str, Any]:
    """The newest version behind a case's tagged label, its sources and the label names."""
    case = find_case(project, label)
    _labels, versions = _tag_label(project, case, tag)
    return _tagged_label(project, tag, versions)["info"]


@router.put("/datastore/label")
def save_label(
    request: Request,
    project: OpenProject,
    author: Author,
    image: str,
    label: Annotated[UploadFile, File()],
    tag: str = FINAL_TAG,
    params: Annotated[str, Form()] = "{}",
) -> dict[str, Any]:
    """Store a corrected label (tag ``final``) as a ``revised`` version of the case.

    The label must lie on the case's grid (flipped or permuted axes are put back) and hold
    schema values, or Slicer's segment values named by ``params.label_info`` (entry k names the
    value k: `segloop.loop.exchange.monailabel.read_uploaded_label`); otherwise 422 and nothing
    is stored. It annotates the classes of its segments (every class for a plain label map). Its
    parent is the head version served to this client (409 when the case changed since).
    """
    if tag != FINAL_TAG:
        msg = f"label tag {tag[:40]!r} cannot be saved: expected final (a person's label, stored as revised)"
        raise InvalidInputError(msg)
    case = find_case(project, image)
    options = parse_json_object(params, "params")
    client = _client_author(request, author, options.get("client_id"))
    labels, classes = read_uploaded_label(
        project, case, label.filename, label.file, options.get("label_info")
    )
    served = _served_heads(request)
    result = apply_label(
        project,
        case.case_id,
        labels,
        classes or None,
        parent=served.parent(project, case.case_id, client),
        author=client,
        provenance={"client": "monailabel", "tag": tag, "file": Path(label.filename or "").name[:200]},
    )
    head = project.find_head(case.case_id)
    served.record(case.case_id, client, head)
    version = result.version
    return {
        "image": case.case_id,
        "label": case.case_id,
        "version": version.id if version else None,
        "created": result.created,
        "changed_voxels": result.changed_voxels,
        "classes": list(result.classes),
        "head": head,
        "warnings": list(result.warnings),
    }


@_route_under_paths(["PUT"], ("/datastore/", "/datastore", "/datastore/image"), in_schema=False)
def upload_image() -> JSONResponse:
    """Not available (501): images enter a project with ``segloop add``."""
    return problem(501, _NO_UPLOAD)


# -- active learning ------------------------------------------------------------------------------


@router.post("/activelearning/{strategy}")
def next_sample(
    request: Request,
    project: OpenProject,
    author: Author,
    strategy: str,
    params: _JsonBody = None,
) -> dict[str, Any]:
    """The next case to correct by a ranking strategy (recorded as ``served``); ``{}`` when none is left."""
    params = params or {}
    client = _client_author(request, author, params.get("client_id"))
    seed = params.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        msg = f"seed must be an integer; got {seed!r}"[:120]
        raise InvalidInputError(msg)
    ranked = rank_cases(project, strategy=strategy, count=1, seed=seed, record=True, author=client)
    if not ranked:
        return {}
    first = ranked[0]
    _remember_served_head(request, project, first.case_id, client)
    case = project.get_case(first.case_id)
    return {
        "id": first.case_id,
        **_image_info(case),
        "strategy": strategy,
        "rank": first.rank,
        "score": first.score,
        "classes": list(first.classes),
    }


# -- infer ----------------------------------------------------------------------------------------


_PREDICT_LOCK = threading.Lock()


def _prediction_job(
    project: Project, jobs: JobRunner, case_id: str, model_id: int, client: str
) -> JobRecord | None:
    """The running prediction of the case by the model, else one started now; None once it is stored.

    Raises:
        ConflictError: `MAX_PREDICT_JOBS` predictions run already (the problem's ``jobs`` lists them).
    """
    with _PREDICT_LOCK:  # one check-and-start at a time: two clicks start one job
        if stored_prediction_labels(project, case_id, model_id) is not None:
            return None
        running = jobs.running(("predict",))
        job = find_prediction_job(running, case_id, model_id)
        if job is not None:
            return job
        if len(running) >= MAX_PREDICT_JOBS:
            numbers = ", ".join(str(j.id) for j in running)
            msg = (
                f"too many predictions at once (jobs {numbers} run, at most {MAX_PREDICT_JOBS}):"
                f" case {case_id!r} is not predicted yet; press Run again when one has finished"
            )
            error = ConflictError(msg)
            error.problem_extra = {"jobs": [j.id for j in running]}  # type: ignore[attr-defined]
            raise error
        return jobs.start("predict", {"cases": [case_id], "model": model_id}, author=client)


async def model_labels(
    project: Project, jobs: JobRunner, case: CaseRecord, model: ModelRecord, client: str
) -> np.ndarray:
    """The labels ``model`` gives the case: its stored prediction's, or those of a prediction job.

    The prediction runs as a ``predict`` job of the server's runner (in its own process, listed
    with the other jobs; `_prediction_job`). The request awaits it at most `PREDICT_WAIT_S`,
    reading its row every `PREDICT_POLL_S` in a worker thread and sleeping in between, so that a
    waiting client holds no thread.

    Raises:
        ConflictError: too many predictions run, the job failed or was stopped, or it is still
            running after the wait (the problem's ``job`` names it: press Run again later).
    """
    labels = await run_in_threadpool(stored_prediction_labels, project, case.case_id, model.id)
    if labels is not None:
        return labels
    job = await run_in_threadpool(_prediction_job, project, jobs, case.case_id, model.id, client)
    deadline = time.monotonic() + PREDICT_WAIT_S
    while job is not None and job.status == JobStatus.RUNNING:
        if time.monotonic() >= deadline:
            msg = (
                f"still predicting case {case.case_id!r} with model {model.id} (job {job.id}):"
                " press Run again in a minute"
            )
            error = ConflictError(msg)
            error.problem_extra = {"job": job.id}  # type: ignore[attr-defined]
            raise error
        await asyncio.sleep(PREDICT_POLL_S)
        job = await run_in_threadpool(project.get_job, job.id)
    if job is not None and job.status != JobStatus.DONE:
        msg = f"the prediction of case {case.case_id!r} by model {model.id} (job {job.id}) is {job.status}"
        raise ConflictError(f"{msg}: {job.error}" if job.error else msg)
    labels = await run_in_threadpool(stored_prediction_labels, project, case.case_id, model.id)
    if labels is None:
        msg = f"the prediction of case {case.case_id!r} by model {model.id} is not stored: press Run again"
        raise ConflictError(msg)
    return labels


def _infer_response(
    project: Project, case: CaseRecord, model: ModelRecord, labels: np.ndarray, output: str
) -> Response:
    """``/infer``'s answer: ``json`` params, ``image`` (gzip NIfTI) or ``all`` (multipart of both)."""
    result = {"label_names": class_values(project), "model": model.id, "image": case.case_id}
    if output == "json":
        return JSONResponse(result)
    data = volume_to_nifti_gz(Volume(labels, case.affine))
    name = f"{case.case_id}.nii.gz"
    if output == "image":
        return nifti_response(data, name)
    return multipart_response({"params": result}, {"image": (name, data)})


def _infer_target(
    request: Request, project: Project, author: str, image: str, model: str, params: str
) -> tuple[CaseRecord, ModelRecord, str]:
    """``(case, model, client)`` of an ``/infer`` request (404 / 422 for unknown or bad ones)."""
    options = parse_json_object(params, "params")
    client = _client_author(request, author, options.get("client_id"))
    return find_case(project, image), get_model(project, model), client


@router.post("/infer/{model}")
async def infer(
    request: Request,
    project: OpenProject,
    jobs: Jobs,
    author: Author,
    model: str,
    image: str = "",
    output: str = "all",
    session_id: str | None = None,
    params: Annotated[str, Form()] = "{}",
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    """A model's label of a case (``output``: ``all`` multipart params + file, ``image``, ``json``).

    A ``label`` part (scribbles, clicks) is not used: segloop's models take no clicks. A case
    without a stored prediction is predicted now (`model_labels`: at most `PREDICT_WAIT_S`).
    """
    if session_id or file is not None:
        return problem(501, _NO_SESSION)
    if output not in ("all", "image", "json"):
        msg = f"unknown infer output {output[:40]!r}: expected all, image or json"
        raise InvalidInputError(msg)
    case, chosen, client = await run_in_threadpool(
        _infer_target, request, project, author, image, model, params
    )
    labels = await model_labels(project, jobs, case, chosen, client)
    await run_in_threadpool(_remember_served_head, request, project, case.case_id, client)
    return await run_in_threadpool(_infer_response, project, case, chosen, labels, output)


# -- train ----------------------------------------------------------------------------------------


def _start_training(request: Request, jobs: JobRunner, author: str, params: Any) -> JobRecord:
    """Start a ``train`` job with a MONAI Label request's params (``client_id`` names the author)."""
    params = params or {}
    if not isinstance(params, Mapping):
        msg = f"training params must be a JSON object; got {type(params).__name__}"
        raise InvalidInputError(msg)
    client = _client_author(request, author, params.get("client_id"))
    return jobs.start("train", {k: v for k, v in params.items() if k != "client_id"}, author=client)


@router.post("/train/{model}")
def train_model(
    request: Request, jobs: Jobs, author: Author, model: str, params: _JsonBody = None
) -> dict[str, Any]:
    """Start a training job (trainer ``segloop``); 409 when one is running."""
    if model != TRAINER:
        msg = f"unknown trainer {model[:80]!r}: expected {TRAINER}"
        raise NotFoundError(msg)
    return task_json(_start_training(request, jobs, author, params))


@_route_under_paths(["POST"], ("/train/", "/train"))
def train_all(request: Request, jobs: Jobs, author: Author, params: _JsonBody = None) -> dict[str, Any]:
    """Start every trainer (the one, ``segloop``): ``{trainer: {result, detail}}``."""
    job = _start_training(request, jobs, author, (params or {}).get(TRAINER, params))
    return {TRAINER: {"result": task_json(job), "detail": None}}


@_get_route("/train/", "/train")
def train_status(
    project: OpenProject,
    jobs: Jobs,
    _: Author,
    check_if_running: bool = False,
    every: Annotated[bool, Query(alias="all")] = False,
) -> Any:
    """The running training job, else the newest; 404 when none (``check_if_running``: unless running)."""
    running = jobs.running(TRAINING_KINDS)
    if check_if_running:
        if not running:
            return problem(404, "no training job is running")
        return task_json(running[0])
    finished = sorted((j for k in TRAINING_KINDS for j in project.list_jobs(kind=k)), key=lambda j: j.id)
    if not finished:
        return problem(404, "no training job found: start one with Train")
    if every:
        return [task_json(job) for job in finished]
    return task_json(running[0] if running else finished[-1])


@_route_under_paths(["DELETE"], ("/train/", "/train"))
def train_stop(jobs: Jobs, author: Author) -> dict[str, Any]:
    """Cancel the running training job; ``{}`` when none runs."""
    running = jobs.running(TRAINING_KINDS)
    if not running:
        return {}
    return task_json(jobs.cancel(running[0].id, author=author))


# -- sessions, sign-in ----------------------------------------------------------------------------


@_route_under_paths(
    ["GET", "PUT", "POST", "DELETE"], ("/session/", "/session", "/session/{session_id}"), in_schema=False
)
def session() -> JSONResponse:
    """Not available (501): segloop labels the project's own cases."""
    return problem(501, _NO_SESSION)


@_get_route("/auth/", "/auth")
def auth_enabled(settings: AppSettings) -> dict[str, bool]:
    """Whether clients must sign in (then they send a segloop token as the password)."""
    return {"enabled": settings.sign_in_required}


@_get_route("/auth/token/valid")
def auth_token_valid(author: Author) -> dict[str, str]:
    """200 when the request's token is valid (401 otherwise)."""
    return {"user": author}


@router.post("/auth/token")
def auth_token(
    request: Request,
    project: OpenProject,
    password: Annotated[str, Form()],
    username: Annotated[str, Form()] = "",
) -> Any:
    """The password, a segloop token, as a bearer token (the user name is not checked); 401 if no user's."""
    if authenticate(project, password, getattr(request.app.state, "users", None)) is None:
        return problem(401, "the password is no user's token: enter the token of `segloop user add`")
    return {"access_token": password, "token_type": "Bearer"}
