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
  prediction made now (a ``predict`` job of the server's runner, awaited).
- ``PUT /datastore/label?image=ID&tag=final``: a ``revised`` version (`segloop.loop.corrections.apply_label`).
- ``POST /train/{model}``, ``GET /train/``, ``DELETE /train/``: a training job of the server's runner.
- ``GET /auth/``, ``POST /auth/token``, ``GET /auth/token/valid``: a segloop token as the password.
- image upload (``PUT /datastore/``) and ``/session/``: 501 (segloop labels the project's cases).

Who: the signed-in user; on loopback without a token, the client's ``client_id`` (else the
server's local author). Which version a correction was made from (its parent): MONAI Label's
client does not send it back, so the server remembers the case's head version it served to each
author (at ``/activelearning`` and ``/infer``, which carry the client's id, and at label
downloads) and checks it when that author saves: if someone stored a version of the case since,
the save is refused (409) and nothing is stored. An author who was never served the case saves on
top of the current head.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from segloop.core.provenance import REFERENCE_SOURCES, Source
from segloop.core.volume import Volume
from segloop.errors import ConflictError, InvalidInputError, NotFoundError, SegloopError, UnknownClassError
from segloop.loop.cases import read_mapped_labels
from segloop.loop.corrections import apply_label
from segloop.loop.labels import editable_label, read_schema_labels
from segloop.loop.ranking import STRATEGIES, list_versions_by_case, rank_cases
from segloop.loop.users import authenticate, validate_user_name
from segloop.server.codec import volume_to_nifti_gz
from segloop.server.deps import AppSettings, Author, Jobs, OpenProject
from segloop.server.jobs import TRAINING_KINDS, JobRunner
from segloop.server.problems import problem
from segloop.server.routes.common import find_case, nifti_response, parse_json_object
from segloop.store import CaseRecord, JobRecord, JobStatus, LabelVersionRecord, ModelRecord, Project

__all__ = ["router"]

router = APIRouter(tags=["MONAI Label"])

#: The one trainer: a training job of the project (`segloop.server.jobs.JobRunner`).
TRAINER = "segloop"
#: The newest finished model; ``segloop-<id>`` names each finished model.
NEWEST_MODEL = "segloop"
#: Label tags: ``final`` (a person vouches for it) and ``original`` (the label segloop would show).
TAGS = ("final", "original")
#: Label files a client may send, by suffix (longest first).
LABEL_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd")
#: MONAI Label task status of each segloop job status.
TASK_STATUS = {"running": "RUNNING", "done": "DONE", "failed": "ERROR", "cancelled": "STOPPED"}
_MODEL_NAME = re.compile(rf"{NEWEST_MODEL}(?:-(\d{{1,18}}))?")
_JSON_TYPE = "application/json"
#: Longest wait of ``/infer`` for a prediction job it started (the person waits in the client).
PREDICT_WAIT_S = 1800.0
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


def _get(*paths: str):
    """Register a GET route under each path (``/info/`` and ``/info``: no redirect either way)."""
    return _route(["GET"], paths)


def _route(methods: list[str], paths: Sequence[str], *, in_schema: bool = True):
    """Register a route under each path; the first is the one in the OpenAPI schema (if ``in_schema``)."""

    def register(function):
        for index, path in enumerate(paths):
            router.add_api_route(path, function, methods=methods, include_in_schema=in_schema and index == 0)
        return function

    return register


# -- who, and which version they were served -------------------------------------------------------


def _who(request: Request, author: str, client_id: Any) -> str:
    """The author: the signed-in user, or on anonymous loopback the client's id (a valid user name)."""
    anonymous = not request.app.state.settings.sign_in_required and "authorization" not in request.headers
    if anonymous and client_id:
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


def _served(request: Request) -> ServedHeads:
    with _SERVED_LOCK:
        served = getattr(request.app.state, "monailabel_served", None)
        if served is None:
            served = request.app.state.monailabel_served = ServedHeads()
        return served


def _record_served(request: Request, project: Project, case_id: str, who: str) -> None:
    _served(request).record(case_id, who, project.find_head(case_id))


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
    tags = ["final"] if _final_versions(versions) else []
    return [*tags, "original"] if any(v.source == Source.PSEUDO for v in versions) else tags


def _label_info(project: Project, tag: str, versions: Sequence[LabelVersionRecord]) -> dict[str, Any]:
    chosen = _final_versions(versions) if tag == "final" else list(versions)
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
    return {"total": len(project.list_case_ids()), "completed": counts.get("final", 0), "label_tags": counts}


def _datastore_all(project: Project) -> dict[str, Any]:
    grouped = list_versions_by_case(project)
    objects = {}
    for case in project.list_cases():
        versions = grouped.get(case.case_id, [])
        objects[case.case_id] = {
            "image": {"ext": ".nii.gz", "info": _image_info(case)},
            "labels": {tag: _label_info(project, tag, versions) for tag in case_tags(versions)},
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
    from segloop.loop.training import finished_model

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


@_get("/info/", "/info")
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


@_get("/datastore/", "/datastore")
def datastore(project: OpenProject, _: Author, output: str = "stats") -> Any:
    """The cases and their label tags: ``stats`` (counts), ``all`` (every case) or ``train`` (final pairs)."""
    answers = {"stats": datastore_stats, "all": _datastore_all, "train": _datastore_train}
    if output not in answers:
        msg = f"unknown datastore output {output[:40]!r}: expected one of {', '.join(answers)}"
        raise InvalidInputError(msg)
    return answers[output](project)


@_get("/datastore/image")
def download_image(project: OpenProject, _: Author, image: str) -> Response:
    """The case's image (channel 0) as gzip NIfTI on its grid."""
    case = find_case(project, image)
    return nifti_response(volume_to_nifti_gz(project.read_image(case.case_id)), f"{case.case_id}.nii.gz")


@_get("/datastore/image/info")
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
    chosen = _final_versions(versions) if tag == "final" else versions
    return editable_label(project, case, chosen)[1], chosen


@_get("/datastore/label")
def download_label(
    request: Request, project: OpenProject, author: Author, label: str, tag: str = "final"
) -> Response:
    """A case's label: ``final`` (the human versions assembled) or ``original`` (its effective label)."""
    case = find_case(project, label)
    labels, _versions = _tag_label(project, case, tag)
    _record_served(request, project, case.case_id, author)
    return nifti_response(volume_to_nifti_gz(Volume(labels, case.affine)), f"{case.case_id}.nii.gz")


@_get("/datastore/label/info")
def label_info(project: OpenProject, _: Author, label: str, tag: str = "final") -> dict[str, Any]:
    """The newest version behind a case's tagged label, its sources and the label names."""
    case = find_case(project, label)
    _labels, versions = _tag_label(project, case, tag)
    return _label_info(project, tag, versions)["info"]


def _label_suffix(file_name: str | None) -> str:
    name = (file_name or "").lower()
    suffix = next((s for s in LABEL_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        msg = f"label file {Path(file_name or '').name[:80]!r}: expected a {', '.join(LABEL_SUFFIXES)} file"
        raise InvalidInputError(msg)
    return suffix


def segment_values(project: Project, label_info: Any) -> dict[int, int] | None:
    """``{file value: schema value}`` of a label map exported by Slicer, from its ``label_info``.

    Slicer's module sends ``label_info = [{"name": segment name, "idx": n}, ...]``, one entry per
    exported segment, and exports segment ``k`` of that list (from 1) with the value ``k``
    (Slicer's ``ExportSegmentsToLabelmapNode`` without a colour table); ``idx`` counts skipped
    segments too, so the order is what names a value. Each name must be a class or ``ignore``.

    Returns:
        The value map, or None without ``label_info`` (then the file holds schema values).

    Raises:
        InvalidInputError: ``label_info`` is not a list of objects with a ``name``.
        UnknownClassError: a segment whose name is not a class.
    """
    if label_info is None:
        return None
    if not isinstance(label_info, list) or not all(
        isinstance(item, dict) and isinstance(item.get("name"), str) for item in label_info
    ):
        msg = "params.label_info must be a list of {name, idx} objects, one per segment (as Slicer sends)"
        raise InvalidInputError(msg)
    known = label_values(project)
    unknown = [item["name"] for item in label_info if item["name"] not in known]
    if unknown:
        msg = (
            f"segment {unknown[0][:60]!r} is not a class of this project: expected {', '.join(known)};"
            " rename or delete it before saving"
        )
        raise UnknownClassError(msg)
    return {position: known[item["name"]] for position, item in enumerate(label_info, start=1)}


def read_uploaded_label(
    project: Project, case: CaseRecord, upload: UploadFile, value_map: Mapping[int, int] | None
) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """An uploaded label file as schema values on the case's grid.

    A ``.seg.nrrd`` is read by segment name (`read_schema_labels`); another file holds schema
    values, or the values of ``value_map`` (`segment_values`).

    Returns:
        ``(labels, names)``: the ``(I, J, K)`` array and, for a ``.seg.nrrd``, its segment names.

    Raises:
        InvalidInputError: another file type, another grid, values or segments outside the schema.
    """
    schema = project.config.schema
    suffix = _label_suffix(upload.filename)
    with tempfile.TemporaryDirectory(prefix="segloop-monailabel-") as folder:
        path = Path(folder) / f"label{suffix}"
        with open(path, "wb") as out:
            shutil.copyfileobj(upload.file, out)
        try:
            if value_map is None or suffix == ".seg.nrrd":
                return read_schema_labels(path, schema, case.shape, case.affine)
            return read_mapped_labels(path, schema, case.shape, case.affine, value_map), None
        except SegloopError as error:  # the message names the upload, not the temporary file
            text = str(error).replace(f"label {path} ", "").replace(f"{path}: ", "").replace(str(path), "it")
            raise type(error)(f"uploaded label of case {case.case_id!r}: {text}") from None


@router.put("/datastore/label")
def save_label(
    request: Request,
    project: OpenProject,
    author: Author,
    image: str,
    label: Annotated[UploadFile, File()],
    tag: str = "final",
    params: Annotated[str, Form()] = "{}",
) -> dict[str, Any]:
    """Store a corrected label (tag ``final``) as a ``revised`` version of the case.

    The label must lie on the case's grid (flipped or permuted axes are put back) and hold
    schema values, or Slicer's segment values named by ``params.label_info`` (`segment_values`);
    otherwise 422 and nothing is stored. It annotates the classes of its segments (every class
    for a plain label map). Its parent is the head version served to this author (409 when the
    case changed since).
    """
    if tag != "final":
        msg = f"label tag {tag[:40]!r} cannot be saved: expected final (a person's label, stored as revised)"
        raise InvalidInputError(msg)
    case = find_case(project, image)
    options = parse_json_object(params, "params")
    who = _who(request, author, options.get("client_id"))
    value_map = segment_values(project, options.get("label_info"))
    labels, names = read_uploaded_label(project, case, label, value_map)
    if names is None and value_map is not None:
        names = [item["name"] for item in options["label_info"]]
    classes = tuple(name for name in names or () if name != "ignore")
    served = _served(request)
    result = apply_label(
        project,
        case.case_id,
        labels,
        classes or None,
        parent=served.parent(project, case.case_id, who),
        author=who,
        provenance={"client": "monailabel", "tag": tag, "file": Path(label.filename or "").name[:200]},
    )
    head = project.find_head(case.case_id)
    served.record(case.case_id, who, head)
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


@_route(["PUT"], ("/datastore/", "/datastore", "/datastore/image"), in_schema=False)
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
    who = _who(request, author, params.get("client_id"))
    seed = params.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        msg = f"seed must be an integer; got {seed!r}"[:120]
        raise InvalidInputError(msg)
    ranked = rank_cases(project, strategy=strategy, count=1, seed=seed, record=True, author=who)
    if not ranked:
        return {}
    first = ranked[0]
    _record_served(request, project, first.case_id, who)
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


def model_labels(
    project: Project, jobs: JobRunner, case: CaseRecord, model: ModelRecord, author: str
) -> np.ndarray:
    """The labels ``model`` gives the case: its stored prediction's, or those of a prediction job run now.

    The prediction runs as a ``predict`` job of the server's runner (in its own process, listed
    with the other jobs); the request waits for it, at most `PREDICT_WAIT_S`.

    Raises:
        ConflictError: the prediction job failed, was stopped, or is still running after the wait.
    """
    stored = [p for p in project.list_predictions(case.case_id) if p.model_id == model.id]
    if not stored:
        job = jobs.start("predict", {"cases": [case.case_id], "model": model.id}, author=author)
        deadline = time.monotonic() + PREDICT_WAIT_S
        while job.status == JobStatus.RUNNING and time.monotonic() < deadline:
            time.sleep(0.2)
            job = project.get_job(job.id)
        if job.status != JobStatus.DONE:
            msg = (
                f"the prediction of case {case.case_id!r} by model {model.id} (job {job.id}) is {job.status}"
            )
            raise ConflictError(f"{msg}: {job.error}" if job.error else msg)
        stored = [p for p in project.list_predictions(case.case_id) if p.model_id == model.id]
    version = project.get_label_version(stored[-1].label_version_id)
    return project.read_labels(version)


@router.post("/infer/{model}")
def infer(
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

    A ``label`` part (scribbles, clicks) is not used: segloop's models take no clicks.
    """
    if session_id or file is not None:
        return problem(501, _NO_SESSION)
    if output not in ("all", "image", "json"):
        msg = f"unknown infer output {output[:40]!r}: expected all, image or json"
        raise InvalidInputError(msg)
    options = parse_json_object(params, "params")
    who = _who(request, author, options.get("client_id"))
    case = find_case(project, image)
    chosen = get_model(project, model)
    labels = model_labels(project, jobs, case, chosen, who)
    _record_served(request, project, case.case_id, who)
    result = {
        "label_names": class_values(project),
        "model": chosen.id,
        "image": case.case_id,
    }
    if output == "json":
        return JSONResponse(result)
    volume = Volume(labels, case.affine)
    name = f"{case.case_id}.nii.gz"
    if output == "image":
        return nifti_response(volume_to_nifti_gz(volume), name)
    return multipart_response({"params": result}, {"image": (name, volume_to_nifti_gz(volume))})


# -- train ----------------------------------------------------------------------------------------


def _start_training(request: Request, jobs: JobRunner, author: str, params: Any) -> JobRecord:
    """Start a ``train`` job with a MONAI Label request's params (``client_id`` names the author)."""
    params = params or {}
    if not isinstance(params, Mapping):
        msg = f"training params must be a JSON object; got {type(params).__name__}"
        raise InvalidInputError(msg)
    who = _who(request, author, params.get("client_id"))
    return jobs.start("train", {k: v for k, v in params.items() if k != "client_id"}, author=who)


@router.post("/train/{model}")
def train_model(
    request: Request, jobs: Jobs, author: Author, model: str, params: _JsonBody = None
) -> dict[str, Any]:
    """Start a training job (trainer ``segloop``); 409 when one is running."""
    if model != TRAINER:
        msg = f"unknown trainer {model[:80]!r}: expected {TRAINER}"
        raise NotFoundError(msg)
    return task_json(_start_training(request, jobs, author, params))


@_route(["POST"], ("/train/", "/train"))
def train_all(request: Request, jobs: Jobs, author: Author, params: _JsonBody = None) -> dict[str, Any]:
    """Start every trainer (the one, ``segloop``): ``{trainer: {result, detail}}``."""
    job = _start_training(request, jobs, author, (params or {}).get(TRAINER, params))
    return {TRAINER: {"result": task_json(job), "detail": None}}


@_get("/train/", "/train")
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


@_route(["DELETE"], ("/train/", "/train"))
def train_stop(jobs: Jobs, author: Author) -> dict[str, Any]:
    """Cancel the running training job; ``{}`` when none runs."""
    running = jobs.running(TRAINING_KINDS)
    if not running:
        return {}
    return task_json(jobs.cancel(running[0].id, author=author))


# -- sessions, sign-in ----------------------------------------------------------------------------


@_route(["GET", "PUT", "POST", "DELETE"], ("/session/", "/session", "/session/{session_id}"), in_schema=False)
def session() -> JSONResponse:
    """Not available (501): segloop labels the project's own cases."""
    return problem(501, _NO_SESSION)


@_get("/auth/", "/auth")
def auth_enabled(settings: AppSettings) -> dict[str, bool]:
    """Whether clients must sign in (then they send a segloop token as the password)."""
    return {"enabled": settings.sign_in_required}


@_get("/auth/token/valid")
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
