import dataclasses
import struct

import numpy as np
import pytest
import trimesh

from segloop.errors import (
    ConflictError,
    CorruptFileError,
    InvalidInputError,
    NotFoundError,
    UnsupportedFormatError,
)
from segloop.io import read_volume
from segloop.io.mesh import Mesh, read_mesh, write_mesh
from segloop.metrics import dice
from segloop.segment.mesh import mask_to_mesh, mesh_to_mask
from tests.segment.test_mesh import oblique_affine, world_ellipsoid

SHAPE = (40, 36, 20)
AFFINE = oblique_affine()
LPS = np.array([-1.0, -1.0, 1.0])
FORMATS = [("x.stl", True), ("x.stl", False), ("x.obj", True), ("x.ply", True), ("x.ply", False)]
FORMAT_IDS = ["stl-binary", "stl-ascii", "obj", "ply-binary", "ply-ascii"]


@pytest.fixture
def ellipsoid() -> np.ndarray:
    return world_ellipsoid(SHAPE, AFFINE, (19.5, 17.0, 9.5), (14.0, 11.0, 18.0))


@pytest.fixture
def box() -> Mesh:
    """A closed box in RAS mm, lying inside the grid ``AFFINE`` over ``SHAPE``."""
    centre = AFFINE[:3, :3] @ np.array([20.0, 18.0, 10.0]) + AFFINE[:3, 3]
    surface = trimesh.creation.box(extents=(12.0, 9.0, 15.0))
    return Mesh(surface.vertices + centre, surface.faces)


@pytest.mark.parametrize(("name", "binary"), FORMATS, ids=FORMAT_IDS)
def test_mask_to_mesh_to_file_to_mask_keeps_the_ellipsoid(tmp_path, ellipsoid, name, binary):
    # The acceptance test: oblique, anisotropic grid -> mesh -> file -> mesh -> mask.
    vertices, faces = mask_to_mesh(ellipsoid, AFFINE)
    path = write_mesh(Mesh(vertices, faces), tmp_path / name, binary=binary)
    mesh = read_mesh(path)
    assert mesh.vertices.dtype == np.float64 and mesh.faces.dtype == np.int64
    assert len(mesh.vertices) == len(vertices) and len(mesh.faces) == len(faces)
    np.testing.assert_allclose(np.sort(mesh.vertices, axis=0), np.sort(vertices, axis=0), atol=1e-4)
    back = mesh_to_mask(mesh.vertices, mesh.faces, SHAPE, AFFINE)
    assert dice(back, ellipsoid) >= 0.98


@pytest.mark.parametrize(("name", "binary"), FORMATS, ids=FORMAT_IDS)
def test_files_are_written_in_lps_with_slicers_marker(tmp_path, box, name, binary):
    path = write_mesh(box, tmp_path / name, binary=binary)
    head = path.read_bytes()[:200]
    assert b"SPACE=LPS" in head
    raw = trimesh.load_mesh(path, process=True)  # trimesh knows no markers: the stored numbers
    np.testing.assert_allclose(np.sort(raw.vertices, axis=0), np.sort(box.vertices * LPS, axis=0), atol=1e-4)


def test_binary_stl_header_is_slicer_readable(tmp_path, box):
    data = write_mesh(box, tmp_path / "box.stl").read_bytes()
    assert data[:80].rstrip() == b"segloop output. SPACE=LPS"
    assert not data.startswith(b"solid")  # readers would take it for ASCII
    (count,) = struct.unpack("<I", data[80:84])
    assert count == len(box.faces) and len(data) == 84 + 50 * count


@pytest.mark.parametrize("name", ["x.stl", "x.obj", "x.ply"])
def test_ras_and_lps_files_land_in_the_same_voxels(tmp_path, box, name):
    as_lps = read_mesh(write_mesh(box, tmp_path / f"lps-{name}", space="LPS"))
    as_ras = read_mesh(write_mesh(box, tmp_path / f"ras-{name}", space="RAS"))
    assert b"SPACE=RAS" in (tmp_path / f"ras-{name}").read_bytes()[:200]
    np.testing.assert_allclose(as_lps.vertices, as_ras.vertices, atol=1e-4)
    mask_lps = mesh_to_mask(as_lps.vertices, as_lps.faces, SHAPE, AFFINE)
    mask_ras = mesh_to_mask(as_ras.vertices, as_ras.faces, SHAPE, AFFINE)
    assert mask_lps.sum() > 500
    np.testing.assert_array_equal(mask_lps, mask_ras)
    expected = mesh_to_mask(box.vertices, box.faces, SHAPE, AFFINE)
    np.testing.assert_array_equal(mask_lps, expected)


