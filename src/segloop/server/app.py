"""The FastAPI application of `segloop serve`: `create_app(project, settings)`."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from segloop.server.problems import install_problem_handlers, problem
from segloop.server.settings import Settings
from segloop.store import Project

__all__ = ["create_app"]


class BodyLimit:
    """Refuse request bodies over the limit (HTTP 413), declared or streamed, before a route reads them.

    JSON bodies (job requests, approvals) are small: they get `JSON_BODY_BYTES`; volumes and forms
    get ``max_bytes``.

    Args:
        app: the wrapped application.
        max_bytes: the largest body accepted (bytes).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        is_json = headers.get(b"content-type", b"").split(b";")[0].strip().endswith(b"json")
        limit = min(self.max_bytes, JSON_BODY_BYTES) if is_json else self.max_bytes
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(scope, receive, send, declared.decode("latin-1"), limit)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyTooLargeError(413, _too_large(f"more than {limit}", limit))
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLargeError:
            await self._refuse(scope, receive, send, f"more than {limit}", limit)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, size: str, limit: int) -> None:
        await problem(413, _too_large(size, limit))(scope, receive, send)


#: The largest JSON request body accepted (bytes).
JSON_BODY_BYTES = 2**20


def _too_large(size: str, limit: int) -> str:
    return f"the request body is {size} bytes: expected at most {limit}"


#: Methods a browser sends from another site's page without asking first (a form, ``fetch`` no-cors).
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CrossSiteGuard:
    """Refuse (HTTP 403) an anonymous state-changing request that a page of another origin sent.

    Browsers send some cross-origin requests without a CORS preflight (a form's POST, a body-less
    ``fetch``), so on anonymous loopback any web page could start a training (``POST /train/segloop``)
    or an inference. Such a request carries ``Origin``; the API's own pages send their own origin
    (the ``Host``, or the ``X-Forwarded-Host`` of a proxy that rewrites it), and clients that are
    not browsers (Slicer, ``curl``) send none. A request with ``Authorization`` passes: a browser
    never adds a bearer token by itself, so its sender held the token.

    Args:
        app: the wrapped application.
        allowed_origins: other origins allowed to call (`Settings.cors_origins`).
    """

    def __init__(self, app: ASGIApp, allowed_origins: tuple[str, ...] = ()) -> None:
        self.app = app
        self.allowed_origins = frozenset(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in _SAFE_METHODS:
            headers = {name: value.decode("latin-1") for name, value in scope.get("headers") or ()}
            origin = headers.get(b"origin", "")
            # hosts, not schemes: behind a TLS proxy the page is https and the request reaches us as http
            own = {headers.get(b"host"), headers.get(b"x-forwarded-host")} - {None}
            foreign = origin and origin.partition("://")[2] not in own and origin not in self.allowed_origins
            if foreign and b"authorization" not in headers:
                method, shown = scope["method"], origin[:80]
                detail = f"a {method} from a page of {shown!r} was refused: expected this server's pages"
                await problem(403, detail)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def host_name(header: str) -> str:
    """The name of a ``Host`` header value, without its port (an IPv6 address without brackets).

    Examples:
        >>> host_name("localhost:8000"), host_name("[::1]:8000"), host_name("10.0.0.1")
        ('localhost', '::1', '10.0.0.1')
    """
    if header.startswith("["):
        return header[1:].partition("]")[0]
    name, _, port = header.rpartition(":")
    return name if name and port.isdigit() else header


def is_local_name(name: str) -> bool:
    """Whether a ``Host`` name is no public DNS name: an IP address, a name without a dot, ``*.localhost``.

    A DNS-rebinding attack needs a name the attacker registered, which has a dot.

    Examples:
        >>> is_local_name("127.0.0.1"), is_local_name("app.localhost"), is_local_name("evil.example")
        (True, True, False)
    """
    name = name.lower().rstrip(".")
    if "." not in name or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostGuard:
    """Refuse (HTTP 403) a request whose ``Host`` is a public DNS name (`is_local_name`).

    Installed when no sign-in is required: a web page whose DNS name is made to point to
    127.0.0.1 after it loaded (DNS rebinding) is then same-origin with the server, and could read
    every image and store labels; its requests name the page's own host, which this refuses.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = dict(scope.get("headers") or ()).get(b"host", b"").decode("latin-1")
            if header and not is_local_name(host_name(header)):
                detail = (
                    f"this server answers requests for localhost or its address, not {header[:80]!r}:"
                    " to reach it by name, serve it with sign-in (--require-sign-in)"
                )
                await problem(403, detail)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _BodyTooLargeError(HTTPException):
    """A streamed body passed the limit (an HTTP error, so that FastAPI's body parsing passes it on)."""


def create_app(project: Project | str | Path, settings: Settings | None = None) -> FastAPI:
    """The API and the editor of one project.

    Args:
        project: the open project, or its folder.
        settings: how to serve it (default: loopback, no sign-in).

    Returns:
        The application; ``app.state`` holds ``project``, ``settings`` and ``jobs`` (the job runner).
    """
    from segloop.server.auth import load_users
    from segloop.server.jobs import JobRunner
    from segloop.server.routes import ROUTERS

    settings = settings or Settings()
    if not isinstance(project, Project):
        project = Project.open(project)
    app = FastAPI(
        title="segloop",
        summary="Annotation by iterative deep learning: the project's cases, labels, tools and jobs.",
        version=_version(),
    )
    app.state.project = project
    app.state.settings = settings
    app.state.users = load_users(settings)  # the users file, read once
    app.state.jobs = JobRunner(project)
    install_problem_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(CrossSiteGuard, allowed_origins=tuple(settings.cors_origins))
    if not settings.sign_in_required:
        app.add_middleware(HostGuard)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["ETag"],
        )
    app.router.add_event_handler("shutdown", app.state.jobs.shutdown)
    return app


def _version() -> Any:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("segloop")
    except PackageNotFoundError:
        return "0"
