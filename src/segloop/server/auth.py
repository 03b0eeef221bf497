"""Who is calling: bearer tokens (hashed at rest), required off loopback.

OWNED BY HELPER H1 — this first version only answers loopback requests without sign-in.
"""

from __future__ import annotations

from fastapi import HTTPException, Request

__all__ = ["current_author"]


def current_author(request: Request) -> str:
    """The author of what this request stores; HTTP 401 when sign-in is required."""
    settings = request.app.state.settings
    if settings.sign_in_required:
        raise HTTPException(401, "sign-in required: send 'Authorization: Bearer <token>'")
    return settings.local_author
