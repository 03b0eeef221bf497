"""The tools API: the registry, a tool's preview (nothing stored), running it, a class's contours.

Thin over `segloop.loop.tools` (SERVE_API.md, section H3). A tool's parameters come as the
multipart field ``params`` (a JSON object of its request's fields, checked against the request
dataclass: an unknown, missing or mistyped field is a 422 naming the fields expected); its array
comes as the file ``seeds`` (NIfTI gz on the case's grid, schema values), never as JSON voxels —
Threshold's ``seeds`` clicks ``[[i, j, k], ...]`` are the one list of voxels in JSON. With the
file ``base`` (the label the person drew on), only voxels where ``seeds`` differs from it are
seeds. Grow reads the seeds as scribbles (0 unpainted, 1..N classes, N + 1 background);
Interpolate and Fast marching read the voxels of their ``class_name``.

Routes are plain ``def``: FastAPI runs them in its thread pool (tools compute for up to a second).
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from functools import cache
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError

from segloop.errors import ConflictError, InvalidInputError, NotFoundError
from segloop.loop import tools
from segloop.server.codec import volume_to_nifti_gz
from segloop.server.deps import Author, OpenProject
from segloop.server.routes.common import (
    IF_MATCH,
    explained_conflict,
    find_case,
    nifti_response,
    parse_if_match,
    parse_json_object,
    uploaded_labels,
    version_json,
)
from segloop.store import CaseRecord, Project

__all__ = ["router"]

router = APIRouter(tags=["tools"])

#: The upload that fills a tool's one array field (``Grow.seeds``, ``Interpolate.slices``...).
SEEDS_FILE = "seeds"
_PARAMS = Form(description="the tool request's fields as a JSON object (GET /api/tools lists them)")
_SEEDS = File(description="NIfTI gz on the case's grid: the tool's array (scribbles, drawn slices, seeds)")
_BASE = File(description="NIfTI gz on the case's grid: the label drawn on; seeds are where they differ")


# -- the registry ---------------------------------------------------------------------------------


def _field_hints(kind: type) -> dict[str, Any]:
    """The request dataclass's fields and their resolved types."""
    hints = typing.get_type_hints(kind)
    return {field.name: hints[field.name] for field in dataclasses.fields(kind)}


def _array_fields(kind: type) -> list[str]:
    return [name for name, hint in _field_hints(kind).items() if hint is np.ndarray]


def _attribute_docs(kind: type) -> dict[str, str]:
    """``name: text`` entries of the request's ``Attributes:`` docstring section, one line each."""
    section = (kind.__doc__ or "").partition("Attributes:")[2]
    entries = re.findall(r"^ {8}(\w+): (.+(?:\n {12}.+)*)", section, flags=re.MULTILINE)
    return {name: " ".join(part.strip() for part in text.splitlines()) for name, text in entries}


def _json_default(value: Any) -> Any:
    return [_json_default(v) for v in value] if isinstance(value, tuple) else value


def describe_tool(kind: type) -> dict[str, Any]:
    """A request class as JSON: what it does, its fields (type, default, required) and its upload.

    Example:
        >>> describe_tool(tools.Grow)["fields"]["seeds"]["from_file"]
        True
    """
    docs = _attribute_docs(kind)
    arrays = _array_fields(kind)
    fields = {}
    for field in dataclasses.fields(kind):
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        fields[field.name] = {
            "type": str(field.type),
            "required": required,
            "default": None if required else _json_default(field.default),
            "from_file": field.name in arrays,
            "description": docs.get(field.name, ""),
        }
    return {
        "description": (kind.__doc__ or "").strip().splitlines()[0],
        "fields": fields,
        "upload": SEEDS_FILE if len(arrays) == 1 else None,
        "available": len(arrays) <= 1,
    }


@router.get("/api/tools")
def list_tools(author: Author) -> dict[str, Any]:
    """The tools (`segloop.loop.tools.TOOLS`) with their fields; the threshold and post-processing presets."""
    return {
        "tools": {name: describe_tool(kind) for name, kind in tools.TOOLS.items()},
        "threshold_presets": {name: list(bounds) for name, bounds in tools.THRESHOLD_PRESETS_HU.items()},
        "postprocess_presets": tools.POSTPROCESS_PRESETS,
    }


# -- requests from the wire -----------------------------------------------------------------------


@cache
def _adapter(hint: Any) -> TypeAdapter:
    return TypeAdapter(hint)


def _parse_params(name: str, kind: type, text: str) -> dict[str, Any]:
    """The JSON fields of a tool request, checked against its dataclass (arrays excluded)."""
    hints = {k: v for k, v in _field_hints(kind).items() if v is not np.ndarray}
    expected = ", ".join(hints) or "none"
    params = parse_json_object(text, f"params of tool {name!r} (fields {expected})")
    unknown = sorted(set(params) - set(hints))
    if unknown:
        arrays = [field for field in _array_fields(kind) if field in unknown]
        where = f" ({', '.join(arrays)}: send the file {SEEDS_FILE!r})" if arrays else ""
        msg = f"tool {name!r} has no field {', '.join(unknown)}{where}: expected fields {expected}"
        raise InvalidInputError(msg)
    fields = {field.name: field for field in dataclasses.fields(kind)}
    missing = [
        field for field in hints if field not in params and fields[field].default is dataclasses.MISSING
    ]
    if missing:
        msg = f"tool {name!r} needs the fields {', '.join(missing)}: expected fields {expected}"
        raise InvalidInputError(msg)
    values = {}
    for field, value in params.items():
        try:
            values[field] = _adapter(hints[field]).validate_python(value)
        except ValidationError as error:
            shown = json.dumps(value)[:60]
            msg = f"field {field!r} of tool {name!r} must be {fields[field].type}; got {shown}"
            raise InvalidInputError(msg) from error
    return values


