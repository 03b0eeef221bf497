"""Issue 18: `segloop fsck` verifies a whole project and says what is wrong."""

from __future__ import annotations

import os

import numpy as np
import pytest

from segloop.io import read_volume, write_volume
from segloop.store import check_project
from segloop.synthetic import make_ct_phantom
from tests.conftest import make_phantom_project

SHAPE = (16, 16, 8)


@pytest.fixture
def project(tmp_path):
    return make_phantom_project(tmp_path, 3, SHAPE, labeled=range(3))


def _damage(project, tmp_path):
    """One of each: changed object, missing object, orphan, changed image, missing image, leftover."""
    versions = {v.case_id: v for v in project.list_label_versions()}
    changed = project.objects.path_of(versions["c0"].object_key)
    stored = read_volume(changed)
    changed.unlink()
    write_volume(stored.with_array(np.zeros_like(stored.array)), changed)
    project.objects.path_of(versions["c1"].object_key).unlink()
    with project.objects.stage() as staged:
        staged.put(np.ones((2, 2, 2), np.uint8), np.eye(4))  # published, but no version uses it
    (project.objects.root / ".staging-deadbeef").mkdir()
    write_volume(make_ct_phantom(SHAPE, seed=9).image, tmp_path / "img" / "c1_0000.nii.gz", overwrite=True)
    (tmp_path / "img" / "c2_0000.nii.gz").unlink()


def test_a_sound_project_has_no_problems(project):
    report = check_project(project)
    assert report.ok and (report.objects_checked, report.images_checked) == (3, 3)


def test_every_kind_of_damage_is_found(project, tmp_path):
    _damage(project, tmp_path)
    report = check_project(project)
    kinds = sorted(problem.kind for problem in report.problems)
    assert kinds == [
        "changed-image",
        "changed-object",
        "leftover",
        "missing-image",
        "missing-object",
        "orphan-object",
    ]
    changed = next(p for p in report.problems if p.kind == "changed-image")
    assert changed.subject.endswith("c1_0000.nii.gz") and "SHA-256" in changed.detail


def test_fsck_rehashes_even_when_the_cache_trusts_the_file(project):
    project.read_image("c0")  # caches the hash
    path = project.image_path(project.get_case("c0").images[0])
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size and mtime: the cache is fooled
    assert [p.kind for p in check_project(project).problems] == ["changed-image"]


def test_the_cli_prints_a_table_and_exits_1(project, tmp_path, run_cli):
    result = run_cli("fsck", project.root)
    assert result.code == 0 and "no problems" in result.out
    _damage(project, tmp_path)
    result = run_cli("fsck", project.root)
    words = " ".join(result.out.split())  # rich wraps the title on long temporary paths
    assert result.code == 1 and "6 problems" in words and "orphan-object" in words


@pytest.mark.sqlite_only  # a deleted segloop.db
def test_the_cli_names_a_missing_database(project, run_cli):
    project.engine.dispose()
    (project.root / "segloop.db").unlink()
    result = run_cli("status", project.root)
    assert result.code == 1 and "segloop.db is missing" in result.err and "Traceback" not in result.err
    assert not (project.root / "segloop.db").exists()


@pytest.mark.sqlite_only  # a deleted segloop.db
def test_fsck_of_no_project_or_a_lost_database_is_one_line(project, tmp_path, run_cli):
    result = run_cli("fsck", tmp_path / "nothing-here")
    assert result.code == 1 and result.err.startswith("error: ") and result.err.count("\n") == 1
    project.engine.dispose()
    (project.root / "segloop.db").unlink()
    result = run_cli("fsck", project.root)
    assert result.code == 1 and "segloop.db is missing" in result.err and result.err.count("\n") == 1
    assert not (project.root / "segloop.db").exists()