def _stl_ascii(vertices: np.ndarray, faces: np.ndarray, name: str) -> str:
    facets = [
        "facet normal 0 0 0\nouter loop\n"
        + "".join(f"vertex {x:.17g} {y:.17g} {z:.17g}\n" for x, y, z in vertices[face])
        + "endloop\nendfacet\n"
        for face in faces
    ]
    return f"solid {name}\n{''.join(facets)}endsolid {name}\n"


def _obj(vertices: np.ndarray, faces: np.ndarray, comment: str) -> str:
    lines = [f"# {comment}"] if comment else []
    lines += [f"v {x:.17g} {y:.17g} {z:.17g}" for x, y, z in vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    return "\n".join(lines) + "\n"


def _ply(vertices: np.ndarray, faces: np.ndarray, comment: str) -> str:
    header = ["ply", "format ascii 1.0", *([f"comment {comment}"] if comment else [])]
    header += [
        f"element vertex {len(vertices)}",
        "property double x",
        "property double y",
        "property double z",
    ]
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    body = [f"{x:.17g} {y:.17g} {z:.17g}" for x, y, z in vertices] + [f"3 {a} {b} {c}" for a, b, c in faces]
    return "\n".join(header + body) + "\n"


@pytest.mark.parametrize(
    ("space", "comment"),
    [("RAS", "3D Slicer output. SPACE=RAS"), ("LPS", "3D Slicer output. SPACE=LPS"), ("LPS", "")],
    ids=["RAS-marker", "LPS-marker", "no-marker-means-LPS"],
)
@pytest.mark.parametrize("suffix", ["stl", "obj", "ply"])
def test_files_from_other_tools_honour_the_marker(tmp_path, box, space, comment, suffix):
    stored = box.vertices * (LPS if space == "LPS" else 1.0)
    if suffix == "stl":
        text = _stl_ascii(stored, box.faces, comment)
    elif suffix == "obj":
        text = _obj(stored, box.faces, comment)
    else:
        text = _ply(stored, box.faces, comment)
    path = tmp_path / f"model.{suffix}"
    path.write_text(text)
    mesh = read_mesh(path)
    np.testing.assert_allclose(np.sort(mesh.vertices, axis=0), np.sort(box.vertices, axis=0), atol=1e-9)
    np.testing.assert_array_equal(
        mesh_to_mask(mesh.vertices, mesh.faces, SHAPE, AFFINE),
        mesh_to_mask(box.vertices, box.faces, SHAPE, AFFINE),
    )


def test_files_without_a_marker_can_be_read_as_ras(tmp_path, box):
    path = tmp_path / "legacy.obj"
    path.write_text(_obj(box.vertices, box.faces, "written by Slicer 4.10, in RAS"))
    np.testing.assert_allclose(read_mesh(path, assume_space="RAS").vertices, box.vertices, atol=1e-9)
    np.testing.assert_allclose(read_mesh(path).vertices, box.vertices * LPS, atol=1e-9)
    with pytest.raises(InvalidInputError, match="space"):
        read_mesh(path, assume_space="LAS")


def test_binary_stl_with_slicers_ras_header(tmp_path, box):
    records = np.zeros(len(box.faces), dtype=[("n", "<f4", 3), ("v", "<f4", (3, 3)), ("a", "<u2")])
    records["v"] = box.vertices[box.faces]  # RAS numbers
    path = tmp_path / "slicer.stl"
    header = b"3D Slicer output. SPACE=RAS".ljust(80, b" ")
    path.write_bytes(header + struct.pack("<I", len(records)) + records.tobytes())
    mesh = read_mesh(path)
    assert len(mesh.vertices) == 8  # the triangle soup is merged
    np.testing.assert_allclose(np.sort(mesh.vertices, axis=0), np.sort(box.vertices, axis=0), atol=1e-4)


def test_missing_file_raises(tmp_path):
    with pytest.raises(NotFoundError, match="no such"):
        read_mesh(tmp_path / "absent.stl")


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("junk.ply", b"not a ply file at all"),
        ("junk.obj", b"\x00\xff\xfe garbage\nv 1 2\nf 1 2 x\n"),
        (
            "truncated.ply",
            b"ply\nformat binary_little_endian 1.0\nelement vertex 300\nproperty float x\nend_header\n",
        ),
    ],
)
def test_unreadable_file_raises(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(CorruptFileError, match=name):
        read_mesh(path)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("empty.stl", "solid empty\nendsolid empty\n"),
        ("garbage.stl", "this is not an STL file"),
        ("points.ply", _ply(np.eye(3), np.zeros((0, 3), int), "")),
        ("points.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\n"),
    ],
)
def test_file_without_triangles_raises(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CorruptFileError, match="triangles"):
        read_mesh(path)


