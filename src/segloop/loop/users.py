"""Who may use `segloop serve`: users with a bearer token, stored only as the token's SHA-256.

A token is ``secrets.token_urlsafe(32)``: 256 random bits. Such a token cannot be guessed or
brute-forced from its hash, so a plain SHA-256 is enough at rest; a salted slow hash (bcrypt,
argon2) protects low-entropy passwords, which these are not, and would only slow every request.

Users live in the project's database (`create_user`, ``segloop user add``) or in a TOML file the
server is given (`read_users_file`: ``name = "<sha256 hex of the token>"``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path

from segloop.core.names import MAX_CASE_ID_LENGTH, validate_case_id
from segloop.errors import InvalidInputError, NotFoundError
from segloop.store import Project, UserRecord
from segloop.store.users import check_token_sha256

__all__ = ["authenticate", "create_user", "hash_token", "read_users_file", "validate_user_name"]

#: Random bytes of a new token (256 bits; ``token_urlsafe`` writes them as 43 characters).
TOKEN_BYTES = 32


def hash_token(token: str) -> str:
    """The SHA-256 (hex) under which a token is stored.

    Examples:
        >>> hash_token("abc")[:16]
        'ba7816bf8f01cfea'
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def validate_user_name(name: str) -> str:
    """``name`` when it is allowed as a user name (the rule of case ids); `InvalidInputError` otherwise.

    Examples:
        >>> validate_user_name("ana.lopez")
        'ana.lopez'
    """
    try:
        return validate_case_id(name)
    except InvalidInputError as error:
        shown = repr(name) if len(str(name)) <= 60 else repr(str(name)[:60]) + "..."
        msg = (
            f"user name {shown} is not allowed: expected 1-{MAX_CASE_ID_LENGTH} characters of"
            " A-Z a-z 0-9 . _ - starting with a letter, digit or _"
        )
        raise InvalidInputError(msg) from error


def create_user(project: Project, name: str) -> tuple[UserRecord, str]:
    """Add a user to the project with a new random token.

    Args:
        project: the open project.
        name: the user's name (recorded as author of what they store).

    Returns:
        The user and their token: the only time the token exists in clear (only its hash is stored).

    Raises:
        InvalidInputError: ``name`` is not an allowed user name.
        ConflictError: a user of that name exists.
    """
    validate_user_name(name)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return project.add_user(name, hash_token(token)), token


def authenticate(project: Project, token: str, extra_users: Mapping[str, str] | None = None) -> str | None:
    """The name of the user whose token is ``token`` (project users first, then ``extra_users``).

    Args:
        project: the open project.
        token: the bearer token a request carries.
        extra_users: more users, name to token SHA-256 (`read_users_file`).

    Returns:
        The user's name, or None when no user has this token.
    """
    if not token:
        return None
    digest = hash_token(token)
    user = project.find_user_by_token_hash(digest)
    if user is not None:
        return user.name
    for name, stored in (extra_users or {}).items():
        if hmac.compare_digest(stored, digest):
            return name
    return None


def read_users_file(path: str | Path) -> dict[str, str]:
    """The users of a TOML file of ``name = "<SHA-256 hex of the token>"`` lines.

    Args:
        path: the file.

    Returns:
        User name to token SHA-256 (lower-case hex), in the file's order.

    Raises:
        NotFoundError: the file does not exist.
        InvalidInputError: it is not TOML, or a name or a hash is not allowed (one line, never
            echoing a value: it might be a token pasted by mistake).
    """
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        msg = f'users file {path} does not exist: expected a TOML file of name = "<sha256 of the token>"'
        raise NotFoundError(msg) from error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        msg = f'users file {path} cannot be read ({reason}): expected TOML lines name = "<sha256 hex>"'
        raise InvalidInputError(msg) from error
    found: dict[str, str] = {}
    for name, value in document.items():
        validate_user_name(name)
        given = value.lower() if isinstance(value, str) else value
        found[name] = check_token_sha256(given, what=f"the token hash of user {name!r} in users file {path}")
    seen: dict[str, str] = {}
    for name, digest in found.items():
        if digest in seen:
            msg = f"users file {path}: users {seen[digest]!r} and {name!r} have the same token hash"
            raise InvalidInputError(msg)
        seen[digest] = name
    return found
