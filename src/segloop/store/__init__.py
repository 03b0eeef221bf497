"""The project store: `segloop.toml`, the database (SQLAlchemy Core) and immutable label files."""

from segloop.store.config import CONFIG_NAME, MODALITIES, ProjectConfig
from segloop.store.objects import ObjectStore, compute_label_key
from segloop.store.project import Project
from segloop.store.records import (
    SOURCES,
    CaseRecord,
    EvaluationRecord,
    EventRecord,
    ImageRecord,
    LabelVersionRecord,
    ModelRecord,
    NewCase,
    NewLabel,
    PredictionRecord,
    RoundRecord,
)

__all__ = [
    "CONFIG_NAME",
    "MODALITIES",
    "SOURCES",
    "CaseRecord",
    "EvaluationRecord",
    "EventRecord",
    "ImageRecord",
    "LabelVersionRecord",
    "ModelRecord",
    "NewCase",
    "NewLabel",
    "ObjectStore",
    "PredictionRecord",
    "Project",
    "ProjectConfig",
    "RoundRecord",
    "compute_label_key",
]