def test_unknown_suffix_raises(tmp_path, box):
    (tmp_path / "x.vtk").write_text("# vtk DataFile")
    with pytest.raises(UnsupportedFormatError, match="suffix"):
        read_mesh(tmp_path / "x.vtk")
    with pytest.raises(UnsupportedFormatError, match="suffix"):
        write_mesh(box, tmp_path / "x.off")


def test_write_is_atomic_and_refuses_to_overwrite(tmp_path, box):
    path = write_mesh(box, tmp_path / "sub" / "box.stl")
    with pytest.raises(ConflictError):
        write_mesh(box, path)
    moved = Mesh(box.vertices + 1.0, box.faces)
    write_mesh(moved, path, overwrite=True)
    np.testing.assert_allclose(read_mesh(path).vertices.min(axis=0), moved.vertices.min(axis=0), atol=1e-4)
    assert [p.name for p in path.parent.iterdir()] == ["box.stl"]


def test_bad_space_and_empty_mesh_raise(tmp_path, box):
    with pytest.raises(InvalidInputError, match="space"):
        write_mesh(box, tmp_path / "x.stl", space="LAS")
    with pytest.raises(InvalidInputError, match="no triangles"):
        write_mesh(Mesh(box.vertices, np.zeros((0, 3), np.int64)), tmp_path / "x.stl")
    assert not (tmp_path / "x.stl").exists()


def test_mesh_checks_and_converts_its_arrays(box):
    mesh = Mesh(box.vertices.astype(np.float32), box.faces.astype(np.int32))
    assert mesh.vertices.dtype == np.float64 and mesh.faces.dtype == np.int64
    with pytest.raises(dataclasses.FrozenInstanceError):
        mesh.faces = box.faces  # type: ignore[misc]
    with pytest.raises(InvalidInputError, match="vertices"):
        Mesh(box.vertices[:, :2], box.faces)
    with pytest.raises(InvalidInputError, match="faces"):
        Mesh(box.vertices, box.faces + 8)


@pytest.mark.parametrize("smoothing_iterations", [10, 0])
def test_openkbp_mandible_round_trips_through_stl(tmp_path, openkbp, smoothing_iterations):
    labels = read_volume(openkbp / "labelsTr" / "openkbp_pt_4.nii.gz")
    mandible = labels.array == 7
    assert mandible.sum() > 1000
    vertices, faces = mask_to_mesh(mandible, labels.affine, smoothing_iterations=smoothing_iterations)
    mesh = read_mesh(write_mesh(Mesh(vertices, faces), tmp_path / "mandible.stl"))
    back = mesh_to_mask(mesh.vertices, mesh.faces, mandible.shape, labels.affine)
    score = dice(back, mandible)
    print(f"OpenKBP pt_4 mandible, {smoothing_iterations} smoothing passes: Dice {score:.4f}")
    assert score >= 0.98
    if smoothing_iterations == 0:
        np.testing.assert_array_equal(back, mandible)
