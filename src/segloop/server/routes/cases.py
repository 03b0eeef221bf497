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
from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import BaseModel

from segloop.core.geometry import spacing_from_affine
from segloop.errors import ConflictError, NotFoundError
from segloop.loop.cases import list_case_page
from segloop.loop.corrections import CorrectionResult, apply_label
from segloop.loop.labels import editable_label, prefetch_effective_label
from segloop.loop.review import (
    SliceIndex,
    approve_label,
    most_uncertain_slice,
    serve_next_case,
)
from segloop.server.codec import preview_volume, volume_to_nifti_gz
from segloop.server.deps import AppSettings, Author, OpenProject
from segloop.server.presence import Presence
from segloop.server.routes.common import (
    GZIP,
    IF_MATCH,
    etag,
    explained_conflict,
    find_case,
    nifti_response,
    parse_if_match,
    uploaded_labels,
    version_json,
)
from segloop.store import CaseRecord, Project
from segloop.store.overview import CaseSelection

__all__ = ["router"]

router = APIRouter(tags=["cases"])

_NIFTI_BODY = Body(media_type=GZIP, description="a NIfTI-1 .nii.gz on the case's grid")


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


def _stored(project: Project, result: CorrectionResult, response: Response) -> dict[str, Any]:
    """``{version, created, head}`` of a save; HTTP 200 instead of 201 when it was already stored.

    A new version's label is assembled in the background: the person's next save finds it ready.
    """
    if not result.created:
        response.status_code = 200
    else:
        prefetch_effective_label(project, project.get_case(result.case_id))
    return {
        "version": version_json(result.version) if result.version else None,
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
        "n_cases": project.count_cases(),
        "author": author,
        "sign_in_required": settings.sign_in_required,
    }


#: The largest page of `GET /api/cases`.
MAX_PAGE = 1000
#: The largest offset a page may start at (ids are 32-bit: no project holds more cases; a larger
#: one overflowed PostgreSQL's OFFSET into a server error).
MAX_OFFSET = 2**31 - 1


@router.get("/api/cases")
def list_cases(
    project: OpenProject,
    request: Request,
    author: Author,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=0, le=MAX_PAGE)] = 200,
    sort: Annotated[
        str, Query(max_length=32, description="added, id, versions, rank or uncertainty; -key: descending")
    ] = "added",
    text: Annotated[
        str,
        Query(alias="filter", max_length=256, description="words the case id (or an editor) must contain"),
    ] = "",
) -> dict[str, Any]:
    """A page of cases with their grid, label sources, place in the newest ranking and who edits them.

    ``total`` counts the cases the filter keeps; a page holds at most ``limit`` of them from ``offset``.
    """
    editing = _presence(request).editors()
    words = tuple(text.lower().split())
    also = tuple(
        case_id
        for case_id, names in editing.items()
        if all(w in f"{case_id} {' '.join(names)}".lower() for w in words)
    )
    page = list_case_page(
        project,
        CaseSelection(words=words, also_ids=also if words else ()),
        order=sort.removeprefix("-"),
        descending=sort.startswith("-"),
        offset=offset,
        limit=limit,
    )
    rows = [
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
        for summary, ranked in page.rows
    ]
    return {"cases": rows, "total": page.total, "offset": offset, "limit": limit, "sort": sort}


@router.get("/api/next")
def next_case(
    project: OpenProject,
    request: Request,
    author: Author,
    strategy: Annotated[str, Query(max_length=64)] = "uncertainty",
    refresh: Annotated[
        bool, Query(description="rank the candidates anew (else: the recorded ranking)")
    ] = False,
) -> dict[str, Any]:
    """The case most worth correcting now, logged as served (`segloop.loop.review.serve_next_case`).

    It comes from the newest recorded ranking of ``strategy`` while that is fresh, skipping cases
    corrected since and, while others remain, cases someone else is editing; 404 when none is left.
    """
    others = {case_id for case_id, names in _presence(request).editors().items() if set(names) - {author}}
    top = serve_next_case(project, strategy=strategy, author=author, avoid=others, refresh=refresh)
    if top is None:
        msg = "no case left to correct: every class of every case is decided by a person"
        raise NotFoundError(msg)
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
    case = find_case(project, case_id)
    versions = project.list_label_versions(case.case_id)
    prediction, where = _prediction_json(project, case)
    draft = project.find_draft(case.case_id, author)
    return {
        "id": case.case_id,
        "shape": list(case.shape),
        "spacing": list(spacing_from_affine(case.affine)),
        "affine": np.asarray(case.affine, dtype=float).tolist(),
        "head": versions[-1].id if versions else None,
        "versions": [version_json(v) for v in versions],
        "prediction": prediction,
        "most_uncertain_slice": {"axis": where.axis, "index": where.index} if where else None,
        "draft": {"parent": draft.parent, "updated_at": draft.updated_at.isoformat()} if draft else None,
    }


