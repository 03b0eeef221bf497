"""The store's queries for large projects: `class_decisions` (kept and backfilled), selections, pages.

What the SQL says is checked against the Python rules it replaces (`summarize_cases`, the ranking's
`_human_classes`), so the two cannot drift; query counts prove that no listing asks once per case.
"""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from sqlalchemy import event, inspect

from segloop.errors import ConflictError, InvalidInputError
from segloop.loop.cases import count_case_sources, list_case_table, summarize_cases, summarize_project
from segloop.loop.ranking import _human_classes, list_candidate_cases
from segloop.store import Project
from segloop.store.database import INDEXES, SCHEMA_VERSION, read_schema_version
from segloop.store.overview import CaseSelection, count_selected, glob_to_like
from tests.store.many_cases import CLASSES, add_random_cases, make_many_cases_project


@pytest.fixture
def many(tmp_path) -> Project:
    """60 cases with 0..3 random versions each (every source, class subsets, patch merges)."""
    return make_many_cases_project(tmp_path / "p", 60, seed=3)


def _stored_rules(project: Project) -> tuple[dict, dict]:
    """Per case, what `class_decisions` says: deciding sources and reviewed classes."""
    overviews = project.list_case_overviews(project.list_case_ids())
    return (
        {o.case_id: o.class_sources for o in overviews},
        {o.case_id: set(o.reviewed) for o in overviews},
    )


def _python_rules(project: Project) -> tuple[dict, dict]:
    """The same from every version, by the Python rules (`summarize_cases`, `_human_classes`)."""
    sources = {
        s.case_id: {n: v for n, v in s.class_sources.items() if v is not None}
        for s in summarize_cases(project)
    }
    versions: dict[str, list] = {case_id: [] for case_id in sources}
    for version in project.list_label_versions():
        versions[version.case_id].append(version)
    return sources, {case_id: _human_classes(found) for case_id, found in versions.items()}


def test_class_decisions_follow_every_insert_as_the_python_rules_say(many):
    assert _stored_rules(many) == _python_rules(many)
    by_python = count_case_sources(summarize_cases(many), CLASSES)
    assert summarize_project(many).sources == by_python
    assert sum(by_python["liver"].values()) == 60 and by_python["liver"]["none"] > 0
    assert {s for row in by_python.values() for s, n in row.items() if n} >= {"original", "pseudo", "none"}


def test_the_candidates_of_the_ranking_are_the_cases_a_person_has_not_reviewed_fully(many):
    _, reviewed = _python_rules(many)
    expected = [
        (case_id, tuple(n for n in CLASSES if n not in reviewed[case_id]))
        for case_id in many.list_case_ids()
        if not set(CLASSES) <= reviewed[case_id]
    ]
    assert list_candidate_cases(many) == expected and len(expected) < 60


def test_migration_6_backfills_class_decisions_of_a_schema_5_project(tmp_path):
    project = make_many_cases_project(tmp_path / "p", 30, seed=5)
    before = (_stored_rules(project), summarize_project(project).sources)
    project.log_event(
        "served", "ann", {"cases": ["case0001"], "ranking": [["case0002", 3.0], ["case0001", 1.0]]}
    )
    project.log_event("served", "ann", {"cases": ["case0009", "case0004"]})  # schema 5: the newest ranking
    with project.engine.begin() as connection:
        for index in INDEXES:
            connection.exec_driver_sql(f"DROP INDEX {index.name}")
        connection.exec_driver_sql("DROP TABLE class_decisions")
        connection.exec_driver_sql("DROP TABLE class_source_counts")
        connection.exec_driver_sql("DROP TABLE ranking_entries")
        connection.exec_driver_sql("UPDATE schema_info SET version = 5")
    project.engine.dispose()
    assert read_schema_version(project.engine) == 5 == SCHEMA_VERSION - 1
    reopened = Project.open(project.root)
    assert read_schema_version(reopened.engine) == SCHEMA_VERSION
    assert (_stored_rules(reopened), summarize_project(reopened).sources) == before
    assert _stored_rules(reopened) == _python_rules(reopened)
    newest = reopened.find_latest_ranking()
    assert reopened.list_ranking(newest) == (2, [(1, "case0009", None), (2, "case0004", None)])
    names = {
        i["name"]
        for t in ("label_versions", "jobs", "events")
        for i in inspect(reopened.engine).get_indexes(t)
    }
    assert {"ix_label_versions_case_pk", "ix_jobs_status", "ix_events_kind_id"} <= names


