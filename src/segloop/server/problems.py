"""The error taxonomy as problem JSON (RFC 9457): one status per kind, the message as ``detail``.

`segloop.errors` kinds map to 404 / 409 / 422 (413 for `TooLargeError`) / 500 / 501; a request
FastAPI itself cannot parse is a 422 of the same shape. The message is the error's first line:
what was expected and what came, never a traceback.
"""

from __future__ import annotations

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

__all__ = ["PROBLEM_TYPE", "install_problem_handlers", "problem", "status_of"]

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


def install_problem_handlers(app: FastAPI) -> None:
    """Answer segloop errors, HTTP errors and unparsable requests as problem JSON."""

    @app.exception_handler(SegloopError)
    async def _segloop_error(_: Request, error: SegloopError) -> JSONResponse:
        extra = getattr(error, "problem_extra", None) or {}
        return problem(status_of(error), str(error) or type(error).__name__, **extra)

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
