"""The cases API: the project, its cases, their images, labels, drafts, and saving a corrected label.

Thin over `segloop.loop` and `segloop.store.Project` (SERVE_API.md, section H2). Volumes travel
as NIfTI-1 gzip bytes on the case's grid (`segloop.server.codec`); everything else is JSON. A
label's ETag is the case's head version id; a save sends it back as ``If-Match`` (the version the
person edited): without it the answer is 428, with a stale one 409 listing what was stored since.
Routes are plain ``def``: FastAPI runs them in its thread pool (they read files and the database).
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Body, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel

from segloop.core.geometry import spacing_from_affine
from segloop.core.names import validate_case_id
from segloop.errors import ConflictError, InvalidInputError, NotFoundError
from segloop.loop.cases import summarize_cases
from segloop.loop.corrections import CorrectionResult, apply_label
from segloop.loop.labels import editable_label, prefetch_effective_label
from segloop.loop.ranking import rank_cases
from segloop.loop.review import (
    SliceIndex,
    approve_label,
    list_versions_since,
    most_uncertain_slice,
    read_latest_ranking,
)
from segloop.server.codec import align_to_case_grid, preview_volume, read_nifti_upload, volume_to_nifti_gz
from segloop.server.deps import AppSettings, Author, OpenProject
from segloop.server.presence import Presence
from segloop.store import CaseRecord, LabelVersionRecord, Project

__all__ = ["router"]

router = APIRouter(tags=["cases"])

_GZIP = "application/gzip"
_NIFTI_BODY = Body(media_type=_GZIP, description="a NIfTI-1 .nii.gz on the case's grid")
_IF_MATCH = Header(
    alias="If-Match",
    description='the label version the upload was made from: its ETag ("<id>", or "none")',
)


class ApproveRequest(BaseModel):
    """The classes a person approves (default: every class the shown label holds)."""

    classes: list[str] | None = None


# -- helpers ------------------------------------------------------------------------------------

_PRESENCE_LOCK = threading.Lock()


def _presence(request: Request) -> Presence:
    """The app's `Presence`, made on first use."""
    state = request.app.state
    with _PRESENCE_LOCK:
        if getattr(state, "presence", None) is None:
            state.presence = Presence()
    return state.presence


def _case(project: Project, case_id: str) -> CaseRecord:
    """The case named by a URL: 422 for an unsafe id, 404 for an unknown one."""
    return project.get_case(validate_case_id(case_id))


def _etag(head: int | None) -> str:
    return f'"{"none" if head is None else head}"'


def _parse_if_match(value: str | None) -> int | None:
    """The version id an ``If-Match`` header names (None for ``"none"``).

    Raises:
        HTTPException: 428, no header.
        InvalidInputError: not an ETag this API sent.
    """
    if value is None or not value.strip():
        msg = 'send the version you edited: an If-Match header with the label\'s ETag ("<id>" or "none")'
        raise HTTPException(428, msg)
    tag = value.strip().removeprefix("W/").strip('"')
    if tag == "none":
        return None
    if not tag.isdigit() or len(tag) > 18:
        msg = f'If-Match {value[:40]!r} is not a label ETag: expected "<version id>" or "none"'
        raise InvalidInputError(msg)
    return int(tag)


def _version_json(version: LabelVersionRecord) -> dict[str, Any]:
    return {
        "id": version.id,
        "source": version.source,
        "classes": list(version.classes),
        "author": version.author,
        "tool": version.tool,
        "parent": version.parent_id,
        "created_at": version.created_at.isoformat(),
    }


def _nifti_response(data: bytes, name: str, **headers: str) -> Response:
    disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
    return Response(content=data, media_type=_GZIP, headers={**disposition, **headers})


def _uploaded_labels(project: Project, case: CaseRecord, body: bytes, what: str) -> np.ndarray:
    """An uploaded label on the case's grid in schema values (nothing stored yet)."""
    volume = read_nifti_upload(body, what=what)
    labels = align_to_case_grid(volume, case, what=what)
    project.config.schema.check_values(labels, what=what)
    return labels


def _explained_conflict(
    project: Project, case_id: str, parent: int | None, error: ConflictError
) -> ConflictError:
    """``error`` carrying the case's head and the versions stored since ``parent`` (problem JSON)."""
    versions = project.list_label_versions(case_id)
    error.problem_extra = {  # type: ignore[attr-defined]
        "head": versions[-1].id if versions else None,
        "versions_since": [_version_json(v) for v in list_versions_since(versions, parent)],
    }
    return error


def _stored(project: Project, result: CorrectionResult, response: Response) -> dict[str, Any]:
    """``{version, created, head}`` of a save; HTTP 200 instead of 201 when it was already stored.

    A new version's label is assembled in the background: the person's next save finds it ready.
    """
    if not result.created:
        response.status_code = 200
    else:
        prefetch_effective_label(project, project.get_case(result.case_id))
    return {
        "version": _version_json(result.version) if result.version else None,
        "created": result.created,
        "head": project.find_head(result.case_id),
    }


