"""What a reviewer sees and does with one case: where to look, the last ranking, approving a label.

Shared by every face that puts a case in front of a person (the server's editor, the CLI):

- `most_uncertain_slice`: the axial slice a viewer should open on (most entropy of the newest
  prediction);
- `read_latest_ranking`: rank and score of each case in the newest recorded ranking (the ranking
  `segloop.loop.ranking.rank_cases` records with its ``served`` event), so that a list of cases
  shows them without ranking again;
- `serve_next_case`: the case most worth correcting now, from the newest recorded ranking of a
  strategy while it is fresh (ranking anew only when it is not), skipping the cases people
  corrected since and, if others remain, those someone else is editing;
- `list_versions_since`: what was stored after the version a person worked from (a conflict's
  explanation);
- `approve_label`: store the effective label, as shown, as the human revision of some classes.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from segloop.core.assembly import value_mask
from segloop.core.geometry import axis_of_plane
from segloop.core.provenance import REFERENCE_SOURCES
from segloop.errors import NotFoundError
from segloop.loop.corrections import CorrectionResult, apply_label
from segloop.loop.labels import count_voxels, editable_label
from segloop.loop.ranking import get_strategy, rank_cases
from segloop.store import LabelVersionRecord, Project

__all__ = [
    "NextCase",
    "RankedEntry",
    "SliceIndex",
    "approve_label",
    "list_versions_since",
    "most_uncertain_slice",
    "ranking_strategy",
    "read_latest_ranking",
    "serve_next_case",
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


@dataclass(frozen=True)
class NextCase:
    """The case `serve_next_case` hands to a person.

    Attributes:
        case_id: the case.
        classes: its classes no person decided (attention order when just ranked by
            ``uncertainty``, else schema order).
        rank: its place in the ranking it came from (1: first; larger when cases before it were
            corrected since, or are being edited).
        score: the strategy's score (None: no score, or no prediction).
        strategy: the strategy of the ranking.
        ranking: the ``served`` event that recorded that ranking.
        ranked_now: whether this call ranked the candidates (False: served from a recorded ranking).
    """

    case_id: str
    classes: tuple[str, ...]
    rank: int
    score: float | None
    strategy: str
    ranking: int
    ranked_now: bool


#: Strategies whose order follows what was served (``least-recent``): a case served after their
#: ranking was recorded counts as moved to its end, so repeated requests rotate without ranking.
SERVED_ORDER_STRATEGIES = frozenset({"least-recent"})

#: How many entries of a recorded ranking are read at a time while looking for an open one.
_ENTRY_PAGE = 256


def serve_next_case(
    project: Project,
    *,
    strategy: str = "uncertainty",
    author: str = "unknown",
    avoid: Collection[str] = (),
    refresh: bool = False,
) -> NextCase | None:
    """The case most worth correcting now, logged as served (``served`` event, like `segloop next`).

    Ranking every candidate reads every prediction (seconds at 100,000 cases), so the case comes
    from the newest ranking recorded for ``strategy`` (by `segloop.loop.ranking.rank_cases` with
    ``record``: a round, `segloop rank`/`next`, or an earlier call of this function) while it is
    fresh. Freshness rule (row ids, not clocks): a recorded ranking is stale once a case or a
    prediction was stored after its ranking began (a new model's predictions, `segloop add`), and
    unusable when it predates this rule (no ``newest`` ids). From a fresh ranking it serves the
    first entry that no ``original`` or ``revised`` label version was stored for since (a
    correction, an approval, a merged patch: the person's work changes what is left) and, for
    `SERVED_ORDER_STRATEGIES`, that was not served since. Cases in ``avoid`` (edited by someone
    else) are passed over while another open entry remains. With no usable ranking, a stale one,
    none of its entries open, or ``refresh``, the candidates are ranked and recorded anew.

    Args:
        project: the open project.
        strategy: a registered strategy name (`segloop.loop.ranking.STRATEGIES`).
        author: who asks (the ``served`` event's actor).
        avoid: case ids to pass over unless nothing else is open (someone else edits them).
        refresh: rank anew even when a fresh ranking is recorded.

    Returns:
        The `NextCase`, or None when every class of every case is decided by a person.

    Raises:
        InvalidInputError: an unknown strategy.
        NotFoundError: the project has no case at all.
    """
    get_strategy(strategy)
    event_id = None if refresh else project.find_latest_ranking(strategy)
    if event_id is not None:
        found = _first_open_entry(project, event_id, strategy, avoid)
        if found is not None:
            return _log_served(project, author, found)
    ranked = rank_cases(project, strategy=strategy, count=1, record=True, author=author)
    if not ranked:
        return None
    top, event_id = ranked[0], project.find_latest_ranking(strategy)
    if top.case_id in avoid and event_id is not None:
        other = _first_open_entry(project, event_id, strategy, avoid)
        if other is not None and other.case_id != top.case_id:
            return _log_served(project, author, dataclasses.replace(other, ranked_now=True))
    return NextCase(top.case_id, top.classes, top.rank, top.score, strategy, event_id or 0, ranked_now=True)


def _log_served(project: Project, author: str, found: NextCase) -> NextCase:
    """Log ``found`` as served from its recorded ranking (``from_ranking``: that ranking's event)."""
    detail = {"cases": [found.case_id], "strategy": found.strategy, "from_ranking": found.ranking}
    project.log_event("served", author, detail)
    return found


def _first_open_entry(
    project: Project, event_id: int, strategy: str, avoid: Collection[str]
) -> NextCase | None:
    """`serve_next_case`'s pick from the ranking of event ``event_id``; None: stale, or none open."""
    event = project.find_event(event_id)
    if event is None or not event.detail.get("newest"):
        return None  # recorded before rankings kept their ``newest`` ids
    recorded = event.detail["newest"]
    newest = project.find_newest_ids()
    if any(newest[table] > int(recorded.get(table, 0)) for table in ("cases", "predictions")):
        return None
    done = {
        v.case_id
        for v in project.list_label_versions_after(int(recorded.get("label_versions", 0)))
        if v.source in REFERENCE_SOURCES
    }
    if strategy in SERVED_ORDER_STRATEGIES:  # served with the ranking, or from it since
        served = [event, *project.list_events_after(event_id, "served")]
        done.update(c for e in served for c in e.detail.get("cases", []))
    first_open: tuple[int, str, float | None] | None = None
    offset = 0
    while True:
        _, rows = project.list_ranking(event_id, offset=offset, limit=_ENTRY_PAGE)
        for row in rows:
            if row[1] in done:
                continue
            if row[1] not in avoid:
                return _next_case(project, row, strategy, event_id)
            first_open = first_open or row
        if len(rows) < _ENTRY_PAGE:
            return None if first_open is None else _next_case(project, first_open, strategy, event_id)
        offset += _ENTRY_PAGE


def _next_case(
    project: Project, row: tuple[int, str, float | None], strategy: str, event_id: int
) -> NextCase:
    """A `NextCase` of a ranking's ``(rank, case id, score)`` row (its open classes, in schema order)."""
    rank, case_id, score = row
    reviewed = project.list_reviewed_classes(case_id).get(case_id, frozenset())
    classes = tuple(name for name in project.config.schema.names if name not in reviewed)
    return NextCase(case_id, classes, rank, score, strategy, event_id, ranked_now=False)


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
