"""What several route modules share: the case a URL names, label ETags, version JSON, NIfTI replies.

A label's ETag is its case's head version id (``"none"`` without one); a save sends it back as
``If-Match``, the version the person edited (`segloop.loop.corrections`'s ``parent``).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from fastapi import Header, HTTPException, Response

from segloop.core.names import validate_case_id
from segloop.errors import ConflictError, InvalidInputError
from segloop.loop.review import list_versions_since
from segloop.server.codec import align_to_case_grid, read_nifti_upload
from segloop.store import CaseRecord, LabelVersionRecord, Project

__all__ = [
    "GZIP",
    "IF_MATCH",
    "etag",
    "explained_conflict",
    "find_case",
    "nifti_response",
    "parse_if_match",
    "parse_json_object",
    "uploaded_labels",
    "version_json",
]

GZIP = "application/gzip"

#: The ``If-Match`` header of a storing route.
IF_MATCH = Header(
    alias="If-Match",
    description='the label version the upload was made from: its ETag ("<id>", or "none")',
)


def find_case(project: Project, case_id: str) -> CaseRecord:
    """The case named by a URL: 422 for an unsafe id, 404 for an unknown one."""
    return project.get_case(validate_case_id(case_id))


def etag(head: int | None) -> str:
    """The ETag of a case's label whose head version is ``head``.

    Examples:
        >>> etag(7), etag(None)
        ('"7"', '"none"')
    """
    return f'"{"none" if head is None else head}"'


def parse_if_match(value: str | None) -> int | None:
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


def version_json(version: LabelVersionRecord) -> dict[str, Any]:
    """A label version as JSON: ``{id, source, classes, author, tool, parent, created_at}``."""
    return {
        "id": version.id,
        "source": version.source,
        "classes": list(version.classes),
        "author": version.author,
        "tool": version.tool,
        "parent": version.parent_id,
        "created_at": version.created_at.isoformat(),
    }


def nifti_response(data: bytes, name: str, **headers: str) -> Response:
    """NIfTI gzip bytes as a download named ``name``."""
    disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
    return Response(content=data, media_type=GZIP, headers={**disposition, **headers})


def uploaded_labels(project: Project, case: CaseRecord, body: bytes, what: str) -> np.ndarray:
    """An uploaded label on the case's grid in schema values (nothing stored yet).

    Raises:
        InvalidInputError: not a NIfTI label on the case's grid with the schema's values (its kinds).
    """
    volume = read_nifti_upload(body, what=what)
    labels = align_to_case_grid(volume, case, what=what)
    project.config.schema.check_values(labels, what=what)
    return labels


def explained_conflict(
    project: Project, case_id: str, parent: int | None, error: ConflictError
) -> ConflictError:
    """``error`` carrying the case's head and the versions stored since ``parent`` (problem JSON)."""
    versions = project.list_label_versions(case_id)
    error.problem_extra = {  # type: ignore[attr-defined]
        "head": versions[-1].id if versions else None,
        "versions_since": [version_json(v) for v in list_versions_since(versions, parent)],
    }
    return error


def parse_json_object(text: str | None, what: str) -> dict[str, Any]:
    """A form field holding a JSON object (empty when absent).

    Raises:
        InvalidInputError: not JSON, or JSON of another type.
    """
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        msg = f"{what} is not JSON ({error.msg} at character {error.pos}): expected a JSON object"
        raise InvalidInputError(msg) from None
    except RecursionError:  # "[[[[..." nested deeper than Python's stack: was a 500
        msg = f"{what} nests JSON arrays or objects too deeply: expected a JSON object of fields"
        raise InvalidInputError(msg) from None
    if not isinstance(value, dict):
        msg = f"{what} is a JSON {type(value).__name__}: expected a JSON object"
        raise InvalidInputError(msg)
    return value
