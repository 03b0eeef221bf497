"""A MONAI Label local datastore (``monailabel/datastore/local.py``).

Layout::

    DATASTORE/
      <image id>.nii.gz            the images (studies folder)
      labels/final/<id>.nii.gz     human-approved labels  -> segloop ``revised``
      labels/original/<id>.nii.gz  AI predictions         -> segloop ``pseudo``
      datastore_v2.json            {name, description, images_dir, labels_dir,
                                    objects: {id: {image: {ext, info}, labels: {tag: {ext, info}}}}}

A label's ``info.label_info`` (``[{"name": "liver", "idx": 1}, ...]``) names its values by the
order of its entries (`label_info_names`); without it the values are taken to be the project's
schema values. MONAI Label has no ignore label.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segloop.core.labels import LabelSchema
from segloop.core.names import path_inside
from segloop.errors import CorruptFileError, InvalidInputError, NotFoundError

__all__ = [
    "DATASTORE_JSON",
    "FINAL_TAG",
    "LABEL_EXTENSIONS",
    "ORIGINAL_TAG",
    "TAGS",
    "DatastoreItem",
    "label_info_names",
    "list_datastore",
    "make_datastore_json",
]

DATASTORE_JSON = "datastore_v2.json"
FINAL_TAG = "final"
ORIGINAL_TAG = "original"
#: The label tags segloop reads and writes: ``final`` (a person's label), ``original`` (a model's).
TAGS = (FINAL_TAG, ORIGINAL_TAG)
#: The image and label files of a datastore (and of a label a client sends), longest suffix first.
LABEL_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd")


@dataclass(frozen=True)
class DatastoreItem:
    """One image of a datastore and its labels per tag.

    Attributes:
        image_id: the datastore's id (file name without extension).
        image: the image file.
        labels: ``{tag: label file}``.
        segment_names: ``{tag: {value in the file: segment name}}`` from ``label_info``
            (`label_info_names`), where given.
    """

    image_id: str
    image: Path
    labels: dict[str, Path] = field(default_factory=dict)
    segment_names: dict[str, dict[int, str]] = field(default_factory=dict)


def _split_id(name: str) -> tuple[str, str] | None:
    for extension in LABEL_EXTENSIONS:
        if name.endswith(extension):
            return name[: -len(extension)], extension
    return None


def _index_files(folder: Path) -> dict[str, Path]:
    """``{id: path}`` of the image or label files directly in ``folder``."""
    index = {}
    for path in sorted(folder.iterdir()):
        parts = _split_id(path.name) if path.is_file() and not path.name.startswith(".") else None
        if parts is not None:
            index[parts[0]] = path
    return index


def label_info_names(label_info: Any, where: str) -> dict[int, str] | None:
    """``{value in the label file: segment name}`` of a MONAI Label ``label_info`` list.

    Entry ``k`` (from 1) names the value ``k``, whatever its ``idx``. Slicer's MONAI Label module
    sends ``[{"name": segment name, "idx": n}, ...]``, one entry per exported segment, and exports
    the segments with ``ExportSegmentsToLabelmapNode`` without a colour table, which gives the
    ``k``-th exported segment the value ``k`` (Slicer's ``vtkSegmentation::GenerateMergedLabelmap``:
    1 + its position in the list). ``idx`` is 1 + the segment's position among *all* segments, the
    skipped ``background`` and scribble segments included, so after a skipped segment it is not the
    value. A MONAI Label datastore stores the file and these params as the client sent them
    (``monailabel/datastore/local.py``, ``save_label``), and segloop's exports write ``idx`` = the
    position (classes are 1..N), so the same reading holds for a datastore on disk.

    Args:
        label_info: the ``label_info`` value (a JSON list), or None.
        where: names its origin in messages (the upload, the datastore entry).

    Returns:
        The names by value, or None without ``label_info`` (an empty list is none too).

    Raises:
        InvalidInputError: not a list of objects with a text ``name``.
    """
    if label_info is None or label_info == []:
        return None
    if not isinstance(label_info, list) or not all(
        isinstance(entry, Mapping) and isinstance(entry.get("name"), str) for entry in label_info
    ):
        msg = (
            f"{where}: label_info must be a list of {{name, idx}} objects, one per segment (as Slicer"
            f" sends); got {label_info!r:.80}"
        )
        raise InvalidInputError(msg)
    return {value: entry["name"] for value, entry in enumerate(label_info, start=1)}


def _lookup(document: Any, *keys: str) -> Any:
    """``document[k1][k2]...``, or ``{}`` where a level is missing or not an object."""
    for key in keys:
        document = document.get(key, {}) if isinstance(document, Mapping) else {}
    return document


def _read_document(root: Path) -> dict[str, Any]:
    path = root / DATASTORE_JSON
    if not path.is_file():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        msg = f"{path}: not valid JSON ({error})"
        raise CorruptFileError(msg) from error
    if not isinstance(document, dict) or not isinstance(document.get("objects", {}), dict):
        msg = f"{path}: expected {{'objects': {{image id: {{'image': ..., 'labels': ...}}}}}}"
        raise CorruptFileError(msg)
    return document


def list_datastore(root: Path) -> list[DatastoreItem]:
    """The images of a datastore folder and their ``final`` / ``original`` (and other) labels.

    Raises:
        NotFoundError: ``root`` is not a folder or holds no image.
        CorruptFileError: a malformed ``datastore_v2.json``.
    """
    if not root.is_dir():
        msg = f"{root} is not a folder: expected a MONAI Label datastore"
        raise NotFoundError(msg)
    document = _read_document(root)
    images_dir = path_inside(root, str(document.get("images_dir", "") or "."))
    labels_dir = path_inside(root, str(document.get("labels_dir", "labels") or "labels"))
    objects = document.get("objects", {})
    tag_dirs = sorted(p for p in labels_dir.iterdir() if p.is_dir()) if labels_dir.is_dir() else []
    files_by_tag = {tag_dir.name: _index_files(tag_dir) for tag_dir in tag_dirs}
    items = []
    for image_id, path in _index_files(images_dir).items():
        labels, names = {}, {}
        for tag, files in files_by_tag.items():
            if image_id not in files:
                continue
            labels[tag] = files[image_id]
            info = _lookup(objects, image_id, "labels", tag, "info")
            entries = info.get("label_info") if isinstance(info, Mapping) else None
            table = label_info_names(entries, f"{root / DATASTORE_JSON} {image_id}/{tag}")
            if table is not None:
                names[tag] = table
        items.append(DatastoreItem(image_id, path, labels, names))
    if not items:
        msg = f"{images_dir} holds no image ({', '.join(LABEL_EXTENSIONS)}): expected a MONAI Label datastore"
        raise NotFoundError(msg)
    return items


def _segloop_info(provenance: Mapping[str, Mapping[str, Any]] | None, image_id: str, tag: str) -> dict:
    record = (provenance or {}).get(image_id, {}).get(tag)
    return {} if record is None else {"segloop": record}


def make_datastore_json(
    entries: Mapping[str, Mapping[str, str]],
    schema: LabelSchema,
    *,
    name: str,
    description: str = "",
    extension: str = ".nii.gz",
    provenance: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``datastore_v2.json`` of an exported datastore.

    Args:
        entries: ``{image id: {tag: ext}}``; every image has ``extension``.
        schema: names each label's values in ``label_info``.
        name: datastore name.
        description: free text.
        extension: the image files' extension.
        provenance: ``{image id: {tag: record}}`` written as the label info's ``segloop`` entry
            (the label versions and sources a label was made of).
    """
    now = int(time.time())
    # entry k names the value k (`label_info_names`): the classes, 1..N in order, and idx the same
    label_info = [{"name": c.name, "idx": c.index} for c in schema.classes]
    objects = {
        image_id: {
            "image": {"ext": extension, "info": {"ts": now, "name": f"{image_id}{extension}"}},
            "labels": {
                tag: {
                    "ext": ext,
                    "info": {
                        "ts": now,
                        "name": f"{image_id}{ext}",
                        "label_info": label_info,
                        **_segloop_info(provenance, image_id, tag),
                    },
                }
                for tag, ext in tags.items()
            },
        }
        for image_id, tags in entries.items()
    }
    return {
        "name": name,
        "description": description or "exported by segloop",
        "images_dir": ".",
        "labels_dir": "labels",
        "objects": objects,
    }
