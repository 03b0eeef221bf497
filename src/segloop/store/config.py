"""`segloop.toml`: the project's label schema, modality and defaults (plain data, never code).

It may also name the PostgreSQL database that `segloop migrate` moved the project to (``[database]
url``, never a password), so that every annotator of a shared project folder uses that database and
nobody keeps writing the SQLite file left behind. A project file must not choose where segloop
connects, though (it could point a user's credentials at another server, or one project's writes into
another's database): the recorded URL is used only once the user trusted it for this project folder,
in their own ``databases.toml`` (`trust_database`; `segloop migrate` writes it).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomli_w

from segloop.core.labels import LabelSchema
from segloop.core.modality import MODALITIES
from segloop.errors import CorruptFileError, InvalidInputError
from segloop.io.atomic import atomic_file
from segloop.store.database import parse_database_url

__all__ = [
    "CONFIG_NAME",
    "CONFIG_VERSION",
    "MODALITIES",
    "ProjectConfig",
    "check_recordable_url",
    "is_trusted_database",
    "read_config",
    "trust_database",
    "trusted_databases_path",
    "with_database_url",
    "write_config",
]

CONFIG_NAME = "segloop.toml"
CONFIG_VERSION = 1


@dataclass(frozen=True)
class ProjectConfig:
    """What `segloop.toml` holds.

    Args:
        name: project name.
        schema: the label classes.
        modality: one of `MODALITIES` (decides intensity normalisation later).
        defaults: tool and training defaults (plain data).
        database_url: the PostgreSQL database the project moved to (``segloop migrate``; no
            password); empty: the project's own ``segloop.db``.
    """

    name: str
    schema: LabelSchema
    modality: str = "CT"
    defaults: dict[str, Any] = field(default_factory=dict)
    database_url: str = ""

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            msg = f"unknown modality {self.modality!r}: expected one of {', '.join(MODALITIES)}"
            raise InvalidInputError(msg)


def write_config(config: ProjectConfig, path: Path, *, overwrite: bool = False) -> None:
    """Write ``config`` as TOML, atomically."""
    document = {
        "config_version": CONFIG_VERSION,
        "project": {"name": config.name, "modality": config.modality},
        "labels": config.schema.to_records(),
        "defaults": config.defaults,
    }
    if config.database_url:
        document["database"] = {"url": config.database_url}
    with atomic_file(path, overwrite=overwrite) as temporary:
        temporary.write_bytes(tomli_w.dumps(document).encode())


def read_config(path: Path) -> ProjectConfig:
    """Read `segloop.toml`.

    A ``[database] url`` is read as `ProjectConfig.database_url` (used only where the user trusts
    it: `is_trusted_database`); a URL a project file may not name (anything but a password-less
    PostgreSQL URL: a SQLite path, a password) is refused.

    Raises:
        CorruptFileError: malformed content, or a ``[database] url`` a project file may not name.
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        msg = f"{path}: not valid TOML ({error})"
        raise CorruptFileError(msg) from error
    version = document.get("config_version")
    if version != CONFIG_VERSION:
        msg = f"{path}: config_version {version!r} is not supported; expected {CONFIG_VERSION}"
        raise CorruptFileError(msg)
    section = document.get("database", {})
    stored_url = str(section.get("url", "") if isinstance(section, dict) else section)
    if stored_url:
        try:
            check_recordable_url(stored_url)
        except InvalidInputError as error:
            msg = (
                f"{path}: [database] url = {stored_url!r} is not trusted from a project file ({error});"
                " expected it empty (delete the line) and the URL given by the user (SEGLOOP_DATABASE_URL)"
            )
            raise CorruptFileError(msg) from error
    try:
        return ProjectConfig(
            name=str(document["project"]["name"]),
            modality=str(document["project"].get("modality", "CT")),
            schema=LabelSchema.from_records(document["labels"]),
            defaults=dict(document.get("defaults", {})),
            database_url=stored_url,
        )
    except KeyError as error:
        msg = f"{path}: missing key {error} (expected [project] name and [[labels]])"
        raise CorruptFileError(msg) from error


def check_recordable_url(url: str) -> str:
    """``url`` if a project file may record it: a PostgreSQL URL without a password.

    Raises:
        InvalidInputError: not a URL, not PostgreSQL (a project's SQLite database is its own
            ``segloop.db``), or carrying a password (a project file holds no secrets).
    """
    parsed = parse_database_url(url)
    if parsed.get_backend_name() != "postgresql":
        msg = f"a project file may name a PostgreSQL database only, got {parsed.get_backend_name()!r}"
        raise InvalidInputError(msg)
    if parsed.password is not None:
        msg = (
            "the URL carries a password, which must not be written into project files: give it by"
            " ~/.pgpass or PGPASSWORD and the URL without it (postgresql+psycopg://user@host/db)"
        )
        raise InvalidInputError(msg)
    return url


def with_database_url(config: ProjectConfig, url: str) -> ProjectConfig:
    """``config`` recording ``url`` (checked by `check_recordable_url`) as the project's database."""
    return replace(config, database_url=check_recordable_url(url))


def trusted_databases_path() -> Path:
    """The user's ``databases.toml`` (``$XDG_CONFIG_HOME/segloop``, else ``~/.config/segloop``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "segloop" / "databases.toml"


def _trusted_entries() -> list[dict[str, str]]:
    path = trusted_databases_path()
    if not path.is_file():
        return []
    try:
        entries = tomllib.loads(path.read_text(encoding="utf-8")).get("trusted", [])
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        msg = f"{path}: not valid TOML ({error}): fix or delete it"
        raise CorruptFileError(msg) from error
    return [e for e in entries if isinstance(e, dict) and {"project", "url"} <= e.keys()]


def is_trusted_database(root: Path, url: str) -> bool:
    """Whether this user trusts ``url`` as the database of the project folder ``root``."""
    entry = {"project": str(Path(root).resolve()), "url": url}
    return entry in _trusted_entries()


def trust_database(root: Path, url: str) -> Path:
    """Record in the user's ``databases.toml`` that ``url`` is the database of ``root``; the file."""
    entries = _trusted_entries()
    entry = {"project": str(Path(root).resolve()), "url": url}
    path = trusted_databases_path()
    if entry not in entries:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, overwrite=True) as temporary:
            temporary.write_bytes(tomli_w.dumps({"trusted": [*entries, entry]}).encode())
    return path