def test_selections_match_ids_globs_words_and_deciding_sources(many):
    def ids(selection: CaseSelection, **options) -> tuple[int, list[str]]:
        return many.select_case_ids(selection, **options)

    assert ids(CaseSelection(ids=("case0003", "case001?")))[1] == [
        "case0003",
        *[f"case001{i}" for i in range(10)],
    ]
    assert ids(CaseSelection(ids=("CASE*",)))[0] == 0  # globs are case-sensitive
    assert ids(CaseSelection(words=("SE005",)))[1] == [f"case005{i}" for i in range(10)]
    assert ids(CaseSelection(words=("0001", "case")), limit=1)[1] == ["case0001"]
    assert ids(CaseSelection(words=("nothing",), also_ids=("case0007",)))[1] == ["case0007"]
    stored, _ = _stored_rules(many)
    pseudo_liver = [c for c, s in stored.items() if s.get("liver") == "pseudo"]
    none_liver = [c for c, s in stored.items() if "liver" not in s]
    assert ids(CaseSelection(classes=("liver",), sources=("pseudo",)))[1] == pseudo_liver
    assert ids(CaseSelection(classes=("liver",), sources=("none",)))[1] == none_liver
    both = ids(CaseSelection(classes=("liver",), sources=("pseudo", "none")))
    assert both == (len(pseudo_liver) + len(none_liver), sorted(pseudo_liver + none_liver))
    anything = [c for c, s in stored.items() if "pseudo" in s.values()]
    assert ids(CaseSelection(sources=("pseudo",)))[1] == anything
    assert glob_to_like("a_b*") == "a\\_b%"


@pytest.mark.parametrize("classes", [None, ("liver",), ("liver", "spleen")])
@pytest.mark.parametrize("sources", [("pseudo",), ("revised", "original"), ("none",), ("pseudo", "none")])
def test_source_selections_count_and_list_what_the_python_rules_say(many, classes, sources):
    stored, _ = _stored_rules(many)
    expected = [
        case_id
        for case_id, decided in stored.items()
        if any(decided.get(name, "none") in sources for name in classes or CLASSES)
    ]
    assert many.select_case_ids(CaseSelection(classes=classes, sources=sources)) == (len(expected), expected)
    words = CaseSelection(words=("case00",), classes=classes, sources=sources)  # counted over cases
    assert many.select_case_ids(words) == (len(expected), expected)


