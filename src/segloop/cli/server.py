"""The server's commands: ``segloop serve`` and ``segloop user add|list|remove``.

Registered in `segloop.cli.main`. ``serve`` binds its socket itself (a port in use is one line,
and ``--port 0`` picks a free one whose URL is printed), then hands it to uvicorn; Ctrl-C shuts
the server down gracefully (the app's shutdown handler stops its jobs) and exits 0. FastAPI and
uvicorn are imported only here, inside the commands, so ``segloop --help`` stays fast.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from segloop.cli.common import current_user
from segloop.errors import InvalidInputError, MissingDependencyError, NotFoundError

if TYPE_CHECKING:
    from segloop.server import Settings
    from segloop.store import Project

__all__ = ["serve_command", "user_app"]

ProjectArg = Annotated[Path, typer.Argument(help="Project folder.", show_default=False)]
NameArg = Annotated[str, typer.Argument(help="User name (A-Z a-z 0-9 . _ -).", show_default=False)]

_ADD_USER = "segloop user add PROJECT NAME"

user_app = typer.Typer(
    help="People who may sign in to `segloop serve` (each with a token, stored only as its SHA-256).",
    no_args_is_help=True,
)


def serve_command(
    project: ProjectArg,
    host: Annotated[
        str, typer.Option(help="Address to listen on; off loopback every request needs a user's token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free port).")] = 8000,
    users: Annotated[
        Path | None, typer.Option(help='TOML file of more users: name = "<sha256 hex of the token>".')
    ] = None,
    require_sign_in: Annotated[
        bool, typer.Option("--require-sign-in", help="Ask for a token on loopback too.")
    ] = False,
    max_upload_mb: Annotated[
        int | None, typer.Option(min=1, help="Largest request body in MiB (default 512).")
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            help="An origin (https://host:port) allowed to call the API from its pages; repeatable."
        ),
    ] = None,
) -> None:
    """Serve the project's API and browser editor at http://HOST:PORT until Ctrl-C."""
    uvicorn, create_app, settings_type = _server_modules()
    from segloop.server.settings import is_loopback
    from segloop.store import Project

    opened = Project.open(project)
    options: dict[str, Any] = {"max_upload_bytes": max_upload_mb * 2**20} if max_upload_mb else {}
    settings = settings_type(
        host=host,
        port=port,
        users_file=users,
        require_sign_in=require_sign_in,
        local_author=current_user(),
        cors_origins=tuple(cors_origin or ()),
        **options,
    )
    app = create_app(opened, settings)
    _check_someone_can_sign_in(opened, settings, app.state.users)
    listener = _bind(host, port)
    if not is_loopback(host):
        typer.echo(
            "note: http sends tokens unencrypted: on an untrusted network, serve behind HTTPS", err=True
        )
    typer.echo(f"serving {project} at {_url(host, listener.getsockname()[1])} (Ctrl-C stops)")
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=10))
    try:
        server.run(sockets=[listener])
    except KeyboardInterrupt:  # uvicorn shut down gracefully, then re-raised the Ctrl-C
        pass
    finally:
        listener.close()
    if not server.started:
        raise typer.Exit(1)
    typer.echo("stopped")


def _server_modules() -> tuple[Any, Any, type[Settings]]:
    """uvicorn, `create_app` and `Settings`, or `MissingDependencyError` naming the extra."""
    try:
        import fastapi  # noqa: F401
        import uvicorn

        from segloop.server import Settings, create_app
    except ImportError as error:
        missing = error.name or error
        msg = f'segloop serve needs the server extra ({missing} is missing): pip install "segloop[server]"'
        raise MissingDependencyError(msg) from error
    return uvicorn, create_app, Settings


def _check_someone_can_sign_in(project: Project, settings: Settings, file_users: dict[str, str]) -> None:
    """Refuse to serve when sign-in is required and no user (project or file) exists."""
    if settings.sign_in_required and not file_users and not project.list_users():
        where = "off loopback" if not settings.require_sign_in else "with sign-in required"
        msg = (
            f"serving {where} ({settings.host}) needs a user to sign in, and {project.root} has none:"
            f" add one with `{_ADD_USER}` (or give --users)"
        )
        raise NotFoundError(msg)


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; one line when the port is taken or the host unknown."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        listener = socket.create_server((host, port), family=family, backlog=128)
        # accepted connections inherit it; without it every answer on a kept-alive connection waited ~40 ms
        # for the client's delayed ACK (asyncio sets TCP_NODELAY only on the sockets it binds itself)
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return listener
    except socket.gaierror as error:
        msg = f"cannot listen on host {host!r} ({error.strerror}): expected an address of this machine"
        raise InvalidInputError(msg) from error
    except OSError as error:
        reason = "the port is in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
        msg = f"cannot listen on {host}:{port} ({reason}): choose another --port or stop the other server"
        raise InvalidInputError(msg) from error


def _url(host: str, port: int) -> str:
    """``http://HOST:PORT`` (an IPv6 address in brackets).

    Examples:
        >>> _url("::1", 80), _url("127.0.0.1", 8000)
        ('http://[::1]:80', 'http://127.0.0.1:8000')
    """
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


@user_app.command("add")
def add_user(project: ProjectArg, name: NameArg) -> None:
    """Add a user and print their token (shown only this once; only its hash is stored)."""
    from segloop.loop.users import create_user
    from segloop.store import Project

    user, token = create_user(Project.open(project), name)
    typer.echo(f"added user {user.name!r}; their token, shown only this once (keep it secret):")
    typer.echo(token)


@user_app.command("list")
def list_users(project: ProjectArg) -> None:
    """The project's users and when they were added."""
    from segloop.store import Project

    found = Project.open(project).list_users()
    if not found:
        typer.echo(f"no users (add one with `{_ADD_USER}`)")
    for user in found:
        typer.echo(f"{user.name}\tadded {user.created_at:%Y-%m-%d %H:%M}")


@user_app.command("remove")
def remove_user(project: ProjectArg, name: NameArg) -> None:
    """Remove a user: their token stops signing in (what they stored keeps their name)."""
    from segloop.store import Project

    Project.open(project).remove_user(name)
    typer.echo(f"removed user {name!r}: their token no longer signs in")
