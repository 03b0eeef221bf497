"""Content hashes of stored files, and a cache that spares re-hashing a file that did not change.

An image is recorded with the SHA-256 of its bytes (of a folder's file names and bytes, for a
DICOM series) when it is added; every read compares the file with that hash. Hashing a large
volume costs about as much as reading it, so the hash found is cached per path with the file's
*signature* (size in bytes and modification time in ns): while the signature is unchanged the
cached hash is trusted, any change (a rewrite, ``touch``, a file added to a series) re-hashes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError

from segloop.store.database import file_hashes, utc_now, write_transaction

__all__ = ["FileSignature", "current_sha256", "file_signature", "hash_path"]

_CHUNK_BYTES = 8 * 1024 * 1024


def hash_path(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size in bytes of a file, or of a folder's files (names and contents, sorted).

    Args:
        path: a file, or a folder (every file below it counts, with its relative name).

    Returns:
        ``(sha256, size_bytes)``.
    """
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    size = 0
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as stream:
            while chunk := stream.read(_CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
    return digest.hexdigest(), size


@dataclass(frozen=True)
class FileSignature:
    """What changes when a file (or a folder's files) changes: total size and newest mtime (ns)."""

    size_bytes: int
    mtime_ns: int


def file_signature(path: Path) -> FileSignature:
    """The signature of a file, or of a folder (its files and its own entries).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    status = path.stat()
    if not path.is_dir():
        return FileSignature(status.st_size, status.st_mtime_ns)
    size, newest = 0, status.st_mtime_ns
    for entry in path.rglob("*"):
        entry_status = entry.stat()
        newest = max(newest, entry_status.st_mtime_ns)
        if entry.is_file():
            size += entry_status.st_size
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
