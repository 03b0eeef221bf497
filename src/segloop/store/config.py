"""`segloop.toml`: the project's label schema, modality and defaults (plain data, never code)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from segloop.core.labels import LabelSchema
from segloop.core.modality import MODALITIES
from segloop.errors import CorruptFileError, InvalidInputError
from segloop.io.atomic import atomic_file

__all__ = ["CONFIG_NAME", "CONFIG_VERSION", "MODALITIES", "ProjectConfig", "read_config", "write_config"]

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
    """

    name: str
    schema: LabelSchema
    modality: str = "CT"
    defaults: dict[str, Any] = field(default_factory=dict)

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
    with atomic_file(path, overwrite=overwrite) as temporary:
        temporary.write_bytes(tomli_w.dumps(document).encode())


def read_config(path: Path) -> ProjectConfig:
    """Read `segloop.toml`.

    The database's location is never read from the project file (a file must not choose where
    segloop writes): a ``[database] url`` other than empty is refused.

    Raises:
        CorruptFileError: malformed content, or a ``[database] url`` in the file.
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
    stored_url = section.get("url", "") if isinstance(section, dict) else section
    if stored_url:
        msg = (
            f"{path}: [database] url = {stored_url!r} is not trusted from a project file; expected it"
            " empty (delete the line) and the URL given by the user (SEGLOOP_DATABASE_URL)"
        )
        raise CorruptFileError(msg)
    try:
        return ProjectConfig(
            name=str(document["project"]["name"]),
            modality=str(document["project"].get("modality", "CT")),
            schema=LabelSchema.from_records(document["labels"]),
            defaults=dict(document.get("defaults", {})),
        )
    except KeyError as error:
        msg = f"{path}: missing key {error} (expected [project] name and [[labels]])"
        raise CorruptFileError(msg) from error
