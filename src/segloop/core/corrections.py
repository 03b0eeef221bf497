"""Merge rules of add / remove / ignore corrections and the geometry of correction patches (pure).

The rules follow MemBrain-seg's ``patch_corrections`` (seed 003), generalised to several classes:

1. start from the label the person corrected (a model's prediction, or the current label);
2. where a *Remove* mask is set, the voxel becomes background (0) — only voxels of the given
   classes when the removal names classes, any value otherwise;
3. then, where an *Add* mask is set, the voxel becomes the added class;
4. then, where an *Ignore* mask is set, the voxel becomes *ignore*.

So the net precedence is Ignore > Add > Remove > prediction, and several files of one kind are
unioned. A patch also gets an *ignore border* (16 voxels in MemBrain-seg): the faces of a patch
lie next to voxels the person did not see, so that band is not trusted.

Every function takes arrays and returns new ones; inputs are never modified. numpy only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segloop.errors import GeometryMismatchError, InvalidInputError, LabelValueError, UnknownClassError

__all__ = [
    "CORRECTION_KINDS",
    "CorrectionName",
    "PatchBox",
    "coverage_from_params",
    "coverage_mask",
    "crop_with_padding",
    "merge_corrections",
    "parse_correction_name",
    "patch_box",
    "reviewed_mask",
]

#: The kinds of correction files, in the order they are applied.
CORRECTION_KINDS = ("Remove", "Add", "Ignore")

_KIND_PATTERN = re.compile(r"^(add|remove|ignore)", re.IGNORECASE)


@dataclass(frozen=True)
class CorrectionName:
    """What a correction file's name says.

    Attributes:
        kind: ``Add``, ``Remove`` or ``Ignore``.
        class_name: the class named after ``Add_`` / ``Remove_`` (None when the name has none).
    """

    kind: str
    class_name: str | None


def parse_correction_name(file_name: str, class_names: Sequence[str]) -> CorrectionName | None:
    """Read the kind (and class) of a correction file from its name, MemBrain-seg style.

    ``Add1.nrrd``, ``add_2.nii.gz``, ``Remove.nrrd``, ``Ignore3.nrrd`` give the kind only (case-
    insensitive, like MemBrain-seg). ``Add_<class>...`` / ``Remove_<class>...`` also name a class
    of ``class_names``: the longest class name that follows ``_`` and is itself followed by the end
    of the stem or by a digit, ``_``, ``-`` or ``.`` (``Add_parotid_l2.nrrd`` → ``parotid_l``).

    Args:
        file_name: the file's name (no folder).
        class_names: the schema's class names.

    Returns:
        The `CorrectionName`, or None when the name starts with none of the kinds.

    Raises:
        UnknownClassError: ``Add_``/``Remove_`` is followed by something that is no class name.

    Examples:
        >>> parse_correction_name("Add_parotid_l2.nrrd", ["parotid_l", "parotid_r"])
        CorrectionName(kind='Add', class_name='parotid_l')
        >>> parse_correction_name("ignore1.nrrd", ["liver"])
        CorrectionName(kind='Ignore', class_name=None)
    """
    match = _KIND_PATTERN.match(file_name)
    if match is None:
        return None
    kind = match.group(1).capitalize()
    rest = file_name[match.end() :]
    if not rest.startswith("_") or kind == "Ignore":
        return CorrectionName(kind, None)
    stem = rest[1:]
    for name in sorted(class_names, key=len, reverse=True):
        if stem.startswith(name):
            after = stem[len(name) :]
            if not after or after[0].isdigit() or after[0] in "_-.":
                return CorrectionName(kind, name)
    if stem[:1].isdigit():  # "Add_1.nrrd": a number, not a class
        return CorrectionName(kind, None)
    msg = (
        f"correction file {file_name!r} names no known class after {kind}_: expected"
        f" {kind}_<class>... with a class of {', '.join(class_names)}"
    )
    raise UnknownClassError(msg)


def merge_corrections(
    labels: np.ndarray,
    *,
    ignore_index: int,
    add: np.ndarray | None = None,
    remove: np.ndarray | None = None,
    remove_by_class: dict[int, np.ndarray] | None = None,
    ignore: np.ndarray | None = None,
) -> np.ndarray:
    """Apply add / remove / ignore corrections to a label array (rules in the module docstring).

    Args:
        labels: ``(I, J, K)`` integer schema labels (0, 1..N, ``ignore_index``).
        ignore_index: the schema's ignore value (N + 1).
        add: ``(I, J, K)`` integer array: 0 where nothing is added, else the class value to paint.
        remove: ``(I, J, K)`` bool mask of voxels to make background, whatever they hold.
        remove_by_class: class value -> ``(I, J, K)`` bool mask: make background only the voxels
            of the mask that hold that class (a coarse brush that spares the neighbours).
        ignore: ``(I, J, K)`` bool mask of voxels to make *ignore*.

    Returns:
        A new array of ``labels``' dtype.

    Raises:
        GeometryMismatchError: a mask's shape differs from ``labels``'.
        LabelValueError: ``add`` holds a value outside 1..N.

    Examples:
        >>> labels = np.array([[[1, 1, 0, 0]]], np.uint8)
        >>> add = np.array([[[0, 2, 2, 2]]]); remove = np.array([[[1, 1, 0, 0]]], bool)
        >>> ignore = np.array([[[0, 0, 0, 1]]], bool)
        >>> merge_corrections(labels, ignore_index=3, add=add, remove=remove, ignore=ignore).tolist()
        [[[0, 2, 2, 3]]]
    """
    masks = [("add", add), ("remove", remove), ("ignore", ignore)]
    masks += [(f"remove class {c}", m) for c, m in (remove_by_class or {}).items()]
    for name, mask in masks:
        if mask is not None and mask.shape != labels.shape:
            msg = f"{name} mask shape {mask.shape} differs from the label shape {labels.shape}"
            raise GeometryMismatchError(msg)
    result = labels.copy()
    if remove is not None:
        result[remove.astype(bool, copy=False)] = 0
    for value, mask in (remove_by_class or {}).items():
        result[mask.astype(bool, copy=False) & (labels == value)] = 0
    if add is not None:
        values = np.unique(add)
        bad = [int(v) for v in values if v != 0 and not 0 < v < ignore_index]
        if bad:
            msg = f"add masks may paint classes 1..{ignore_index - 1}; got values {bad[:8]}"
            raise LabelValueError(msg)
        painted = add != 0
        result[painted] = add[painted]
    if ignore is not None:
        result[ignore.astype(bool, copy=False)] = ignore_index
    return result


@dataclass(frozen=True)
class PatchBox:
    """Where a patch lies in its case.

    Attributes:
        offset: ``(3,)`` voxel index of the patch's first voxel in the case (may be negative, or
            reach past the case, when the patch is padded).
        size: ``(3,)`` patch shape in voxels.
    """

    offset: tuple[int, int, int]
    size: tuple[int, int, int]

    def inside(self, shape: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """``(case_slices, patch_slices)`` of the part of the patch inside a case of ``shape``."""
        case_slices, patch_slices = [], []
        for start, size, length in zip(self.offset, self.size, shape, strict=True):
            lo, hi = max(start, 0), min(start + size, length)
            case_slices.append(slice(lo, max(hi, lo)))
            patch_slices.append(slice(lo - start, max(hi, lo) - start))
        return tuple(case_slices), tuple(patch_slices)


def patch_box(center: Sequence[int], size: Sequence[int] | int, shape: Sequence[int]) -> PatchBox:
    """The box of a patch centred on a voxel, clipped to the case where the case is smaller.

    Along an axis where the case is no longer than the requested size the patch is the whole
    axis (a 2D image, shape ``(I, J, 1)``, gets ``(s, s, 1)`` patches; a 128-voxel axis gets 128,
    not 160). Elsewhere the patch spans ``[center - size // 2, center - size // 2 + size)``, which
    may reach past the case: such parts are padded (`crop_with_padding`).

    Args:
        center: ``(3,)`` voxel index of the centre, inside the case.
        size: the patch's edge length in voxels (one number or three).
        shape: the case's ``(I, J, K)``.

    Raises:
        InvalidInputError: the centre lies outside the case, or a size is below 1.

    Examples:
        >>> patch_box((5, 50, 0), 32, (100, 100, 1))
        PatchBox(offset=(-11, 34, 0), size=(32, 32, 1))
    """
    sizes = (int(size),) * 3 if np.isscalar(size) else tuple(int(s) for s in size)  # type: ignore[arg-type]
    if len(sizes) != 3 or min(sizes) < 1:
        msg = f"patch size must be 3 positive voxel counts; got {sizes}"
        raise InvalidInputError(msg)
    point = tuple(int(c) for c in center)
    if len(point) != 3 or any(not 0 <= c < n for c, n in zip(point, shape, strict=True)):
        msg = (
            f"patch centre {list(point)} is outside the volume: expected voxel indices"
            f" 0 <= i < {shape[0]}, 0 <= j < {shape[1]}, 0 <= k < {shape[2]}"
        )
        raise InvalidInputError(msg)
    offset, clipped = [], []
    for c, s, n in zip(point, sizes, shape, strict=True):
        if s >= n:
            offset.append(0)
            clipped.append(int(n))
        else:
            offset.append(c - s // 2)
            clipped.append(s)
    return PatchBox(tuple(offset), tuple(clipped))  # type: ignore[arg-type]


def crop_with_padding(array: np.ndarray, box: PatchBox, fill: float | int) -> np.ndarray:
    """Cut ``box`` out of a ``(I, J, K)`` array; parts outside the array hold ``fill``.

    Examples:
        >>> box = PatchBox((-1, 0, 0), (3, 1, 1))
        >>> crop_with_padding(np.arange(4).reshape(4, 1, 1), box, 9).ravel().tolist()
        [9, 0, 1]
    """
    patch = np.full(box.size, fill, dtype=array.dtype)
    case_slices, patch_slices = box.inside(array.shape)
    patch[patch_slices] = array[case_slices]
    return patch


def reviewed_mask(box: PatchBox, shape: Sequence[int], border_voxels: int) -> np.ndarray:
    """The voxels of a patch a person reviewed: inside the case and off the ignore border.

    The border is taken on each face of the patch that lies *inside* the case (where the
    patch's view was cut short). A face at or beyond the case's edge gets no border: the case
    has no more context there either, and padding is outside the case anyway.

    Args:
        box: the patch.
        shape: the case's ``(I, J, K)``.
        border_voxels: width of the ignore border (MemBrain-seg: 16).

    Returns:
        ``box.size`` bool array.

    Examples:
        >>> reviewed_mask(PatchBox((0, 2, 0), (4, 4, 1)), (4, 10, 1), 1)[:, :, 0].astype(int).tolist()
        [[0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0]]
    """
    if border_voxels < 0:
        msg = f"the ignore border must be >= 0 voxels; got {border_voxels}"
        raise InvalidInputError(msg)
    mask = np.zeros(box.size, dtype=bool)
    window = []
    for start, size, length in zip(box.offset, box.size, shape, strict=True):
        lo = max(0, -start)  # first patch voxel inside the case
        hi = min(size, length - start)
        if start > 0:
            lo = max(lo, border_voxels)
        if start + size < length:
            hi = min(hi, size - border_voxels)
        window.append(slice(lo, max(lo, hi)))
    mask[tuple(window)] = True
    return mask


def coverage_mask(boxes: Sequence[tuple[PatchBox, int]], shape: Sequence[int]) -> np.ndarray:
    """The voxels of a case that patches let a person review: the union of their `reviewed_mask`.

    Args:
        boxes: ``(box, border_voxels)`` per patch.
        shape: the case's ``(I, J, K)``.

    Returns:
        ``shape`` bool array.

    Examples:
        >>> box = PatchBox((-1, 0, 0), (3, 1, 1))
        >>> coverage_mask([(box, 0)], (4, 1, 1)).ravel().tolist()
        [True, True, False, False]
    """
    mask = np.zeros(tuple(int(n) for n in shape), dtype=bool)
    for box, border_voxels in boxes:
        case_slices, patch_slices = box.inside(mask.shape)
        mask[case_slices] |= reviewed_mask(box, mask.shape, border_voxels)[patch_slices]
    return mask


def coverage_from_params(params: dict, shape: Sequence[int]) -> np.ndarray | None:
    """The coverage a label version's parameters record, as a mask; None: it covers the whole case.

    A version made from patches records ``params["coverage"]``: a list of
    ``{"offset": [i, j, k], "size": [i, j, k], "border_voxels": n}``, one per patch (what
    `segloop.loop.patches` writes). Other versions record none.

    Examples:
        >>> box = {"offset": [1, 0, 0], "size": [2, 1, 1], "border_voxels": 0}
        >>> coverage_from_params({"coverage": [box]}, (4, 1, 1)).ravel().tolist()
        [False, True, True, False]
        >>> coverage_from_params({}, (4, 1, 1)) is None
        True
    """
    boxes = params.get("coverage")
    if boxes is None:
        return None
    try:
        parsed = [
            (
                PatchBox(tuple(int(v) for v in b["offset"]), tuple(int(v) for v in b["size"])),
                int(b["border_voxels"]),
            )
            for b in boxes
        ]
    except (KeyError, TypeError, ValueError) as error:
        msg = f"a version's coverage must list boxes with offset, size and border_voxels; got {boxes!r:.200}"
        raise InvalidInputError(msg) from error
    return coverage_mask(parsed, shape)
