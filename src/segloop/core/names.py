"""Names that come from users and files (case ids, file names) and the paths built from them.

Every case id is checked once, where it enters (an import, a derived file name, a request), so
that later a case id can safely become part of a file name in an export.

Example:
    >>> validate_case_id("openkbp_pt_4")
    'openkbp_pt_4'
    >>> validate_case_id("../etc")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    segloop.errors.InvalidInputError: case id '../etc' is not allowed: ...
"""

from __future__ import annotations

import re
from pathlib import Path

from segloop.errors import InvalidInputError

__all__ = ["MAX_CASE_ID_LENGTH", "path_inside", "validate_case_id"]

MAX_CASE_ID_LENGTH = 128
_CASE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


def validate_case_id(case_id: str) -> str:
    """``case_id`` when it is safe as a file name part; raises `InvalidInputError` otherwise.

    Allowed: 1 to `MAX_CASE_ID_LENGTH` characters of ``A-Z a-z 0-9 . _ -``, the first not ``.`` or
    ``-`` (so never ``.``, ``..``, a hidden name, an option or a path).
    """
    if (
        not isinstance(case_id, str)
        or len(case_id) > MAX_CASE_ID_LENGTH
        or _CASE_ID.fullmatch(case_id) is None
    ):
        shown = repr(case_id) if len(str(case_id)) <= 60 else repr(str(case_id)[:60]) + "..."
        msg = (
            f"case id {shown} is not allowed: expected 1-{MAX_CASE_ID_LENGTH} characters of"
            " A-Z a-z 0-9 . _ - starting with a letter, digit or _"
        )
        raise InvalidInputError(msg)
    return case_id


def path_inside(folder: str | Path, *parts: str) -> Path:
    """``folder / parts...``, refusing any result that resolves outside ``folder``.

    Symbolic links are resolved, so a link inside ``folder`` pointing elsewhere is refused too.

    Raises:
        InvalidInputError: the joined path leaves ``folder``.
    """
    root = Path(folder).resolve()
    candidate = root.joinpath(*parts)
    resolved = candidate.resolve()
    if resolved != root and root not in resolved.parents:
        msg = f"path {'/'.join(parts)!r} leaves {root}: expected a name inside that folder"
        raise InvalidInputError(msg)
    return candidate
