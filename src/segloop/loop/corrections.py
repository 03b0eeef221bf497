"""Corrections of a whole case and the correction files both faces (whole case, patches) share.

A person corrects a case in two ways, each stored as a ``revised`` label version whose parent is
the version it corrects:

- a whole corrected label (`correct_case_label`), in any supported format; a Slicer
  ``.seg.nrrd`` is mapped to the schema by segment *name* (not colour or order) and an unknown
  name is an error. It annotates the segments it holds (a plain label map: every class);
- add / remove / ignore masks on the case's grid (`correct_case_masks`), merged into the current
  effective label with seed 003's precedence (Ignore > Add > Remove > label, see
  `segloop.core.corrections`). The version annotates only the classes the masks changed (and the
  ``--class`` named), plus *ignore* where the person marked it.

Correction files (here and for patches) are named like MemBrain-seg's: ``Add*``, ``Remove*``,
``Ignore*`` (any case), every file of a kind unioned. Which class an *Add* paints, first match:

1. the file's name: ``Add_<class>...`` (``Add_parotid_l.nrrd``, ``add_liver2.nii.gz``);
2. the ``class_name`` option (``--class``);
3. the only class of a one-class schema (MemBrain-seg's binary membranes);
4. otherwise the file's values: a label-valued mask holding class values 1..N (a ``.seg.nrrd``:
   its segment names).

A *Remove* that names a class (by file name or ``--class``) clears only that class's voxels
under the mask; a plain one clears whatever is there. Overlapping *Add* files of different
classes: the later file in name order wins.

A correction made from an export (`segloop.loop.tool_exports`) whose case has since been revised
by someone else is refused unless forced: the export's manifest (``segloop-export.json``) records
the label it exported.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segloop.core.assembly import SOURCE_PRIORITY, Assembly
from segloop.core.corrections import merge_corrections, parse_correction_name
from segloop.core.geometry import align_to_grid, embed_in_grid
from segloop.core.labels import LabelSchema
from segloop.errors import ConflictError, LabelValueError, NotFoundError, SegloopError
from segloop.io import read_volume
from segloop.io.slicer_seg import segments_to_masks
from segloop.loop.cases import hash_path
from segloop.loop.labels import compute_effective_label, count_voxels, read_schema_labels
from segloop.store import CaseRecord, LabelVersionRecord, NewLabel, Project, compute_label_key

__all__ = [
    "EXPORT_MANIFEST",
    "CorrectionFile",
    "CorrectionMasks",
    "CorrectionResult",
    "choose_parent",
    "correct_case_label",
    "correct_case_masks",
    "list_correction_files",
    "name_correction_files",
    "original_class_values",
    "read_correction_masks",
    "read_current_label",
    "store_revised",
]

EXPORT_MANIFEST = "segloop-export.json"


# -- correction files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorrectionFile:
    """One correction file: its kind (``Add``/``Remove``/``Ignore``) and the class its name gives."""

    path: Path
    kind: str
    class_name: str | None
    sha256: str


def _correction_file(path: Path, kind: str, class_name: str | None) -> CorrectionFile:
    if not Path(path).is_file():
        msg = f"correction file {path} does not exist"
        raise NotFoundError(msg)
    return CorrectionFile(Path(path), kind, class_name, hash_path(Path(path))[0])


def list_correction_files(
    folder: Path, class_names: Sequence[str]
) -> tuple[list[CorrectionFile], list[Path]]:
    """The ``Add*``/``Remove*``/``Ignore*`` files of a folder, in name order, and the other files.

    Hidden files and ``README*`` are passed over silently; other unrelated files come back as
    the second list (MemBrain-seg skips them with a warning).
    """
    files, others = [], []
    for path in sorted(Path(folder).iterdir()):
        if path.name.startswith(".") or path.name.upper().startswith("README") or not path.is_file():
            continue
        parsed = parse_correction_name(path.name, class_names)
        if parsed is None:
            others.append(path)
        else:
            files.append(_correction_file(path, parsed.kind, parsed.class_name))
    return files, others


def name_correction_files(
    class_names: Sequence[str],
    *,
    add: Iterable[Path] = (),
    remove: Iterable[Path] = (),
    ignore: Iterable[Path] = (),
) -> list[CorrectionFile]:
    """Correction files given by kind (``--add``, ``--remove``, ``--ignore``); names may add a class."""
    files = []
    for kind, paths in (("Add", add), ("Remove", remove), ("Ignore", ignore)):
        for path in paths:
            parsed = parse_correction_name(Path(path).name, class_names)
            named = parsed.class_name if parsed is not None and parsed.kind == kind else None
            files.append(_correction_file(Path(path), kind, named))
    return files


@dataclass(frozen=True)
class CorrectionMasks:
    """Correction files read onto one grid (rules in the module docstring).

    Attributes:
        add: ``(I, J, K)`` class values to paint (0: nothing).
        remove: ``(I, J, K)`` bool, clear whatever is there.
        remove_by_class: class value -> ``(I, J, K)`` bool, clear only that class.
        ignore: ``(I, J, K)`` bool.
        files: the files, in the order applied.
    """

    add: np.ndarray
    remove: np.ndarray
    remove_by_class: dict[int, np.ndarray]
    ignore: np.ndarray
    files: tuple[CorrectionFile, ...]

    def apply(self, labels: np.ndarray, ignore_index: int) -> np.ndarray:
        """``labels`` with the corrections merged (`segloop.core.corrections.merge_corrections`)."""
        return merge_corrections(
            labels,
            ignore_index=ignore_index,
            add=self.add,
            remove=self.remove,
            remove_by_class=self.remove_by_class,
            ignore=self.ignore,
        )

    def digest(self, **options: Any) -> str:
        """SHA-256 of the files' names and contents and ``options``: equal digests, equal merge."""
        digest = hashlib.sha256()
        for item in self.files:
            digest.update(f"{item.path.name}|{item.kind}|{item.class_name}|{item.sha256}\n".encode())
        digest.update(json.dumps(options, sort_keys=True).encode())
        return digest.hexdigest()


