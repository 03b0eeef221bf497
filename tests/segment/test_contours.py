"""Polygons <-> masks on slices, and the polygon JSON document."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segloop.errors import GeometryMismatchError, InvalidInputError, LabelValueError, SegloopError
from segloop.metrics import dice
from segloop.segment.contours import (
    PolygonDocument,
    make_polygon_document,
    mask_to_polygons,
    polygons_to_mask,
    read_polygons,
)

#: OpenKBP-like orientation: axis 0 -> posterior (-y), axis 1 -> left (-x), axis 2 -> inferior (-z)
PERMUTED_AFFINE = np.array(
    [[0.0, -4.0, 0.0, 10.0], [-4.0, 0.0, 0.0, 20.0], [0.0, 0.0, -2.5, 30.0], [0.0, 0.0, 0.0, 1.0]]
)


def smooth_shape(shape=(40, 36, 12)) -> np.ndarray:
    grid = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    body = ((grid[0] - 19) / 15) ** 2 + ((grid[1] - 17) / 12) ** 2 + ((grid[2] - 5.5) / 6.5) ** 2 <= 1
    second = ((grid[0] - 30) / 5) ** 2 + ((grid[1] - 31) / 4) ** 2 <= 1
    return body | (second & (grid[2] > 3))


SQUARE = [[0.5, 0.5], [0.5, 3.5], [3.5, 3.5], [3.5, 0.5]]


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_round_trip_of_smooth_shapes(axis):
    mask = smooth_shape()
    polygons = mask_to_polygons(mask, axis)
    assert {p["slice"] for p in polygons} == set(np.flatnonzero(np.moveaxis(mask, axis, 0).any(axis=(1, 2))))
    back = polygons_to_mask(polygons, mask.shape, axis)
    assert dice(back, mask) >= 0.95
    assert np.array_equal(back, mask)  # voxel centres inside the traced outlines: exact here
    json.dumps(polygons)  # plain JSON types


def test_holes_round_trip_with_even_odd_and_fill_with_union():
    mask = np.zeros((20, 20, 1), bool)
    mask[2:18, 2:18, 0] = True
    mask[6:14, 6:14, 0] = False  # a hole ...
    mask[9:11, 9:11, 0] = True  # ... with an island in it
    polygons = mask_to_polygons(mask, 2)
    assert len(polygons) == 3
    assert np.array_equal(polygons_to_mask(polygons, mask.shape, 2), mask)
    union = polygons_to_mask(polygons, mask.shape, 2, fill_rule="union")
    assert union[:, :, 0].sum() == 16 * 16


def test_shapes_touching_the_border_close():
    mask = np.ones((5, 6, 2), bool)
    polygons = mask_to_polygons(mask, 2)
    assert len(polygons) == 2
    points = np.array(polygons[0]["points"])
    assert points.min(axis=0).tolist() == [-0.5, -0.5] and points.max(axis=0).tolist() == [4.5, 5.5]
    assert np.array_equal(polygons_to_mask(polygons, mask.shape, 2), mask)


def test_points_mm_follow_the_affine():
    mask = np.zeros((8, 9, 5), bool)
    mask[2:5, 3:7, 3] = True
    for axis in range(3):
        for polygon in mask_to_polygons(mask, axis, affine=PERMUTED_AFFINE):
            voxels = np.insert(np.array(polygon["points"]), axis, polygon["slice"], axis=1)
            expected = voxels @ PERMUTED_AFFINE[:3, :3].T + PERMUTED_AFFINE[:3, 3]
            assert np.allclose(polygon["points_mm"], expected)
    # polygons with points_mm can be filled back as they are
    polygons = mask_to_polygons(mask, 2, affine=PERMUTED_AFFINE)
    assert np.array_equal(polygons_to_mask(polygons, mask.shape, 2), mask)


def test_simplified_outlines_stay_close():
    mask = smooth_shape((80, 72, 3))
    polygons = mask_to_polygons(mask, 2, tolerance_voxels=0.75)
    assert sum(len(p["points"]) for p in polygons) < sum(len(p["points"]) for p in mask_to_polygons(mask, 2))
    assert dice(polygons_to_mask(polygons, mask.shape, 2), mask) >= 0.97


def test_polygons_to_mask_in_plane_axis_order():
    # axis 1: u runs along axis 0, v along axis 2
    triangle = {"slice": 2, "points": [[0, 0], [0, 6], [6, 0]]}
    mask = polygons_to_mask([triangle], (7, 4, 7), axis=1)
    assert mask[:, 2, :].sum() == mask.sum() > 0
    assert mask[0, 2, 5] and not mask[5, 2, 5]


@pytest.mark.parametrize(
    ("polygon", "error", "match"),
    [
        ({"slice": 1, "points": [[0, 0], [1, 1]]}, SegloopError, "at least 3 points; got 2"),
        (
            {"slice": 9, "points": SQUARE},
            GeometryMismatchError,
            r"polygon 0: slice 9 lies outside axis 2 \(0..2\)",
        ),
        ({"slice": -1, "points": SQUARE}, GeometryMismatchError, "slice -1 lies outside"),
        ({"slice": 1.0, "points": SQUARE}, SegloopError, '"slice" must be an integer'),
        (
            {"slice": 1, "points": [[0, 0], [0, 7.2], [3, 3]]},
            GeometryMismatchError,
            r"points \[\[0.0, 7.2\]\]",
        ),
        ({"slice": 1, "points": [[0, 0], [0, "a"], [3, 3]]}, SegloopError, "finite numbers"),
        ({"slice": 1, "points": [[0, 0, 0], [0, 1, 0], [3, 3, 0]]}, SegloopError, r"\[\[u, v\], ...\]"),
        ({"slice": 1, "points": SQUARE, "label": 3}, SegloopError, r"unknown keys \['label'\]"),
        ({"points": SQUARE}, SegloopError, r"lacks keys \['slice'\]"),
        ([[0, 0], [1, 1], [2, 0]], SegloopError, "must be an object"),
    ],
)
def test_polygons_to_mask_rejects_bad_polygons(polygon, error, match):
    with pytest.raises(error, match=match):
        polygons_to_mask([polygon], (6, 6, 3), axis=2)


def test_polygons_to_mask_rejects_bad_arguments():
    square = {"slice": 0, "points": SQUARE}
    with pytest.raises(InvalidInputError, match="fill_rule"):
        polygons_to_mask([square], (6, 6, 3), 2, fill_rule="nonzero")
    with pytest.raises(InvalidInputError, match="axis must be 0, 1 or 2"):
        polygons_to_mask([square], (6, 6, 3), 3)
    with pytest.raises(GeometryMismatchError, match="shape must be 3 positive integers"):
        polygons_to_mask([square], (6, 6), 2)
    with pytest.raises(InvalidInputError, match="list of polygons"):
        polygons_to_mask(square, (6, 6, 3), 2)
    with pytest.raises(LabelValueError, match="bool mask"):
        mask_to_polygons(np.full((3, 3, 3), 2, np.uint8), 2)
    with pytest.raises(GeometryMismatchError, match="3D"):
        mask_to_polygons(np.zeros((3, 3), bool), 0)
    with pytest.raises(GeometryMismatchError, match="affine"):
        mask_to_polygons(np.zeros((3, 3, 3), bool), 0, affine=np.zeros((4, 4)))


# ------------------------------------------------------------------------------------------ documents


def test_read_voxel_document_and_fill_it():
    document = {
        "axis": "axial",
        "coordinates": "voxel",
        "classes": {"liver": [{"slice": 1, "points": SQUARE}], "spleen": []},
    }
    parsed = read_polygons(document, (6, 6, 3), PERMUTED_AFFINE)
    assert isinstance(parsed, PolygonDocument)
    assert parsed.axis == 2  # axis 2 runs inferior in PERMUTED_AFFINE
    assert parsed.classes["liver"] == [{"slice": 1, "points": SQUARE}]
    masks = parsed.to_masks((6, 6, 3))
    assert masks["liver"].sum() == 9 and masks["spleen"].sum() == 0


def test_plane_names_follow_the_affine():
    document = {"axis": "coronal", "coordinates": "voxel", "classes": {}}
    assert read_polygons(document, (6, 6, 3), PERMUTED_AFFINE).axis == 0  # axis 0 runs posterior
    assert read_polygons({**document, "axis": 1}, (6, 6, 3), PERMUTED_AFFINE).axis == 1


def test_mm_document_matches_the_voxel_one():
    mask = smooth_shape()
    polygons = mask_to_polygons(mask, 2, affine=PERMUTED_AFFINE)
    voxel_doc = make_polygon_document({"organ": polygons}, 2)
    mm_doc = make_polygon_document({"organ": polygons}, 2, affine=PERMUTED_AFFINE, coordinates="mm")
    mm_doc = json.loads(json.dumps(mm_doc))
    from_voxels = read_polygons(voxel_doc, mask.shape, PERMUTED_AFFINE)
    from_mm = read_polygons(mm_doc, mask.shape, PERMUTED_AFFINE)
    assert from_mm.axis == from_voxels.axis == 2
    for a, b in zip(from_mm.classes["organ"], from_voxels.classes["organ"], strict=True):
        assert a["slice"] == b["slice"] and np.allclose(a["points"], b["points"])
    assert np.array_equal(from_mm.to_masks(mask.shape)["organ"], mask)
    # "slice" may be left out in mm: it is the slice the points lie on
    for polygon in mm_doc["classes"]["organ"]:
        del polygon["slice"]
    inferred = read_polygons(mm_doc, mask.shape, PERMUTED_AFFINE)
    assert [p["slice"] for p in inferred.classes["organ"]] == [p["slice"] for p in polygons]


def test_mm_points_off_their_slice_are_named():
    # slice 1 lies at z = 30 - 2.5 = 27.5 mm; 28.9 mm is 0.56 voxel off
    points = [[0.0, 8.0, 27.5], [-8.0, 8.0, 27.5], [-8.0, 16.0, 28.9]]
    document = {"axis": 2, "coordinates": "mm", "classes": {"a": [{"slice": 1, "points": points}]}}
    with pytest.raises(
        GeometryMismatchError, match=r"class 'a' polygon 0: mm points \[\[-8.0, 16.0, 28.9\]\]"
    ):
        read_polygons(document, (6, 6, 3), PERMUTED_AFFINE)
    document["classes"]["a"][0]["points"][2][2] = 27.0  # 0.2 voxel off: accepted
    assert read_polygons(document, (6, 6, 3), PERMUTED_AFFINE).classes["a"][0]["slice"] == 1
    far = [[500.0, 8.0, 27.5], [-8.0, 8.0, 27.5], [-8.0, 16.0, 27.5]]
    document["classes"]["a"][0]["points"] = far
    with pytest.raises(GeometryMismatchError, match="lie outside the slice"):
        read_polygons(document, (6, 6, 3), PERMUTED_AFFINE)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"version": 2}, SegloopError, r"the polygon document has unknown keys \['version'\]"),
        ({"axis": "transverse"}, SegloopError, '"axis" must be'),
        ({"axis": 3}, SegloopError, '"axis" must be'),
        ({"coordinates": "pixels"}, SegloopError, '"coordinates" must be "voxel" or "mm"'),
        ({"classes": [1, 2]}, SegloopError, '"classes" must map class names'),
        ({"classes": {"a": {"slice": 0}}}, SegloopError, "class 'a' must be a list of polygons"),
        ({"classes": {"": []}}, SegloopError, "non-empty strings"),
        ({"classes": {"a": [{"slice": 0, "points": SQUARE, "colour": 1}]}}, SegloopError, "unknown keys"),
        ({"classes": {"a": [{"slice": 5, "points": SQUARE}]}}, GeometryMismatchError, "slice 5 lies outside"),
        ({"classes": {"a": [{"slice": 0, "points": SQUARE[:2]}]}}, SegloopError, "at least 3 points"),
    ],
)
def test_bad_documents(change, error, match):
    document = {"axis": 2, "coordinates": "voxel", "classes": {}, **change}
    with pytest.raises(error, match=match):
        read_polygons(document, (6, 6, 3), np.eye(4))


def test_documents_need_every_key_and_an_object():
    with pytest.raises(InvalidInputError, match=r"lacks keys \['coordinates'\]"):
        read_polygons({"axis": 2, "classes": {}}, (6, 6, 3), np.eye(4))
    with pytest.raises(InvalidInputError, match="JSON object"):
        read_polygons([], (6, 6, 3), np.eye(4))
    with pytest.raises(InvalidInputError, match="needs the image affine"):
        make_polygon_document({}, 2, coordinates="mm")
