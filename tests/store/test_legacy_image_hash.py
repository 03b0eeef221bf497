"""Projects made before an image's hash covered all its files: a detached NRRD header was
recorded with the SHA-256 of its own bytes. Such images are read (not "changed") and their
recorded hash is upgraded, after which a changed data file is refused as for any image."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from sqlalchemy import select

from segloop.errors import StoreIntegrityError
from segloop.io import write_volume
from segloop.loop.cases import import_cases, init_project
from segloop.store import Project
from segloop.store.database import case_images
from segloop.store.fsck import check_project
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom

SHAPE = (16, 16, 8)


@pytest.fixture
def nhdr_project(tmp_path):
    """A project of one ``.nhdr`` + ``.raw`` image whose recorded hash is the header's alone."""
    project = init_project(tmp_path / "p", PHANTOM_CLASSES)
    data = np.asarray(make_ct_phantom(SHAPE, seed=1).image.array, dtype="<i2")
    folder = tmp_path / "nhdr"
    folder.mkdir()
    (folder / "x.raw").write_bytes(data.tobytes(order="F"))
    (folder / "x.nhdr").write_text(
        "NRRD0004\ntype: int16\ndimension: 3\nspace: left-posterior-superior\n"
        f"sizes: {' '.join(map(str, SHAPE))}\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"
        "endian: little\nencoding: raw\nspace origin: (0,0,0)\ndata file: x.raw\n\n"
    )
    import_cases(project, [folder / "x.nhdr"])
    old = hashlib.sha256((folder / "x.nhdr").read_bytes()).hexdigest()
    _set_recorded(project, old)
    return Project.open(project.root), folder, data, old


def _set_recorded(project: Project, sha256: str) -> None:
    with project.engine.begin() as connection:
        connection.execute(case_images.update().values(sha256=sha256))


def _recorded(project: Project) -> str:
    with project.engine.connect() as connection:
        return connection.execute(select(case_images.c.sha256)).scalar_one()


def test_a_header_only_hash_is_accepted_and_upgraded(nhdr_project):
    project, folder, data, old = nhdr_project
    (case_id,) = project.list_case_ids()
    np.testing.assert_array_equal(project.read_image(case_id).array, data)
    assert _recorded(project) not in {old, ""}
    changed = data.copy()
    changed[0, 0, 0] += 1
    (folder / "x.raw").write_bytes(changed.tobytes(order="F"))  # the header is untouched
    with pytest.raises(StoreIntegrityError, match="changed since it was added"):
        project.read_image(case_id)


def test_fsck_accepts_a_header_only_hash_and_rewrites_nothing(nhdr_project):
    project, _, _, old = nhdr_project
    assert not [p for p in check_project(project).problems if p.kind == "changed-image"]
    assert _recorded(project) == old


def test_another_recorded_hash_is_still_a_changed_image(nhdr_project):
    project, _, _, _ = nhdr_project
    _set_recorded(project, "0" * 64)
    (case_id,) = project.list_case_ids()
    with pytest.raises(StoreIntegrityError, match="changed since it was added"):
        project.read_image(case_id)
    assert _recorded(project) == "0" * 64


def test_copies_recorded_relative_to_the_old_working_folder_are_found(tmp_path):
    """Before, `add --copy` recorded ``<project as typed>/images/<name>`` (relative to the cwd)."""
    project = init_project(tmp_path / "p", PHANTOM_CLASSES)
    source = tmp_path / "c0_0000.nii.gz"
    write_volume(make_ct_phantom(SHAPE, seed=0).image, source)
    import_cases(project, [source], copy=True)
    image = project.get_case("c0").images[0]
    legacy_file = project.root / "images" / "c0_0000.nii.gz"
    project.image_path(image).rename(legacy_file)
    with project.engine.begin() as connection:
        connection.execute(case_images.update().values(path="p/images/c0_0000.nii.gz"))
    reopened = Project.open(project.root)
    assert reopened.image_path(reopened.get_case("c0").images[0]) == legacy_file
    np.testing.assert_array_equal(reopened.read_image("c0").array, make_ct_phantom(SHAPE, seed=0).image.array)