# -- volumes ------------------------------------------------------------------------------------


@router.get("/api/cases/{case_id}/image.nii.gz", response_class=Response)
def get_image(project: OpenProject, author: Author, case_id: str, preview: bool = False) -> Response:
    """The case's image (first channel); ``preview`` strides it in-plane to at most 128 voxels."""
    case = find_case(project, case_id)
    volume = project.read_image(case.case_id)
    if preview:
        volume = preview_volume(volume)
    suffix = "_preview" if preview else ""
    return nifti_response(volume_to_nifti_gz(volume), f"{case.case_id}_image{suffix}.nii.gz")


@router.get("/api/cases/{case_id}/label.nii.gz", response_class=Response)
def get_label(project: OpenProject, request: Request, author: Author, case_id: str) -> Response:
    """The label to edit (`editable_label`: explicit ignores only); ETag = the head version."""
    case = find_case(project, case_id)
    head, labels = editable_label(project, case)
    schema = project.config.schema
    _presence(request).touch(author, case.case_id)
    return nifti_response(
        volume_to_nifti_gz(labels, case.affine, dtype=schema.dtype),
        f"{case.case_id}_label.nii.gz",
        ETag=etag(head),
        **{"Cache-Control": "no-store"},
    )


@router.get("/api/cases/{case_id}/entropy.nii.gz", response_class=Response)
def get_entropy(project: OpenProject, author: Author, case_id: str) -> Response:
    """The newest prediction's voxel entropy (float32, 0..1); 404 when the case has none."""
    case = find_case(project, case_id)
    entropy = project.read_prediction(case.case_id).entropy
    return nifti_response(
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
    if_match: Annotated[str | None, IF_MATCH] = None,
    classes: Annotated[str | None, Query(max_length=4096, description="class names, comma-separated")] = None,
) -> dict[str, Any]:
    """Store an edited label as a ``revised`` version of ``classes`` (default: all)."""
    case = find_case(project, case_id)
    parent = parse_if_match(if_match)
    labels = uploaded_labels(project, case, body, "uploaded label")
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
        raise explained_conflict(project, case.case_id, parent, error) from None
    return _stored(project, result, response)


@router.post("/api/cases/{case_id}/approve", status_code=201)
def approve(
    project: OpenProject,
    response: Response,
    author: Author,
    case_id: str,
    if_match: Annotated[str | None, IF_MATCH] = None,
    approval: ApproveRequest | None = None,
) -> dict[str, Any]:
    """Store the label as shown (head = ``If-Match``) as the human revision of some classes."""
    case = find_case(project, case_id)
    parent = parse_if_match(if_match)
    names = approval.classes if approval is not None else None
    try:
        result = approve_label(project, case.case_id, names, parent=parent, author=author)
    except ConflictError as error:
        raise explained_conflict(project, case.case_id, parent, error) from None
    return _stored(project, result, response)


# -- drafts (one per case and author) -------------------------------------------------------------


@router.put("/api/cases/{case_id}/draft", status_code=201)
def put_draft(
    project: OpenProject,
    request: Request,
    author: Author,
    case_id: str,
    body: Annotated[bytes, _NIFTI_BODY],
    if_match: Annotated[str | None, IF_MATCH] = None,
) -> dict[str, Any]:
    """Keep the caller's unsaved label of the case (replacing their earlier draft)."""
    case = find_case(project, case_id)
    parent = parse_if_match(if_match)
    labels = uploaded_labels(project, case, body, "uploaded draft")
    draft = project.save_draft(case.case_id, author, labels.astype(project.config.schema.dtype), parent)
    _presence(request).touch(author, case.case_id)
    return {"parent": draft.parent, "updated_at": draft.updated_at.isoformat()}


@router.get("/api/cases/{case_id}/draft", response_class=Response)
def get_draft(project: OpenProject, request: Request, author: Author, case_id: str) -> Response:
    """The caller's draft of the case (header ``X-Segloop-Parent``); 404 when they have none."""
    case = find_case(project, case_id)
    draft = project.find_draft(case.case_id, author)
    if draft is None:
        msg = f"{author} has no draft of case {case.case_id!r}"
        raise NotFoundError(msg)
    labels = project.read_draft(draft)
    _presence(request).touch(author, case.case_id)
    return nifti_response(
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
    case = find_case(project, case_id)
    if not project.delete_draft(case.case_id, author):
        msg = f"{author} has no draft of case {case.case_id!r}"
        raise NotFoundError(msg)
    _presence(request).leave(author, case.case_id)
    return Response(status_code=204)
