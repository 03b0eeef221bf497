"""Corrections of a whole case: arrays in, a ``revised`` label version out.

A person corrects a case in two ways, each stored as a ``revised`` label version whose parent is
the version it corrects:

- a whole corrected label (`apply_label`): ``(I, J, K)`` schema values on the case's grid and
  the classes it annotates (default: every class);
- add / remove / ignore masks (`apply` with a `Corrections`), merged into the current effective
  label with seed 003's precedence (Ignore > Add > Remove > label, see
  `segloop.core.corrections`). The version annotates only the classes the masks changed (and
  those the person says they reviewed), plus *ignore* where the person marked it.

A correction may cover part of a case (``region``: slices, a box; `reviewed_region` reads them
as typed): the version then speaks only there (its *coverage*, recorded in ``params["coverage"]``
as patch merges do, and read by assembly). Outside, the case keeps what its other versions say,
so training learns only what the person reviewed (`segloop.core.assembly`).

Both take ``parent``: the id of the case's newest label version when the person read the label
they corrected (`Project.find_head`, or the id of the version a previous call returned; None: the
case had none). If the case has a newer version by the time the correction is stored, someone else
changed it meanwhile and the correction is refused with a `ConflictError` (nothing is stored)
unless ``force`` (then it applies to the current label). The check and the insert are one
transaction, so of two corrections made from the same label and saved at once one wins and the
other gets the conflict: nothing is silently lost.

Reading *files* is the faces' job; the adapters for them live here too (`read_correction_files`,
`read_corrected_label`, `find_export_parent`). Correction files are named like MemBrain-seg's:
``Add*``, ``Remove*``, ``Ignore*`` (any case), every file of a kind unioned. Which class an *Add*
file paints, first match:

1. the file's name: ``Add_<class>...`` (``Add_parotid_l.nrrd``, ``add_liver2.nii.gz``);
2. the ``class_name`` given with the files;
3. the only class of a one-class schema (MemBrain-seg's binary membranes);
4. otherwise the file's values: a label-valued mask holding class values 1..N (a ``.seg.nrrd``:
   its segment names).

A *Remove* that names a class (by file name or ``class_name``) clears only that class's voxels
under the mask; a plain one clears whatever is there. Overlapping *Add* files of different
classes: the later file in name order wins.

Example:
    >>> import numpy as np
    >>> from segloop.core.labels import LabelSchema
    >>> c = Corrections(add=np.ones((1, 1, 2), bool), class_name="liver")
    >>> check_corrections(c, LabelSchema.from_names(["liver", "spleen"]), (1, 1, 2)).add.ravel().tolist()
    [1, 1]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segloop.core.assembly import Assembly
from segloop.core.corrections import PatchBox, coverage_mask, merge_corrections, parse_correction_name
from segloop.core.geometry import align_to_grid, axis_of_plane, embed_in_grid
from segloop.core.labels import LabelSchema
from segloop.core.names import path_inside
from segloop.core.provenance import Source
from segloop.errors import (
    ConflictError,
    GeometryMismatchError,
    InvalidInputError,
    LabelValueError,
    NotFoundError,
)
from segloop.io import read_volume
from segloop.io.slicer_seg import segments_to_masks
from segloop.loop.imports import file_params, hash_path
from segloop.loop.labels import compute_effective_label, count_voxels, read_schema_labels, remember_labels
from segloop.store import CaseRecord, LabelVersionRecord, NewLabel, Project, compute_label_key

__all__ = [
    "EXPORT_MANIFEST",
    "CheckedCorrections",
    "CorrectionFile",
    "CorrectionResult",
    "Corrections",
    "apply",
    "apply_label",
    "check_corrections",
    "check_parent",
    "choose_parent",
    "coverage_params",
    "find_export_parent",
    "list_correction_files",
    "name_correction_files",
    "original_class_values",
    "parse_box",
    "parse_slice_ranges",
    "read_corrected_label",
    "read_correction_files",
    "read_correction_masks",
    "read_current_label",
    "reviewed_region",
    "stage_revised",
]

EXPORT_MANIFEST = "segloop-export.json"


# -- the request ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class Corrections:
    """A person's add / remove / ignore masks on one grid (a case's, or a patch's).

    Attributes:
        add: ``(I, J, K)``; where non-zero, paint ``class_name`` (given) or the array's own
            values as class values 1..N (``class_name`` None; a boolean mask then needs a
            one-class schema).
        remove: ``(I, J, K)``; where non-zero, background: only ``class_name``'s voxels when
            given, whatever is there otherwise.
        ignore: ``(I, J, K)``; where non-zero, *ignore* (the network does not learn there).
        class_name: the class the masks are about; the version annotates it even if unchanged.
        remove_by_class: class name -> ``(I, J, K)`` mask clearing only that class's voxels.
        reviewed: more classes the person reviewed and accepts (annotated even if unchanged).
    """

    add: np.ndarray | None = None
    remove: np.ndarray | None = None
    ignore: np.ndarray | None = None
    class_name: str | None = None
    remove_by_class: Mapping[str, np.ndarray] = field(default_factory=dict)
    reviewed: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        """Whether no mask and no class is given."""
        masks = (self.add, self.remove, self.ignore, *self.remove_by_class.values())
        return all(m is None for m in masks) and self.class_name is None and not self.reviewed

    def digest(self, **options: Any) -> str:
        """SHA-256 of the masks, classes and ``options``: equal digests, equal merge.

        Examples:
            >>> a = Corrections(ignore=np.zeros((2, 2, 1), bool))
            >>> a.digest() == Corrections(ignore=np.zeros((2, 2, 1), bool)).digest() != a.digest(border=1)
            True
        """
        digest = hashlib.sha256()
        arrays = [("add", self.add), ("remove", self.remove), ("ignore", self.ignore)]
        arrays += [(f"remove:{name}", mask) for name, mask in sorted(self.remove_by_class.items())]
        for name, array in arrays:
            key = "-" if array is None else compute_label_key(np.asarray(array))
            digest.update(f"{name}|{key}\n".encode())
        described = {"class": self.class_name, "reviewed": sorted(self.reviewed), **options}
        digest.update(json.dumps(described, sort_keys=True).encode())
        return digest.hexdigest()


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class CheckedCorrections:
    """`Corrections` checked against a schema and a grid, in schema values (`check_corrections`).

    Attributes:
        add: ``(I, J, K)`` class values to paint (0: nothing).
        remove: ``(I, J, K)`` bool, clear whatever is there.
        remove_by_class: class value -> ``(I, J, K)`` bool, clear only that class.
        ignore: ``(I, J, K)`` bool.
        reviewed: class values the version annotates even if unchanged.
    """

    add: np.ndarray
    remove: np.ndarray
    remove_by_class: dict[int, np.ndarray]
    ignore: np.ndarray
    reviewed: frozenset[int]

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


def _mask_on(array: np.ndarray | None, shape: tuple[int, ...], what: str) -> np.ndarray:
    if array is None:
        return np.zeros(shape, dtype=bool)
    array = np.asarray(array)
    if array.shape != shape:
        msg = f"the {what} mask has shape {array.shape}: expected the grid's {shape}"
        raise GeometryMismatchError(msg)
    return array != 0


def check_corrections(
    corrections: Corrections, schema: LabelSchema, shape: Sequence[int]
) -> CheckedCorrections:
    """Check ``corrections`` against the schema and a grid of ``shape``; masks in schema values.

    Raises:
        GeometryMismatchError: a mask's shape is not ``shape``.
        UnknownClassError: a class name is not in the schema.
        LabelValueError: an add mask holds values that are no class.
        InvalidInputError: a boolean add mask without a class in a schema of several classes.
    """
    shape = tuple(int(n) for n in shape)
    value = schema.index_of(corrections.class_name) if corrections.class_name is not None else None
    reviewed = {schema.index_of(name) for name in corrections.reviewed}
    if value is not None:
        reviewed.add(value)
    add = np.zeros(shape, dtype=schema.dtype)
    if corrections.add is not None:
        painted = _mask_on(corrections.add, shape, "add")
        values = np.asarray(corrections.add)
        if value is not None:
            add[painted] = value
        elif values.dtype == bool and len(schema.classes) > 1:
            msg = (
                f"a boolean add mask paints one class: expected a class name with it (classes:"
                f" {', '.join(schema.names)}), or class values 1..{len(schema.classes)} in the mask"
            )
            raise InvalidInputError(msg)
        else:
            found = np.unique(values[painted])
            bad = [v.item() for v in found if not 0 < v <= len(schema.classes)]
            if bad:
                msg = (
                    f"the add mask holds values {bad[:8]}: expected class values"
                    f" 1..{len(schema.classes)} (put ignore voxels in the ignore mask)"
                )
                raise LabelValueError(msg)
            add[painted] = values[painted]
    remove = _mask_on(corrections.remove, shape, "remove")
    remove_by_class: dict[int, np.ndarray] = {}
    if value is not None and remove.any():
        remove_by_class[value] = remove
        remove = np.zeros(shape, dtype=bool)
    for name, mask in corrections.remove_by_class.items():
        index = schema.index_of(name)
        remove_by_class[index] = remove_by_class.get(index, np.zeros(shape, bool)) | _mask_on(
            mask, shape, f"remove {name}"
        )
    ignore = _mask_on(corrections.ignore, shape, "ignore")
    return CheckedCorrections(add, remove, remove_by_class, ignore, frozenset(reviewed))


# -- the reviewed region -------------------------------------------------------------------------


def _parse_range(text: str, length: int, what: str) -> tuple[int, int]:
    """``"a:b"`` (half-open; ``a`` or ``b`` omitted: the axis' start or end) or ``"a"`` (one index)."""
    start, colon, stop = text.strip().partition(":")
    try:
        lo = int(start) if start.strip() else 0
        hi = (int(stop) if stop.strip() else length) if colon else lo + 1
    except ValueError:
        lo, hi = -1, -1
    if not 0 <= lo < hi <= length:
        msg = f"{what} {text.strip()!r}: expected a range a:b with 0 <= a < b <= {length} (the grid's size)"
        raise InvalidInputError(msg)
    return lo, hi


def parse_slice_ranges(text: str, axis: int, shape: Sequence[int]) -> list[PatchBox]:
    """Reviewed slices typed as ``"10:13"`` (slices 10, 11 and 12) or ``"10:13,40"``: whole-slice boxes.

    Args:
        text: comma-separated half-open ranges ``a:b`` or single slice indices along ``axis``.
        axis: the voxel axis the slices are taken along (0, 1 or 2).
        shape: the case's ``(I, J, K)``.

    Raises:
        InvalidInputError: an axis other than 0-2, or a range outside the grid.

    Examples:
        >>> parse_slice_ranges("10:13", 2, (4, 5, 20))
        [PatchBox(offset=(0, 0, 10), size=(4, 5, 3))]
    """
    if axis not in (0, 1, 2):
        msg = f"slice axis {axis}: expected 0, 1 or 2"
        raise InvalidInputError(msg)
    boxes = []
    for part in text.split(","):
        lo, hi = _parse_range(part, int(shape[axis]), f"slices along axis {axis}")
        offset, size = [0, 0, 0], [int(n) for n in shape]
        offset[axis], size[axis] = lo, hi - lo
        boxes.append(PatchBox(tuple(offset), tuple(size)))  # type: ignore[arg-type]
    return boxes


def parse_box(text: str, shape: Sequence[int]) -> PatchBox:
    """A reviewed box typed as ``"i0:i1,j0:j1,k0:k1"`` (half-open voxel ranges; ``:`` a whole axis).

    Raises:
        InvalidInputError: not three ranges, or one outside the grid.

    Examples:
        >>> parse_box("2:6,:,10:13", (8, 5, 20))
        PatchBox(offset=(2, 0, 10), size=(4, 5, 3))
    """
    parts = text.split(",")
    if len(parts) != 3:
        msg = f"box {text!r}: expected three ranges i0:i1,j0:j1,k0:k1"
        raise InvalidInputError(msg)
    ranges = [
        _parse_range(part, int(n), f"box axis {axis}")
        for axis, (part, n) in enumerate(zip(parts, shape, strict=True))
    ]
    return PatchBox(tuple(lo for lo, _ in ranges), tuple(hi - lo for lo, hi in ranges))  # type: ignore[arg-type]


def reviewed_region(
    case: CaseRecord, *, slices: str | None = None, axis: int | None = None, boxes: Sequence[str] = ()
) -> tuple[PatchBox, ...] | None:
    """The part of a case a person reviewed, as typed on a face: slice ranges and/or boxes (their union).

    Args:
        case: the case (its grid and, for ``axis`` None, its axial axis).
        slices: `parse_slice_ranges` text.
        axis: the voxel axis of ``slices`` (default: the case's axial one, as people review).
        boxes: `parse_box` texts.

    Returns:
        The boxes, or None when nothing is given (the whole case was reviewed).

    Raises:
        InvalidInputError: a range outside the grid; ``axis`` without ``slices``.
    """
    if axis is not None and slices is None:
        msg = "a slice axis was given without reviewed slices: expected both, or neither"
        raise InvalidInputError(msg)
    region = [parse_box(text, case.shape) for text in boxes]
    if slices is not None:
        chosen = axis_of_plane(case.affine, "axial") if axis is None else axis
        region += parse_slice_ranges(slices, chosen, case.shape)
    return tuple(region) or None


def coverage_params(region: Sequence[PatchBox]) -> list[dict[str, Any]]:
    """A region as a version's ``params["coverage"]`` (`segloop.core.corrections.coverage_from_params`)."""
    return [{"offset": list(box.offset), "size": list(box.size), "border_voxels": 0} for box in region]


def _region_mask(region: Sequence[PatchBox] | None, shape: Sequence[int]) -> np.ndarray | None:
    """``(I, J, K)`` bool of ``region`` on a grid; None for the whole case."""
    return None if region is None else coverage_mask([(box, 0) for box in region], shape)


# -- correction files (adapters for the faces) -----------------------------------------------------


@dataclass(frozen=True)
class CorrectionFile:
    """One correction file: its kind (``Add``/``Remove``/``Ignore``) and the class its name gives."""

    path: Path
    kind: str
    class_name: str | None
    sha256: str

    def describe(self) -> dict[str, str]:
        """Its provenance as stored in a version's parameters."""
        return {"file": str(self.path.resolve()), "kind": self.kind, "sha256": self.sha256}


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

    Raises:
        InvalidInputError: a file links to somewhere outside ``folder`` (a corrections folder
            may come from someone else: it never makes segloop read elsewhere).
    """
    files, others = [], []
    for path in sorted(Path(folder).iterdir()):
        if path.name.startswith(".") or path.name.upper().startswith("README") or not path.is_file():
            continue
        path_inside(folder, path.name)  # resolves links
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
    """Correction files given by kind; their names may add a class (``Add_liver.nrrd``)."""
    files = []
    for kind, paths in (("Add", add), ("Remove", remove), ("Ignore", ignore)):
        for path in paths:
            parsed = parse_correction_name(Path(path).name, class_names)
            named = parsed.class_name if parsed is not None and parsed.kind == kind else None
            files.append(_correction_file(Path(path), kind, named))
    return files


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
) -> Corrections:
    """Read correction files onto a grid (a case's, or a patch's) as one `Corrections`.

    Args:
        files: the files (see `list_correction_files`, `name_correction_files`).
        schema: the project's classes.
        shape: the grid's ``(I, J, K)``.
        affine: the grid's ``(4, 4)`` affine; a file on another grid is an error.
        class_name: the class that *Add* files without a class in their name paint.

    Returns:
        The corrections: ``add`` in class values, removals split by class, ``class_name`` as
        ``reviewed``.

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
    remove_by_class: dict[str, np.ndarray] = {}
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
                name = schema.name_of(value)
                remove_by_class[name] = remove_by_class.get(name, np.zeros(shape, dtype=bool)) | mask
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
    reviewed = (class_name,) if class_name is not None else ()
    return Corrections(add, remove, ignore, None, remove_by_class, reviewed)


def read_correction_files(
    project: Project,
    case_id: str,
    *,
    add: Sequence[Path] = (),
    remove: Sequence[Path] = (),
    ignore: Sequence[Path] = (),
    corrections_dir: Path | None = None,
    class_name: str | None = None,
) -> tuple[Corrections, tuple[CorrectionFile, ...]]:
    """Read correction files given by kind and/or a folder of them onto a case's grid.

    Returns:
        The `Corrections` and the files read (their provenance).

    Raises:
        NotFoundError: a file or the folder is missing.
        InvalidInputError: no correction file was given.
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
        msg = "no correction given: expected add, remove or ignore mask files (or a folder holding some)"
        raise InvalidInputError(msg)
    masks = read_correction_masks(files, schema, case.shape, case.affine, class_name=class_name)
    return masks, tuple(files)


def read_corrected_label(
    project: Project, case_id: str, path: Path
) -> tuple[np.ndarray, tuple[str, ...] | None, dict[str, str]]:
    """Read a whole corrected label file on a case's grid (a ``.seg.nrrd`` by segment name).

    Returns:
        ``(labels, segment names or None, provenance)``: see `segloop.loop.labels.read_schema_labels`.
    """
    case = project.get_case(case_id)
    labels, names = read_schema_labels(Path(path), project.config.schema, case.shape, case.affine)
    return labels, names, file_params(path)


def _export_folders(paths: Iterable[Path]) -> list[Path]:
    """Folders that may hold an export manifest: a file's folder, or the export above ``corrections/``."""
    folders = set()
    for path in paths:
        folder = Path(path).resolve().parent
        folders.add(folder)
        if folder.name == "corrections":
            folders.add(folder.parent)
    return sorted(folders)


def find_export_parent(project: Project, case_id: str, paths: Iterable[Path]) -> int | None:
    """The ``parent`` of a correction made from files: the head an export recorded, else the current one.

    A file inside a `segloop.loop.tool_exports` folder (or its ``corrections/``) was made from the
    label that export wrote: its manifest names the case's newest version at the time. Files
    from anywhere else were made from the current label.

    Raises:
        InvalidInputError: the export was made for another case.
    """
    for folder in _export_folders(paths):
        path = folder / EXPORT_MANIFEST
        if not path.is_file():
            continue
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("case") != case_id:
            msg = f"{path} was exported for case {manifest.get('case')!r}, not {case_id!r}: check the case id"
            raise InvalidInputError(msg)
        if "head_version_id" in manifest:
            return manifest["head_version_id"]
        return max(manifest.get("version_ids") or [], default=None)
    return project.find_head(case_id)


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
        return max(versions, key=lambda v: (Source(v.source).priority, v.id))
    return max(
        (by_id[i] for i in counts if i in by_id),
        key=lambda v: (counts[v.id], Source(v.source).priority, v.id),
    )


def check_parent(
    case_id: str, versions: Sequence[LabelVersionRecord], parent: int | None, *, force: bool
) -> int | None:
    """The case's head (newest version id) after checking that ``parent`` is still it.

    Args:
        case_id: the case.
        versions: its versions, oldest first, as just read.
        parent: the head when the person read the label they corrected (None: no version).
        force: accept a stale ``parent`` (the correction then applies to the current label).

    Raises:
        InvalidInputError: ``parent`` is no version of the case.
        ConflictError: the case has versions newer than ``parent`` (without ``force``).
    """
    head = versions[-1].id if versions else None
    if parent is not None and parent not in {v.id for v in versions}:
        msg = f"label version {parent} is not a version of case {case_id!r}: expected one of its version ids"
        raise InvalidInputError(msg)
    if parent != head and not force:
        newer = [v for v in versions if parent is None or v.id > parent]
        described = ", ".join(f"{v.id} ({v.source} by {v.author}, {v.tool})" for v in newer[-3:])
        msg = (
            f"case {case_id!r} changed since the corrected label was read: it was read at label version"
            f" {parent}, the case is now at version {head} (added since: {described}); nothing was stored"
        )
        raise ConflictError(msg)
    return head


def stage_revised(
    project: Project,
    case: CaseRecord,
    labels: np.ndarray,
    *,
    classes: Sequence[str],
    parent_id: int | None,
    tool: str,
    params: dict[str, Any],
    author: str,
) -> NewLabel:
    """Publish ``(I, J, K)`` schema labels as an object; the ``revised`` version to add for them."""
    schema = project.config.schema
    labels = labels.astype(schema.dtype, copy=False)
    with project.objects.stage() as staged:
        key = staged.put(labels, case.affine)
    remember_labels(project, key, labels)
    return NewLabel(
        key,
        Source.REVISED.value,
        tuple(classes),
        count_voxels(labels, schema),
        author,
        tool,
        params,
        parent_id,
    )


def _same_as_latest(
    versions: Sequence[LabelVersionRecord], labels_key: str, classes: Sequence[str], tool: str
) -> LabelVersionRecord | None:
    """The newest version if it is already this revision (``compute_label_key`` ``labels_key``)."""
    if not versions:
        return None
    latest = versions[-1]
    same = latest.source == Source.REVISED and latest.tool == tool and set(latest.classes) == set(classes)
    return latest if same and latest.object_key == labels_key else None


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
    return {c for c, i in assembly.class_sources.items() if i in by_id and by_id[i].source == Source.ORIGINAL}


def read_current_label(
    project: Project, case: CaseRecord
) -> tuple[list[LabelVersionRecord], Assembly | None, np.ndarray]:
    """A case's versions, their assembly and its effective label (all background without versions).

    The assembly is cached (`segloop.loop.labels.compute_effective_label`): its arrays are read-only.
    """
    versions = project.list_label_versions(case.case_id)
    assembly = compute_effective_label(project, case, versions, cached=True)
    schema = project.config.schema
    labels = assembly.labels if assembly is not None else np.zeros(case.shape, dtype=schema.dtype)
    return versions, assembly, labels


def _original_warning(schema: LabelSchema, values: Iterable[int]) -> tuple[str, ...]:
    names = sorted(schema.name_of(v) for v in values)
    if not names:
        return ()
    return (
        f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} decided by an original version:"
        " a revision does not change the effective label there",
    )