def _read_on_grid(
    path: Path, schema: LabelSchema, shape: Sequence[int], affine: np.ndarray, *, by_name: bool
) -> np.ndarray:
    """A correction file's values on a grid: class values (``by_name``) or a 0/1 mask."""
    what = f"correction {path}"
    if Path(path).name.lower().endswith(".seg.nrrd"):
        if by_name:
            return read_schema_labels(path, schema, shape, affine)[0]
        volume = read_volume(path)
        mask = np.zeros(volume.spatial_shape, dtype=np.uint8)
        for _, segment_mask in segments_to_masks(volume):
            mask |= segment_mask
        return embed_in_grid(mask, volume.affine, shape, affine, what=what)
    volume = read_volume(path)
    if volume.array.ndim != 3:
        msg = f"{what} must be a 3D mask; got shape {volume.array.shape}"
        raise LabelValueError(msg)
    return align_to_grid(volume.array, volume.affine, shape, affine, what=what)


def read_correction_masks(
    files: Sequence[CorrectionFile],
    schema: LabelSchema,
    shape: Sequence[int],
    affine: np.ndarray,
    *,
    class_name: str | None = None,
) -> CorrectionMasks:
    """Read correction files onto a grid (a case's, or a patch's).

    Args:
        files: the files (see `list_correction_files`, `name_correction_files`).
        schema: the project's classes.
        shape: the grid's ``(I, J, K)``.
        affine: the grid's ``(4, 4)`` affine; a file on another grid is an error.
        class_name: the class that *Add* files without a class in their name paint (``--class``).

    Raises:
        GeometryMismatchError: a file's grid (shape or position) differs.
        LabelValueError: a label-valued *Add* holds values that are no class.
        UnknownClassError: ``class_name`` or a segment name is not in the schema.
    """
    default_value = schema.index_of(class_name) if class_name is not None else None
    if default_value is None and len(schema.classes) == 1:
        default_value = 1
    shape = tuple(int(n) for n in shape)
    add = np.zeros(shape, dtype=schema.dtype)
    remove = np.zeros(shape, dtype=bool)
    remove_by_class: dict[int, np.ndarray] = {}
    ignore = np.zeros(shape, dtype=bool)
    for item in files:
        named = schema.index_of(item.class_name) if item.class_name is not None else None
        value = named if named is not None else default_value
        by_name = item.kind == "Add" and value is None
        values = _read_on_grid(item.path, schema, shape, affine, by_name=by_name)
        mask = values != 0
        if item.kind == "Ignore":
            ignore |= mask
        elif item.kind == "Remove":
            if value is None:
                remove |= mask
            else:
                remove_by_class.setdefault(value, np.zeros(shape, dtype=bool))
                remove_by_class[value] |= mask
        elif value is not None:
            add[mask] = value
        else:
            schema.check_values(values, what=f"correction {item.path}")
            if np.any(values == schema.ignore_index):
                msg = (
                    f"add file {item.path} holds the ignore value {schema.ignore_index}: expected class"
                    f" values 1..{len(schema.classes)} (put ignore voxels in an Ignore file)"
                )
                raise LabelValueError(msg)
            add[mask] = values[mask]
    return CorrectionMasks(add, remove, remove_by_class, ignore, tuple(files))


