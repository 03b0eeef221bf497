"""What every command module shares: the author of what a command stores, list parsing."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager

from segloop.errors import SegloopError

__all__ = ["current_user", "hint", "split_list"]


def current_user() -> str:
    """The name recorded as author of what this command stores (the login name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def split_list(text: str | None) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``; None or empty → ``[]``."""
    return [part.strip() for part in text.split(",") if part.strip()] if text else []


@contextmanager
def hint(kind: type[SegloopError], text: str, *, when: str | None = None) -> Iterator[None]:
    """Append a command-line hint to the message of an error of ``kind`` (same kind re-raised).

    Args:
        kind: the error class the hint is for.
        text: the hint, e.g. ``"pass --force"``.
        when: only for messages containing this text (one kind may have several causes).
    """
    try:
        yield
    except kind as error:
        if when is not None and when not in str(error):
            raise
        raise type(error)(f"{error} ({text})") from error