def _store_revision(
    project: Project,
    case: CaseRecord,
    labels: np.ndarray,
    *,
    classes: tuple[str, ...],
    current: tuple[list[LabelVersionRecord], Assembly | None, np.ndarray],
    changed: int,
    tool: str,
    parent: int | None,
    force: bool,
    params: dict[str, Any],
    author: str,
    labels_key: str | None = None,
) -> CorrectionResult:
    """Store ``labels`` as a revision of ``classes`` if the case's head is still ``parent``.

    Args:
        project: the open project.
        case: the case.
        labels: ``(I, J, K)`` schema values of the revision (0 outside ``classes``).
        classes: the class names it annotates.
        current: `read_current_label` of the case, as the correction was computed on it.
        changed: voxels whose value the correction changed (reported).
        tool: recorded on the version.
        parent: the newest version id the caller read (module docstring).
        force: store it even if the case changed since ``parent``.
        params: recorded on the version (``based_on`` and ``force`` are added).
        author: recorded on the version.
        labels_key: ``compute_label_key(labels)`` when the caller has it.

    Returns:
        The `CorrectionResult`: the newest version, unchanged, when it already is this revision.
    """
    versions, assembly, _ = current
    key = compute_label_key(labels) if labels_key is None else labels_key
    existing = _same_as_latest(versions, key, classes, tool)
    if existing is not None:
        return CorrectionResult(case.case_id, existing, False, 0, classes)
    head = check_parent(case.case_id, versions, parent, force=force)
    values = set(project.config.schema.indices_of(classes))
    corrected = choose_parent(versions, assembly, values)
    label = stage_revised(
        project,
        case,
        labels,
        classes=classes,
        parent_id=corrected.id if corrected else None,
        tool=tool,
        params={**params, "based_on": parent, "force": force},
        author=author,
    )
    version = project.add_label_version(case.case_id, label, expected_head=head)
    project.log_event("corrected", author, {"case": case.case_id, "version": version.id, "tool": tool})
    schema = project.config.schema
    warnings = _original_warning(schema, original_class_values(versions, assembly) & values)
    return CorrectionResult(case.case_id, version, True, changed, classes, warnings)


