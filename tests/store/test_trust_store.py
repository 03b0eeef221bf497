"""Issue 18 (#3, #8, #9, read-only and corrupt databases): the store owns its disk and can be trusted."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from sqlalchemy import Engine, event

from segloop.errors import (
    ConflictError,
    CorruptFileError,
    InvalidInputError,
    MissingDependencyError,
    StoreIntegrityError,
)
from segloop.io import read_volume, write_volume
from segloop.loop.cases import import_cases, init_project
from segloop.store import DATABASE_URL_VARIABLE, Project, integrity
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom
from tests.conftest import make_phantom_project

SHAPE = (16, 16, 8)


@pytest.fixture
def project(tmp_path):
    """A project of two phantoms (images referenced in place), c0 with an original label."""
    return make_phantom_project(tmp_path, 2, SHAPE, labeled=[0])


def _set_database_url(project_root, url):
    config = project_root / "segloop.toml"
    text = config.read_text()
    if "[database]" in text:
        text = text.replace('url = ""', f'url = "{url}"')
    else:
        text += f'\n[database]\nurl = "{url}"\n'
    config.write_text(text)


# -- #3: the database location comes from the user, never from segloop.toml ------------------------


@pytest.mark.sqlite_only  # a sqlite:/// URL of another project's file in segloop.toml
def test_a_database_url_in_the_project_file_is_refused(tmp_path, project):
    other = init_project(tmp_path / "other", PHANTOM_CLASSES)
    other_db = other.root / "segloop.db"
    _set_database_url(project.root, f"sqlite:///{other_db}")
    with pytest.raises(CorruptFileError, match=r"\[database\] url = .* is not trusted"):
        Project.open(project.root)
    assert other.list_case_ids() == []  # before: the project's cases were written there


def test_an_old_project_file_with_an_empty_url_opens(project):
    _set_database_url(project.root, "")
    assert "[database]" in (project.root / "segloop.toml").read_text()
    assert Project.open(project.root).list_case_ids() == ["c0", "c1"]


def test_new_project_files_name_no_database(project):
    assert "[database]" not in (project.root / "segloop.toml").read_text()


def test_the_user_chooses_the_database_by_argument_or_environment(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    created = Project.create(tmp_path / "p", init_project(tmp_path / "tmpl", ["a"]).config, database_url=url)
    assert not (tmp_path / "p" / "segloop.db").exists() and (tmp_path / "elsewhere.db").is_file()
    created.log_event("probe", "t", {})
    assert Project.open(tmp_path / "p", database_url=url).count_events("probe") == 1
    monkeypatch.setenv(DATABASE_URL_VARIABLE, url)
    assert Project.open(tmp_path / "p").count_events("probe") == 1


@pytest.mark.parametrize(
    ("url", "kind", "words"),
    [
        ("sqlite://", InvalidInputError, "in-memory database, which keeps nothing"),
        ("sqlite:///:memory:", InvalidInputError, "in-memory"),
        ("not a url", InvalidInputError, "is not a SQLAlchemy URL"),
        ("nosuchdialect://user@host/db", MissingDependencyError, "is not available"),
    ],
)
def test_bad_database_urls_are_one_line_errors(tmp_path, project, url, kind, words):
    with pytest.raises(kind, match=words) as caught:
        Project.open(project.root, database_url=url)
    assert "\n" not in str(caught.value)
    with pytest.raises(kind, match=words):
        Project.create(tmp_path / "new", project.config, database_url=url)
    assert not (tmp_path / "new").exists()


# -- #8: a missing database is damage, not a fresh project ------------------------------------------


@pytest.mark.sqlite_only  # a deleted segloop.db
def test_a_missing_database_beside_objects_is_an_integrity_error(project):
    project.engine.dispose()
    (project.root / "segloop.db").unlink()
    with pytest.raises(StoreIntegrityError, match=r"segloop.db is missing .*1 label objects.*restore"):
        Project.open(project.root)
    assert not (project.root / "segloop.db").exists()  # before: an empty database was created


@pytest.mark.sqlite_only  # a segloop.db overwritten with garbage
def test_a_corrupt_database_is_a_one_line_integrity_error(project):
    project.engine.dispose()
    (project.root / "segloop.db").write_bytes(b"this is not a database " * 200)
    with pytest.raises(StoreIntegrityError, match="cannot be read") as caught:
        Project.open(project.root)
    assert "\n" not in str(caught.value)


# -- read-only: opening writes nothing ---------------------------------------------------------------


@pytest.fixture
def statements():
    """Every SQL statement any engine sends while the test runs."""
    seen: list[str] = []

    def record(_connection, _cursor, statement, *_args) -> None:
        seen.append(statement.strip().split()[0].upper() + " " + statement.strip()[:60])

    event.listen(Engine, "before_cursor_execute", record)
    yield seen
    event.remove(Engine, "before_cursor_execute", record)


def test_opening_and_reading_write_nothing(project, statements):
    opened = Project.open(project.root)
    opened.list_cases()
    opened.list_label_versions()
    writes = [s for s in statements if s.split()[0] in {"INSERT", "UPDATE", "DELETE", "CREATE", "DROP"}]
    assert writes == [] and not any("IMMEDIATE" in s for s in statements), statements


@pytest.mark.sqlite_only  # SQLite's mode=ro file URI
def test_a_read_only_database_opens_and_reads(project):
    project.engine.dispose()
    url = f"sqlite:///file:{project.root / 'segloop.db'}?mode=ro&uri=true"
    opened = Project.open(project.root, database_url=url)
    assert opened.read_only and opened.list_case_ids() == ["c0", "c1"]
    assert opened.read_image("c1").spatial_shape == SHAPE  # the hash cache is not written
    version = opened.list_label_versions("c0")[0]
    assert opened.read_labels(version).shape == SHAPE
    with pytest.raises(Exception, match="readonly"):
        opened.log_event("probe", "t", {})


@pytest.mark.sqlite_only  # SQLite's mode=ro file URI
def test_a_read_only_database_that_needs_a_migration_says_so(project):
    with project.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE schema_info SET version = 3")
    project.engine.dispose()
    url = f"sqlite:///file:{project.root / 'segloop.db'}?mode=ro&uri=true"
    with pytest.raises(ConflictError, match="needs an upgrade .* cannot be written"):
        Project.open(project.root, database_url=url)


# -- #9: stored files are verified when read ------------------------------------------------------


def test_an_object_overwritten_with_another_valid_label_is_refused(project):
    version = project.list_label_versions("c0")[0]
    path = project.objects.path_of(version.object_key)
    stored = read_volume(path)
    other = stored.with_array(np.zeros_like(stored.array))
    path.unlink()
    write_volume(other, path)
    with pytest.raises(
        StoreIntegrityError, match=rf"{version.object_key}.nii.gz changed since it was stored"
    ):
        project.read_labels(version)


def test_an_image_replaced_by_another_patient_is_refused(tmp_path, project):
    path = project.image_path(project.get_case("c1").images[0])
    assert project.read_image("c1").spatial_shape == SHAPE
    write_volume(make_ct_phantom(SHAPE, seed=7).image, path, overwrite=True)  # same grid, other content
    recorded = project.get_case("c1").images[0].sha256
    with pytest.raises(
        StoreIntegrityError, match=rf"c1_0000.nii.gz of case 'c1' changed.*recorded {recorded}"
    ):
        project.read_image("c1")


def test_an_unchanged_image_is_hashed_once(project, monkeypatch):
    calls = []
    real = integrity.hash_path
    monkeypatch.setattr(integrity, "hash_path", lambda path: calls.append(path) or real(path))
    project.read_image("c1")
    project.read_image("c1")
    Project.open(project.root).read_image("c1")
    assert len(calls) == 1
    path = project.image_path(project.get_case("c1").images[0])
    shutil.copy2(path, path.with_suffix(".bak"))  # rewrite the same bytes: a new mtime
    path.write_bytes(path.with_suffix(".bak").read_bytes())
    project.read_image("c1")
    assert len(calls) == 2


def test_a_missing_channel_or_file_is_named(project):
    with pytest.raises(Exception, match="has no image channel 3"):
        project.read_image("c1", channel=3)
    project.image_path(project.get_case("c1").images[0]).unlink()
    with pytest.raises(Exception, match="image of case 'c1' is missing"):
        project.read_image("c1")


def test_a_detached_nrrd_image_is_verified_with_its_data_file(tmp_path):
    project = init_project(tmp_path / "n", PHANTOM_CLASSES)
    image = make_ct_phantom(SHAPE, seed=3).image
    data = np.asarray(image.array, dtype="<i2")
    (tmp_path / "nhdr").mkdir()
    (tmp_path / "nhdr" / "x.raw").write_bytes(data.tobytes(order="F"))
    header = (
        "NRRD0004\ntype: int16\ndimension: 3\nspace: left-posterior-superior\n"
        f"sizes: {' '.join(map(str, SHAPE))}\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"
        "endian: little\nencoding: raw\nspace origin: (0,0,0)\ndata file: x.raw\n\n"
    )
    (tmp_path / "nhdr" / "x.nhdr").write_text(header)
    import_cases(project, [tmp_path / "nhdr" / "x.nhdr"])
    (case_id,) = project.list_case_ids()
    np.testing.assert_array_equal(project.read_image(case_id).array, data)
    changed = data.copy()
    changed[0, 0, 0] += 1
    (tmp_path / "nhdr" / "x.raw").write_bytes(changed.tobytes(order="F"))  # the header is untouched
    with pytest.raises(StoreIntegrityError, match="changed since it was added"):
        project.read_image(case_id)


@pytest.mark.sqlite_only  # file permissions of segloop.db
def test_a_database_the_user_may_not_write_is_opened_read_only(project, monkeypatch, statements):
    """As a non-root user on a read-only project (root ignores permissions: simulated here)."""
    project.engine.dispose()
    monkeypatch.setattr(os, "access", lambda *_args, **_kwargs: False)
    opened = Project.open(project.root)
    assert opened.read_only and "immutable=1" in str(opened.engine.url)
    assert opened.list_case_ids() == ["c0", "c1"] and opened.read_image("c0").spatial_shape == SHAPE
    assert not [s for s in statements if s.split()[0] in {"INSERT", "UPDATE", "CREATE"}]
    assert not (project.root / "segloop.db-wal").exists()