# -- versions ------------------------------------------------------------------------------------


def choose_parent(
    versions: Sequence[LabelVersionRecord], assembly: Assembly | None, class_values: Iterable[int] = ()
) -> LabelVersionRecord | None:
    """The version a correction corrects: the one deciding most of ``class_values`` (default all).

    Ties go to the more trusted, then the newer version (assembly order).
    """
    if assembly is None or not versions:
        return None
    wanted = set(class_values) or set(assembly.class_sources)
    counts: dict[int, int] = {}
    for value, version_id in assembly.class_sources.items():
        if value in wanted:
            counts[version_id] = counts.get(version_id, 0) + 1
    by_id = {v.id: v for v in versions}
    if not counts:
        return max(versions, key=lambda v: (SOURCE_PRIORITY[v.source], v.id))
    return max(
        (by_id[i] for i in counts if i in by_id),
        key=lambda v: (counts[v.id], SOURCE_PRIORITY[v.source], v.id),
    )


def store_revised(
    project: Project,
    case: CaseRecord,
    labels: np.ndarray,
    *,
    classes: Sequence[str],
    parent_id: int | None,
    tool: str,
    params: dict[str, Any],
    author: str,
) -> LabelVersionRecord:
    """Store ``(I, J, K)`` schema labels as a ``revised`` version (empty classes allowed)."""
    schema = project.config.schema
    labels = labels.astype(schema.dtype, copy=False)
    with project.objects.stage() as staged:
        key = staged.put(labels, case.affine)
    label = NewLabel(
        key, "revised", tuple(classes), count_voxels(labels, schema), author, tool, params, parent_id
    )
    return project.add_label_version(case.case_id, label)


def _same_as_latest(
    versions: Sequence[LabelVersionRecord], labels: np.ndarray, classes: Sequence[str], tool: str
) -> LabelVersionRecord | None:
    """The newest version if it is already this revision (so storing it again adds nothing)."""
    if not versions:
        return None
    latest = versions[-1]
    same = latest.source == "revised" and latest.tool == tool and set(latest.classes) == set(classes)
    return latest if same and latest.object_key == compute_label_key(labels) else None


@dataclass(frozen=True)
class CorrectionResult:
    """What a correction stored.

    Attributes:
        case_id: the case.
        version: the new ``revised`` version, or the identical one already stored (``created``
            False), or None when the corrections change nothing.
        created: whether a version was added.
        changed_voxels: voxels whose label changed.
        classes: the classes the version annotates.
        warnings: e.g. classes decided by an ``original`` version (a revision does not win there).
    """

    case_id: str
    version: LabelVersionRecord | None
    created: bool
    changed_voxels: int
    classes: tuple[str, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)