def apply_label(
    project: Project,
    case_id: str,
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    parent: int | None,
    author: str,
    force: bool = False,
    provenance: Mapping[str, Any] | None = None,
    tool: str = "correct-label",
    region: Sequence[PatchBox] | None = None,
) -> CorrectionResult:
    """Store a whole corrected label of a case as a ``revised`` version.

    ``labels`` is stored as given: an ignore value in it is a deliberate ignore. Start editing
    from `segloop.loop.labels.editable_label` (voxels ignored only because a class is annotated
    by nobody are background there); the changed voxels are counted against that label.

    Args:
        project: the open project.
        case_id: the case.
        labels: ``(I, J, K)`` schema values (0, 1..N, ignore) on the case's grid.
        class_names: the classes it annotates (default: every class).
        parent: the case's newest version id when the label was read (module docstring).
        author: recorded on the version.
        force: store it even if the case changed since ``parent``.
        provenance: more parameters to record (e.g. the file and its SHA-256).
        tool: recorded on the version (what made the label: an editor, an approval).
        region: the part of the case the person reviewed (boxes on its grid, `reviewed_region`);
            None: all of it. The version holds ``labels`` there and *ignore* elsewhere, and
            speaks only there (module docstring).

    Raises:
        GeometryMismatchError: ``labels`` is not on the case's grid.
        LabelValueError: values outside the schema.
        UnknownClassError: a class is not in the schema.
        ConflictError: the case changed since ``parent`` (without ``force``).
    """
    schema = project.config.schema
    case = project.get_case(case_id)
    labels = np.asarray(labels)
    if labels.shape != tuple(case.shape):
        msg = f"the corrected label has shape {labels.shape}: expected case {case_id!r}'s {tuple(case.shape)}"
        raise GeometryMismatchError(msg)
    schema.check_values(labels, what=f"corrected label of case {case_id!r}")
    labels = labels.astype(schema.dtype, copy=False)
    annotated = tuple(class_names) if class_names else schema.names
    current = read_current_label(project, case)
    shown = current[1].editable_labels if current[1] is not None else current[2]
    covered = _region_mask(region, case.shape)
    differs = labels != shown
    if covered is not None:
        differs &= covered
        labels = np.where(covered, labels, np.asarray(schema.ignore_index, labels.dtype))
    key = compute_label_key(labels)
    return _store_revision(
        project,
        case,
        labels,
        classes=annotated,
        current=current,
        changed=int(np.count_nonzero(differs)),
        tool=tool,
        parent=parent,
        force=force,
        params={"labels_sha256": key, **_coverage_entry(region), **(provenance or {})},
        author=author,
        labels_key=key,
    )


