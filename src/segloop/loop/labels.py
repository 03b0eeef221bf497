"""Turning label files into schema label arrays on a case's grid, and back (effective labels).

Assembling a case's label reads, verifies and combines every version (about a second on a
512x512x128 CT, most of it reading); a person's label is assembled again on each showing and
save. Versions are immutable, so `compute_effective_label` with ``cached=True`` keeps recent
assemblies and the version arrays they were made of in memory (`LABEL_CACHE_BYTES` in all, least
recently used out first; arrays read-only): showing, saving and approving one case assemble once,
and after a save (`remember_labels` of the stored array) the next assembly reads nothing.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Collection, Hashable, Sequence
from pathlib import Path
from typing import Any

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
    "LABEL_CACHE_BYTES",
    "LabelCache",
    "compute_effective_label",
    "count_voxels",
    "editable_label",
    "label_layers",
    "prefetch_effective_label",
    "read_schema_labels",
    "remember_labels",
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


_LOG = logging.getLogger(__name__)
_COUNT_CHUNK = 1 << 20


def count_voxels(labels: np.ndarray, schema: LabelSchema) -> dict[str, int]:
    """Voxels per class name (and ``ignore``) in a schema label array (any memory order).

    Counted in chunks of the array as laid out in memory: no transposing copy, and bincount's
    integer copy of the values stays in cache.
    """
    size = schema.ignore_index + 1
    flat = labels.ravel(order="K")
    counts = np.zeros(size, dtype=np.int64)
    for start in range(0, flat.size, _COUNT_CHUNK):
        counts += np.bincount(flat[start : start + _COUNT_CHUNK], minlength=size)[:size]
    result = {name: int(counts[i]) for i, name in enumerate(schema.names, start=1)}
    result["ignore"] = int(counts[schema.ignore_index])
    return result


def schema_segments(schema: LabelSchema) -> list[dict]:
    """Segment descriptions (names, colours, values) for writing a .seg.nrrd of schema labels."""
    return [
        {"id": c.name, "name": c.name, "color": c.color, "label_value": c.index, "layer": 0}
        for c in schema.classes
    ]


#: Bytes of assemblies and version arrays kept in memory by `compute_effective_label` (``cached=True``).
LABEL_CACHE_BYTES = 1 << 30


class LabelCache:
    """A thread-safe least-recently-used map bounded by the bytes of the arrays its values hold.

    The arrays are made read-only when stored: every reader shares them.

    Args:
        max_bytes: the most bytes kept; a value holding more than that is not kept.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        """The value kept under ``key`` (now the most recently used), or None."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: Any, arrays: Sequence[np.ndarray | None]) -> None:
        """Keep ``value`` holding ``arrays`` (read-only from now on); drop the least recently used."""
        distinct = {id(a): a for a in arrays if a is not None}
        size = sum(a.nbytes for a in distinct.values())
        if size > self.max_bytes:
            return
        for array in distinct.values():
            array.flags.writeable = False
        with self._lock:
            old = self._items.pop(key, None)
            self._bytes -= old[1] if old else 0
            self._items[key] = (value, size)
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


_CACHE = LabelCache(LABEL_CACHE_BYTES)
_INFLIGHT: dict[Hashable, threading.Lock] = {}
_INFLIGHT_LOCK = threading.Lock()


def _assembly_key(project: Project, case: CaseRecord, versions: Sequence[LabelVersionRecord]) -> Hashable:
    """What an assembly depends on: the project, the case's grid and schema, each version's content."""
    schema = project.config.schema
    described = tuple((v.id, v.object_key, v.source, tuple(v.classes), repr(v.params)) for v in versions)
    return ("assembly", str(project.root), case.case_id, tuple(case.shape), schema.names, described)


def remember_labels(project: Project, object_key: str, labels: np.ndarray) -> None:
    """Keep a label object's array just stored under ``object_key`` for the next cached assembly.

    Only a Fortran-ordered array (NIfTI's order, as read back) is kept, as a copy: assembly
    mixing memory orders is slow.
    """
    if labels.flags.f_contiguous and not labels.flags.c_contiguous:
        kept = labels.copy(order="F")
        _CACHE.put(("labels", str(project.root), object_key), kept, [kept])


def _read_labels(project: Project, version: LabelVersionRecord) -> np.ndarray:
    """``project.read_labels(version)``, through the cache (read-only)."""
    key = ("labels", str(project.root), version.object_key)
    labels = _CACHE.get(key)
    if labels is None:
        labels = project.read_labels(version)
        _CACHE.put(key, labels, [labels])
    return labels


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
    versions = project.list_label_versions(case.case_id) if versions is None else versions
    if not versions:
        return None
    if not cached:
        return _assemble(project, case, versions)
    key = _assembly_key(project, case, versions)
    with _INFLIGHT_LOCK:
        lock = _INFLIGHT.setdefault(key, threading.Lock())
    try:
        with lock:  # one thread assembles a key, the others wait for it and read the cache
            found = _CACHE.get(key)
            if found is None:
                found = _assemble(project, case, versions, cached=True)
                _CACHE.put(key, found, [found.labels, found.ignore_mask, found.auto_ignore])
    finally:
        with _INFLIGHT_LOCK:
            _INFLIGHT.pop(key, None)
    return found


def _assemble(
    project: Project,
    case: CaseRecord,
    versions: Sequence[LabelVersionRecord],
    *,
    cached: bool = False,
) -> Assembly:
    """`assemble_labels` of ``versions`` (not empty); ``cached``: their arrays through the cache."""
    schema = project.config.schema
    layers = label_layers(project, case, versions, cached=cached)
    return assemble_labels(layers, n_classes=len(schema.classes), ignore_index=schema.ignore_index)


def label_layers(
    project: Project,
    case: CaseRecord,
    versions: Sequence[LabelVersionRecord],
    *,
    cached: bool = False,
) -> list[LabelLayer]:
    """The `LabelLayer` of each version (its array, source, class values and coverage), in order.

    For a consumer that changes what a version speaks for before assembling (training on the
    confident voxels of pseudo labels only); ``cached``: arrays through the cache (read-only).
    """
    schema = project.config.schema
    return [
        LabelLayer(
            _read_labels(project, v) if cached else project.read_labels(v),
            v.source,
            schema.indices_of(v.classes),
            v.id,
            coverage_from_params(v.params, case.shape),
        )
        for v in versions
    ]


def prefetch_effective_label(project: Project, case: CaseRecord) -> threading.Thread:
    """Assemble the case's current label into the cache in a background thread (started, returned).

    For a face that just stored a version: the person's next save or showing of the case then
    finds it assembled. A failure is logged, never raised (the next call assembles again).
    """
    versions = project.list_label_versions(case.case_id)

    def assemble() -> None:
        try:
            compute_effective_label(project, case, versions, cached=True)
        except Exception:  # noqa: BLE001 - a warm-up: the request that needs it assembles again
            _LOG.warning("assembling case %r ahead of time failed", case.case_id, exc_info=True)

    thread = threading.Thread(target=assemble, name=f"assemble-{case.case_id}", daemon=True)
    thread.start()
    return thread


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
