"""The label a person edits shows auto-ignored voxels as background; a save stores no unasked ignore."""

from __future__ import annotations

import numpy as np
import pytest

from segloop.loop.corrections import apply_label
from segloop.loop.labels import LabelCache, compute_effective_label, count_voxels, editable_label
from segloop.loop.review import approve_label
from segloop.store import NewLabel, Project
from tests.conftest import make_phantom_project

SHAPE = (16, 16, 8)


def add_version(project: Project, case_id: str, labels: np.ndarray, source: str, classes: tuple[str, ...]):
    """Store ``labels`` as a version of ``source`` annotating ``classes``."""
    schema = project.config.schema
    case = project.get_case(case_id)
    with project.objects.stage() as staged:
        key = staged.put(labels.astype(schema.dtype), case.affine)
    label = NewLabel(key, source, classes, count_voxels(labels.astype(schema.dtype), schema), "test", "test")
    return project.add_label_version(case_id, label)


@pytest.fixture
def liver_only(tmp_path) -> Project:
    """Case ``c0``: only the liver annotated, by an original and by a pseudo (no other class)."""
    project = make_phantom_project(tmp_path, 1, SHAPE)
    liver = np.zeros(SHAPE, np.uint8)
    liver[2:8, 2:8, 1:5] = 1
    add_version(project, "c0", liver, "original", ("liver",))
    pseudo = np.zeros(SHAPE, np.uint8)
    pseudo[3:9, 3:9, 2:6] = 1
    add_version(project, "c0", pseudo, "pseudo", ("liver",))
    return project


def test_served_label_has_no_ignore_where_only_a_class_is_missing(liver_only):
    project = liver_only
    case = project.get_case("c0")
    ignore = project.config.schema.ignore_index
    assembly = compute_effective_label(project, case)
    assert np.any(assembly.labels == ignore)  # training still ignores the unannotated background
    head, labels = editable_label(project, case)
    assert head == project.find_head("c0")
    assert not np.any(labels == ignore)
    np.testing.assert_array_equal(labels == 1, assembly.labels == 1)


def test_saving_the_served_label_for_every_class_stores_no_ignore(liver_only):
    project = liver_only
    case = project.get_case("c0")
    head, labels = editable_label(project, case)
    result = apply_label(project, "c0", labels, parent=head, author="ann")
    assert result.created
    assert result.changed_voxels == 0  # nothing edited: nothing changed, whatever was auto-ignored
    stored = project.read_labels(result.version)
    assert not np.any(stored == project.config.schema.ignore_index)
    # every class is now annotated everywhere: nothing is ignored any more
    assert not compute_effective_label(project, case).ignore_mask.any()


def test_an_ignore_painted_by_a_person_survives_the_round_trip(liver_only):
    project = liver_only
    case = project.get_case("c0")
    ignore = project.config.schema.ignore_index
    head, labels = editable_label(project, case)
    painted = labels.copy()
    painted[10:12, 10:12, 3] = ignore
    first = apply_label(project, "c0", painted, parent=head, author="ann")
    assert first.changed_voxels == 4
    head, served = editable_label(project, case)
    assert head == first.version.id
    np.testing.assert_array_equal(served == ignore, painted == ignore)
    second = apply_label(project, "c0", served, parent=head, author="bob")
    np.testing.assert_array_equal(project.read_labels(second.version) == ignore, painted == ignore)
    assert compute_effective_label(project, case).ignore_mask.sum() == 4


def test_approving_every_class_keeps_explicit_ignores_and_the_label_as_shown(liver_only):
    project = liver_only
    case = project.get_case("c0")
    ignore = project.config.schema.ignore_index
    head, labels = editable_label(project, case)
    painted = labels.copy()
    painted[10:12, 10:12, 3] = ignore
    saved = apply_label(project, "c0", painted, parent=head, author="ann")
    shown = editable_label(project, case)[1].copy()
    names = project.config.schema.names
    approved = approve_label(project, "c0", names, parent=saved.version.id, author="bob")
    assert approved.created and approved.changed_voxels == 0
    np.testing.assert_array_equal(editable_label(project, case)[1], shown)
    assert compute_effective_label(project, case).ignore_mask.sum() == 4


