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

Voxels left background while some class is annotated by no version covering them are ignored too:
a case with only the liver annotated never teaches "not liver = background" for the spleen. The
replaced AI mask is not lost: every version is immutable in the store; ``class_sources`` says
which version each class came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segloop.errors import SegloopError

__all__ = ["SOURCE_PRIORITY", "Assembly", "LabelLayer", "assemble_labels"]

#: Trust order of label sources (higher wins).
SOURCE_PRIORITY = {"pseudo": 0, "draft": 1, "sparse": 2, "revised": 3, "original": 4}


@dataclass(frozen=True)
class LabelLayer:
    """One label version as assembly sees it.

    Args:
        labels: ``(I, J, K)`` integer array in schema values (0, 1..N, ignore).
        source: one of `SOURCE_PRIORITY`.
        classes: the class values (1..N) this version annotates.
        version_id: the store's id, reported back in `Assembly.class_sources`.
    """

    labels: np.ndarray
    source: str
    classes: tuple[int, ...]
    version_id: int = 0


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
        SegloopError: no layers, layers of different shapes, or an unknown source.

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
        raise SegloopError(msg)
    shape = layers[0].labels.shape
    for layer in layers:
        if layer.labels.shape != shape:
            msg = f"label versions must share one grid; got shapes {shape} and {layer.labels.shape}"
            raise SegloopError(msg)
        if layer.source not in SOURCE_PRIORITY:
            msg = f"unknown label source {layer.source!r}: expected one of {', '.join(SOURCE_PRIORITY)}"
            raise SegloopError(msg)
    ordered = sorted(enumerate(layers), key=lambda item: (SOURCE_PRIORITY[item[1].source], item[0]))
    dtype = np.uint8 if ignore_index <= 255 else np.uint16
    labels = np.zeros(shape, dtype=dtype)
    explicit_ignore = np.zeros(shape, dtype=bool)
    class_sources: dict[int, int] = {}
    every_class = set(range(1, n_classes + 1))
    for _, layer in ordered:
        painted = layer.labels != ignore_index if layer.source == "sparse" else None
        for value in layer.classes:
            stale = labels == value
            if painted is not None:
                stale &= painted
            labels[stale] = 0
            assigned = layer.labels == value
            labels[assigned] = value
            explicit_ignore[assigned] = False
            class_sources[value] = layer.version_id
        if painted is None:
            if every_class <= set(layer.classes):
                explicit_ignore[layer.labels != ignore_index] = False
            explicit_ignore |= layer.labels == ignore_index
    unknown = ~_covered_by_every_class(layers, every_class, ignore_index, shape)
    ignore_mask = explicit_ignore | (unknown & (labels == 0))
    labels[ignore_mask] = ignore_index
    return Assembly(labels, ignore_mask, class_sources)


def _covered_by_every_class(
    layers: Sequence[LabelLayer], every_class: set[int], ignore_index: int, shape: tuple[int, ...]
) -> np.ndarray:
    """True where, for every class, some version annotating it speaks (is not unpainted)."""
    covered_all = np.ones(shape, dtype=bool)
    for value in every_class:
        annotating = [layer for layer in layers if value in layer.classes]
        if any(layer.source != "sparse" for layer in annotating):
            continue
        covered = np.zeros(shape, dtype=bool)
        for layer in annotating:
            covered |= layer.labels != ignore_index
        covered_all &= covered
    return covered_all
