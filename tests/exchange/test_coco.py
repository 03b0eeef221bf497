"""COCO 2D slices (seed 000's dataset_generate) and COCO results back to 3D pseudo labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segloop.errors import CorruptFileError, GeometryMismatchError, InvalidInputError, SegloopError
from segloop.exchange import coco
from segloop.loop.exchange import export_coco_slices, import_coco_results
from segloop.metrics import dice
from segloop.store import Project
from segloop.synthetic import PHANTOM_CLASSES
from tests.conftest import snapshot_project
from tests.exchange.conftest import OPENKBP_CASES

pycocotools_coco = pytest.importorskip("pycocotools.coco")


def _results_from(document: dict, score: float = 0.9) -> list[dict]:
    """COCO results a perfect network would give: every exported annotation with a score."""
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "segmentation": a["segmentation"],
            "score": score,
        }
        for a in document["annotations"]
    ]


def test_window_is_seed_000s_formula():
    hu = np.array([-1000.0, -180.0, 20.0, 100.0, 219.0, 3000.0])
    expected = np.clip((hu - 20) * 256 / 400 + 128, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(coco.window_to_uint8(hu, 400, 20), expected)
    assert coco.window_to_uint8(np.array([1044.0]), 400, 1044).tolist() == [128]  # HU + 1024 storage
    with pytest.raises(SegloopError, match="width"):
        coco.window_to_uint8(hu, 0, 20)


def test_long_side_is_512_in_millimetres():
    assert coco.resized_shape((128, 128), (3.9, 3.9)) == (512, 512)
    assert coco.resized_shape((100, 200), (2.0, 0.5)) == (512, 256)  # 200 x 100 mm
    assert coco.resized_shape((64, 48), (1.0, 1.0), 256) == (256, 192)


def test_views_show_slices_the_radiological_way_and_write_back():
    # voxel axes P, L, I (OpenKBP): axial rows already run anterior->posterior, columns right->left
    openkbp = np.array([[0, -1, 0, 0], [-1, 0, 0, 0], [0, 0, -1, 0], [0, 0, 0, 1]], dtype=float)
    view = coco.plan_slice_view(openkbp, "axial")
    assert (view.axis, view.row_axis, view.row_flip, view.col_axis, view.col_flip) == (2, 0, False, 1, False)
    assert not view.top_is_high_index  # slice 0 is the most superior
    ras = np.eye(4)
    view = coco.plan_slice_view(ras, "coronal")
    assert (view.axis, view.row_axis, view.row_flip, view.col_axis, view.col_flip) == (1, 2, True, 0, True)
    array = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    plane = coco.take_plane(array, view, 3)
    assert plane.shape == (6, 4) and plane[0, 0] == array[3, 3, 5]
    target = np.zeros_like(array)
    coco._put_plane(target, view, 3, plane)
    np.testing.assert_array_equal(target[:, 3, :], array[:, 3, :])


def test_export_is_a_valid_coco_file_whose_masks_match_the_labels(phantom_project, tmp_path):
    project, references = phantom_project.project, phantom_project.references
    report = export_coco_slices(project, tmp_path / "coco", window=(400, 20), case_ids=["c0", "c1", "c3"])
    assert report.cases == ["c0", "c1"]  # c3 has no label and --all-slices is off
    api = pycocotools_coco.COCO(str(tmp_path / "coco" / coco.ANNOTATIONS_FILE))
    assert len(api.getImgIds()) == report.details["images"] > 0
    assert [c["name"] for c in api.loadCats(api.getCatIds())] == list(PHANTOM_CLASSES)
    for image in api.loadImgs(api.getImgIds()[:6]):
        provenance = image["segloop"]
        assert provenance["plane"] == "axial" and provenance["window"] == [400.0, 20.0]
        jpg = Image.open(tmp_path / "coco" / coco.IMAGES_DIR / image["file_name"])
        assert jpg.size == (image["width"], image["height"]) and jpg.mode == "RGB"
        assert (tmp_path / "coco" / provenance["mask"]).is_file()
        view = coco.plan_slice_view(project.get_case(provenance["case"]).affine, "axial")
        labels = coco.take_plane(references[provenance["case"]], view, provenance["slice"])
        for annotation in api.loadAnns(api.getAnnIds(imgIds=image["id"])):
            assert annotation["iscrowd"] == 0 and len(annotation["bbox"]) == 4
            drawn = api.annToMask(annotation).astype(bool)
            assert abs(drawn.sum() - annotation["area"]) <= 0.15 * annotation["area"] + 20
            value = annotation["category_id"]
            truth = np.asarray(
                Image.fromarray((labels == value).astype(np.uint8)).resize(drawn.shape[::-1], Image.NEAREST)
            ).astype(bool)
            assert dice(drawn, truth) > 0.8


def test_all_slices_and_thirds_from_top_to_bottom(phantom_project, tmp_path):
    project = phantom_project.project
    export_coco_slices(
        project, tmp_path / "coco", all_slices=True, split_thirds=["liver"], case_ids=["c0", "c3"]
    )
    document = json.loads((tmp_path / "coco" / coco.ANNOTATIONS_FILE).read_text())
    assert len(document["images"]) == 2 * 12  # every axial slice of both cases
    names = {c["id"]: c["name"] for c in document["categories"]}
    assert [names[i] for i in (1, 2, 3)] == ["liver_top", "liver_middle", "liver_bottom"]
    slices = {i["id"]: i["segloop"]["slice"] for i in document["images"]}
    by_third = {
        n: sorted({slices[a["image_id"]] for a in document["annotations"] if names[a["category_id"]] == n})
        for n in ("liver_top", "liver_middle", "liver_bottom")
    }
    # the phantom's K axis points superior: the top third holds the highest slice indices
    assert min(by_third["liver_top"]) > max(by_third["liver_middle"]) >= max(by_third["liver_bottom"])
    assert min(by_third["liver_middle"]) > max(by_third["liver_bottom"])


def test_results_go_back_to_3d_pseudo_labels(phantom_project, tmp_path):
    project, references = phantom_project.project, phantom_project.references
    export_coco_slices(project, tmp_path / "coco", split_thirds=["liver"], case_ids=["c0", "c1"])
    dataset = tmp_path / "coco" / coco.ANNOTATIONS_FILE
    results = _results_from(json.loads(dataset.read_text()))
    spurious = dict(results[0], category_id=4, score=0.1)  # below the threshold: dropped
    (tmp_path / "results.json").write_text(json.dumps([*results, spurious]))
    report = import_coco_results(
        project,
        tmp_path / "results.json",
        dataset_path=dataset,
        close_mm=0,
        open_mm=0,
        keep_largest=False,
        author="t",
    )
    assert sorted(v.case_id for v in report.versions) == ["c0", "c1"]
    for version in report.versions:
        assert version.source == "pseudo" and version.tool == "coco-results"
        assert version.params["score_threshold"] == 0.3 and set(version.classes) == set(PHANTOM_CLASSES)
        labels = project.read_labels(version)
        for value, name in enumerate(PHANTOM_CLASSES, start=1):
            assert dice(labels == value, references[version.case_id] == value) > 0.99, name


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda r: r[0].update(image_id=99999), CorruptFileError, "image 99999"),
        (lambda r: r[0].update(category_id=77), CorruptFileError, "category 77"),
        (lambda r: r[0].update(segmentation=[[1.0, 2.0, 3.0, 4.0]]), CorruptFileError, "at least 3 points"),
        (lambda r: r[0].update(score="high"), CorruptFileError, "score"),
        (lambda r: r[0].pop("segmentation"), CorruptFileError, "segmentation"),
    ],
)
def test_bad_results_change_nothing(phantom_project, tmp_path, mutate, error, message):
    project = phantom_project.project
    export_coco_slices(project, tmp_path / "coco", case_ids=["c0"])
    dataset = tmp_path / "coco" / coco.ANNOTATIONS_FILE
    results = _results_from(json.loads(dataset.read_text()))
    mutate(results)
    (tmp_path / "results.json").write_text(json.dumps(results))
    before = snapshot_project(project.root)
    with pytest.raises(error, match=message):
        import_coco_results(project, tmp_path / "results.json", dataset_path=dataset, author="t")
    assert snapshot_project(project.root) == before


def test_results_need_the_provenance_and_the_same_grid(phantom_project, tmp_path):
    project = phantom_project.project
    export_coco_slices(project, tmp_path / "coco", case_ids=["c0"])
    dataset = tmp_path / "coco" / coco.ANNOTATIONS_FILE
    (tmp_path / "results.json").write_text(json.dumps(_results_from(json.loads(dataset.read_text()))))
    with pytest.raises(InvalidInputError, match="annotations/instances.json"):
        import_coco_results(project, tmp_path / "results.json", author="t")
    document = json.loads(dataset.read_text())
    for image in document["images"]:
        image["segloop"]["shape"] = [24, 24, 13]
    (tmp_path / "other.json").write_text(json.dumps(document))
    with pytest.raises(GeometryMismatchError, match="c0"):
        import_coco_results(
            project, tmp_path / "results.json", dataset_path=tmp_path / "other.json", author="t"
        )


def test_openkbp_round_trip_keeps_every_organ(run_cli, openkbp_project, tmp_path):
    """Reference labels -> COCO slices -> results -> 3D + seed 000 post-processing: Dice >= 0.95."""
    root = openkbp_project.root
    out = tmp_path / "coco"
    exported = run_cli(
        "exchange", "export", root, out, "--format", "coco-slices", "--axis", "axial", "--window", "400,1044"
    )
    assert exported.code == 0, exported.err
    api = pycocotools_coco.COCO(str(out / coco.ANNOTATIONS_FILE))
    assert len(api.getImgIds()) > 100 and len(api.getAnnIds()) > 200
    (tmp_path / "results.json").write_text(json.dumps(_results_from(api.dataset)))
    imported = run_cli(
        "exchange", "import", root, tmp_path / "results.json", "--format", "coco-results",
        "--dataset", out / coco.ANNOTATIONS_FILE,
    )  # fmt: skip
    assert imported.code == 0, imported.err
    project = Project.open(root)
    for case_id in OPENKBP_CASES:
        original, pseudo = project.list_label_versions(case_id)
        assert (
            pseudo.source == "pseudo" and pseudo.params["close_mm"] == 2.0 and pseudo.params["keep_largest"]
        )
        got, reference = project.read_labels(pseudo), project.read_labels(original)
        for label in project.config.schema.classes:
            assert dice(got == label.index, reference == label.index) >= 0.95, (case_id, label.name)


def test_cli_errors_are_one_line(run_cli, phantom_project, tmp_path):
    root = phantom_project.project.root
    result = run_cli("exchange", "export", root, tmp_path / "x", "--format", "yolo")
    assert (
        result.code == 1
        and result.err.startswith("error: unknown export format")
        and result.err.count("\n") == 1
    )
    result = run_cli("exchange", "export", root, tmp_path / "x", "--format", "coco-slices", "--window", "400")
    assert result.code == 1 and "WIDTH,LEVEL" in result.err
    result = run_cli("exchange", "import", root, Path("missing.json"), "--format", "coco-results")
    assert result.code == 1 and "does not exist" in result.err


def test_rle_results_are_read_with_pycocotools(phantom_project, tmp_path):
    mask_api = pytest.importorskip("pycocotools.mask")
    project, references = phantom_project.project, phantom_project.references
    export_coco_slices(project, tmp_path / "coco", case_ids=["c0"])
    dataset = tmp_path / "coco" / coco.ANNOTATIONS_FILE
    api = pycocotools_coco.COCO(str(dataset))
    annotation = max(api.loadAnns(api.getAnnIds(catIds=[1])), key=lambda a: a["area"])  # the liver's largest
    rle = mask_api.encode(np.asfortranarray(api.annToMask(annotation)))
    rle["counts"] = rle["counts"].decode("ascii")
    result = {"image_id": annotation["image_id"], "category_id": 1, "segmentation": rle, "score": 0.8}
    (tmp_path / "results.json").write_text(json.dumps([result]))
    report = import_coco_results(
        project,
        tmp_path / "results.json",
        dataset_path=dataset,
        close_mm=0,
        open_mm=0,
        keep_largest=False,
        author="t",
    )
    k = api.loadImgs(annotation["image_id"])[0]["segloop"]["slice"]
    got = project.read_labels(report.versions[0])
    assert np.flatnonzero(got.any(axis=(0, 1))).tolist() == [k]
    assert dice(got[:, :, k] == 1, references["c0"][:, :, k] == 1) > 0.95