def test_approving_the_liver_keeps_the_other_classes_unannotated(liver_only):
    project = liver_only
    case = project.get_case("c0")
    before = compute_effective_label(project, case).labels.copy()
    result = approve_label(project, "c0", parent=project.find_head("c0"), author="bob")
    assert result.classes == ("liver",)
    assert not np.any(project.read_labels(result.version) == project.config.schema.ignore_index)
    np.testing.assert_array_equal(compute_effective_label(project, case).labels, before)


def test_a_case_without_versions_is_all_background(tmp_path):
    project = make_phantom_project(tmp_path, 1, SHAPE)
    head, labels = editable_label(project, project.get_case("c0"))
    assert head is None
    assert labels.shape == SHAPE and not labels.any()


def test_cached_assemblies_are_shared_read_only_and_follow_new_versions(liver_only):
    project = liver_only
    case = project.get_case("c0")
    first = compute_effective_label(project, case, cached=True)
    assert compute_effective_label(project, case, cached=True) is first
    assert compute_effective_label(project, case) is not first  # uncached: a new assembly
    with pytest.raises(ValueError, match="read-only"):
        first.labels[0, 0, 0] = 1
    head, labels = editable_label(project, case)
    apply_label(project, "c0", labels, parent=head, author="ann")
    assert compute_effective_label(project, case, cached=True) is not first


def test_the_cache_drops_the_least_recently_used_beyond_its_bytes():
    from segloop.core.assembly import Assembly

    def assembly(n):
        return Assembly(np.zeros(n, np.uint8), np.zeros(n, bool), {})

    def put(key, n):
        value = assembly(n)
        cache.put(key, value, [value.labels, value.ignore_mask, value.labels])  # shared arrays count once

    cache = LabelCache(max_bytes=100)
    put("a", 20)  # 40 bytes
    put("b", 20)
    assert cache.get("a") is not None  # now the most recently used
    put("c", 20)  # 120 bytes: "b" goes
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    assert cache.nbytes == 80
    put("huge", 60)  # larger than the whole cache: not kept
    assert cache.get("huge") is None and cache.nbytes == 80


def test_prefetch_assembles_the_new_head_ahead_of_the_next_call(liver_only, monkeypatch):
    from segloop.loop import labels as module

    project = liver_only
    case = project.get_case("c0")
    head, labels = editable_label(project, case)
    edited = labels.copy()
    edited[0, 0, 0] = 2
    apply_label(project, "c0", edited, parent=head, author="ann")
    module.prefetch_effective_label(project, case).join(timeout=30)

    def fail(*args, **kwargs):
        raise AssertionError("assembled again")

    monkeypatch.setattr(module, "assemble_labels", fail)
    assert editable_label(project, case)[1][0, 0, 0] == 2  # from the cache


def test_a_tool_export_corrected_and_read_back_stores_no_auto_ignore(liver_only, tmp_path):
    from segloop.loop.corrections import find_export_parent, read_corrected_label
    from segloop.loop.tool_exports import export_for_tool

    project = liver_only
    ignore = project.config.schema.ignore_index
    export_for_tool(project, "c0", "itksnap", tmp_path / "export")
    path = tmp_path / "export" / "corrected.nii.gz"
    labels, names, provenance = read_corrected_label(project, "c0", path)  # `segloop correct --label`
    assert not np.any(labels == ignore)
    parent = find_export_parent(project, "c0", [path])
    result = apply_label(project, "c0", labels, names, parent=parent, author="ann", provenance=provenance)
    assert result.changed_voxels == 0
    assert not np.any(project.read_labels(result.version) == ignore)
