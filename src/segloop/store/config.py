"""`segloop.toml`: the project's label schema, modality and defaults (plain data, never code)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from segloop.core.labels import LabelSchema
from segloop.errors import CorruptFileError, SegloopError
from segloop.io.atomic import atomic_file

__all__ = ["CONFIG_NAME", "CONFIG_VERSION", "MODALITIES", "ProjectConfig", "read_config", "write_config"]

CONFIG_NAME = "segloop.toml"
CONFIG_VERSION = 1
MODALITIES = ("CT", "MR", "microscopy", "EM", "cryo-ET", "other")


@dataclass(frozen=True)
class ProjectConfig:
    """What `segloop.toml` holds.

    Args:
        name: project name.
        schema: the label classes.
        modality: one of `MODALITIES` (decides intensity normalisation later).
        database_url: SQLAlchemy URL; empty means ``segloop.db`` (SQLite) in the project folder.
        defaults: tool and training defaults (plain data).
    """

    name: str
    schema: LabelSchema
    modality: str = "CT"
    database_url: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            msg = f"unknown modality {self.modality!r}: expected one of {', '.join(MODALITIES)}"
            raise SegloopError(msg)


def write_config(config: ProjectConfig, path: Path, *, overwrite: bool = False) -> None:
    """Write ``config`` as TOML, atomically."""
    document = {
        "config_version": CONFIG_VERSION,
        "project": {"name": config.name, "modality": config.modality},
        "database": {"url": config.database_url},
        "labels": config.schema.to_records(),
        "defaults": config.defaults,
    }
    with atomic_file(path, overwrite=overwrite) as temporary:
        temporary.write_bytes(tomli_w.dumps(document).encode())


def read_config(path: Path) -> ProjectConfig:
    """Read `segloop.toml`; raises `CorruptFileError` on malformed content."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        msg = f"{path}: not valid TOML ({error})"
        raise CorruptFileError(msg) from error
    version = document.get("config_version")
    if version != CONFIG_VERSION:
        msg = f"{path}: config_version {version!r} is not supported; expected {CONFIG_VERSION}"
        raise CorruptFileError(msg)
    try:
        return ProjectConfig(
            name=str(document["project"]["name"]),
            modality=str(document["project"].get("modality", "CT")),
            database_url=str(document.get("database", {}).get("url", "")),
            schema=LabelSchema.from_records(document["labels"]),
            defaults=dict(document.get("defaults", {})),
        )
    except KeyError as error:
        msg = f"{path}: missing key {error} (expected [project] name and [[labels]])"
        raise CorruptFileError(msg) from error
