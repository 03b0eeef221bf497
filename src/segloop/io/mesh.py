"""Surface meshes: STL (binary and ASCII), Wavefront OBJ and PLY.

trimesh reads all of them and writes ASCII STL, OBJ and PLY; binary STL (the common case, and the
large one) is packed here with numpy.

Coordinates. segloop's `Mesh` is in RAS+ millimetres, like every affine in segloop. 3D Slicer (since
4.11) writes model files in LPS and says so in the file with ``SPACE=LPS`` (or ``SPACE=RAS``): in
the 80-byte header of a binary STL or the ``solid`` line of an ASCII STL, in a ``#`` comment of an
OBJ, in a ``comment`` line of a PLY header. `read_mesh` honours that marker and, **when a file has
none, assumes LPS**, as Slicer does (LPS is also DICOM's and ITK's world space; VTK's ASCII STL
writer drops the header, so even Slicer's ASCII STLs may carry no marker). Files from Slicer before
4.11 are RAS without a marker: read them with ``assume_space="RAS"``. `write_mesh` writes LPS and
the ``SPACE=LPS`` marker, so a mesh exported by segloop opens in the right place in Slicer;
``space="RAS"`` writes RAS with its marker instead. The conversion (x and y negated: a half-turn
about the z axis, so triangle winding and outward normals are kept) happens here and only here.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from segloop.errors import CorruptFileError, InvalidInputError, NotFoundError, UnsupportedFormatError
from segloop.io.atomic import atomic_file
from segloop.io.limits import check_file_size

__all__ = ["MESH_SUFFIXES", "Mesh", "read_mesh", "write_mesh"]

#: Suffix -> trimesh file type.
MESH_SUFFIXES = {".stl": "stl", ".obj": "obj", ".ply": "ply"}
_SPACES = ("LPS", "RAS")
_MARKER = re.compile(rb"SPACE=(RAS|LPS)", re.IGNORECASE)
_HEADER_TEXT = "segloop output. SPACE={space}"
#: How far into an OBJ file its leading comments are searched for the marker.
_OBJ_COMMENT_BYTES = 65536
_DECODE_ERRORS = (
    ValueError, KeyError, IndexError, TypeError, AttributeError, EOFError, OverflowError, struct.error
)


@dataclass(frozen=True)
class Mesh:
    """A triangle surface in RAS+ millimetres.

    Attributes:
        vertices: ``(N, 3)`` float64 vertex positions, RAS+ mm.
        faces: ``(M, 3)`` int64 vertex indices of the triangles.
    """

    vertices: np.ndarray
    faces: np.ndarray

    def __post_init__(self) -> None:
        vertices = np.ascontiguousarray(self.vertices, dtype=np.float64)
        faces = np.asarray(self.faces)
        if vertices.ndim != 2 or vertices.shape[1] != 3:
            msg = f"mesh vertices must be an (N, 3) array of RAS mm; got shape {vertices.shape}"
            raise InvalidInputError(msg)
        if not np.all(np.isfinite(vertices)):
            bad = int((~np.isfinite(vertices)).any(axis=1).sum())
            msg = f"mesh vertices must be finite RAS mm; got {bad} with NaN or infinite coordinates"
            raise InvalidInputError(msg)
        if faces.ndim != 2 or faces.shape[1] != 3 or (faces.size and faces.dtype.kind not in "iu"):
            msg = f"mesh faces must be an (M, 3) integer array; got {faces.dtype} {faces.shape}"
            raise InvalidInputError(msg)
        if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
            msg = f"mesh faces index vertices 0..{len(vertices) - 1}; got {faces.min()}..{faces.max()}"
            raise InvalidInputError(msg)
        object.__setattr__(self, "vertices", vertices)
        object.__setattr__(self, "faces", np.ascontiguousarray(faces, dtype=np.int64))


def _is_binary_stl(data: bytes) -> bool:
    """Whether ``data`` has the exact length a binary STL with its triangle count has."""
    return len(data) >= 84 and len(data) == 84 + 50 * struct.unpack_from("<I", data, 80)[0]


def _file_type(path: Path) -> str:
    file_type = MESH_SUFFIXES.get(path.suffix.lower())
    if file_type is None:
        msg = f"{path}: unknown mesh suffix {path.suffix!r}: expected one of {', '.join(MESH_SUFFIXES)}"
        raise UnsupportedFormatError(msg)
    return file_type


def _find_space(data: bytes, file_type: str) -> str | None:
    """The ``SPACE=`` marker of a mesh file (``"LPS"``/``"RAS"``), or None."""
    if file_type == "stl":
        first_line = data[:256].split(b"\n", 1)[0]
        places = [data[:80], first_line]  # binary header / ASCII "solid <name>" line
    elif file_type == "obj":
        places = [line for line in data[:_OBJ_COMMENT_BYTES].splitlines() if line.lstrip().startswith(b"#")]
    else:
        header = data[: data.find(b"end_header")] if b"end_header" in data[:65536] else b""
        places = [line for line in header.splitlines() if line.startswith((b"comment", b"obj_info"))]
    for place in places:
        found = _MARKER.search(place)
        if found:
            return found.group(1).decode().upper()
    return None


def _check_space(space: str) -> str:
    if not isinstance(space, str) or space.upper() not in _SPACES:
        msg = f"mesh space must be one of {', '.join(_SPACES)}; got {space!r}"
        raise InvalidInputError(msg)
    return space.upper()


def _flip_xy(vertices: np.ndarray) -> np.ndarray:
    return vertices * np.array([-1.0, -1.0, 1.0])


def read_mesh(path: str | os.PathLike, *, assume_space: str = "LPS") -> Mesh:
    """Read a triangle mesh (``.stl`` binary or ASCII, ``.obj``, ``.ply``) into RAS+ mm.

    The file's ``SPACE=LPS`` / ``SPACE=RAS`` marker (3D Slicer's) decides the coordinate system;
    a file without one is taken as ``assume_space``: LPS, Slicer's default since 4.11. Vertices at
    the same position are merged (STL stores every triangle's corners separately); polygons are
    split into triangles.

    Args:
        path: the mesh file.
        assume_space: ``"LPS"`` or ``"RAS"``, the space of a file without a marker.

    Returns:
        The `Mesh` (vertices RAS+ mm float64, faces int64).

    Raises:
        NotFoundError: ``path`` does not exist.
        UnsupportedFormatError: the suffix is not ``.stl``, ``.obj`` or ``.ply``.
        InvalidInputError: an unknown ``assume_space``.
        CorruptFileError: the file cannot be decoded, holds no triangles (a point cloud, an empty
            solid) or has vertices that are not finite.
        TooLargeError: the file exceeds `segloop.io.limits.max_image_bytes`.
    """
    path = Path(path)
    default_space = _check_space(assume_space)
    if not path.is_file():
        msg = f"{path}: no such mesh file"
        raise NotFoundError(msg)
    file_type = _file_type(path)
    check_file_size(path.stat().st_size, what=str(path))
    data = path.read_bytes()
    source: io.IOBase = io.BytesIO(data)
    if file_type == "obj":  # text; trimesh would need charset_normalizer to guess other encodings
        source = io.StringIO(data.decode("utf-8", errors="replace"))
    elif file_type == "stl" and not _is_binary_stl(data):  # ASCII, or broken: make it valid UTF-8 text
        source = io.BytesIO(data.decode("utf-8", errors="replace").encode("utf-8"))
    # huge or NaN coordinates overflow trimesh's vertex merging: refused below, not warned about
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            loaded = trimesh.load_mesh(source, file_type=file_type, process=True)
        except _DECODE_ERRORS as error:
            detail = str(error).splitlines()[0] if str(error) else type(error).__name__
            msg = f"{path}: cannot read as {file_type.upper()} ({detail}); the file may be truncated"
            raise CorruptFileError(msg) from error
        if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
            msg = f"{path}: expected a surface mesh with triangles, got none (an empty file or a point cloud)"
            raise CorruptFileError(msg)
        if not np.all(np.isfinite(loaded.vertices)):
            msg = f"{path}: expected finite vertex coordinates; some are NaN or infinite"
            raise CorruptFileError(msg)
        try:
            loaded.merge_vertices(merge_tex=True, merge_norm=True)  # OBJ/PLY corners split by normals
        except OverflowError as error:
            msg = f"{path}: vertex coordinates too large to merge ({error}); expected positions in mm"
            raise CorruptFileError(msg) from error
    faces = np.asarray(loaded.faces)
    vertices = np.asarray(loaded.vertices, dtype=np.float64)
    if (_find_space(data, file_type) or default_space) == "LPS":
        vertices = _flip_xy(vertices)
    return Mesh(vertices, faces)


_STL_RECORD = np.dtype([("normal", "<f4", 3), ("corners", "<f4", (3, 3)), ("attribute", "<u2")])


def _encode_binary_stl(vertices: np.ndarray, faces: np.ndarray, header: str) -> bytes:
    """Binary STL: 80-byte header (space-padded, as VTK writes it), uint32 triangle count, 50-byte
    records (normal, 3 corners, attribute 0).

    Packed here with numpy rather than by trimesh: the layout is fixed, it is about three times
    faster, and the header carries the ``SPACE=`` marker.
    """
    corners = vertices.astype(np.float32)[faces]  # (M, 3 corners, 3) float32, as stored
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    lengths = np.sqrt(np.einsum("ij,ij->i", normals, normals))[:, None]
    records = np.empty(len(faces), dtype=_STL_RECORD)
    records["normal"] = np.divide(normals, lengths, out=np.zeros_like(normals), where=lengths > 0)
    records["corners"] = corners
    records["attribute"] = 0
    return header.encode("ascii").ljust(80) + struct.pack("<I", len(faces)) + records.tobytes()


def _encode_with_trimesh(surface: trimesh.Trimesh, file_type: str, header: str, *, binary: bool) -> bytes:
    """ASCII STL (marker in the ``solid`` name), OBJ (a ``#`` line), PLY (a ``comment`` line)."""
    if file_type == "stl":
        surface.metadata["name"] = header
        return trimesh.exchange.stl.export_stl_ascii(surface).encode("ascii")
    if file_type == "obj":
        text = trimesh.exchange.obj.export_obj(
            surface, include_normals=False, include_color=False, include_texture=False, header=header
        )
        return text.encode("ascii")
    data = trimesh.exchange.ply.export_ply(surface, encoding="binary" if binary else "ascii")
    format_end = data.index(b"\n", data.index(b"\nformat ") + 1) + 1
    return data[:format_end] + f"comment {header}\n".encode("ascii") + data[format_end:]


def write_mesh(
    mesh: Mesh, path: str | os.PathLike, *, overwrite: bool = False, binary: bool = True, space: str = "LPS"
) -> Path:
    """Write a mesh atomically as ``.stl``, ``.obj`` or ``.ply``, in LPS with Slicer's marker.

    Args:
        mesh: the surface, RAS+ mm.
        path: target file; the suffix picks the format.
        overwrite: replace an existing file instead of raising `ConflictError`.
        binary: binary STL / PLY (ASCII when False; OBJ is always text).
        space: ``"LPS"`` (Slicer's convention, the default) or ``"RAS"``; written into the file
            as ``SPACE=...``.

    Returns:
        The path written.

    Raises:
        UnsupportedFormatError: an unknown suffix.
        InvalidInputError: an unknown ``space`` or a mesh without triangles.
        ConflictError: ``path`` exists and ``overwrite`` is false.
    """
    path = Path(path)
    file_type = _file_type(path)
    space = _check_space(space)
    if len(mesh.faces) == 0:
        msg = f"{path}: the mesh has no triangles; expected at least one to write"
        raise InvalidInputError(msg)
    vertices = _flip_xy(mesh.vertices) if space == "LPS" else mesh.vertices
    header = _HEADER_TEXT.format(space=space)
    if file_type == "stl" and binary:
        data = _encode_binary_stl(vertices, mesh.faces, header)
    else:
        data = _encode_with_trimesh(
            trimesh.Trimesh(vertices, mesh.faces, process=False), file_type, header, binary=binary
        )
    with atomic_file(path, overwrite=overwrite) as temporary:
        temporary.write_bytes(data)
    return path
