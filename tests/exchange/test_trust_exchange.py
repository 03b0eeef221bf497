"""Issue 18 and 12 at the exchange edge: paths that stay inside the export, hostile COCO files
refused before allocating, exclusive export folders, one rule for label sources, one format table."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from segloop.core.provenance import Source
from segloop.errors import (
    ConflictError,
    CorruptFileError,
    GeometryMismatchError,
    InvalidInputError,
    NotFoundError,
    TooLargeError,
)
from segloop.exchange import coco, monailabel
from segloop.io.atomic import atomic_directory
from segloop.loop.exchange import (
    FORMATS,
    export_abdomenatlas,
    export_coco_slices,
    export_monailabel,
    export_nnunet,
    import_coco_results,
    import_monailabel,
    list_formats,
)
from segloop.store import ImageRecord, NewCase
from tests.conftest import snapshot_project


def _results(document: dict) -> list[dict]:
    return [dict(a, score=0.9) for a in document["annotations"]]


# ------------------------------------------------------------------------------------ paths


@pytest.mark.parametrize("case_id", ["../../escape", "/tmp/segloop-abs-escape"])
@pytest.mark.parametrize(
    "export",
    [
        lambda p, out: export_nnunet(p, out, dataset_id=5),
        lambda p, out: export_abdomenatlas(p, out),
        lambda p, out: export_coco_slices(p, out, all_slices=True),
        lambda p, out: export_monailabel(p, out),
    ],
    ids=["nnunet", "abdomenatlas", "coco-slices", "monailabel"],
)
def test_exports_keep_every_file_inside_even_for_ids_stored_before_validation(
    phantom_project, tmp_path, case_id, export
):
    """A project made before case ids were validated (the row is inserted behind the import's back)."""
    project = phantom_project.project
    c0 = project.get_case("c0")
    image = c0.images[0]
    project.add_cases(
        [
            NewCase(
                case_id,
                c0.shape,
                c0.affine,
                c0.dtype,
                (ImageRecord(0, image.path, image.size_bytes, image.sha256),),
                "old",
            )
        ]
    )
    out = tmp_path / "deep" / "er" / "out"
    with pytest.raises(InvalidInputError, match="leaves"):
        export(project, out)
    assert not out.exists() or not any(out.iterdir())  # nnU-Net's out is the dataset's parent
    assert not (tmp_path / "escape_0000.nii.gz").exists()
    assert not list(tmp_path.glob("deep/**/*escape*")) and not list(Path("/tmp").glob("segloop-abs-escape*"))


def test_a_datastore_cannot_point_outside_its_folder(phantom_project, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / monailabel.DATASTORE_JSON).write_text(json.dumps({"images_dir": "../../..", "objects": {}}))
    with pytest.raises(InvalidInputError, match="leaves"):
        import_monailabel(phantom_project.project, store, author="t")


# ------------------------------------------------------------------------------ export folder


def test_two_exports_to_one_new_folder_cannot_both_win(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(ConflictError, match="meanwhile"), atomic_directory(target) as second:
        (second / "second").write_text("2")
        with atomic_directory(target) as first:  # another export finishes first
            (first / "first").write_text("1")
    assert [p.name for p in target.iterdir()] == ["first"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_parallel_exports_from_two_threads_one_gets_a_conflict(phantom_project, tmp_path):
    outcomes: list[str] = []

    def run() -> None:
        try:
            export_monailabel(phantom_project.project, tmp_path / "same")
            outcomes.append("wrote")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.001)
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict", "wrote"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_force_over_a_symlink_replaces_the_link_and_leaves_no_temporary(phantom_project, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "keep.txt").write_text("mine")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    export_abdomenatlas(phantom_project.project, link, case_ids=["c0"], overwrite=True)
    assert link.is_dir() and not link.is_symlink() and (link / "c0" / "ct.nii.gz").exists()
    assert (real / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["data", "proj", "real", "link"])


# ------------------------------------------------------------------------------- COCO bombs


@pytest.fixture
def exported(phantom_project, tmp_path):
    export_coco_slices(phantom_project.project, tmp_path / "coco", case_ids=["c0"])
    dataset = tmp_path / "coco" / coco.ANNOTATIONS_FILE
    return phantom_project.project, dataset, json.loads(dataset.read_text())


def _provenance(document: dict, **changes) -> dict:
    for image in document["images"]:
        image["segloop"].update(changes)
    return document


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"shape": [100000, 100000, 100000]}, GeometryMismatchError, "grid"),
        ({"slice": 99999}, CorruptFileError, "slice 99999 is outside"),
        ({"slice": -1}, CorruptFileError, "slice -1 is outside"),
        ({"axis": 7}, CorruptFileError, "must be 0, 1 and 2"),
        ({"case": "../../etc"}, NotFoundError, "does not hold"),
        ({"resize": {"from": [24, 24], "to": [100000, 100000]}}, TooLargeError, "100000"),
        ({"resize": {"from": [99, 24], "to": [512, 512]}}, CorruptFileError, "slice of"),
        ({"slice": float("nan")}, CorruptFileError, "provenance"),
    ],
)
def test_hostile_provenance_is_refused_in_one_line(exported, tmp_path, change, error, message):
    project, _, document = exported
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_provenance(document, **change)))
    (tmp_path / "results.json").write_text(json.dumps(_results(document)))
    before = snapshot_project(project.root)
    with pytest.raises(error, match=message) as raised:
        import_coco_results(project, tmp_path / "results.json", dataset_path=bad, author="t")
    assert "\n" not in str(raised.value) and len(str(raised.value)) < 400
    assert snapshot_project(project.root) == before