def test_a_selection_by_sources_alone_is_counted_along_an_index(many):
    if many.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's planner chooses by the table's size: benchmarks/scale_store.py measures it")
    query = count_selected(CaseSelection(sources=("pseudo",)), tuple(CLASSES), "sqlite")
    compiled = str(query.compile(many.engine, compile_kwargs={"literal_binds": True}))
    with many.engine.connect() as connection:
        plan = " ".join(row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
    assert "COVERING INDEX ix_class_decisions_source_case" in plan
    assert "SCAN cases" not in plan and "SEARCH cases" not in plan  # the cases table is not read


def test_pages_count_every_selected_case_and_order_by_id_or_versions(many):
    total, page = many.select_case_ids(order="id", descending=True, offset=5, limit=3)
    assert (total, page) == (60, ["case0054", "case0053", "case0052"])
    counts = {s.case_id: s.n_versions for s in summarize_cases(many)}
    _, by_versions = many.select_case_ids(order="versions", descending=True)
    assert [counts[c] for c in by_versions] == sorted(counts.values(), reverse=True)
    with pytest.raises(InvalidInputError, match="unknown case order 'size': expected one of added, id"):
        many.select_case_ids(order="size")
    table = list_case_table(many, CaseSelection(classes=("spleen",)), offset=58, limit=10)
    assert table.total == 60 and [r.case_id for r in table.rows] == ["case0058", "case0059"]
    assert all(set(r.class_sources) == {"spleen"} for r in table.rows)


@contextmanager
def counting_queries(project: Project):
    """A list that fills with the statements ``project``'s engine sends while the block runs."""
    statements: list[str] = []

    def count(_connection, _cursor, statement, *_args) -> None:
        statements.append(statement)

    event.listen(project.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(project.engine, "before_cursor_execute", count)


def test_summaries_and_pages_ask_a_constant_number_of_queries(tmp_path):
    project = make_many_cases_project(tmp_path / "p", 5, seed=3)
    asked = []
    for more in (0, 50):
        add_random_cases(project, more, first=project.count_cases(), seed=more)
        with counting_queries(project) as statements:
            summarize_project(project)
            list_case_table(project, CaseSelection(sources=("pseudo", "none")), limit=None)
            list_candidate_cases(project)
        asked.append(len(statements))
    assert project.count_cases() == 55 and asked[0] == asked[1] < 30  # BEGINs included


def test_a_batch_with_a_repeated_case_id_is_refused_before_anything_is_stored(tmp_path):
    project = make_many_cases_project(tmp_path / "p", 2)
    case = project.get_case("case0000")
    from segloop.store import NewCase

    twice = [NewCase("x", case.shape, case.affine, "int16", case.images, "ann")] * 2
    with pytest.raises(ConflictError, match="duplicate case ids in one batch: x"):
        project.add_cases(twice)
    assert project.count_cases() == 2


def test_a_recorded_ranking_orders_pages_and_answers_for_a_page_of_cases(many):
    event_id = many.record_ranking(
        "ann", {"strategy": "test"}, [("case0005", 1.5), ("case0002", None), ("case0009", 9.0)]
    )
    assert many.find_latest_ranking() == event_id
    assert many.list_ranking(event_id, offset=1, limit=1) == (3, [(2, "case0002", None)])
    assert many.find_ranked(event_id, ["case0009", "case0000"]) == {"case0009": (3, 9.0)}
    _, by_rank = many.select_case_ids(order="rank", limit=4, ranking=event_id)
    assert by_rank == ["case0005", "case0002", "case0009", "case0000"]
    _, by_score = many.select_case_ids(order="score", descending=True, limit=3, ranking=event_id)
    assert by_score == ["case0009", "case0005", "case0000"]  # scores None and unranked cases last
    total, chosen = many.select_case_ids(
        CaseSelection(ids=("case000?",)), order="rank", ranking=event_id, offset=2
    )
    assert (total, chosen[:2]) == (10, ["case0009", "case0000"])


def test_the_newest_ranking_of_a_strategy_the_newest_ids_and_what_came_after(many):
    assert many.find_latest_ranking("random") is None
    older = many.record_ranking("ann", {"strategy": "random"}, [("case0001", None), ("case0002", None)])
    newer = many.record_ranking("ann", {"strategy": "uncertainty"}, [("case0002", 1.0)])
    many.log_event("served", "ann", {"strategy": "random", "cases": ["case0003"]})  # served, no ranking
    found = (many.find_latest_ranking("random"), many.find_latest_ranking("uncertainty"))
    assert found == (older, newer) and many.find_latest_ranking() == newer
    assert many.find_latest_ranking("least-recent") is None
    versions = many.list_label_versions()
    newest = many.find_newest_ids()
    assert newest["label_versions"] == versions[-1].id and newest["cases"] >= len(many.list_case_ids())
    assert many.list_label_versions_after(versions[-3].id) == versions[-2:]
    served = many.list_events_after(older, "served")
    assert [e.detail["strategy"] for e in served] == ["uncertainty", "random"]
    assert newest["events"] == served[-1].id
