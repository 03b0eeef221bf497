"""What every command module shares: the author of what a command stores, list parsing."""

from __future__ import annotations

import getpass

__all__ = ["current_user", "split_list"]


def current_user() -> str:
    """The name recorded as author of what this command stores (the login name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def split_list(text: str | None) -> list[str]:
    """``"a, b,,c"`` → ``["a", "b", "c"]``; None or empty → ``[]``."""
    return [part.strip() for part in text.split(",") if part.strip()] if text else []
