"""Schema 5: the users of `segloop serve` and the editor's drafts (one per case and author)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import inspect

from segloop.errors import (
    ConflictError,
    GeometryMismatchError,
    InvalidInputError,
    LabelValueError,
    NotFoundError,
    StoreIntegrityError,
)
from segloop.store import ObjectStore, Project, check_project
from segloop.store.database import SCHEMA_VERSION, read_schema_version
from tests.conftest import make_phantom_project

SHAPE = (16, 16, 8)


@pytest.fixture
def project(tmp_path):
    return make_phantom_project(tmp_path, 2, SHAPE, labeled=(0, 1))


def _label(value: int = 1, voxels: int = 10) -> np.ndarray:
    labels = np.zeros(SHAPE, np.uint8)
    labels.flat[:voxels] = value
    return labels


def _draft_files(project: Project) -> list[str]:
    return project.draft_objects.list_keys()


def test_migration_5_adds_users_and_drafts_to_a_schema_4_database(project):
    head = project.find_head("c0")
    with project.engine.begin() as connection:
        for table in ("drafts", "users"):
            connection.exec_driver_sql(f"DROP TABLE {table}")
        connection.exec_driver_sql("UPDATE schema_info SET version = 4")
    project.engine.dispose()
    assert read_schema_version(project.engine) == 4 and SCHEMA_VERSION >= 5
    reopened = Project.open(project.root)
    assert read_schema_version(reopened.engine) == SCHEMA_VERSION
    assert {"users", "drafts"} <= set(inspect(reopened.engine).get_table_names())
    assert reopened.find_head("c0") == head  # what schema 4 held is untouched
    assert reopened.list_users() == [] and reopened.list_drafts() == []
    reopened.save_draft("c0", "ana", _label(), head)
    assert reopened.find_draft("c0", "ana").parent == head


def test_users_are_added_found_by_token_hash_listed_and_removed(project):
    ana = project.add_user("ana", "a" * 64)
    project.add_user("ben", "b" * 64)
    assert ana.name == "ana" and ana.created_at is not None
    assert project.find_user_by_token_hash("a" * 64) == ana
    assert project.find_user_by_token_hash("c" * 64) is None
    assert [u.name for u in project.list_users()] == ["ana", "ben"]
    with pytest.raises(ConflictError, match="a user named 'ana' exists already"):
        project.add_user("ana", "c" * 64)
    with pytest.raises(ConflictError, match="that token is another user's"):
        project.add_user("cleo", "b" * 64)
    with pytest.raises(InvalidInputError, match="SHA-256 hex digest .* got 9 characters"):
        project.add_user("cleo", "raw-token")
    project.remove_user("ana")
    assert project.find_user_by_token_hash("a" * 64) is None
    assert [u.name for u in project.list_users()] == ["ben"]
    with pytest.raises(NotFoundError, match="no user 'ana'"):
        project.remove_user("ana")


def test_a_draft_is_saved_read_and_replaced_and_its_old_file_removed(project):
    head = project.find_head("c0")
    first = project.save_draft("c0", "ana", _label(1, 10), head)
    assert (first.case_id, first.author, first.parent, first.shape) == ("c0", "ana", head, SHAPE)
    assert np.array_equal(project.read_draft(first), _label(1, 10))
    second = project.save_draft("c0", "ana", _label(2, 20), None)
    assert project.find_draft("c0", "ana") == second and second.parent is None
    assert second.updated_at >= first.updated_at
    assert np.array_equal(project.read_draft(second), _label(2, 20))
    assert _draft_files(project) == [second.object_key]  # the replaced file is gone
    assert project.list_drafts() == [second] and project.list_drafts("c1") == []
    assert project.list_label_versions("c0")[-1].id == head  # a draft is no label version
    assert check_project(project).ok


def test_drafts_of_the_same_content_share_a_file_until_the_last_is_deleted(project):
    one = project.save_draft("c0", "ana", _label(), None)
    two = project.save_draft("c1", "ben", _label(), project.find_head("c1"))
    assert one.object_key == two.object_key and _draft_files(project) == [one.object_key]
    assert project.delete_draft("c0", "ana") is True
    assert _draft_files(project) == [two.object_key]  # still ben's
    assert np.array_equal(project.read_draft(two), _label())
    assert project.delete_draft("c0", "ana") is False
    assert project.delete_draft("c1", "ben") is True
    assert _draft_files(project) == [] and project.list_drafts() == []
    assert project.find_draft("nope", "ana") is None


def test_a_draft_saved_again_unchanged_keeps_its_file(project):
    project.save_draft("c0", "ana", _label(), None)
    again = project.save_draft("c0", "ana", _label(), None)
    assert np.array_equal(project.read_draft(again), _label())


@pytest.mark.parametrize(
    ("labels", "parent", "error", "match"),
    [
        (
            np.zeros((16, 16, 7), np.uint8),
            None,
            GeometryMismatchError,
            r"shape \(16, 16, 7\): expected .*\(16, 16, 8\)",
        ),
        (np.full(SHAPE, 99, np.uint8), None, LabelValueError, "label values 99 outside the schema"),
        (np.full(SHAPE, 0.5), None, LabelValueError, "integer label values"),
        (_label(), "c1", InvalidInputError, "is a version of case 'c1'"),
        (_label(), 999, NotFoundError, "no label version 999"),
    ],
)
def test_a_bad_draft_is_refused_and_nothing_is_stored(project, labels, parent, error, match):
    if parent == "c1":
        parent = project.find_head("c1")
    with pytest.raises(error, match=match):
        project.save_draft("c0", "ana", labels, parent)
    assert project.list_drafts() == [] and _draft_files(project) == []


def test_a_draft_of_an_unknown_case_is_refused(project):
    with pytest.raises(NotFoundError, match="no case 'nope'"):
        project.save_draft("nope", "ana", _label(), None)


def test_fsck_checks_draft_files_and_reports_their_orphans(project):
    draft = project.save_draft("c0", "ana", _label(), None)
    report = check_project(project)
    assert report.ok and report.objects_checked == len(project.list_label_versions()) + 1
    stray = project.draft_objects
    with stray.stage() as staged:
        orphan = staged.put(_label(3, 5), np.eye(4))
    kinds = {(p.kind, p.subject) for p in check_project(project).problems}
    assert kinds == {("orphan-object", str(stray.path_of(orphan)))}
    stray.path_of(orphan).unlink()
    stray.path_of(draft.object_key).unlink()
    (problem,) = check_project(project).problems
    assert (problem.kind, problem.detail) == ("missing-object", "a draft's file is missing")
    with pytest.raises(StoreIntegrityError, match="is missing"):
        project.read_draft(draft)


def test_a_file_removed_by_a_concurrent_replace_before_the_row_is_written_is_published_again(
    project, monkeypatch
):
    original = ObjectStore.has
    removed = []

    def has_after_a_concurrent_replace(store: ObjectStore, key: str) -> bool:
        if store.root.name == "drafts" and not removed:
            store.path_of(key).unlink()  # what another author's replace of a shared file does
            removed.append(key)
        return original(store, key)

    monkeypatch.setattr(ObjectStore, "has", has_after_a_concurrent_replace)
    draft = project.save_draft("c0", "ana", _label(), None)
    assert removed == [draft.object_key]
    assert np.array_equal(project.read_draft(draft), _label())