def _coverage_entry(region: Sequence[PatchBox] | None) -> dict[str, Any]:
    return {} if region is None else {"coverage": coverage_params(region)}


def _check_inside(masks: CheckedCorrections, covered: np.ndarray) -> None:
    """Refuse corrections painted outside the reviewed region (nothing is stored)."""
    named = [("add", masks.add != 0), ("remove", masks.remove), ("ignore", masks.ignore)]
    named += [(f"remove of class {value}", mask) for value, mask in masks.remove_by_class.items()]
    for what, mask in named:
        outside = int(np.count_nonzero(mask & ~covered))
        if outside:
            msg = (
                f"the {what} mask marks {outside} voxels outside the reviewed region: expected"
                " corrections inside it (or a region that holds them); nothing was stored"
            )
            raise InvalidInputError(msg)


def apply(
    project: Project,
    case_id: str,
    corrections: Corrections,
    *,
    parent: int | None,
    author: str,
    force: bool = False,
    provenance: Mapping[str, Any] | None = None,
    region: Sequence[PatchBox] | None = None,
) -> CorrectionResult:
    """Merge add / remove / ignore masks on the case's grid into its current effective label.

    Args:
        project: the open project.
        case_id: the case.
        corrections: the masks (`Corrections`).
        parent: the case's newest version id when the corrected label was read (module docstring).
        author: recorded on the version.
        force: apply them even if the case changed since ``parent``.
        provenance: more parameters to record (e.g. the files the masks came from).
        region: the part of the case the person reviewed (boxes on its grid, `reviewed_region`);
            None: all of it. The version annotates its classes there only (*ignore* elsewhere),
            so training learns nothing new outside (module docstring).

    Returns:
        The `CorrectionResult`; no version when the masks change nothing.

    Raises:
        GeometryMismatchError: a mask is not on the case's grid.
        InvalidInputError: no mask and no class given; a mask marks voxels outside ``region``.
        ConflictError: the case changed since ``parent`` (without ``force``).
    """
    if corrections.is_empty():
        msg = "no correction given: expected an add, remove or ignore mask, or a reviewed class"
        raise InvalidInputError(msg)
    schema = project.config.schema
    case = project.get_case(case_id)
    masks = check_corrections(corrections, schema, case.shape)
    covered = _region_mask(region, case.shape)
    if covered is not None:
        _check_inside(masks, covered)
    versions, assembly, current = read_current_label(project, case)
    merged = masks.apply(current, schema.ignore_index)
    touched = {c for c in range(1, len(schema.classes) + 1) if np.any((current == c) != (merged == c))}
    touched |= masks.reviewed
    if not touched and not masks.ignore.any():
        return CorrectionResult(case_id, None, False, 0, ())
    labels = np.zeros(case.shape, dtype=schema.dtype)
    for value in sorted(touched):
        labels[merged == value] = value
    labels[masks.ignore] = schema.ignore_index
    if covered is not None:
        labels[~covered] = schema.ignore_index
    return _store_revision(
        project,
        case,
        labels,
        classes=tuple(schema.name_of(v) for v in sorted(touched)),
        current=(versions, assembly, current),
        changed=int(np.count_nonzero(merged != current)),
        tool="correct-masks",
        parent=parent,
        force=force,
        params={
            "class": corrections.class_name,
            "corrections_sha256": corrections.digest(),
            **_coverage_entry(region),
            **(provenance or {}),
        },
        author=author,
    )