def _first_image(document: dict) -> tuple[int, int, int]:
    image = document["images"][0]
    return image["id"], image["height"], image["width"]


@pytest.mark.parametrize(
    ("segmentation", "error", "message"),
    [
        ({"size": [100000, 100000], "counts": [0, 10**10]}, InvalidInputError, "RLE size"),
        ("huge counts", InvalidInputError, "cover the image"),
        ("string counts", InvalidInputError, "cover the image"),
        ({"size": [1, 1], "counts": "0WWW"}, InvalidInputError, "RLE size"),
        ("truncated string", CorruptFileError, "malformed compressed RLE"),
        ("too long string", TooLargeError, "characters"),
        ([[0.0, 0.0, 1e308, 0.0, 1e308, 1e308]], InvalidInputError, "finite pixel coordinates"),
        ([[0.0, 0.0, float("nan"), 5.0, 5.0, 5.0]], InvalidInputError, "finite pixel coordinates"),
        ([[0.0, 0.0, float("inf"), 5.0, 5.0, 5.0]], InvalidInputError, "finite pixel coordinates"),
    ],
)
def test_hostile_results_are_refused_before_allocating(exported, tmp_path, segmentation, error, message):
    project, dataset, document = exported
    image_id, height, width = _first_image(document)
    if segmentation == "huge counts":
        segmentation = {"size": [height, width], "counts": [0, 10**12]}
    elif segmentation == "string counts":
        segmentation = {"size": [height, width], "counts": "0???"}  # runs 0, 15, 15, 15
    elif segmentation == "truncated string":
        segmentation = {"size": [height, width], "counts": "0" + "W" * 40}  # ends inside a number
    elif segmentation == "too long string":
        segmentation = {"size": [height, width], "counts": "1" * (13 * height * width + 20)}
    result = {"image_id": image_id, "category_id": 1, "segmentation": segmentation, "score": 0.9}
    (tmp_path / "results.json").write_text(json.dumps([result]))
    started = time.perf_counter()
    with pytest.raises(error, match=message):
        import_coco_results(project, tmp_path / "results.json", dataset_path=dataset, author="t")
    assert time.perf_counter() - started < 5


def test_own_rle_decoder_matches_pycocotools(exported, tmp_path):
    mask_api = pytest.importorskip("pycocotools.mask")
    _, _, document = exported
    _, height, width = _first_image(document)
    rng = np.random.default_rng(0)
    mask = np.asfortranarray(rng.random((height, width)) < 0.3)
    encoded = mask_api.encode(mask.astype(np.uint8))
    segmentation = {"size": [height, width], "counts": encoded["counts"].decode("ascii")}
    decoded = coco._decode_rle(segmentation, (height, width), "x")
    np.testing.assert_array_equal(decoded, mask)
    counts = {"size": [height, width], "counts": [0, height * width]}
    assert coco._decode_rle(counts, (height, width), "x").all()


# --------------------------------------------------------------------- sources and provenance


def test_nnunet_export_leaves_predictions_out_of_training_by_default(phantom_project, tmp_path):
    from segloop.loop.tools import store_tool_labels

    project, references = phantom_project.project, phantom_project.references
    store_tool_labels(
        project,
        project.get_case("c3"),
        references["c3"],
        source="pseudo",
        classes=project.config.schema.names,
        tool="net",
        params={},
        author="t",
    )
    human = export_nnunet(project, tmp_path / "human", dataset_id=1)
    assert human.details["training cases"] == 3 and human.details["cases in imagesTs"] == 1
    document = json.loads((human.path / "dataset.json").read_text())
    assert str(project.root.resolve()) not in json.dumps(document)
    assert "pseudo" not in document["segloop"]["sources"] and "c3" not in document["segloop"]["cases"]
    assert sorted(p.name for p in (human.path / "imagesTs").iterdir()) == ["c3_0000.nii.gz"]
    everything = export_nnunet(project, tmp_path / "all", dataset_id=1, sources=set(Source))
    assert everything.details["training cases"] == 4
    document = json.loads((everything.path / "dataset.json").read_text())
    assert document["segloop"]["cases"]["c3"]["sources"] == ["pseudo"]


def test_cli_sources_option(run_cli, phantom_project, tmp_path):
    root = phantom_project.project.root
    result = run_cli(
        "exchange", "export", root, tmp_path / "a", "--format", "nnunet", "--sources", "original"
    )
    assert result.code == 0, result.err
    document = json.loads(next((tmp_path / "a").glob("*/dataset.json")).read_text())
    assert document["segloop"]["sources"] == ["original"] and document["numTraining"] == 2
    result = run_cli("exchange", "export", root, tmp_path / "b", "--format", "nnunet", "--sources", "robot")
    assert result.code == 1 and "--sources" in result.err and result.err.count("\n") == 1


# ------------------------------------------------------------------------- the format table


def test_the_cli_lists_and_dispatches_from_the_format_table(run_cli, phantom_project, tmp_path):
    result = run_cli("exchange", "formats")
    assert result.code == 0
    assert [line.split()[0] for line in result.out.splitlines() if line.strip()] == list(FORMATS)
    result = run_cli("exchange", "import", phantom_project.project.root, tmp_path, "--format", "coco-slices")
    assert result.code == 1 and ", ".join(list_formats("import")) in result.err
    assert set(list_formats("export")) == {n for n, row in FORMATS.items() if row.export is not None}