def _read_upload(project: Project, case: CaseRecord, upload: UploadFile, what: str) -> np.ndarray:
    return uploaded_labels(project, case, upload.file.read(), what)


def build_request(
    project: Project,
    case: CaseRecord,
    name: str,
    params: str,
    seeds: UploadFile | None,
    base: UploadFile | None,
) -> tools.ToolRequest:
    """The request of tool ``name`` from a multipart form (module docstring); nothing is stored.

    Raises:
        NotFoundError: no tool of that name.
        InvalidInputError: bad fields, a missing or unexpected upload, an upload not on the case's grid.
    """
    kind = tools.TOOLS.get(name)
    if kind is None:
        msg = f"no tool {name!r}: expected one of {', '.join(tools.TOOLS)}"
        raise NotFoundError(msg)
    values = _parse_params(name, kind, params)
    arrays = _array_fields(kind)
    if len(arrays) > 1:
        msg = f"tool {name!r} takes {', '.join(arrays)} arrays, which the API does not accept: use the CLI"
        raise InvalidInputError(msg)
    if not arrays:
        if seeds is not None or base is not None:
            msg = f"tool {name!r} takes no file: expected its fields in params only"
            raise InvalidInputError(msg)
        return kind(**values)
    if seeds is None:
        msg = f"tool {name!r} needs the file {SEEDS_FILE!r}: a NIfTI gz of its {arrays[0]} on the case's grid"
        raise InvalidInputError(msg)
    drawn = _read_upload(project, case, seeds, f"the uploaded {SEEDS_FILE}")
    if base is not None:
        below = _read_upload(project, case, base, "the uploaded base")
        drawn = np.where(drawn != below, drawn, 0)
    if "class_name" in values:  # one class's voxels (as the CLI reads a class from a label file)
        drawn = drawn == project.config.schema.index_of(values["class_name"])
    return kind(**values, **{arrays[0]: drawn})


# -- routes -----------------------------------------------------------------------------------------


@router.post("/api/cases/{case_id}/tools/{name}/preview", response_class=Response)
def preview_tool(
    project: OpenProject,
    author: Author,
    case_id: str,
    name: str,
    params: Annotated[str, _PARAMS] = "{}",
    seeds: Annotated[UploadFile | None, _SEEDS] = None,
    base: Annotated[UploadFile | None, _BASE] = None,
) -> Response:
    """The label the tool would produce (NIfTI gz, schema values, 0 elsewhere); nothing is stored.

    The header ``X-Segloop-Voxels`` counts its labelled voxels.
    """
    case = find_case(project, case_id)
    request = build_request(project, case, name, params, seeds, base)
    labels = tools.preview(project, case.case_id, request)
    voxels = str(int(np.count_nonzero(labels)))
    data = volume_to_nifti_gz(labels, case.affine)
    return nifti_response(data, f"{case.case_id}_{name}.nii.gz", **{"X-Segloop-Voxels": voxels})


@router.post("/api/cases/{case_id}/tools/{name}", status_code=201)
def run_tool(
    project: OpenProject,
    author: Author,
    case_id: str,
    name: str,
    params: Annotated[str, _PARAMS] = "{}",
    seeds: Annotated[UploadFile | None, _SEEDS] = None,
    base: Annotated[UploadFile | None, _BASE] = None,
    if_match: Annotated[str | None, IF_MATCH] = None,
) -> dict[str, Any]:
    """Run the tool and store its versions (``If-Match``: the version drawn on; 409 when stale).

    Returns ``{versions: [version JSON, ...], head}``: a sparse version before the draft made from it.
    """
    case = find_case(project, case_id)
    parent = parse_if_match(if_match)
    request = build_request(project, case, name, params, seeds, base)
    try:
        result = tools.run(project, case.case_id, request, author=author, parent=parent, expected_head=parent)
    except ConflictError as error:
        raise explained_conflict(project, case.case_id, parent, error) from error
    return {
        "versions": [version_json(version) for version in result.versions],
        "head": project.find_head(case.case_id),
    }


@router.get("/api/cases/{case_id}/contours")
def get_contours(
    project: OpenProject,
    author: Author,
    case_id: str,
    class_name: str,
    index: Annotated[int, Query(description="the slice along the axis")],
    axis: Annotated[str, Query(description="axial, coronal, sagittal or a voxel axis 0-2")] = "axial",
    version: Annotated[int | None, Query(description="a label version (default: the current label)")] = None,
    tolerance: Annotated[float, Query(ge=0, le=10, description="control-point tolerance (voxels)")] = 0.5,
) -> dict[str, Any]:
    """The polygon document of one class on one slice (simplified control points), as `Contours` reads it."""
    case = find_case(project, case_id)
    plane: str | int = int(axis) if axis in ("0", "1", "2") else axis
    return tools.class_contours(
        project, case.case_id, class_name, plane, index, version, tolerance_voxels=tolerance
    )
