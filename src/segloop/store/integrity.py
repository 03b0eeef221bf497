"""Content hashes of stored files, and a cache that spares re-hashing a file that did not change.

An image is recorded with the SHA-256 of its files (`hash_path`: one file's bytes; a DICOM
folder's or a detached NRRD header's files with their names) when it is added; every read
compares the files with that hash. Hashing a large volume costs about as much as reading it,
so the hash found is cached per path with the files' *signature* (total size in bytes and newest
modification time in ns): while the signature is unchanged the cached hash is trusted, any
change (a rewrite, ``touch``, a file added to a series) re-hashes.

Projects made before hashes covered every file recorded a detached NRRD header's bytes alone
(and a one-file folder with its file's name); `accept_legacy_sha256` recognises such a hash
and records the full one in its place.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError

from segloop.errors import StoreIntegrityError
from segloop.io.nrrd import list_nrrd_files
from segloop.store.database import case_images, file_hashes, utc_now, write_transaction

__all__ = [
    "FileSignature",
    "accept_legacy_sha256",
    "check_recorded_grid",
    "current_sha256",
    "file_signature",
    "hash_path",
    "image_files",
    "matches_legacy_sha256",
    "name_below",
]

_CHUNK_BYTES = 8 * 1024 * 1024


def image_files(path: Path) -> list[Path]:
    """The files of an image: a folder's files (DICOM), a ``.nhdr`` and its data files, or itself.

    Raises:
        InvalidInputError: a detached header names a data file outside its folder.
        NotFoundError: a data file the header names is missing.
    """
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    if path.name.lower().endswith(".nhdr"):
        return list_nrrd_files(path)
    return [path]


def name_below(file: Path, folder: Path) -> Path:
    """``file`` relative to ``folder`` as given, or to its resolved form (where io.nrrd puts data files).

    Raises:
        ValueError: ``file`` lies in neither.
    """
    return file.relative_to(folder if file.is_relative_to(folder) else folder.resolve())


def hash_path(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size in bytes of an image's files (`image_files`).

    Several files are hashed in order, each preceded by its name relative to the image's folder
    (the folder itself for DICOM) and a NUL byte; a single file is hashed as its bytes alone.

    Returns:
        ``(sha256, size_bytes)``.
    """
    files = image_files(path)
    return _hash_files(files, path if path.is_dir() else path.parent, named=len(files) > 1)


def _hash_files(files: list[Path], base: Path, *, named: bool) -> tuple[str, int]:
    """SHA-256 and total size of ``files`` in order, each after its name below ``base`` if ``named``."""
    digest = hashlib.sha256()
    size = 0
    for file in files:
        if named:
            digest.update(str(name_below(file, base)).encode() + b"\0")
        with open(file, "rb") as stream:
            while chunk := stream.read(_CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
    return digest.hexdigest(), size


def _legacy_sha256(path: Path) -> str | None:
    """The hash segloop recorded for ``path`` before hashes covered all of an image's files.

    A folder's files were always hashed with their names (one file too); a ``.nhdr`` was hashed
    as its own bytes, its data files not at all. None where that hash is `hash_path`'s.
    """
    if path.is_dir():
        files = image_files(path)
        return _hash_files(files, path, named=True)[0] if len(files) == 1 else None
    if path.name.lower().endswith(".nhdr") and len(image_files(path)) > 1:
        return _hash_files([path], path.parent, named=False)[0]
    return None


def matches_legacy_sha256(path: Path, recorded: str) -> bool:
    """Whether ``recorded`` is the older hash of the image ``path`` (a header alone, see module),
    which vouched for the header only; checked without a database (a batch prediction's worker)."""
    return _legacy_sha256(path) == recorded


def accept_legacy_sha256(
    engine: Engine, case_pk: int, channel: int, path: Path, *, recorded: str, found: str, remember: bool
) -> bool:
    """Whether ``recorded`` is the older hash of the image ``path`` (a header alone, see module).

    Such a hash vouched for the header only, so the data files as they are now are accepted and,
    when ``remember``, ``found`` (`hash_path`'s hash) replaces ``recorded`` in the database:
    from then on a changed data file is refused as for any image.

    Args:
        engine: the project database.
        case_pk: the case's database id.
        channel: the image's channel.
        path: the image's absolute path.
        recorded: the SHA-256 recorded when it was added.
        found: its SHA-256 now.
        remember: write ``found`` (False for a read-only database).
    """
    if not matches_legacy_sha256(path, recorded):
        return False
    if remember:
        row = (case_images.c.case_pk == case_pk) & (case_images.c.channel == channel)
        try:
            with write_transaction(engine) as connection:
                connection.execute(
                    case_images.update().where(row, case_images.c.sha256 == recorded).values(sha256=found)
                )
        except OperationalError:
            pass  # a database that cannot be written now: the older hash is recognised again next time
    return True


@dataclass(frozen=True)
class FileSignature:
    """What changes when a file (or a folder's files) changes: total size and newest mtime (ns)."""

    size_bytes: int
    mtime_ns: int


def file_signature(path: Path) -> FileSignature:
    """The signature of an image's files (`image_files`; a folder's own entries count too).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    newest = path.stat().st_mtime_ns
    size = 0
    for file in image_files(path):
        status = file.stat()
        newest = max(newest, status.st_mtime_ns)
        size += status.st_size
    return FileSignature(size, newest)


def current_sha256(engine: Engine, path: Path, *, use_cache: bool = True, remember: bool = True) -> str:
    """The SHA-256 of ``path`` now: from the cache while its signature is unchanged, else hashed.

    Args:
        engine: the project database (holds the cache).
        path: an absolute file or folder path.
        use_cache: trust a cached hash of an unchanged file (False: always hash, as `fsck` does).
        remember: store a freshly computed hash (False for a read-only database).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    key = str(path)
    signature = file_signature(path)
    if use_cache:
        with engine.connect() as connection:
            row = connection.execute(select(file_hashes).where(file_hashes.c.path == key)).first()
        if row is not None and FileSignature(row.size_bytes, row.mtime_ns) == signature:
            return str(row.sha256)
    sha256, _ = hash_path(path)
    if remember and file_signature(path) == signature:  # not cached if it changed while hashed
        _remember(engine, key, signature, sha256)
    return sha256


def _remember(engine: Engine, key: str, signature: FileSignature, sha256: str) -> None:
    values = {
        "size_bytes": signature.size_bytes,
        "mtime_ns": signature.mtime_ns,
        "sha256": sha256,
        "checked_at": utc_now(),
    }
    try:
        with write_transaction(engine) as connection:
            updated = connection.execute(
                file_hashes.update().where(file_hashes.c.path == key).values(**values)
            ).rowcount
            if not updated:
                connection.execute(file_hashes.insert().values(path=key, **values))
    except OperationalError:
        return  # a database that cannot be written (read-only, locked too long): the cache is optional


def check_recorded_grid(shape: tuple[int, ...], recorded: tuple[int, ...], path: Path, case_id: str) -> None:
    """Raise `StoreIntegrityError` when an image read from ``path`` has another grid than recorded.

    Args:
        shape: the spatial shape read, ``(I, J, K)``.
        recorded: the case's shape recorded when it was added.
    """
    if tuple(shape) != tuple(recorded):
        msg = (
            f"image {path} of case {case_id!r} changed since it was added:"
            f" shape {tuple(shape)}, recorded {tuple(recorded)}"
        )
        raise StoreIntegrityError(msg)
