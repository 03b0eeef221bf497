"""Surface meshes named by case and class, as seed 000 (AnatomySketch) saves them, voxelised into labels.

AnatomySketch's users save one closed STL surface per organ and case (``mesh/101_liver_mesh.stl``,
``mesh/101_leftkidney_mesh.stl``) beside the images (``image/101_image.nii.gz``). `find_case_meshes`
pairs them by a file-name pattern, `class_map_of` maps the file's class names to the schema's, and
`meshes_to_labels` voxelises each surface in physical (RAS mm) coordinates onto the case's grid
(`segloop.segment.mesh.mesh_to_mask`). `segloop.loop.cases.import_cases` uses them for
``segloop add --meshes-dir``.

    >>> pattern = compile_name_pattern("{case}_{class}_mesh.stl", "{class}")
    >>> [m["class"] for m in [pattern("101").fullmatch("101_leftkidney_mesh.stl")]]
    ['leftkidney']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segloop.core.labels import LabelSchema
from segloop.errors import InvalidInputError, NotFoundError, SegloopError, UnknownClassError

__all__ = [
    "CaseMesh",
    "class_map_of",
    "compile_name_pattern",
    "find_case_meshes",
    "meshes_to_labels",
    "parse_name_map",
]


@dataclass(frozen=True)
class CaseMesh:
    """One mesh file of a case: its path and the schema class it draws."""

    path: Path
    class_name: str


def compile_name_pattern(pattern: str, field: str) -> Callable[[str], re.Pattern[str]]:
    """A file-name pattern with ``{case}`` and one more ``field`` as a regex per case id.

    Args:
        pattern: e.g. ``{case}_{class}_mesh.stl`` (each placeholder exactly once; the rest literal).
        field: the other placeholder, ``{class}`` (or ``""`` for a pattern of ``{case}`` only).

    Returns:
        ``case id -> compiled regex`` whose group ``class`` (when ``field``) is the rest of the name.

    Raises:
        InvalidInputError: a placeholder is missing or repeated.
    """
    needed = ["{case}", *([field] if field else [])]
    for placeholder in needed:
        count = pattern.count(placeholder)
        if count != 1:
            msg = f"name pattern {pattern!r}: expected {placeholder} once; got it {count} times"
            raise InvalidInputError(msg)
    parts = re.split(r"(\{case\}|\{class\})", pattern)

    def regex(case_id: str | None) -> re.Pattern[str]:
        pieces = []
        for part in parts:
            if part == "{case}":
                pieces.append(re.escape(case_id) if case_id is not None else r"(?P<case>.+?)")
            elif part == "{class}" and field:
                pieces.append(r"(?P<class>.+)")
            else:
                pieces.append(re.escape(part))
        return re.compile("".join(pieces))

    return regex  # type: ignore[return-value]


def parse_name_map(text: str | None) -> dict[str, str]:
    """``leftkidney=kidney_left,rightkidney=kidney_right`` as ``{file name: schema name}``.

    Raises:
        InvalidInputError: an entry without ``=`` or with an empty side.
    """
    mapping: dict[str, str] = {}
    for entry in (text or "").split(","):
        if not entry.strip():
            continue
        name, _, target = entry.partition("=")
        if not name.strip() or not target.strip():
            msg = f"class map entry {entry!r}: expected FILE_NAME=CLASS, e.g. leftkidney=kidney_left"
            raise InvalidInputError(msg)
        mapping[name.strip()] = target.strip()
    return mapping


def class_map_of(schema: LabelSchema, names: Mapping[str, str]) -> dict[str, str]:
    """Check a ``{file name: schema name}`` map against the schema (every target a class).

    Raises:
        UnknownClassError: a target is not a class of the schema.
    """
    for target in names.values():
        schema.index_of(target)
    return dict(names)


def find_case_meshes(
    meshes_dir: Path,
    case_ids: Sequence[str],
    pattern: str,
    schema: LabelSchema,
    names: Mapping[str, str],
    required: Sequence[str] | None = None,
) -> tuple[dict[str, list[CaseMesh]], list[str]]:
    """Each case's mesh files in ``meshes_dir`` by ``pattern``, their classes mapped to the schema.

    Args:
        meshes_dir: the folder of meshes (not searched recursively).
        case_ids: the cases to find meshes of.
        pattern: file names such as ``{case}_{class}_mesh.stl``.
        schema: the project's classes.
        names: ``{class name in file names: schema class}``; a name not in it must be a class.
        required: classes every case must have a mesh of, the only ones used (default: every
            class found; at least one mesh per case).

    Returns:
        ``({case id: [CaseMesh, ...] in schema order}, [files matching the pattern but no case])``.

    Raises:
        NotFoundError: the folder does not exist, or a case lacks a mesh (of a required class).
        UnknownClassError: a file's class name is neither mapped nor a class.
        InvalidInputError: a bad pattern, or two files of one case and class.
    """
    meshes_dir = Path(meshes_dir)
    if not meshes_dir.is_dir():
        msg = f"meshes folder {meshes_dir} does not exist"
        raise NotFoundError(msg)
    regex = compile_name_pattern(pattern, "{class}")
    files = sorted(p for p in meshes_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    found: dict[str, list[CaseMesh]] = {}
    used: set[Path] = set()
    for case_id in case_ids:
        case_regex = regex(case_id)
        meshes: dict[str, CaseMesh] = {}
        for path in files:
            match = case_regex.fullmatch(path.name)
            if match is None:
                continue
            file_class = match["class"]
            class_name = names.get(file_class, file_class)
            try:
                schema.index_of(class_name)
            except UnknownClassError as error:
                known = ", ".join(schema.names)
                msg = f"mesh {path.name}: class {file_class!r}: expected {known}, or a map {file_class}=CLASS"
                raise UnknownClassError(msg) from error
            if class_name in meshes:
                first = meshes[class_name].path.name
                msg = f"case {case_id!r} has two meshes of {class_name!r}: {first} and {path.name}"
                raise InvalidInputError(msg)
            meshes[class_name] = CaseMesh(path, class_name)
            used.add(path)
        for class_name in required or ():
            if class_name not in meshes:
                expected = pattern.replace("{case}", case_id).replace("{class}", class_name)
                msg = f"case {case_id!r} has no mesh of {class_name!r}: expected {meshes_dir / expected}"
                raise NotFoundError(msg)
        if required:  # the declared classes only: a version annotates what it declares
            meshes = {name: meshes[name] for name in required}
        if not meshes:
            expected = pattern.replace("{case}", case_id)
            msg = f"case {case_id!r} has no mesh: expected files {meshes_dir / expected} (nothing was added)"
            raise NotFoundError(msg)
        found[case_id] = sorted(meshes.values(), key=lambda m: schema.index_of(m.class_name))
    any_case = regex(None)
    unmatched = [p.name for p in files if p not in used and any_case.fullmatch(p.name)]
    return found, unmatched


def meshes_to_labels(
    meshes: Sequence[CaseMesh], schema: LabelSchema, shape: Sequence[int], affine: np.ndarray
) -> np.ndarray:
    """Voxelise a case's meshes into one label map (schema order: a later class wins an overlap).

    Args:
        meshes: the case's meshes (`find_case_meshes`); STL in LPS unless the file says RAS.
        schema: the project's classes.
        shape: the case's ``(I, J, K)``.
        affine: the case's ``(4, 4)`` voxel-to-RAS+ mm affine.

    Returns:
        ``(I, J, K)`` schema values: each class where a voxel centre lies inside its surface.

    Raises:
        The errors of `segloop.io.mesh.read_mesh` and `segloop.segment.mesh.mesh_to_mask` (a mesh
        that is not closed, outside the grid, or voxelised to nothing), each naming the file.
    """
    from segloop.io.mesh import read_mesh
    from segloop.segment.mesh import mesh_to_mask

    labels = np.zeros(tuple(shape), dtype=schema.dtype)
    for mesh in meshes:
        try:
            surface = read_mesh(mesh.path)
            mask = mesh_to_mask(surface.vertices, surface.faces, shape, affine)
        except SegloopError as error:
            message = str(error) if str(mesh.path) in str(error) else f"mesh {mesh.path}: {error}"
            raise type(error)(message) from error
        if not mask.any():
            msg = f"mesh {mesh.path} sets no voxel of the image grid: expected a surface around voxel centres"
            raise InvalidInputError(msg)
        labels[mask] = schema.index_of(mesh.class_name)
    return labels
