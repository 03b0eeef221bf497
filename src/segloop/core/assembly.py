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
a case with only the liver annotated never teaches "not liver = background" for the spleen. The
replaced AI mask is not lost: every version is immutable in the store; ``class_sources`` says
which version each class came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segloop.core.provenance import Source, parse_source
from segloop.errors import GeometryMismatchError, InvalidInputError

__all__ = ["Assembly", "LabelLayer", "assemble_labels"]


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
    """

    labels: np.ndarray
    ignore_mask: np.ndarray
    class_sources: dict[int, int]


def assemble_labels(layers: Sequence[LabelLayer], *, n_classes: int, ignore_index: int) -> Assembly:
    """Combine label versions into the effective label (rules in the module docstring).

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
    dtype = np.uint8 if ignore_index <= 255 else np.uint16
    labels = np.zeros(shape, dtype=dtype)
    explicit_ignore = np.zeros(shape, dtype=bool)
    class_sources: dict[int, int] = {}
    every_class = set(range(1, n_classes + 1))
    for _, layer in ordered:
        speaks = layer.speaks(ignore_index)
        for value in layer.classes:
            stale = labels == value
            assigned = layer.labels == value
            if speaks is not None:
                stale &= speaks
                assigned &= speaks
            labels[stale] = 0
            labels[assigned] = value
            explicit_ignore[assigned] = False
            class_sources[value] = layer.version_id
        if layer.source != Source.SPARSE:
            inside = np.ones(shape, dtype=bool) if layer.coverage is None else layer.coverage
            if every_class <= set(layer.classes):
                explicit_ignore[inside & (layer.labels != ignore_index)] = False
            explicit_ignore |= inside & (layer.labels == ignore_index)
    unknown = ~_covered_by_every_class(layers, every_class, ignore_index, shape)
    ignore_mask = explicit_ignore | (unknown & (labels == 0))
    labels[ignore_mask] = ignore_index
    return Assembly(labels, ignore_mask, class_sources)


def _covered_by_every_class(
    layers: Sequence[LabelLayer], every_class: set[int], ignore_index: int, shape: tuple[int, ...]
) -> np.ndarray:
    """True where, for every class, some version annotating it speaks (painted, inside its coverage)."""
    covered_all = np.ones(shape, dtype=bool)
    for value in every_class:
        speaking = [layer.speaks(ignore_index) for layer in layers if value in layer.classes]
        if any(mask is None for mask in speaking):
            continue
        covered = np.zeros(shape, dtype=bool)
        for mask in speaking:
            covered |= mask
        covered_all &= covered
    return covered_all
