"""Turning label files into schema label arrays on a case's grid, and back (effective labels).

Assembling a case's label reads and combines every version (a few hundred milliseconds on a
512x512x128 CT); a person's label is assembled again on each save and showing. The assembly of a
set of versions never changes (versions are immutable), so `compute_effective_label` with
``cached=True`` keeps recent assemblies in memory (`ASSEMBLY_CACHE_BYTES`, least recently used
out first) with read-only arrays: the server's showing, saving and approving of one case assemble
once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection, Hashable, Sequence
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
    "ASSEMBLY_CACHE_BYTES",
    "AssemblyCache",
    "compute_effective_label",
    "count_voxels",
    "editable_label",
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


#: Bytes of assembled labels kept in memory by `compute_effective_label` (``cached=True``).
ASSEMBLY_CACHE_BYTES = 1 << 30


class AssemblyCache:
    """A thread-safe least-recently-used map of `Assembly` bounded by the bytes of its arrays.

    Arrays are made read-only when stored: every reader shares them.

    Args:
        max_bytes: the most bytes kept; an assembly larger than that is not kept.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Assembly, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Assembly | None:
        """The assembly kept under ``key`` (now the most recently used), or None."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, assembly: Assembly) -> None:
        """Keep ``assembly`` (read-only from now on) under ``key``, dropping the least recently used."""
        arrays = {
            id(a): a for a in (assembly.labels, assembly.ignore_mask, assembly.auto_ignore) if a is not None
        }
        size = sum(a.nbytes for a in arrays.values())
        if size > self.max_bytes:
            return
        for array in arrays.values():
            array.flags.writeable = False
        with self._lock:
            old = self._items.pop(key, None)
            self._bytes -= old[1] if old else 0
            self._items[key] = (assembly, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays kept now."""
        return self._bytes


_CACHE = AssemblyCache(ASSEMBLY_CACHE_BYTES)


def _cache_key(project: Project, case: CaseRecord, versions: Sequence[LabelVersionRecord]) -> Hashable:
    """What an assembly depends on: the project, the case's grid and schema, each version's content."""
    schema = project.config.schema
    described = tuple((v.id, v.object_key, v.source, tuple(v.classes), repr(v.params)) for v in versions)
    return (str(project.root), case.case_id, tuple(case.shape), schema.names, schema.ignore_index, described)


def compute_effective_label(
    project: Project,
    case: CaseRecord,
    versions: Sequence[LabelVersionRecord] | None = None,
    *,
    cached: bool = False,
) -> Assembly | None:
    """Assemble a case's label versions (see `segloop.core.assembly`); None if it has none.

    Args:
        project: the open project.
        case: the case.
        versions: the versions to assemble (default: all of the case's).
        cached: use (and fill) the in-memory cache (module docstring): the arrays of the result
            are then read-only, shared with other callers.
    """
    schema = project.config.schema
    versions = project.list_label_versions(case.case_id) if versions is None else versions
    if not versions:
        return None
    key = _cache_key(project, case, versions) if cached else None
    found = _CACHE.get(key) if cached else None
    if found is not None:
        return found
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
    assembly = assemble_labels(layers, n_classes=len(schema.classes), ignore_index=schema.ignore_index)
    if cached:
        _CACHE.put(key, assembly)
    return assembly


def editable_label(
    project: Project, case: CaseRecord, versions: Sequence[LabelVersionRecord] | None = None
) -> tuple[int | None, np.ndarray]:
    """The label a person edits, and the newest version id it comes from (the save's parent).

    The effective label with `Assembly.editable_labels`: voxels ignored only because some class
    is annotated by no version are background (explicit ignores stay), so saving it back stores
    no ignore nobody asked for. All background without versions. Cached (read-only array).

    Args:
        project: the open project.
        case: the case.
        versions: the versions to assemble (default: all of the case's, oldest first).

    Returns:
        ``(head, labels)``: the newest id of ``versions`` (None without) and the ``(I, J, K)``
        schema values.
    """
    versions = project.list_label_versions(case.case_id) if versions is None else versions
    assembly = compute_effective_label(project, case, versions, cached=True)
    if assembly is None:
        return None, np.zeros(case.shape, dtype=project.config.schema.dtype)
    return max(v.id for v in versions), assembly.editable_labels


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
