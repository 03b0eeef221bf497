"""loop.review: where to look first, the newest recorded ranking, versions since a parent, approving."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.errors import ConflictError, NotFoundError, UnknownClassError
from segloop.loop.ranking import rank_cases
from segloop.loop.review import (
    RankedEntry,
    SliceIndex,
    approve_label,
    list_versions_since,
    most_uncertain_slice,
    read_latest_ranking,
)
from tests.conftest import make_phantom_project


@pytest.fixture
def project(tmp_path):
    return make_phantom_project(tmp_path, 3, (16, 16, 6), labeled=(0,))


def test_most_uncertain_slice_follows_the_axial_axis_of_the_affine():
    entropy = np.zeros((5, 6, 7), np.float16)
    entropy[:, 4, :] = 0.2  # slice 4 along voxel axis 1
    entropy[:, :, 2] += 0.01
    permuted = np.eye(4)[[0, 2, 1, 3]]  # voxel axis 1 runs along z (superior)
    assert most_uncertain_slice(entropy, permuted) == SliceIndex(axis=1, index=4)
    assert most_uncertain_slice(entropy, np.eye(4)) == SliceIndex(axis=2, index=2)
    assert most_uncertain_slice(np.zeros((3, 3, 3), np.float16), np.eye(4)) is None
    with_nan = np.full((3, 3, 3), np.nan, np.float32)
    with_nan[:, :, 1] = 0.5
    assert most_uncertain_slice(with_nan, np.eye(4)) == SliceIndex(2, 1)


def test_latest_ranking_is_the_newest_served_event_whole(project):
    assert read_latest_ranking(project) == {}
    rank_cases(project, strategy="random", count=1, seed=3, author="ana")
    ranking = read_latest_ranking(project)
    assert sorted(ranking) == ["c1", "c2"] and {e.rank for e in ranking.values()} == {1, 2}
    assert all(e.strategy == "random" and e.score is None for e in ranking.values())
    project.record_ranking("bo", {"cases": ["c2"], "strategy": "uncertainty"}, [("c2", 4.0)])
    assert read_latest_ranking(project) == {"c2": RankedEntry(1, 4.0, "uncertainty")}
    # a ranking kept in its event's detail (schema 5) is read once the migration moved it to rows:
    # tests/store/test_scale_queries.py::test_migration_6_backfills_class_decisions_of_a_schema_5_project


def test_versions_since_a_parent(project):
    versions = project.list_label_versions("c0")
    assert list_versions_since(versions, None) == versions
    assert list_versions_since(versions, versions[-1].id) == []


def test_approve_keeps_only_the_approved_classes_and_checks_the_parent(project):
    head = project.find_head("c0")
    result = approve_label(project, "c0", ["liver"], parent=head, author="ana")
    stored = project.read_labels(result.version)
    original = project.read_labels(project.get_label_version(head))
    assert result.version.tool == "approve" and result.version.classes == ("liver",)
    assert np.array_equal(stored, np.where(original == 1, 1, 0))
    with pytest.raises(ConflictError, match="changed since"):
        approve_label(project, "c0", ["spleen"], parent=head, author="ben")
    with pytest.raises(UnknownClassError):
        approve_label(project, "c0", ["heart"], parent=result.version.id, author="ana")
    with pytest.raises(NotFoundError, match="nothing to approve"):
        approve_label(project, "c1", None, parent=None, author="ana")
