"""Row records of the project database (frozen dataclasses, no behaviour)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

import numpy as np

from segloop.errors import InvalidInputError

__all__ = [
    "CaseRecord",
    "DraftRecord",
    "EvaluationRecord",
    "EventRecord",
    "ImageRecord",
    "JobRecord",
    "JobStatus",
    "LabelVersionRecord",
    "ModelRecord",
    "ModelStatus",
    "NewCase",
    "NewLabel",
    "NewPatch",
    "PatchRecord",
    "PredictionArrays",
    "PredictionRecord",
    "Progress",
    "RoundRecord",
    "RoundStatus",
    "UserRecord",
    "parse_status",
]

_Status = TypeVar("_Status", bound=StrEnum)


class ModelStatus(StrEnum):
    """Where a training run stands (a run killed mid-way stays ``running`` and can be resumed)."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class RoundStatus(StrEnum):
    """Where a round of the loop stands."""

    RUNNING = "running"
    DONE = "done"


def parse_status(kind: type[_Status], value: str) -> _Status:
    """``value`` as a member of the status enum ``kind``.

    Raises:
        InvalidInputError: ``value`` is none of its members.

    Examples:
        >>> parse_status(ModelStatus, "done") is ModelStatus.DONE
        True
    """
    try:
        return kind(value)
    except ValueError as error:
        expected = ", ".join(member.value for member in kind)
        msg = f"unknown {kind.__name__} {value!r}: expected one of {expected}"
        raise InvalidInputError(msg) from error


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
    status: ModelStatus
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
    status: RoundStatus
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


@dataclass(frozen=True)
class PredictionArrays:
    """What a prediction of a case stores beside its pseudo label version.

    Args:
        probabilities: ``(C, I, J, K)`` float16 class probabilities (background first), averaged
            over the passes (test-time flips, MC-dropout samples).
        entropy: ``(I, J, K)`` float16 normalised voxel entropy of ``probabilities``, in [0, 1].
        disagreement: ``(I, J, K)`` float16 standard deviation over the passes averaged over
            classes; None when there was one pass.
    """

    probabilities: np.ndarray
    entropy: np.ndarray
    disagreement: np.ndarray | None = None


class JobStatus(StrEnum):
    """Where a long piece of work (training, batch prediction, a round) stands."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # its process died without finishing it
    CANCELLED = "cancelled"  # someone stopped it (it can be resumed like an interrupted one)


@dataclass(frozen=True)
class Progress:
    """One progress event of a job, the one a CLI bar or a server-sent event shows.

    Args:
        job_id: the job.
        stage: what the job is doing (``train``, ``predict``, ``evaluate``, ...).
        done: units finished in this stage (epochs, cases).
        total: units the stage will do, None when unknown (a time-limited training).
        message: one line for a person.
        metrics: numbers worth showing (``loss``, ``val_dice``), by name.
    """

    job_id: int
    stage: str
    done: int
    total: int | None = None
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class JobRecord:
    """A stored job: its kind, status, newest progress and outcome, and the process that ran it."""

    id: int
    kind: str
    status: JobStatus
    author: str
    params: dict[str, Any]
    progress: Progress | None
    result: dict[str, Any]
    error: str | None
    pid: int
    host: str
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class NewPatch:
    """A correction patch cut from a case's effective label, to record.

    Args:
        patch_id: unique in the project.
        case_id: the case it was cut from.
        offset: its first voxel in case coordinates ``(i, j, k)`` (may be negative: padded).
        size: its shape in voxels.
        border_voxels: width of the *ignore* border inside the case.
        parent_version_id: the version deciding most classes of the label it was cut from.
        version_ids: every version the effective label was assembled from.
        region_sha256: `compute_label_key` of the effective label under the patch.
        label_sha256: `compute_label_key` of the whole effective label.
        affine: ``(4, 4)`` voxel-to-RAS (mm) affine of the patch.
        author: who extracted it.
        detail: the rest of the manifest (centre, reason, flagged voxels, files, ...).
    """

    patch_id: str
    case_id: str
    offset: tuple[int, int, int]
    size: tuple[int, int, int]
    border_voxels: int
    parent_version_id: int | None
    version_ids: tuple[int, ...]
    region_sha256: str
    label_sha256: str
    affine: np.ndarray = field(compare=False)  # equal patches share the case grid
    author: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PatchRecord(NewPatch):
    """A stored correction patch (`NewPatch` and when it was recorded)."""

    created_at: datetime = field(kw_only=True)


@dataclass(frozen=True)
class UserRecord:
    """A person who may sign in to `segloop serve` (the token's hash is never part of a record)."""

    name: str
    created_at: datetime


@dataclass(frozen=True)
class DraftRecord:
    """An author's unsaved label of a case (one per case and author), kept until saved or discarded.

    Args:
        case_id: the case.
        author: whose draft it is.
        parent: the label version the author started from (None: the case had none).
        object_key: `compute_label_key` of the draft's array in the project's ``drafts/`` store.
        shape: ``(I, J, K)`` of the array (the case grid).
        updated_at: when it was last saved.
    """

    case_id: str
    author: str
    parent: int | None
    object_key: str
    shape: tuple[int, int, int]
    updated_at: datetime
