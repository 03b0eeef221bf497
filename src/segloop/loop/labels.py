"""Turning label files into schema label arrays on a case's grid, and back (effective labels)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from segloop.core.assembly import Assembly, LabelLayer, assemble_labels
from segloop.core.corrections import coverage_from_params
from segloop.core.geometry import align_to_grid, embed_in_grid
from segloop.core.labels import IGNORE_NAME, LabelSchema
from segloop.core.provenance import HUMAN_SOURCES
from segloop.core.volume import Volume
from segloop.errors import LabelValueError
from segloop.io import read_volume
from segloop.io.slicer_seg import segments_to_masks
from segloop.store import CaseRecord, LabelVersionRecord, Project

__all__ = [
    "compute_effective_label",
    "count_voxels",
    "read_schema_labels",
    "schema_segments",
    "select_versions",
]


def read_schema_labels(
    path: Path,
    schema: LabelSchema,
    shape: Sequence[int],
    affine: np.ndarray,
    *,
    aliases: dict[str, int] | None = None,
) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Read a label file as schema values on a case's grid.

    A Slicer .seg.nrrd is mapped by segment *name* (not colour or order) and may be cropped; any
    other file must hold schema values (0, 1..N, ignore) on the case's grid (axes may be flipped
    or permuted, as other tools write them; they are put in the case's voxel order).

    Args:
        path: the label file.
        schema: the project's classes.
        shape: the case's ``(I, J, K)``.
        affine: the case's ``(4, 4)`` affine.
        aliases: more segment names and their values (e.g. ``{"background": N + 1}`` for scribbles).

    Returns:
        ``(labels, classes)``: the ``(I, J, K)`` array in ``schema.dtype`` and, for segmentation
        files, the names of the segments it holds (None for plain label maps).

    Raises:
        UnknownClassError: a segment name is not in the schema.
        GeometryMismatchError: the grid differs from the case's.
        LabelValueError: values outside the schema.
    """
    volume = read_volume(path)
    what = f"label {path}"
    if "segments" in volume.meta:
        labels = np.zeros(volume.spatial_shape, dtype=schema.dtype)
        names = []
        for segment, mask in segments_to_masks(volume):
            extra = {IGNORE_NAME: schema.ignore_index, **(aliases or {})}
            if segment["name"] in extra:
                labels[mask] = extra[segment["name"]]
                continue
            labels[mask] = schema.index_of(segment["name"])
            names.append(segment["name"])
        return embed_in_grid(labels, volume.affine, shape, affine, what=what), tuple(names)
    if volume.array.ndim != 3:
        msg = f"{what} must be a 3D label map; got shape {volume.array.shape}"
        raise LabelValueError(msg)
    labels = align_to_grid(volume.array, volume.affine, shape, affine, what=what)
    schema.check_values(labels, what=what)
    return labels.astype(schema.dtype), None


def count_voxels(labels: np.ndarray, schema: LabelSchema) -> dict[str, int]:
    """Voxels per class name (and ``ignore``) in a schema label array."""
    counts = np.bincount(labels.ravel(), minlength=schema.ignore_index + 1)
    result = {name: int(counts[i]) for i, name in enumerate(schema.names, start=1)}
    result["ignore"] = int(counts[schema.ignore_index])
    return result


def schema_segments(schema: LabelSchema) -> list[dict]:
    """Segment descriptions (names, colours, values) for writing a .seg.nrrd of schema labels."""
    return [
        {"id": c.name, "name": c.name, "color": c.color, "label_value": c.index, "layer": 0}
        for c in schema.classes
    ]


def compute_effective_label(
    project: Project, case: CaseRecord, versions: Sequence[LabelVersionRecord] | None = None
) -> Assembly | None:
    """Assemble a case's label versions (see `segloop.core.assembly`); None if it has none."""
    schema = project.config.schema
    versions = project.list_label_versions(case.case_id) if versions is None else versions
    if not versions:
        return None
    layers = [
        LabelLayer(
            project.read_labels(v),
            v.source,
            schema.indices_of(v.classes),
            v.id,
            coverage_from_params(v.params, case.shape),
        )
        for v in versions
    ]
    return assemble_labels(layers, n_classes=len(schema.classes), ignore_index=schema.ignore_index)


def label_volume(project: Project, case: CaseRecord, labels: np.ndarray) -> Volume:
    """A schema label array as a `Volume` on the case's grid, with segment names for Slicer."""
    return Volume(labels, case.affine, {"segments": schema_segments(project.config.schema)})


def select_versions(
    versions: Sequence[LabelVersionRecord], sources: Collection[str] = HUMAN_SOURCES
) -> list[LabelVersionRecord]:
    """The versions a consumer (training, an export) gets: those of ``sources``, in order.

    The one rule shared by training and every export: by default human labels only
    (`segloop.core.provenance.HUMAN_SOURCES`), so a model never learns its own predictions unless
    ``pseudo`` is asked for.
    """
    chosen = {str(s) for s in sources}
    return [v for v in versions if v.source in chosen]
