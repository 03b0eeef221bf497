"""Atomic file and folder writes: write to a temporary name beside the target, fsync, rename.

A reader never sees a half-written file, and a failed write leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from segloop.errors import ConflictError

__all__ = ["atomic_directory", "atomic_file", "check_writable", "fsync_path", "process_alive"]


def check_writable(path: Path, *, overwrite: bool) -> None:
    """Raise `ConflictError` if ``path`` exists and ``overwrite`` is false."""
    if path.exists() and not overwrite:
        msg = f"{path} exists already: expected a new path, or permission to replace it"
        raise ConflictError(msg)


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (signal 0 probes without signalling).

    What a writer that died leaves (a staging folder, a running job) names its process; a
    process that no longer exists will never finish it.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, run by another user
    return True


def fsync_path(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _temporary_sibling(path: Path) -> Path:
    # Keep the full name at the end so that libraries choosing a codec by suffix still see it.
    return path.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{path.name}")


@contextmanager
def atomic_file(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed to ``path``.

    Args:
        path: the final file path.
        overwrite: replace an existing file (atomically) instead of raising `ConflictError`.
    """
    target = Path(path)
    check_writable(target, overwrite=overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(target)
    try:
        yield temporary
        fsync_path(temporary)
        if overwrite:
            os.replace(temporary, target)
        else:
            # link + unlink: fails instead of replacing a file another process created meanwhile.
            try:
                os.link(temporary, target)
            except FileExistsError as error:
                msg = f"{target} was created by another process meanwhile; nothing was written"
                raise ConflictError(msg) from error
            temporary.unlink()
        fsync_path(target.parent)
    finally:
        temporary.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    """Remove a folder tree, or a file or symbolic link (never what a link points to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


@contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it is renamed to ``path``.

    An existing ``path`` is replaced only with ``overwrite`` (moved aside, then removed after the
    rename succeeded; a symbolic link is replaced, not followed). Without ``overwrite`` the final
    step claims ``path`` exclusively (``mkdir``, then a rename onto that empty folder), so of two
    writers racing for one new ``path`` exactly one wins and the other gets `ConflictError`.
    """
    target = Path(path)
    check_writable(target, overwrite=overwrite)
    created = [folder for folder in (target.parent, *target.parent.parents) if not folder.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_sibling(target)
    temporary.mkdir()
    done = False
    try:
        yield temporary
        for child in temporary.iterdir():
            fsync_path(child)
        fsync_path(temporary)
        old = None
        if overwrite and (target.exists() or target.is_symlink()):
            old = _temporary_sibling(target)
            os.rename(target, old)
        elif not overwrite:
            try:
                target.mkdir()
            except FileExistsError as error:
                msg = f"{target} was created by another process meanwhile; nothing was written"
                raise ConflictError(msg) from error
        os.rename(temporary, target)
        fsync_path(target.parent)
        if old is not None:
            _remove(old)
        done = True
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)
        if not done:  # a failed write leaves no folder it made on the way
            for folder in created:
                with suppress(OSError):
                    folder.rmdir()
