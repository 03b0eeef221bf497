"""The error taxonomy as problem JSON (RFC 9457): one status per kind, the message as ``detail``.

`segloop.errors` kinds map to 404 / 409 / 422 (413 for `TooLargeError`) / 500 / 501; a request
FastAPI itself cannot parse is a 422 of the same shape. The message is the error's first line:
what was expected and what came, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from segloop.errors import (
    ConflictError,
    InvalidInputError,
    MissingDependencyError,
    NotFoundError,
    SegloopError,
    StoreIntegrityError,
    TooLargeError,
)

__all__ = ["PROBLEM_TYPE", "hide_project_path", "install_problem_handlers", "problem", "status_of"]

PROBLEM_TYPE = "application/problem+json"

# most specific first: TooLargeError is an InvalidInputError
_STATUS: tuple[tuple[type[SegloopError], int], ...] = (
    (TooLargeError, 413),
    (NotFoundError, 404),
    (ConflictError, 409),
    (InvalidInputError, 422),
    (StoreIntegrityError, 500),
    (MissingDependencyError, 501),
)

_TITLES = {
    400: "Bad request",
    401: "Sign-in required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Too large",
    415: "Unsupported media type",
    422: "Invalid input",
    428: "Precondition required",
    500: "Project damaged",
    501: "Not available",
}


def status_of(error: SegloopError) -> int:
    """The HTTP status of an error kind (422 for a kind not listed)."""
    return next((status for kind, status in _STATUS if isinstance(error, kind)), 422)


def first_line(text: str) -> str:
    """The first line of a message (the whole of it for a one-liner)."""
    return text.strip().splitlines()[0] if text.strip() else ""


def problem(status: int, detail: str, **extra: Any) -> JSONResponse:
    """A problem JSON response: ``{"type", "title", "status", "detail", **extra}``."""
    body = {"type": "about:blank", "title": _TITLES.get(status, "Error"), "status": status}
    body |= {"detail": first_line(detail), **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_TYPE, headers=headers)


#: What a message says instead of the project folder's path (a client learns no path of the server).
PROJECT_PLACEHOLDER = "<project>"


def hide_project_path(text: str, root: Path) -> str:
    """``text`` with the project folder's path (as given and resolved) said as `PROJECT_PLACEHOLDER`.

    The store's messages name the folder (``no case 'x' in /srv/projects/ct``) for the person at
    the server; a client of the API is told which case, version or job, not where the project lies.

    Examples:
        >>> hide_project_path("no case 'x' in /srv/ct", Path("/srv/ct"))
        "no case 'x' in <project>"
    """
    for shown in dict.fromkeys((str(root), str(root.resolve()))):
        text = text.replace(shown, PROJECT_PLACEHOLDER)
    return text


def install_problem_handlers(app: FastAPI) -> None:
    """Answer segloop errors, HTTP errors and unparsable requests as problem JSON."""

    @app.exception_handler(SegloopError)
    async def _segloop_error(request: Request, error: SegloopError) -> JSONResponse:
        extra = getattr(error, "problem_extra", None) or {}
        detail = hide_project_path(str(error) or type(error).__name__, request.app.state.project.root)
        return problem(status_of(error), detail, **extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return problem(error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        issues = [
            f"{'.'.join(str(part) for part in issue.get('loc', ()))}: {issue.get('msg', '')}"
            for issue in error.errors()
        ]
        return problem(422, "; ".join(issues) or "the request could not be read")
