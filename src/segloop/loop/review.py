"""What a reviewer sees and does with one case: where to look, the last ranking, approving a label.

Shared by every face that puts a case in front of a person (the server's editor, the CLI):

- `most_uncertain_slice`: the axial slice a viewer should open on (most entropy of the newest
  prediction);
- `read_latest_ranking`: rank and score of each case in the newest recorded ranking (the ranking
  `segloop.loop.ranking.rank_cases` records with its ``served`` event), so that a list of cases
  shows them without ranking again;
- `list_versions_since`: what was stored after the version a person worked from (a conflict's
  explanation);
- `approve_label`: store the effective label, as shown, as the human revision of some classes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segloop.core.assembly import value_mask
from segloop.core.geometry import axis_of_plane
from segloop.errors import NotFoundError
from segloop.loop.corrections import CorrectionResult, apply_label
from segloop.loop.labels import count_voxels, editable_label
from segloop.store import LabelVersionRecord, Project

__all__ = [
    "RankedEntry",
    "SliceIndex",
    "approve_label",
    "list_versions_since",
    "most_uncertain_slice",
    "ranking_strategy",
    "read_latest_ranking",
]


@dataclass(frozen=True)
class SliceIndex:
    """One slice of a volume: ``index`` along voxel ``axis`` (0, 1 or 2)."""

    axis: int
    index: int


def most_uncertain_slice(entropy: np.ndarray, affine: np.ndarray) -> SliceIndex | None:
    """The axial slice holding the most entropy (None when the entropy is zero everywhere).

    Args:
        entropy: ``(I, J, K)`` voxel entropy (any float dtype; summed in float64).
        affine: ``(4, 4)`` RAS affine of the grid (decides which voxel axis is axial).

    Example:
        >>> entropy = np.zeros((4, 4, 5), np.float16); entropy[:, :, 3] = 0.5
        >>> most_uncertain_slice(entropy, np.eye(4))
        SliceIndex(axis=2, index=3)
    """
    axis = axis_of_plane(affine, "axial")
    others = tuple(a for a in range(3) if a != axis)
    per_slice = np.sum(entropy, axis=others, dtype=np.float64)
    finite = np.where(np.isfinite(per_slice), per_slice, 0.0)
    if not np.any(finite > 0):
        return None
    return SliceIndex(axis, int(np.argmax(finite)))


@dataclass(frozen=True)
class RankedEntry:
    """A case's place in a recorded ranking.

    Attributes:
        rank: 1 for the case most worth correcting.
        score: the strategy's score (flagged voxels for ``uncertainty``; None for orders
            without scores, or a case without a prediction).
        strategy: the strategy that ranked it.
    """

    rank: int
    score: float | None
    strategy: str


#: The rankings read last, by (database, ``served`` event id): a recorded ranking never changes.
_RANKINGS: dict[tuple[str, int], dict[str, RankedEntry]] = {}
_RANKINGS_LOCK = threading.Lock()
_RANKINGS_KEPT = 4


def read_latest_ranking(project: Project) -> dict[str, RankedEntry]:
    """``{case id: RankedEntry}`` of the newest ranking `rank_cases` recorded, rank 1 first (empty: none).

    Nothing is ranked again; a ranking read before is not read again (do not modify the result).
    A page of cases or the head of the queue need not read it whole: `Project.find_ranked`,
    `Project.list_ranking`.
    """
    event_id = project.find_latest_ranking()
    if event_id is None:
        return {}
    key = (project.engine.url.render_as_string(hide_password=False), event_id)
    with _RANKINGS_LOCK:
        if key in _RANKINGS:
            return _RANKINGS[key]
    strategy = ranking_strategy(project, event_id)
    _, rows = project.list_ranking(event_id)
    ranking = {case_id: RankedEntry(rank, score, strategy) for rank, case_id, score in rows}
    with _RANKINGS_LOCK:
        while len(_RANKINGS) >= _RANKINGS_KEPT:
            _RANKINGS.pop(next(iter(_RANKINGS)))
        _RANKINGS[key] = ranking
    return ranking


def ranking_strategy(project: Project, event_id: int) -> str:
    """The strategy that made the ranking recorded with the ``served`` event ``event_id`` ("" if unknown)."""
    found = project.find_event(event_id)
    return "" if found is None else str(found.detail.get("strategy", ""))


def list_versions_since(
    versions: Sequence[LabelVersionRecord], parent: int | None
) -> list[LabelVersionRecord]:
    """The versions stored after ``parent`` (all of them when ``parent`` is None), oldest first."""
    return [v for v in versions if parent is None or v.id > parent]


def approve_label(
    project: Project,
    case_id: str,
    class_names: Sequence[str] | None = None,
    *,
    parent: int | None,
    author: str,
) -> CorrectionResult:
    """Store the case's effective label, unchanged, as a ``revised`` version of some classes.

    The person looked at the label and accepts it: the stored revision holds the approved
    classes' voxels of the label they were shown (`segloop.loop.labels.editable_label`) and its
    explicit ignores, so the effective label stays as shown; voxels ignored only because a class
    is annotated by nobody are background there and stay a matter of that class.

    Args:
        project: the open project.
        case_id: the case.
        class_names: the classes approved (default: every class the label holds a voxel of).
        parent: the case's head when the label was shown (a newer version is a conflict).
        author: recorded on the version.

    Raises:
        NotFoundError: the case has no label, or (by default) none of its classes has a voxel.
        UnknownClassError: a class is not in the schema.
        ConflictError: the case changed since ``parent``.
    """
    schema = project.config.schema
    case = project.get_case(case_id)
    versions = project.list_label_versions(case.case_id)
    _, labels = editable_label(project, case, versions)
    if not versions:
        msg = f"case {case_id!r} has no label version yet: nothing to approve"
        raise NotFoundError(msg)
    if class_names:
        values = schema.indices_of(class_names)
    else:
        counts = count_voxels(labels, schema)
        values = tuple(c.index for c in schema.classes if counts[c.name])
    if not values:
        msg = f"the label of case {case_id!r} holds no class voxel: name the classes to approve"
        raise NotFoundError(msg)
    kept = value_mask(labels, {*values, schema.ignore_index})
    approved = (labels * kept).astype(schema.dtype, copy=False)
    return apply_label(
        project,
        case_id,
        approved,
        tuple(schema.name_of(v) for v in values),
        parent=parent,
        author=author,
        tool="approve",
    )
