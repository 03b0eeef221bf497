"""`segloop serve`: the HTTP API and the browser editor, a face over `segloop.loop` like the CLI.

Every route parses its request, calls one `segloop.loop` use case (or a `segloop.store.Project`
read) and renders the record it returns; nothing here decides anything the CLI does not.

Modules:
    settings: `Settings` (host, sign-in, upload limit, CORS).
    app: `create_app(project, settings)`, the FastAPI application.
    problems: the error taxonomy as RFC 9457 problem JSON (404 / 409 / 413 / 422 / 500).
    deps: request dependencies (the project, the signed-in author).
    auth: bearer tokens (hashed at rest) and who may call what.
    codec: volumes and labels as NIfTI bytes (gzip) in and out, checked like files.
    jobs: long work (rounds, training, prediction) as jobs started, streamed and cancelled.
    routes: the API by topic (cases, tools, jobs, pages, monailabel).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segloop.server.app import create_app
    from segloop.server.settings import Settings

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    """Import FastAPI only when the server is used (``import segloop`` stays light)."""
    if name == "create_app":
        from segloop.server.app import create_app

        return create_app
    if name == "Settings":
        from segloop.server.settings import Settings

        return Settings
    raise AttributeError(name)
