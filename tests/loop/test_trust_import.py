"""Issue 18 at the import edge: case ids, `add --copy` (relative paths, detached headers, staging
and roll-back, kill -9), the one window parser, and nothing unsafe ever entering the store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segloop.core import Volume
from segloop.errors import ConflictError, InvalidInputError, LabelValueError
from segloop.io import read_volume, write_volume
from segloop.loop.cases import import_cases, init_project
from segloop.loop.exchange import export_nnunet, import_image_folder
from segloop.store import Project
from segloop.synthetic import PHANTOM_CLASSES, make_ct_phantom
from tests.conftest import snapshot_project

SHAPE = (12, 12, 6)
REPO = Path(__file__).resolve().parents[2]


def _image(folder: Path, name: str, seed: int = 0) -> Path:
    return write_volume(make_ct_phantom(SHAPE, seed=seed).image, folder / name)


@pytest.fixture
def project(tmp_path):
    return init_project(tmp_path / "proj", PHANTOM_CLASSES)


@pytest.mark.parametrize(
    "case_id",
    ["/elsewhere/ABS", "../..", "..", ".", "", "a\nb", "x" * 300, "-rf", "a/b", ".hidden"],
)
def test_unsafe_case_ids_are_refused_before_anything_is_written(project, tmp_path, case_id):
    image = _image(tmp_path, "ct.nii.gz")
    before = snapshot_project(project.root)
    with pytest.raises(InvalidInputError, match="case id") as raised:
        import_cases(project, [image], case_id=case_id)
    assert "\n" not in str(raised.value) and len(str(raised.value)) < 300
    assert snapshot_project(project.root) == before


def test_ids_derived_from_file_names_are_validated_too(project, tmp_path):
    before = snapshot_project(project.root)
    for name in ("..._0000.nii.gz", "._0000.nii.gz", "a b_0000.nii.gz"):
        with pytest.raises(InvalidInputError, match="case id"):
            import_cases(project, [_image(tmp_path / name.replace(".", "d"), name)])
    folder = tmp_path / "pngs"
    folder.mkdir()
    write_volume(Volume(np.zeros((8, 8, 1), np.uint8), np.eye(4)), folder / "x.png")
    (folder / "x.png").rename(folder / "...png")  # an image named ...png would be case ".."
    with pytest.raises(InvalidInputError, match=r"case id '\.\.'"):
        import_image_folder(project, [folder], author="t")
    assert snapshot_project(project.root) == before


def test_cli_add_with_a_bad_case_id_is_one_line(run_cli, project, tmp_path):
    image = _image(tmp_path, "ct.nii.gz")
    for case_id in ("/elsewhere/ABS", "a\nb", "x" * 300, ""):
        result = run_cli("add", project.root, image, "--case-id", case_id)
        assert result.code == 1 and result.err.startswith("error: case id"), result.err
        assert result.err.count("\n") == 1
    assert project.list_case_ids() == []


@pytest.mark.parametrize("window", ["nan,40", "inf,40", "1e400,0", "400,nan", "0,40", "400"])
def test_init_refuses_windows_that_are_not_two_finite_numbers(run_cli, tmp_path, window):
    result = run_cli("init", tmp_path / "p", "--labels", "liver", "--window", window)
    assert result.code != 0 and "window" in result.err.lower()
    assert not (tmp_path / "p" / "segloop.toml").exists()


def test_copied_images_are_relative_and_survive_moving_the_project(project, tmp_path, monkeypatch):
    images = [_image(tmp_path / "src", f"c{i}_0000.nii.gz", seed=i) for i in range(2)]
    import_cases(project, images, copy=True)
    for image in images:
        image.unlink()  # the originals are gone: only the copies remain
    moved = tmp_path / "renamed" / "proj2"
    moved.parent.mkdir()
    project.root.rename(moved)
    monkeypatch.chdir(tmp_path / "renamed")  # another working directory, a relative project path
    opened = Project.open(Path("proj2"))
    [record] = opened.get_case("c1").images
    assert not Path(record.path).is_absolute() and record.path.startswith("images/")
    np.testing.assert_array_equal(opened.read_image("c1").array, make_ct_phantom(SHAPE, seed=1).image.array)
    report = export_nnunet(opened, Path("out"), dataset_id=3)
    assert sorted(report.cases) == ["c0", "c1"]


def test_copy_takes_a_detached_headers_data_file_along(project, tmp_path):
    header = write_volume(make_ct_phantom(SHAPE, seed=3).image, tmp_path / "src" / "ct.nhdr")
    data_files = [p for p in header.parent.iterdir() if p != header]
    assert data_files  # the detached data file beside the header
    import_cases(project, [header], case_id="ct", copy=True)
    for path in [header, *data_files]:
        path.unlink()
    np.testing.assert_array_equal(project.read_image("ct").array, make_ct_phantom(SHAPE, seed=3).image.array)


def test_a_failed_copy_add_leaves_no_copy_and_a_retry_works(project, tmp_path):
    images = [_image(tmp_path / "src", f"c{i}_0000.nii.gz", seed=i) for i in range(2)]
    labels = tmp_path / "labels"
    write_volume(make_ct_phantom(SHAPE, seed=0).labels, labels / "c0.nii.gz")
    empty = make_ct_phantom(SHAPE, seed=1).labels
    write_volume(empty.with_array(np.zeros_like(empty.array)), labels / "c1.nii.gz")  # no foreground
    before = snapshot_project(project.root)
    with pytest.raises(LabelValueError, match="no foreground"):
        import_cases(project, images, labels_dir=labels, copy=True)
    assert snapshot_project(project.root) == before
    assert list((project.root / "images").iterdir()) == []
    (labels / "c1.nii.gz").unlink()
    report = import_cases(project, images, labels_dir=labels, copy=True)
    assert report.added_cases == ["c0", "c1"] and report.labeled == ["c0"]
    assert len(list((project.root / "images").iterdir())) == 2


def test_a_copy_add_killed_between_copying_and_committing_can_be_retried(project, tmp_path):
    """kill -9 after the copies were moved into images/ and before the database commit."""
    image = _image(tmp_path / "src", "c0_0000.nii.gz")
    script = (
        "import os, sys\n"
        "from segloop.store import Project\n"
        "from segloop.loop.cases import import_cases\n"
        "Project.add_cases = lambda *a, **k: os.kill(os.getpid(), 9)\n"
        "import_cases(Project.open(sys.argv[1]), [sys.argv[2]], copy=True)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(project.root), str(image)], cwd=REPO, check=False
    )
    assert result.returncode == -9
    assert project.list_case_ids() == []
    report = import_cases(project, [image], copy=True)  # no "exists already"
    assert report.added_cases == ["c0"]
    assert [p.name for p in (project.root / "images").iterdir()] == [project.get_case("c0").images[0].sha256]
    assert read_volume(project.image_path(project.get_case("c0").images[0])).spatial_shape == SHAPE


def test_stale_staging_of_a_dead_process_is_cleaned(project, tmp_path):
    stale = project.root / "images" / ".staging-999999999-abcdef"
    (stale / "x").mkdir(parents=True)
    import_cases(project, [_image(tmp_path, "c0_0000.nii.gz")], copy=True)
    assert not stale.exists()


def test_one_import_is_one_transaction_even_for_several_versions_of_new_cases(project, tmp_path):
    from segloop.loop.imports import run_import

    image = _image(tmp_path, "c0_0000.nii.gz")
    labels = make_ct_phantom(SHAPE, seed=0).labels.array

    def fill(batch, report):
        batch.add_case("c0", [image])
        batch.add_label("c0", labels, source="original", classes=PHANTOM_CLASSES, tool="t", params={})
        batch.add_label("c0", labels * 0, source="pseudo", classes=PHANTOM_CLASSES, tool="t", params={})
        batch.add_label("c0", labels, source="nonsense", classes=PHANTOM_CLASSES, tool="t", params={})

    before = snapshot_project(project.root)
    with pytest.raises(InvalidInputError, match="unknown label source 'nonsense'"):
        run_import(project, "t", "test", fill)
    assert snapshot_project(project.root) == before
    with pytest.raises(ConflictError):
        import_cases(project, [image, image])
    assert snapshot_project(project.root) == before
