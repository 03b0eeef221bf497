"""Pure checks of the users of `segloop serve`: a token is stored only as its SHA-256."""

from __future__ import annotations

import re

from segloop.errors import InvalidInputError

__all__ = ["check_token_sha256"]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def check_token_sha256(value: object, *, what: str = "token hash") -> str:
    """``value`` when it is a SHA-256 hex digest (64 lower-case hex digits).

    Raises:
        InvalidInputError: anything else (a raw token, a short or upper-case string).

    Examples:
        >>> check_token_sha256("ab" * 32) == "ab" * 32
        True
    """
    if not isinstance(value, str) or _SHA256_HEX.fullmatch(value) is None:
        shown = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
        msg = f"{what} must be a SHA-256 hex digest (64 characters 0-9 a-f); got {shown}"
        raise InvalidInputError(msg)
    return value
