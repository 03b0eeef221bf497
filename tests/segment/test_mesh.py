import numpy as np
import pytest
import trimesh
from scipy import ndimage

from segloop.errors import GeometryMismatchError, InvalidInputError
from segloop.metrics import dice
from segloop.segment.mesh import mask_to_mesh, mesh_to_mask


def oblique_affine(
    spacing=(0.9, 1.1, 2.5), origin=(-20.0, 15.0, -30.0), angles=(0.3, -0.2, 0.45)
) -> np.ndarray:
    """A rotated, anisotropic voxel-to-RAS affine."""
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        c, s = np.cos(angle), np.sin(angle)
        turn = np.eye(3)
        i, j = [a for a in range(3) if a != axis]
        turn[[i, i, j, j], [i, j, i, j]] = c, -s, s, c
        rotation = turn @ rotation
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.asarray(spacing)
    affine[:3, 3] = origin
    return affine


def world_ellipsoid(shape, affine, centre_voxel, semi_axes_mm) -> np.ndarray:
    """Voxels whose centres lie in an axis-aligned (world) ellipsoid: oblique to the grid."""
    grid = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), axis=-1).reshape(-1, 3)
    world = grid @ affine[:3, :3].T + affine[:3, 3]
    centre = affine[:3, :3] @ np.asarray(centre_voxel, float) + affine[:3, 3]
    inside = (((world - centre) / np.asarray(semi_axes_mm)) ** 2).sum(axis=1) <= 1.0
    return inside.reshape(shape)


def blobs(rng, shape, threshold=0.6) -> np.ndarray:
    """Random lumpy shapes with holes, handles and parts touching the grid border."""
    noise = ndimage.gaussian_filter(rng.random(shape), 1.5)
    return noise > np.quantile(noise, threshold)


SHAPE = (40, 36, 20)
AFFINE = oblique_affine()


@pytest.fixture
def ellipsoid() -> np.ndarray:
    return world_ellipsoid(SHAPE, AFFINE, (19.5, 17.0, 9.5), (14.0, 11.0, 18.0))


def test_ellipsoid_on_oblique_anisotropic_grid_round_trips(ellipsoid):
    vertices, faces = mask_to_mesh(ellipsoid, AFFINE)
    back = mesh_to_mask(vertices, faces, SHAPE, AFFINE)
    assert back.dtype == bool and back.shape == SHAPE
    assert dice(back, ellipsoid) >= 0.98


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "affine",
    [np.eye(4), AFFINE, np.diag([-0.8, 0.8, 2.5, 1.0]) @ np.eye(4)[[1, 0, 2, 3]]],
    ids=["identity", "oblique", "mirrored-permuted"],
)
def test_unsmoothed_round_trip_is_exact_for_any_shape(affine, seed):
    # Marching-cubes vertices lie on the lines through voxel centres, so every ray hits vertices and
    # edges exactly: the exact predicates must still count every crossing once.
    mask = blobs(np.random.default_rng(seed), (23, 19, 17))
    vertices, faces = mask_to_mesh(mask, affine, smoothing_iterations=0)
    np.testing.assert_array_equal(mesh_to_mask(vertices, faces, mask.shape, affine), mask)


@pytest.mark.parametrize("seed", range(3))
def test_salt_noise_with_pinched_edges_round_trips(seed):
    # Voxels touching only along an edge make marching cubes share that edge among four triangles:
    # not a manifold (trimesh's is_watertight is False) but closed, and parity still holds.
    mask = np.random.default_rng(seed).random((10, 10, 10)) > 0.6
    vertices, faces = mask_to_mesh(mask, AFFINE, smoothing_iterations=0)
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert set(counts.tolist()) == {2, 4}
    np.testing.assert_array_equal(mesh_to_mask(vertices, faces, mask.shape, AFFINE), mask)


def test_mesh_is_watertight_outward_and_in_millimetres(ellipsoid):
    for affine in (AFFINE, AFFINE @ np.diag([-1.0, 1.0, 1.0, 1.0])):  # the second one mirrors
        vertices, faces = mask_to_mesh(ellipsoid, affine, smoothing_iterations=0)
        surface = trimesh.Trimesh(vertices, faces, process=False)
        assert vertices.dtype == np.float64 and faces.dtype == np.int64
        assert surface.is_watertight and surface.is_winding_consistent
        voxel_volume = abs(np.linalg.det(affine[:3, :3]))
        assert surface.volume > 0  # outward normals
        assert surface.volume == pytest.approx(ellipsoid.sum() * voxel_volume, rel=0.02)


def test_smoothing_keeps_the_volume_and_moves_the_surface():
    mask = np.zeros((30, 30, 30), bool)
    mask[5:25, 8:22, 10:20] = True
    rough_vertices, faces = mask_to_mesh(mask, np.eye(4), smoothing_iterations=0)
    smooth_vertices, smooth_faces = mask_to_mesh(mask, np.eye(4), smoothing_iterations=10)
    np.testing.assert_array_equal(faces, smooth_faces)
    assert not np.allclose(rough_vertices, smooth_vertices)
    rough = trimesh.Trimesh(rough_vertices, faces, process=False).volume
    smooth = trimesh.Trimesh(smooth_vertices, faces, process=False).volume
    assert smooth == pytest.approx(rough, rel=0.03)


