"""Who is calling: bearer tokens (stored hashed, `segloop.loop.users`), required off loopback.

A request names its user with ``Authorization: Bearer <token>``; the token is checked against the
project's users and those of the server's users file (read once, by `load_users`, when the app is
made). When sign-in is required (`Settings.sign_in_required`: off loopback, or asked for), a
request without a valid token is HTTP 401. On loopback without sign-in, a request without a token
stores as ``Settings.local_author``; a token that is sent must still be valid (401 otherwise), so a
mistyped token never silently stores under another name.
"""

from __future__ import annotations

from fastapi import HTTPException, Request

from segloop.loop.users import authenticate, read_users_file
from segloop.server.settings import Settings

__all__ = ["current_author", "load_users", "read_bearer_token"]

_EXPECTED = "expected the header 'Authorization: Bearer <token>'"


def load_users(settings: Settings) -> dict[str, str]:
    """The users of ``settings.users_file`` (name to token SHA-256); none without a file.

    Raises:
        NotFoundError: the file does not exist.
        InvalidInputError: it is not a valid users file.
    """
    return read_users_file(settings.users_file) if settings.users_file is not None else {}


def read_bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization`` header value (None: no header).

    Raises:
        HTTPException: 401 for a header of another scheme, or an empty token.

    Examples:
        >>> read_bearer_token("Bearer abc"), read_bearer_token(None)
        ('abc', None)
    """
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        shown = f"a {scheme[:20]!r} header" if scheme.lower() != "bearer" else "no token"
        raise HTTPException(401, f"{_EXPECTED}; got {shown}")
    return token.strip()


def current_author(request: Request) -> str:
    """The author of what this request stores: the signed-in user, else the local author on loopback.

    Raises:
        HTTPException: 401 when sign-in is required and no token is sent, or a token is sent
            that is no user's.
    """
    state = request.app.state
    settings: Settings = state.settings
    token = read_bearer_token(request.headers.get("authorization"))
    if token is None:
        if settings.sign_in_required:
            raise HTTPException(401, f"sign-in required: {_EXPECTED} (a user's token: `segloop user add`)")
        return settings.local_author
    name = authenticate(state.project, token, getattr(state, "users", None))
    if name is None:
        raise HTTPException(401, "the token is no user's: sign in with a valid token (`segloop user add`)")
    return name