def _parse_classes(classes: str | None) -> tuple[str, ...] | None:
    names = tuple(name.strip() for name in (classes or "").split(",") if name.strip())
    return names or None


# -- uncertainty of a prediction, computed once per stored prediction ---------------------------

_SLICE_CACHE: dict[tuple[str, int], SliceIndex | None] = {}
_SLICE_CACHE_LOCK = threading.Lock()
_SLICE_CACHE_SIZE = 256


def _prediction_json(project: Project, case: CaseRecord) -> tuple[dict[str, Any] | None, SliceIndex | None]:
    records = project.list_predictions(case.case_id)
    if not records:
        return None, None
    newest = records[-1]
    key = (str(project.root), newest.id)
    with _SLICE_CACHE_LOCK:
        cached = key in _SLICE_CACHE
        found = _SLICE_CACHE.get(key)
    if not cached:
        entropy = project.read_prediction(case.case_id, newest.model_id).entropy
        found = most_uncertain_slice(entropy, case.affine)
        with _SLICE_CACHE_LOCK:
            if len(_SLICE_CACHE) >= _SLICE_CACHE_SIZE:
                _SLICE_CACHE.pop(next(iter(_SLICE_CACHE)))
            _SLICE_CACHE[key] = found
    return {"model_id": newest.model_id, "created_at": newest.created_at.isoformat()}, found


# -- the project and its cases --------------------------------------------------------------------


@router.get("/api/project")
def get_project(project: OpenProject, settings: AppSettings, author: Author) -> dict[str, Any]:
    """The project: name, modality, display window, classes and who is asking."""
    schema = project.config.schema
    window = project.config.defaults.get("window")
    return {
        "name": project.config.name,
        "modality": project.config.modality,
        "window": [float(window[0]), float(window[1])] if window else None,
        "classes": [{"value": c.index, "name": c.name, "color": list(c.color)} for c in schema.classes],
        "ignore_value": schema.ignore_index,
        "n_cases": len(project.list_case_ids()),
        "author": author,
        "sign_in_required": settings.sign_in_required,
    }


@router.get("/api/cases")
def list_cases(project: OpenProject, request: Request, author: Author) -> dict[str, Any]:
    """Every case with its grid, label sources, place in the newest ranking and who edits it."""
    ranking = read_latest_ranking(project)
    editing = _presence(request).editors()
    rows = []
    for summary in summarize_cases(project):
        ranked = ranking.get(summary.case_id)
        rows.append(
            {
                "id": summary.case_id,
                "shape": list(summary.shape),
                "spacing": list(summary.spacing),
                "n_versions": summary.n_versions,
                "sources": summary.class_sources,
                "rank": ranked.rank if ranked else None,
                "uncertainty": ranked.score if ranked else None,
                "editing": editing.get(summary.case_id, []),
            }
        )
    return {"cases": rows}


@router.get("/api/next")
def next_case(
    project: OpenProject,
    author: Author,
    strategy: Annotated[str, Query(max_length=64)] = "uncertainty",
) -> dict[str, Any]:
    """The case most worth correcting now, recorded as served (like ``segloop next``); 404 when none."""
    ranked = rank_cases(project, strategy=strategy, count=1, record=True, author=author)
    if not ranked:
        msg = "no case left to correct: every class of every case is decided by a person"
        raise NotFoundError(msg)
    top = ranked[0]
    return {
        "case_id": top.case_id,
        "classes": list(top.classes),
        "rank": top.rank,
        "score": top.score,
        "strategy": strategy,
    }


@router.get("/api/cases/{case_id}")
def get_case(project: OpenProject, author: Author, case_id: str) -> dict[str, Any]:
    """A case: grid, label versions, head, newest prediction, where to look first, the caller's draft."""
    case = _case(project, case_id)
    versions = project.list_label_versions(case.case_id)
    prediction, where = _prediction_json(project, case)
    draft = project.find_draft(case.case_id, author)
    return {
        "id": case.case_id,
        "shape": list(case.shape),
        "spacing": list(spacing_from_affine(case.affine)),
        "affine": np.asarray(case.affine, dtype=float).tolist(),
        "head": versions[-1].id if versions else None,
        "versions": [_version_json(v) for v in versions],
        "prediction": prediction,
        "most_uncertain_slice": {"axis": where.axis, "index": where.index} if where else None,
        "draft": {"parent": draft.parent, "updated_at": draft.updated_at.isoformat()} if draft else None,
    }


# -- volumes ------------------------------------------------------------------------------------


@router.get("/api/cases/{case_id}/image.nii.gz", response_class=Response)
def get_image(project: OpenProject, author: Author, case_id: str, preview: bool = False) -> Response:
    """The case's image (first channel); ``preview`` strides it in-plane to at most 128 voxels."""
    case = _case(project, case_id)
    volume = project.read_image(case.case_id)
    if preview:
        volume = preview_volume(volume)
    suffix = "_preview" if preview else ""
    return _nifti_response(volume_to_nifti_gz(volume), f"{case.case_id}_image{suffix}.nii.gz")