def original_class_values(versions: Sequence[LabelVersionRecord], assembly: Assembly | None) -> set[int]:
    """Class values a case's effective label takes from an ``original`` version."""
    if assembly is None:
        return set()
    by_id = {v.id: v for v in versions}
    return {c for c, i in assembly.class_sources.items() if i in by_id and by_id[i].source == "original"}


def _check_export_manifest(
    folder: Path, project: Project, case_id: str, current_key: str, current_parent: int | None, force: bool
) -> dict[str, Any] | None:
    """Refuse corrections made from a stale export (someone revised the case since)."""
    path = Path(folder) / EXPORT_MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("case") != case_id:
        msg = f"{path} was exported for case {manifest.get('case')!r}, not {case_id!r}: check the case id"
        raise SegloopError(msg)
    if manifest.get("label_sha256") != current_key and not force:
        msg = (
            f"case {case_id!r} changed since it was exported ({path}): the export shows version"
            f" {manifest.get('parent_version_id')}, the case is now at version {current_parent};"
            " export it again and redo the correction there, or pass --force to apply it to the current label"
        )
        raise ConflictError(msg)
    return manifest


def _export_folders(paths: Iterable[Path]) -> list[Path]:
    """Folders that may hold an export manifest: a file's folder, or the export above ``corrections/``."""
    folders = set()
    for path in paths:
        folder = Path(path).resolve().parent
        folders.add(folder)
        if folder.name == "corrections":
            folders.add(folder.parent)
    return sorted(folders)


def read_current_label(
    project: Project, case: CaseRecord
) -> tuple[list[LabelVersionRecord], Assembly | None, np.ndarray]:
    """A case's versions, their assembly and its effective label (all background without versions)."""
    versions = project.list_label_versions(case.case_id)
    assembly = compute_effective_label(project, case, versions)
    schema = project.config.schema
    labels = assembly.labels if assembly is not None else np.zeros(case.shape, dtype=schema.dtype)
    return versions, assembly, labels


def correct_case_label(
    project: Project,
    case_id: str,
    label_path: Path,
    *,
    classes: Sequence[str] | None = None,
    force: bool = False,
    author: str,
) -> CorrectionResult:
    """Store a whole corrected label of a case as a ``revised`` version.

    Args:
        project: the open project.
        case_id: the case.
        label_path: the corrected label (any supported format; a ``.seg.nrrd`` by segment name).
        classes: the classes it annotates (default: a ``.seg.nrrd``'s segments, else every class).
        force: store it even if it comes from an export that has gone stale.
        author: recorded on the version.

    Raises:
        GeometryMismatchError: the label lies on another grid than the case.
        UnknownClassError: a segment name or class is not in the schema.
        ConflictError: the label comes from a stale export (see module docstring).
    """
    schema = project.config.schema
    case = project.get_case(case_id)
    labels, names = read_schema_labels(Path(label_path), schema, case.shape, case.affine)
    annotated = tuple(classes) if classes else (names if names is not None else schema.names)
    schema.indices_of(annotated)
    versions, assembly, current = read_current_label(project, case)
    parent = choose_parent(versions, assembly, schema.indices_of(annotated))
    key = compute_label_key(current)
    for folder in _export_folders([Path(label_path)]):
        _check_export_manifest(folder, project, case_id, key, parent and parent.id, force)
    changed = int(np.count_nonzero(labels != current))
    existing = _same_as_latest(versions, labels, annotated, "correct-label")
    if existing is not None:
        return CorrectionResult(case_id, existing, False, 0, annotated)
    originals = original_class_values(versions, assembly) & set(schema.indices_of(annotated))
    warnings = _original_warning(schema, originals)
    params = {
        "file": str(Path(label_path).resolve()),
        "sha256": hash_path(Path(label_path))[0],
        "force": force,
    }
    version = store_revised(
        project,
        case,
        labels,
        classes=annotated,
        parent_id=parent.id if parent else None,
        tool="correct-label",
        params=params,
        author=author,
    )
    project.log_event("corrected", author, {"case": case_id, "version": version.id, "tool": "correct-label"})
    return CorrectionResult(case_id, version, True, changed, annotated, warnings)


