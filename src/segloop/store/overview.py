"""Which cases a listing shows, and what it shows of each: records and SQL for many cases at once.

`segloop status`'s per-case table and the dashboard's case list page through projects of 100,000
cases: a `CaseSelection` becomes one ``WHERE`` clause (`selection_clause`), a page of cases one
`CaseOverview` each from three queries whatever the page's length (`Project.list_case_overviews`).
The deciding source of each class comes from the ``class_decisions`` table the store keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import ColumnElement, Select, and_, exists, false, func, or_, select, true

from segloop.store.database import cases, class_decisions

__all__ = [
    "NO_SOURCE",
    "CaseOverview",
    "CaseSelection",
    "count_selected",
    "glob_to_like",
    "selection_clause",
]

#: The name the listings give a class that no label version annotates.
NO_SOURCE = "none"

_LIKE_ESCAPE = "\\"


@dataclass(frozen=True)
class CaseSelection:
    """Which cases to list (every field narrows; the defaults select all).

    Attributes:
        ids: exact case ids or glob patterns (``*``, ``?``; case-sensitive); empty: any case.
        words: case-insensitive parts that the case id must all contain (a search box).
        also_ids: cases selected besides those ``words`` match (the dashboard's editors).
        classes: the classes ``sources`` looks at (None: every class of the schema).
        sources: keep cases where some of ``classes`` is decided by one of these sources
            (`NO_SOURCE`: annotated by no version); empty: any.
    """

    ids: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    also_ids: tuple[str, ...] = ()
    classes: tuple[str, ...] | None = None
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class CaseOverview:
    """A case as a listing shows it.

    Attributes:
        case_id: the case.
        shape: its ``(I, J, K)`` grid.
        affine: its ``(4, 4)`` affine.
        n_versions: how many label versions it has.
        class_sources: per annotated class, the deciding source (classes nobody annotated are absent).
        reviewed: the classes a person reviewed for the whole case (`segloop.loop.ranking`).
    """

    case_id: str
    shape: tuple[int, int, int]
    affine: np.ndarray
    n_versions: int
    class_sources: dict[str, str]
    reviewed: frozenset[str]


def glob_to_like(pattern: str) -> str:
    r"""A SQL ``LIKE`` pattern (escape ``\``) matching what the glob ``pattern`` matches.

    Examples:
        >>> glob_to_like("liver_*")
        'liver\\_%'
        >>> glob_to_like("c?")
        'c_'
    """
    escaped = "".join(_LIKE_ESCAPE + c if c in "%_\\" else c for c in pattern)
    return escaped.replace("*", "%").replace("?", "_")


def _id_clause(text: str, dialect: str) -> ColumnElement[bool]:
    if "*" not in text and "?" not in text:
        return cases.c.case_id == text
    if dialect == "sqlite":  # LIKE ignores case in SQLite; GLOB is glob itself ([ taken literally)
        return cases.c.case_id.op("GLOB", is_comparison=True)(text.replace("[", "[[]"))
    return cases.c.case_id.like(glob_to_like(text), escape=_LIKE_ESCAPE)


def _of_classes(classes: tuple[str, ...], every: bool) -> ColumnElement[bool]:
    """`class_decisions` rows of ``classes`` (``every``: all the schema's, which are all it holds)."""
    return true() if every else class_decisions.c.class_name.in_(classes)


def _decided_by(classes: tuple[str, ...], sources: tuple[str, ...], *, every: bool) -> ColumnElement[bool]:
    """Some of ``classes`` is decided by one of ``sources`` (`NO_SOURCE`: by no version).

    A named source is looked up per case along the index ``source, case_pk`` (a
    page stops at its last case); the fully annotated cases are grouped once, not counted per case.
    """
    clauses = []
    named = [s for s in sources if s != NO_SOURCE]
    if named:
        of_case = (class_decisions.c.case_pk == cases.c.id) & class_decisions.c.source.in_(named)
        clauses.append(exists().where(of_case & _of_classes(classes, every)))
    if NO_SOURCE in sources:
        annotated = (
            select(class_decisions.c.case_pk)
            .where(_of_classes(classes, every))
            .group_by(class_decisions.c.case_pk)
            .having(func.count() >= len(classes))
        )
        clauses.append(cases.c.id.not_in(annotated))
    return or_(*clauses)


def _decided_cases(classes: tuple[str, ...], sources: tuple[str, ...], *, every: bool) -> Select:
    """The distinct case keys where one of ``sources`` decides one of ``classes``."""
    of = class_decisions.c.source.in_(sources) & _of_classes(classes, every)
    return select(class_decisions.c.case_pk).where(of).distinct()


def count_selected(selection: CaseSelection, schema_names: tuple[str, ...], dialect: str) -> Select:
    """The query counting the cases of ``selection`` (`selection_clause`).

    A selection by named sources alone counts the distinct cases of an index-only scan of
    `class_decisions` (``source, case_pk``) without reading `cases`: about 30 ms at 100,000 cases
    where a condition per case took 100-150 ms.
    """
    only_sources = not (selection.ids or selection.words) and NO_SOURCE not in selection.sources
    classes = tuple(schema_names if selection.classes is None else selection.classes)
    if selection.sources and only_sources and classes:
        every = set(classes) == set(schema_names)
        decided = _decided_cases(classes, selection.sources, every=every).subquery()
        return select(func.count()).select_from(decided)
    return select(func.count()).select_from(cases).where(selection_clause(selection, schema_names, dialect))


def selection_clause(
    selection: CaseSelection, schema_names: tuple[str, ...], dialect: str
) -> ColumnElement[bool]:
    """The ``WHERE`` clause over `cases` of ``selection`` (``dialect``: the engine's, for globs)."""
    clauses: list[ColumnElement[bool]] = []
    if selection.ids:
        clauses.append(or_(*(_id_clause(text, dialect) for text in selection.ids)))
    if selection.words:
        matched = and_(
            *(
                func.lower(cases.c.case_id).like(f"%{glob_to_like(word.lower())}%", escape=_LIKE_ESCAPE)
                for word in selection.words
            )
        )
        also = cases.c.case_id.in_(selection.also_ids) if selection.also_ids else false()
        clauses.append(or_(matched, also))
    if selection.sources:
        classes = schema_names if selection.classes is None else selection.classes
        every = set(classes) == set(schema_names)
        clauses.append(_decided_by(tuple(classes), selection.sources, every=every) if classes else false())
    return and_(true(), *clauses)