@router.get("/api/cases/{case_id}/label.nii.gz", response_class=Response)
def get_label(project: OpenProject, request: Request, author: Author, case_id: str) -> Response:
    """The label to edit (`editable_label`: explicit ignores only); ETag = the head version."""
    case = _case(project, case_id)
    head, labels = editable_label(project, case)
    schema = project.config.schema
    _presence(request).touch(author, case.case_id)
    return _nifti_response(
        volume_to_nifti_gz(labels, case.affine, dtype=schema.dtype),
        f"{case.case_id}_label.nii.gz",
        ETag=_etag(head),
        **{"Cache-Control": "no-store"},
    )


@router.get("/api/cases/{case_id}/entropy.nii.gz", response_class=Response)
def get_entropy(project: OpenProject, author: Author, case_id: str) -> Response:
    """The newest prediction's voxel entropy (float32, 0..1); 404 when the case has none."""
    case = _case(project, case_id)
    entropy = project.read_prediction(case.case_id).entropy
    return _nifti_response(
        volume_to_nifti_gz(entropy, case.affine, dtype=np.float32),
        f"{case.case_id}_entropy.nii.gz",
        **{"Cache-Control": "no-store"},
    )


# -- saving -------------------------------------------------------------------------------------


@router.put("/api/cases/{case_id}/label", status_code=201)
def put_label(
    project: OpenProject,
    response: Response,
    author: Author,
    case_id: str,
    body: Annotated[bytes, _NIFTI_BODY],
    if_match: Annotated[str | None, _IF_MATCH] = None,
    classes: Annotated[str | None, Query(max_length=4096, description="class names, comma-separated")] = None,
) -> dict[str, Any]:
    """Store an edited label as a ``revised`` version of ``classes`` (default: all)."""
    case = _case(project, case_id)
    parent = _parse_if_match(if_match)
    labels = _uploaded_labels(project, case, body, "uploaded label")
    try:
        result = apply_label(
            project,
            case.case_id,
            labels,
            _parse_classes(classes),
            parent=parent,
            author=author,
            provenance={"via": "editor"},
        )
    except ConflictError as error:
        raise _explained_conflict(project, case.case_id, parent, error) from None
    return _stored(project, result, response)


@router.post("/api/cases/{case_id}/approve", status_code=201)
def approve(
    project: OpenProject,
    response: Response,
    author: Author,
    case_id: str,
    if_match: Annotated[str | None, _IF_MATCH] = None,
    approval: ApproveRequest | None = None,
) -> dict[str, Any]:
    """Store the label as shown (head = ``If-Match``) as the human revision of some classes."""
    case = _case(project, case_id)
    parent = _parse_if_match(if_match)
    names = approval.classes if approval is not None else None
    try:
        result = approve_label(project, case.case_id, names, parent=parent, author=author)
    except ConflictError as error:
        raise _explained_conflict(project, case.case_id, parent, error) from None
    return _stored(project, result, response)


# -- drafts (one per case and author) -------------------------------------------------------------


@router.put("/api/cases/{case_id}/draft", status_code=201)
def put_draft(
    project: OpenProject,
    request: Request,
    author: Author,
    case_id: str,
    body: Annotated[bytes, _NIFTI_BODY],
    if_match: Annotated[str | None, _IF_MATCH] = None,
) -> dict[str, Any]:
    """Keep the caller's unsaved label of the case (replacing their earlier draft)."""
    case = _case(project, case_id)
    parent = _parse_if_match(if_match)
    labels = _uploaded_labels(project, case, body, "uploaded draft")
    draft = project.save_draft(case.case_id, author, labels.astype(project.config.schema.dtype), parent)
    _presence(request).touch(author, case.case_id)
    return {"parent": draft.parent, "updated_at": draft.updated_at.isoformat()}


@router.get("/api/cases/{case_id}/draft", response_class=Response)
def get_draft(project: OpenProject, request: Request, author: Author, case_id: str) -> Response:
    """The caller's draft of the case (header ``X-Segloop-Parent``); 404 when they have none."""
    case = _case(project, case_id)
    draft = project.find_draft(case.case_id, author)
    if draft is None:
        msg = f"{author} has no draft of case {case.case_id!r}"
        raise NotFoundError(msg)
    labels = project.read_draft(draft)
    _presence(request).touch(author, case.case_id)
    return _nifti_response(
        volume_to_nifti_gz(labels, case.affine, dtype=project.config.schema.dtype),
        f"{case.case_id}_draft.nii.gz",
        **{
            "X-Segloop-Parent": "none" if draft.parent is None else str(draft.parent),
            "Cache-Control": "no-store",
        },
    )


@router.delete("/api/cases/{case_id}/draft", status_code=204, response_class=Response)
def delete_draft(project: OpenProject, request: Request, author: Author, case_id: str) -> Response:
    """Discard the caller's draft of the case; 404 when they have none."""
    case = _case(project, case_id)
    if not project.delete_draft(case.case_id, author):
        msg = f"{author} has no draft of case {case.case_id!r}"
        raise NotFoundError(msg)
    _presence(request).leave(author, case.case_id)
    return Response(status_code=204)
