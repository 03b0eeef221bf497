"""The project store: `segloop.toml`, the database (SQLAlchemy Core) and immutable label files."""

from segloop.store.config import CONFIG_NAME, MODALITIES, ProjectConfig
from segloop.store.objects import ObjectStore, compute_label_key
from segloop.store.project import Project
from segloop.store.records import (
    SOURCES,
    CaseRecord,
    ImageRecord,
    LabelVersionRecord,
    ModelRecord,
    NewCase,
    NewLabel,
    PredictionRecord,
)

__all__ = [
    "CONFIG_NAME",
    "MODALITIES",
    "SOURCES",
    "CaseRecord",
    "ImageRecord",
    "LabelVersionRecord",
    "ModelRecord",
    "NewCase",
    "NewLabel",
    "ObjectStore",
    "PredictionRecord",
    "Project",
    "ProjectConfig",
    "compute_label_key",
]
