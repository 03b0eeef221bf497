"""2D image folders (seed 004): real PNG nuclei, TIFF copies, sparse paint, labels written back."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from segloop.core import LabelSchema
from segloop.errors import GeometryMismatchError, LabelValueError, SegloopError
from segloop.exchange.values import parse_value_map
from segloop.io import read_volume
from segloop.loop.cases import import_cases, init_project
from segloop.loop.exchange import export_image_folder, import_image_folder
from segloop.loop.labels import compute_effective_label
from segloop.loop.tools import store_tool_labels
from tests.conftest import shared_dataset, snapshot_project

NAMES = ("dna-0", "dna-1", "dna-26")


@pytest.fixture
def nuclei():
    return shared_dataset("nih3t3-nuclei-2d")


@pytest.fixture
def project(tmp_path):
    return init_project(tmp_path / "my2d", ["nucleus"], modality="microscopy")


def _png(folder, name):
    return np.asarray(Image.open(folder / f"{name}.png"))


def test_value_maps():
    schema = LabelSchema.from_names(["nucleus"])
    assert parse_value_map("255=nucleus", schema) == {255: 1}
    assert parse_value_map("0=ignore,1=background,2=nucleus", schema) == {0: 2, 1: 0, 2: 1}
    for bad in ("255", "x=nucleus", "1=a,1=nucleus", ""):
        with pytest.raises(SegloopError):
            parse_value_map(bad, schema)


def test_segloop_add_takes_the_pngs_and_names_what_is_wrong_with_0_255_masks(run_cli, nuclei, project):
    images = [nuclei / "images" / f"{n}.png" for n in NAMES]
    refused = run_cli("add", project.root, *images, "--labels-dir", nuclei / "labels")
    assert refused.code == 1 and "255" in refused.err and refused.err.count("\n") == 1
    assert project.list_case_ids() == []
    added = run_cli("add", project.root, *images)
    assert added.code == 0, added.err
    assert project.get_case("dna-0").shape == (1344, 1024, 1)


def test_png_folder_with_binary_masks_in_and_predictions_out(run_cli, nuclei, project, tmp_path):
    result = run_cli(
        "exchange", "import", project.root, *[nuclei / "images" / f"{n}.png" for n in NAMES],
        "--format", "image-folder", "--labels-dir", nuclei / "labels", "--label-values", "255=nucleus",
    )  # fmt: skip
    assert result.code == 0, result.err
    for name in NAMES:
        (version,) = project.list_label_versions(name)
        assert version.source == "original" and version.params["label_values"] == {"255": 1}
        labels = project.read_labels(version)[:, :, 0].T  # (X, Y, 1) -> rows, columns
        np.testing.assert_array_equal(labels, _png(nuclei / "labels", name) // 255)
    # a network's prediction for dna-1 goes back as a PNG named like the image, 255 = nucleus
    prediction = np.zeros((1344, 1024, 1), np.uint8)
    prediction[100:200, 300:400] = 1
    case = project.get_case("dna-1")
    store_tool_labels(
        project, case, prediction, source="pseudo", classes=["nucleus"], tool="net", params={}, author="t"
    )
    out = tmp_path / "predictions"
    result = run_cli(
        "exchange", "export", project.root, out, "--format", "image-folder",
        "--sources", "pseudo", "--label-values", "255=nucleus",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert sorted(p.name for p in out.iterdir()) == ["dna-1.png"]
    written = _png(out, "dna-1")
    assert written.dtype == np.uint8 and written.shape == (1024, 1344)
    assert set(np.unique(written).tolist()) == {0, 255} and written[350, 150] == 255


def test_tiff_copies_round_trip_in_their_format(nuclei, project, tmp_path):
    for name in NAMES[:2]:
        tifffile.imwrite(tmp_path / f"{name}.tif", _png(nuclei / "images", name))
        (tmp_path / "labels").mkdir(exist_ok=True)
        tifffile.imwrite(tmp_path / "labels" / f"{name}.tif", _png(nuclei / "labels", name))
    import_image_folder(
        project,
        [tmp_path / f"{n}.tif" for n in NAMES[:2]],
        labels_dir=tmp_path / "labels",
        value_map={0: 0, 255: 1},
        author="t",
    )
    export_image_folder(project, tmp_path / "out", value_map={255: 1})
    for name in NAMES[:2]:
        np.testing.assert_array_equal(
            tifffile.imread(tmp_path / "out" / f"{name}.tif"), _png(nuclei / "labels", name)
        )
    plain = tmp_path / "plain"
    export_image_folder(project, plain)
    assert tifffile.imread(plain / "dna-0.tif").max() == 1  # schema values without a map


def test_sparse_paint_zero_means_not_painted(nuclei, project, tmp_path):
    truth = _png(nuclei / "labels", "dna-0")
    paint = np.zeros(truth.shape, np.uint8)
    paint[500:520, :] = np.where(truth[500:520, :] > 0, 2, 1)  # one painted band: 1 background, 2 nucleus
    (tmp_path / "paint").mkdir()
    Image.fromarray(paint).save(tmp_path / "paint" / "dna-0.png")
    import_image_folder(
        project,
        [nuclei / "images"],
        labels_dir=tmp_path / "paint",
        value_map=parse_value_map("0=ignore,1=background,2=nucleus", project.config.schema),
        source="sparse",
        author="t",
    )
    assert len(project.list_case_ids()) == 18
    effective = compute_effective_label(project, project.get_case("dna-0"))
    ignored = effective.ignore_mask[:, :, 0].T
    assert ignored[:500].all() and not ignored[500:520].any()
    np.testing.assert_array_equal(effective.labels[:, :, 0].T[500:520], (truth[500:520] > 0).astype(np.uint8))


def test_a_label_of_another_shape_or_unmapped_values_adds_nothing(nuclei, project, tmp_path):
    stack = np.stack([_png(nuclei / "images", "dna-0")] * 3)  # a 3-page TIFF stack
    tifffile.imwrite(tmp_path / "stack.tif", stack, photometric="minisblack")
    (tmp_path / "labels").mkdir()
    tifffile.imwrite(tmp_path / "labels" / "stack.tif", stack[:2] > 40, photometric="minisblack")
    before = snapshot_project(project.root)
    with pytest.raises(GeometryMismatchError, match="shape"):
        import_image_folder(
            project,
            [tmp_path / "stack.tif"],
            labels_dir=tmp_path / "labels",
            value_map={0: 0, 1: 1},
            author="t",
        )
    tifffile.imwrite(
        tmp_path / "labels" / "stack.tif", (stack > 40).astype(np.uint8) * 7, photometric="minisblack"
    )
    with pytest.raises(LabelValueError, match="7"):
        import_image_folder(
            project,
            [tmp_path / "stack.tif"],
            labels_dir=tmp_path / "labels",
            value_map={0: 0, 1: 1},
            author="t",
        )
    assert snapshot_project(project.root) == before
    import_cases(project, [tmp_path / "stack.tif"], author="t")
    assert (
        read_volume(tmp_path / "stack.tif").spatial_shape
        == project.get_case("stack").shape
        == (1344, 1024, 3)
    )
