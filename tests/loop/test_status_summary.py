"""`segloop status`'s numbers: the summary (classes by deciding source), filters, the dashboard's pages."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.errors import InvalidInputError, UnknownClassError
from segloop.loop.cases import (
    SUMMARY_SOURCES,
    count_case_sources,
    filter_versions,
    list_case_page,
    list_case_table,
    parse_class_filter,
    parse_source_filter,
    summarize_cases,
    summarize_project,
    tally_class_sources,
)
from segloop.loop.ranking import rank_cases
from segloop.loop.review import read_latest_ranking
from segloop.store import NewLabel
from segloop.store.overview import CaseSelection
from tests.conftest import make_phantom_project

SHAPE = (8, 8, 4)


@pytest.fixture
def project(tmp_path):
    """Four phantoms: c0 and c2 pseudo-labelled, then c2's liver revised."""
    project = make_phantom_project(tmp_path, 4, SHAPE, labeled=(0, 2), source="pseudo")
    [pseudo] = project.list_label_versions("c2")
    liver = NewLabel(pseudo.object_key, "revised", ("liver",), {"liver": 1}, "ann", "editor", {})
    project.add_label_version("c2", liver)
    return project


def test_tally_counts_the_cases_no_version_annotates_as_none():
    table = tally_class_sources(5, ["liver", "spleen"], {("liver", "pseudo"): 2, ("liver", "original"): 1})
    assert table["liver"] == {"original": 1, "revised": 0, "sparse": 0, "draft": 0, "pseudo": 2, "none": 2}
    assert table["spleen"]["none"] == 5 and list(table["spleen"]) == list(SUMMARY_SOURCES)


def test_the_summary_counts_cases_by_the_source_deciding_each_class(project):
    summary = summarize_project(project)
    assert (summary.name, summary.n_cases, summary.n_versions) == ("p", 4, 3)
    assert summary.sources["liver"] == {
        **dict.fromkeys(SUMMARY_SOURCES, 0),
        "pseudo": 1,
        "revised": 1,
        "none": 2,
    }
    assert summary.sources["spleen"]["pseudo"] == 2 and summary.sources["spleen"]["none"] == 2
    assert summary.sources == count_case_sources(summarize_cases(project), project.config.schema.names)
    assert (summary.rounds, summary.queue, summary.jobs) == ((), (), ())
    only = summarize_project(project, classes=("spleen",))
    assert list(only.sources) == ["spleen"]


def test_the_summary_shows_the_head_of_the_newest_ranking_and_unfinished_jobs(project):
    ranked = rank_cases(project, strategy="random", seed=1, author="ann")
    job = project.start_job("predict", author="ann")
    summary = summarize_project(project, queue_head=2)
    assert [case_id for case_id, _ in summary.queue] == [r.case_id for r in ranked[:2]]
    assert summary.queue_length == len(ranked) == 4 and summary.queue[0][1].strategy == "random"
    assert [j.id for j in summary.jobs] == [job.id]
    assert read_latest_ranking(project) is read_latest_ranking(project)  # parsed once per event


def test_filters_name_the_choices_when_a_class_or_source_is_unknown(project):
    assert parse_class_filter(project, " liver, spleen,liver ") == ("liver", "spleen")
    assert parse_class_filter(project, "") is None
    with pytest.raises(UnknownClassError, match="unknown class 'lung': expected one of liver, spleen"):
        parse_class_filter(project, "liver,lung")
    assert parse_source_filter("pseudo,none") == ("pseudo", "none")
    with pytest.raises(
        InvalidInputError, match="unknown label source 'ai': expected one of original, revised"
    ):
        parse_source_filter("pseudo,ai")


def test_the_case_table_keeps_the_cases_where_a_shown_class_is_decided_by_a_source(project):
    revised = list_case_table(project, CaseSelection(classes=("liver",), sources=("revised",)))
    assert (revised.total, [r.case_id for r in revised.rows]) == (1, ["c2"])
    assert revised.rows[0].class_sources == {"liver": "revised"} and revised.rows[0].n_versions == 2
    unlabeled = list_case_table(project, CaseSelection(sources=("none",)), limit=1)
    assert (unlabeled.total, [r.case_id for r in unlabeled.rows]) == (2, ["c1"])
    both = list_case_table(project, CaseSelection(ids=("c2", "c0"), classes=("spleen",), sources=("pseudo",)))
    assert [r.case_id for r in both.rows] == ["c0", "c2"] and both.classes == ("spleen",)
    with pytest.raises(InvalidInputError, match="offset and limit must be >= 0"):
        list_case_table(project, limit=-1)


def test_show_keeps_the_newest_versions_of_the_asked_classes_and_sources(project):
    versions = project.list_label_versions("c2")
    assert filter_versions(versions) == (versions, 2)
    assert filter_versions(versions, classes=["liver"], limit=1) == (versions[1:], 2)
    assert filter_versions(versions, classes=["spleen"]) == (versions[:1], 1)
    assert filter_versions(versions, sources=["original"]) == ([], 0)
    assert filter_versions(versions, limit=0) == ([], 2)


def test_pages_follow_the_newest_ranking_with_unranked_cases_last(project):
    assert [s.case_id for s, _ in list_case_page(project, order="rank").rows] == ["c0", "c1", "c2", "c3"]
    project.record_ranking("ann", {"strategy": "uncertainty", "cases": ["c3"]}, [("c3", 5.0), ("c1", 2.0)])
    page = list_case_page(project, order="rank", limit=3)
    assert page.total == 4 and [(s.case_id, r and r.rank) for s, r in page.rows] == [
        ("c3", 1),
        ("c1", 2),
        ("c0", None),
    ]
    backwards = list_case_page(project, order="uncertainty", offset=1, limit=2)
    assert [s.case_id for s, _ in backwards.rows] == ["c3", "c0"]  # lowest score first, then unranked
    down = list_case_page(project, order="rank", descending=True)
    assert [s.case_id for s, _ in down.rows] == ["c1", "c3", "c0", "c2"]
    words = list_case_page(project, CaseSelection(words=("C",), also_ids=()), order="rank", limit=2)
    assert (words.total, [s.case_id for s, _ in words.rows]) == (4, ["c3", "c1"])
    with pytest.raises(InvalidInputError, match="unknown case order 'size'"):
        list_case_page(project, order="size")
    assert np.array_equal(list_case_page(project, limit=1).rows[0][0].shape, SHAPE)
