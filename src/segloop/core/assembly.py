"""Assembly: the effective label of a case from its label versions (AbdomenAtlas rules, seed 002).

Versions are applied from least to most trusted — ``pseudo`` < ``draft`` < ``sparse`` <
``revised`` < ``original``, and among equals the newer last. A version replaces *only the classes
it annotates*: for each such class ``c`` the voxels that earlier versions gave ``c`` are cleared
(to background) and the version's own ``c`` voxels are set. So an original annotation of the liver
replaces the liver entirely, a human revision replaces the AI's mask of that class, and classes a
version does not annotate keep what lower versions said.

*Ignore* (the schema's ignore index) in a version means:

- in a ``sparse`` version (scribbles): "not annotated here" — the version speaks only where it is
  painted (background paint included);
- in any other version: "explicitly uncertain, do not learn here" (MemBrain-seg's Ignore) — until a
  later-applied version assigns one of its classes there.

A version may also carry a *coverage* (`LabelLayer.coverage`): the voxels a person reviewed, e.g. the
patches of a patch merge minus their ignore borders. Such a version speaks only inside its
coverage (like a ``sparse`` version inside its paint): outside, the earlier versions keep what they
said, so voxels nobody looked at never become "revised".

Voxels left background while some class is annotated by no version covering them are ignored too:
a case with only the liver annotated never teaches "not liver = background" for the spleen
(`Assembly.auto_ignore`; the label a person edits, `Assembly.editable_labels`, shows them as
background, so saving it back never turns them into an ignore somebody asked for). The
replaced AI mask is not lost: every version is immutable in the store; ``class_sources`` says
which version each class came from.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from segloop.core.provenance import Source, parse_source
from segloop.errors import GeometryMismatchError, InvalidInputError

__all__ = ["Assembly", "LabelLayer", "assemble_labels", "value_mask"]


@dataclass(frozen=True)
class LabelLayer:
    """One label version as assembly sees it.

    Args:
        labels: ``(I, J, K)`` integer array in schema values (0, 1..N, ignore).
        source: a `Source` name (its `Source.priority` decides who wins).
        classes: the class values (1..N) this version annotates.
        version_id: the store's id, reported back in `Assembly.class_sources`.
        coverage: ``(I, J, K)`` bool, the voxels the version speaks for (a person reviewed them);
            None: the whole case (for ``sparse``: wherever it is painted).
    """

    labels: np.ndarray
    source: str
    classes: tuple[int, ...]
    version_id: int = 0
    coverage: np.ndarray | None = None

    def speaks(self, ignore_index: int) -> np.ndarray | None:
        """``(I, J, K)`` bool: where this version says something (None: everywhere)."""
        painted = self.labels != ignore_index if self.source == Source.SPARSE else None
        if self.coverage is None:
            return painted
        return self.coverage if painted is None else painted & self.coverage


@dataclass(frozen=True)
class Assembly:
    """The effective label of a case.

    Attributes:
        labels: ``(I, J, K)`` array; ignored voxels hold the ignore index.
        ignore_mask: ``(I, J, K)`` bool, True where the network must not learn.
        class_sources: class value -> version id that decided it (absent: nobody annotated it).
        auto_ignore: ``(I, J, K)`` bool, the part of ``ignore_mask`` that no version asked for:
            background voxels where some class is annotated by no version speaking there (the
            module docstring's last rule); None when there is none.
    """

    labels: np.ndarray
    ignore_mask: np.ndarray
    class_sources: dict[int, int]
    auto_ignore: np.ndarray | None = None

    @property
    def editable_labels(self) -> np.ndarray:
        """``(I, J, K)`` the label a person edits: auto-ignored voxels background, explicit ignores kept.

        A person who saves it back for every class says those voxels are background; one who
        saves it for some classes leaves the others unannotated, so they stay ignored. Either way
        no ignore is stored that no version asked for. ``labels`` itself when nothing is
        auto-ignored (do not modify the result).
        """
        if self.auto_ignore is None:
            return self.labels
        return np.where(self.auto_ignore, np.zeros((), self.labels.dtype), self.labels)


def assemble_labels(layers: Sequence[LabelLayer], *, n_classes: int, ignore_index: int) -> Assembly:
    """Combine label versions into the effective label (rules in the module docstring).

    Each version costs a few whole-volume passes whatever its number of classes: a lookup table
    marks its classes, and the voxels of different classes are disjoint, so clearing and setting
    them all at once equals doing it class by class.

    Args:
        layers: the case's versions, oldest first (the order breaks ties within a source).
        n_classes: number of foreground classes N of the schema.
        ignore_index: the schema's ignore value (N + 1).

    Returns:
        The `Assembly`. Inputs are not modified.

    Raises:
        InvalidInputError: no layers, or an unknown source.
        GeometryMismatchError: layers (or a coverage) of different shapes.

    Examples:
        >>> import numpy as np
        >>> pseudo = LabelLayer(np.array([[[1, 1, 2, 0]]]), "pseudo", (1, 2), 1)
        >>> revised = LabelLayer(np.array([[[0, 1, 1, 0]]]), "revised", (1,), 2)
        >>> result = assemble_labels([pseudo, revised], n_classes=2, ignore_index=3)
        >>> result.labels.tolist(), result.class_sources
        ([[[0, 1, 1, 0]]], {1: 2, 2: 1})
    """
    if not layers:
        msg = "assembly needs at least one label version; got none"
        raise InvalidInputError(msg)
    shape = layers[0].labels.shape
    for layer in layers:
        for what, array in (("label versions", layer.labels), ("a version's coverage", layer.coverage)):
            if array is not None and array.shape != shape:
                msg = f"{what} must share one grid; got shapes {shape} and {array.shape}"
                raise GeometryMismatchError(msg)
        parse_source(layer.source)
    ordered = sorted(enumerate(layers), key=lambda item: (Source(item[1].source).priority, item[0]))
    speaks = [layer.speaks(ignore_index) for layer in layers]
    dtype = np.uint8 if ignore_index <= 255 else np.uint16
    # in the versions' memory order (NIfTI's is Fortran): mixing orders makes every pass strided
    labels = np.zeros_like(layers[0].labels, dtype=dtype)
    explicit_ignore = np.zeros_like(layers[0].labels, dtype=bool)
    class_sources: dict[int, int] = {}
    every_class = set(range(1, n_classes + 1))
    for index, layer in ordered:
        if layer.classes:
            _apply_classes(labels, explicit_ignore, layer, speaks[index])
            class_sources.update(dict.fromkeys(layer.classes, layer.version_id))
        if layer.source != Source.SPARSE:
            ignored = layer.labels == ignore_index
            if layer.coverage is not None:
                ignored &= layer.coverage
            if every_class <= set(layer.classes):  # the version speaks for every class: its word stands
                explicit_ignore &= ignored if layer.coverage is None else ~layer.coverage | ignored
            explicit_ignore |= ignored
    unknown = _uncovered(layers, speaks, every_class, shape)
    auto_ignore = None
    if unknown is not None:
        auto_ignore = unknown & (labels == 0) & ~explicit_ignore
        auto_ignore = auto_ignore if auto_ignore.any() else None
    ignore_mask = explicit_ignore if auto_ignore is None else explicit_ignore | auto_ignore
    if ignore_mask.any():
        np.multiply(labels, ~ignore_mask, out=labels)
        np.add(labels, ignore_mask * np.asarray(ignore_index, labels.dtype), out=labels)
    return Assembly(labels, ignore_mask, class_sources, auto_ignore)


def _apply_classes(
    labels: np.ndarray,
    explicit_ignore: np.ndarray,
    layer: LabelLayer,
    speaks: np.ndarray | None,
) -> None:
    """Let ``layer`` replace its classes in ``labels`` (in place) where it ``speaks``.

    The voxels ``labels`` gives one of the layer's classes are cleared and those the layer gives
    one are set (and no longer explicitly ignored); outside ``speaks`` nothing changes.
    """
    stale = value_mask(labels, layer.classes)
    assigned = value_mask(layer.labels, layer.classes)
    if speaks is not None:
        stale &= speaks
        assigned &= speaks
    # arithmetic, not masked assignment: a few vectorised passes whatever the masks look like
    np.multiply(labels, ~(stale | assigned), out=labels)
    np.add(labels, layer.labels * assigned, out=labels, casting="unsafe")
    explicit_ignore &= ~assigned


def value_mask(array: np.ndarray, values: Collection[int]) -> np.ndarray:
    """``array``'s shape, bool: where it holds one of ``values`` (non-negative), in its memory order.

    A run of consecutive values costs two comparisons; other sets one lookup-table pass over the
    array as laid out in memory (a Fortran-ordered volume, as NIfTI reads, is not transposed).

    Examples:
        >>> value_mask(np.array([[0, 1, 2, 3, 9]]), {1, 3}).tolist()
        [[False, True, False, True, False]]
    """
    low, high = min(values), max(values)
    if high - low + 1 == len(values):
        return (array >= low) & (array <= high)
    table = np.zeros(high + 2, dtype=bool)  # the last entry: any value out of range
    table[list(values)] = True
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        return np.take(table, array.ravel(order="F"), mode="clip").reshape(array.shape, order="F")
    return np.take(table, array, mode="clip")


def _uncovered(
    layers: Sequence[LabelLayer],
    speaks: Sequence[np.ndarray | None],
    every_class: set[int],
    shape: tuple[int, ...],
) -> np.ndarray | None:
    """``(I, J, K)`` bool: where some class has no version annotating it speak; None: nowhere.

    Classes annotated by the same versions share one union of what those versions speak for,
    so each distinct set of versions is unioned once.
    """
    annotators = {
        frozenset(i for i, layer in enumerate(layers) if value in layer.classes) for value in every_class
    }
    if frozenset() in annotators:
        return np.ones(shape, dtype=bool)  # a class nobody annotated: unknown everywhere
    uncovered = None
    for group in annotators:
        masks = [speaks[i] for i in sorted(group)]
        if any(mask is None for mask in masks):
            continue  # a version speaking everywhere covers this class everywhere
        covered = masks[0].copy()
        for mask in masks[1:]:
            covered |= mask
        uncovered = ~covered if uncovered is None else uncovered | ~covered
    return uncovered