def _original_warning(schema: LabelSchema, values: Iterable[int]) -> tuple[str, ...]:
    names = sorted(schema.name_of(v) for v in values)
    if not names:
        return ()
    return (
        f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} decided by an original version:"
        " a revision does not change the effective label there",
    )


def correct_case_masks(
    project: Project,
    case_id: str,
    *,
    add: Sequence[Path] = (),
    remove: Sequence[Path] = (),
    ignore: Sequence[Path] = (),
    corrections_dir: Path | None = None,
    class_name: str | None = None,
    force: bool = False,
    author: str,
) -> CorrectionResult:
    """Merge add / remove / ignore masks on the case's grid into its current effective label.

    Args:
        project: the open project.
        case_id: the case.
        add: *Add* mask files.
        remove: *Remove* mask files.
        ignore: *Ignore* mask files.
        corrections_dir: a folder of ``Add*``/``Remove*``/``Ignore*`` files (e.g. an export's
            ``corrections/``), read in addition.
        class_name: the class that *Add* (and *Remove*) files without a class in their name mean.
        force: apply them even if they come from an export that has gone stale.
        author: recorded on the version.

    Returns:
        The `CorrectionResult`; no version when the masks change nothing.

    Raises:
        GeometryMismatchError: a mask lies on another grid than the case.
        SegloopError: no correction file was given.
    """
    schema = project.config.schema
    case = project.get_case(case_id)
    files = name_correction_files(schema.names, add=add, remove=remove, ignore=ignore)
    if corrections_dir is not None:
        if not Path(corrections_dir).is_dir():
            msg = f"corrections folder {corrections_dir} does not exist"
            raise NotFoundError(msg)
        files += list_correction_files(Path(corrections_dir), schema.names)[0]
    if not files:
        msg = "no correction given: expected --add, --remove, --ignore files or a --corrections-dir with some"
        raise SegloopError(msg)
    masks = read_correction_masks(files, schema, case.shape, case.affine, class_name=class_name)
    versions, assembly, current = read_current_label(project, case)
    merged = masks.apply(current, schema.ignore_index)
    touched = {c for c in range(1, len(schema.classes) + 1) if np.any((current == c) != (merged == c))}
    if class_name is not None:
        touched.add(schema.index_of(class_name))
    changed = int(np.count_nonzero(merged != current))
    if not touched and not masks.ignore.any():
        return CorrectionResult(case_id, None, False, 0, ())
    parent = choose_parent(versions, assembly, touched)
    key = compute_label_key(current)
    for folder in _export_folders([f.path for f in files]):
        _check_export_manifest(folder, project, case_id, key, parent and parent.id, force)
    labels = np.zeros(case.shape, dtype=schema.dtype)
    for value in sorted(touched):
        labels[merged == value] = value
    labels[masks.ignore] = schema.ignore_index
    annotated = tuple(schema.name_of(v) for v in sorted(touched))
    existing = _same_as_latest(versions, labels, annotated, "correct-masks")
    if existing is not None:
        return CorrectionResult(case_id, existing, False, 0, annotated)
    params = {
        "files": [{"file": str(f.path.resolve()), "kind": f.kind, "sha256": f.sha256} for f in files],
        "class": class_name,
        "corrections_sha256": masks.digest(class_name=class_name),
        "force": force,
    }
    version = store_revised(
        project,
        case,
        labels,
        classes=annotated,
        parent_id=parent.id if parent else None,
        tool="correct-masks",
        params=params,
        author=author,
    )
    project.log_event("corrected", author, {"case": case_id, "version": version.id, "tool": "correct-masks"})
    warnings = _original_warning(schema, original_class_values(versions, assembly) & touched)
    return CorrectionResult(case_id, version, True, changed, annotated, warnings)
