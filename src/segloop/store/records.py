"""Row records of the project database (frozen dataclasses, no behaviour)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

__all__ = [
    "SOURCES",
    "CaseRecord",
    "EvaluationRecord",
    "EventRecord",
    "ImageRecord",
    "LabelVersionRecord",
    "ModelRecord",
    "NewCase",
    "NewLabel",
    "PredictionRecord",
    "RoundRecord",
]

#: Label sources, from most to least trusted (see `segloop.core.assembly`).
SOURCES = ("original", "revised", "sparse", "draft", "pseudo")


@dataclass(frozen=True)
class ImageRecord:
    """One image file (one channel) of a case, referenced in place or copied into the project."""

    channel: int
    path: str
    size_bytes: int
    sha256: str
    copied: bool = False


@dataclass(frozen=True)
class NewLabel:
    """A label version to add: the object is already staged under ``object_key``."""

    object_key: str
    source: str
    classes: tuple[str, ...]
    voxel_counts: dict[str, int]
    author: str
    tool: str
    params: dict[str, Any] = field(default_factory=dict)
    parent_id: int | None = None
    round: int | None = None


@dataclass(frozen=True)
class NewCase:
    """A case to add: its grid, its image files and optionally a first label version."""

    case_id: str
    shape: tuple[int, int, int]
    affine: np.ndarray
    dtype: str
    images: tuple[ImageRecord, ...]
    added_by: str
    label: NewLabel | None = None


@dataclass(frozen=True)
class CaseRecord:
    """A stored case."""

    pk: int
    case_id: str
    shape: tuple[int, int, int]
    affine: np.ndarray
    dtype: str
    images: tuple[ImageRecord, ...]
    added_at: datetime
    added_by: str


@dataclass(frozen=True)
class LabelVersionRecord:
    """A stored, immutable label version of a case."""

    id: int
    case_id: str
    object_key: str
    source: str
    classes: tuple[str, ...]
    voxel_counts: dict[str, int]
    author: str
    tool: str
    params: dict[str, Any]
    parent_id: int | None
    round: int | None
    created_at: datetime


@dataclass(frozen=True)
class ModelRecord:
    """A trained (or training) model: its config, what it saw, and how it scored."""

    id: int
    created_at: datetime
    finished_at: datetime | None
    author: str
    mode: str
    parent_id: int | None
    status: str
    checkpoint: str
    config: dict[str, Any]
    label_version_ids: tuple[int, ...]
    train_case_ids: tuple[str, ...]
    val_case_ids: tuple[str, ...]
    metrics: dict[str, Any]
    round: int | None


@dataclass(frozen=True)
class PredictionRecord:
    """A model's prediction of a case: the pseudo label version and its uncertainty file."""

    id: int
    case_id: str
    model_id: int
    label_version_id: int
    uncertainty: str
    mean_entropy: float
    params: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class EvaluationRecord:
    """A model's metrics on one case against its reference label versions (original/revised)."""

    id: int
    model_id: int
    case_id: str
    reference_version_ids: tuple[int, ...]
    metrics: dict[str, Any]  # {"per_class": {name: {"dice", "hd95_mm", "surface_dice"}}, "mean_entropy"}
    round: int | None
    created_at: datetime


@dataclass(frozen=True)
class RoundRecord:
    """One round of the loop: its stages (train, predict, evaluate, rank, report) and summary."""

    number: int
    mode: str
    status: str  # running | done
    started_at: datetime
    finished_at: datetime | None
    stages: dict[str, Any]  # stage name -> what it produced (model id, case ids, ...)
    summary: dict[str, Any]


@dataclass(frozen=True)
class EventRecord:
    """One entry of the project's journal."""

    id: int
    at: datetime
    kind: str
    actor: str
    detail: dict[str, Any]