def test_mask_on_the_grid_border_gives_a_closed_surface():
    mask = np.ones((4, 5, 6), bool)
    vertices, faces = mask_to_mesh(mask, np.eye(4), smoothing_iterations=0)
    assert trimesh.Trimesh(vertices, faces, process=False).is_watertight
    np.testing.assert_allclose(vertices.min(axis=0), [-0.5, -0.5, -0.5])
    np.testing.assert_array_equal(mesh_to_mask(vertices, faces, mask.shape, np.eye(4)), mask)


def test_box_through_voxel_centres_is_half_open():
    # Faces pass exactly through voxel centres: [1, 4) on every axis, whatever the winding.
    box = trimesh.creation.box(bounds=[[1.0, 1.0, 1.0], [4.0, 4.0, 4.0]])
    expected = np.zeros((6, 6, 6), bool)
    expected[1:4, 1:4, 1:4] = True
    for faces in (box.faces, box.faces[:, ::-1]):
        np.testing.assert_array_equal(mesh_to_mask(box.vertices, faces, (6, 6, 6), np.eye(4)), expected)


def test_convex_mesh_matches_its_half_spaces():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=9.3)
    affine = oblique_affine(spacing=(0.7, 0.8, 1.9), origin=(-12.0, -11.0, -13.0))
    shape = (36, 34, 16)
    mask = mesh_to_mask(sphere.vertices, sphere.faces, shape, affine)
    grid = np.stack(np.meshgrid(*map(np.arange, shape), indexing="ij"), axis=-1).reshape(-1, 3)
    world = grid @ affine[:3, :3].T + affine[:3, 3]
    offsets = (world[:, None, :] - sphere.triangles[None, :, 0, :]) * sphere.face_normals[None]
    inside = (offsets.sum(axis=2) <= 0).all(axis=1).reshape(shape)
    assert inside.sum() > 1000
    np.testing.assert_array_equal(mask, inside)


def test_triangle_soup_is_accepted():
    box = trimesh.creation.box(bounds=[[0.5, 0.5, 0.5], [2.5, 3.5, 1.5]])
    soup_vertices = box.triangles.reshape(-1, 3)
    soup_faces = np.arange(len(soup_vertices)).reshape(-1, 3)
    mask = mesh_to_mask(soup_vertices, soup_faces, (4, 5, 3), np.eye(4))
    assert int(mask.sum()) == 2 * 3 * 1


def test_mesh_partly_outside_is_clipped():
    box = trimesh.creation.box(bounds=[[-10.2, 2.5, -3.3], [3.5, 4.5, 30.7]])
    mask = mesh_to_mask(box.vertices, box.faces, (8, 8, 8), np.eye(4))
    expected = np.zeros((8, 8, 8), bool)
    expected[0:4, 3:5, 0:8] = True
    np.testing.assert_array_equal(mask, expected)


def test_mesh_outside_the_image_raises():
    box = trimesh.creation.box(bounds=[[20.0, 0.0, 0.0], [25.0, 5.0, 5.0]])
    with pytest.raises(GeometryMismatchError, match="entirely outside"):
        mesh_to_mask(box.vertices, box.faces, (8, 8, 8), np.eye(4))


def test_open_mesh_raises():
    box = trimesh.creation.box(extents=(3.0, 3.0, 3.0))
    with pytest.raises(InvalidInputError, match="not closed"):
        mesh_to_mask(box.vertices, box.faces[:-1], (8, 8, 8), np.eye(4))


def test_bad_inputs_raise():
    box = trimesh.creation.box(extents=(3.0, 3.0, 3.0))
    with pytest.raises(InvalidInputError, match="vertices"):
        mesh_to_mask(box.vertices[:, :2], box.faces, (8, 8, 8), np.eye(4))
    with pytest.raises(InvalidInputError, match="faces index"):
        mesh_to_mask(box.vertices, box.faces + 100, (8, 8, 8), np.eye(4))
    with pytest.raises(GeometryMismatchError, match="affine"):
        mesh_to_mask(box.vertices, box.faces, (8, 8, 8), np.zeros((4, 4)))
    with pytest.raises(GeometryMismatchError, match="shape"):
        mesh_to_mask(box.vertices, box.faces, (8, 8), np.eye(4))


def test_empty_mask_raises():
    with pytest.raises(InvalidInputError, match="empty"):
        mask_to_mesh(np.zeros((4, 4, 4), bool), np.eye(4))
    with pytest.raises(InvalidInputError, match="3D"):
        mask_to_mesh(np.ones((4, 4), bool), np.eye(4))


def test_inputs_are_not_modified(ellipsoid):
    before = ellipsoid.copy()
    vertices, faces = mask_to_mesh(ellipsoid, AFFINE)
    kept_vertices, kept_faces = vertices.copy(), faces.copy()
    mesh_to_mask(vertices, faces, SHAPE, AFFINE)
    np.testing.assert_array_equal(ellipsoid, before)
    np.testing.assert_array_equal(vertices, kept_vertices)
    np.testing.assert_array_equal(faces, kept_faces)
