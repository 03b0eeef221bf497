"""The project store: `segloop.toml`, the database (SQLAlchemy Core) and every file of a project."""

from segloop.store.config import CONFIG_NAME, MODALITIES, ProjectConfig
from segloop.store.database import DATABASE_URL_VARIABLE
from segloop.store.fsck import FsckProblem, FsckReport, check_project
from segloop.store.objects import ObjectStore, compute_label_key
from segloop.store.project import DATABASE_NAME, Project
from segloop.store.records import (
    CaseRecord,
    DraftRecord,
    EvaluationRecord,
    EventRecord,
    ImageRecord,
    JobRecord,
    JobStatus,
    LabelVersionRecord,
    ModelRecord,
    ModelStatus,
    NewCase,
    NewLabel,
    NewPatch,
    PatchRecord,
    PredictionArrays,
    PredictionRecord,
    Progress,
    RoundRecord,
    RoundStatus,
    UserRecord,
)

__all__ = [
    "CONFIG_NAME",
    "DATABASE_NAME",
    "DATABASE_URL_VARIABLE",
    "MODALITIES",
    "CaseRecord",
    "DraftRecord",
    "EvaluationRecord",
    "EventRecord",
    "FsckProblem",
    "FsckReport",
    "ImageRecord",
    "JobRecord",
    "JobStatus",
    "LabelVersionRecord",
    "ModelRecord",
    "ModelStatus",
    "NewCase",
    "NewLabel",
    "NewPatch",
    "ObjectStore",
    "PatchRecord",
    "PredictionArrays",
    "PredictionRecord",
    "Progress",
    "Project",
    "ProjectConfig",
    "RoundRecord",
    "RoundStatus",
    "UserRecord",
    "check_project",
    "compute_label_key",
]
