"""A MONAI Label local datastore (``monailabel/datastore/local.py``).

Layout::

    DATASTORE/
      <image id>.nii.gz            the images (studies folder)
      labels/final/<id>.nii.gz     human-approved labels  -> segloop ``revised``
      labels/original/<id>.nii.gz  AI predictions         -> segloop ``pseudo``
      datastore_v2.json            {name, description, images_dir, labels_dir,
                                    objects: {id: {image: {ext, info}, labels: {tag: {ext, info}}}}}

A label's ``info.label_info`` (``[{"name": "liver", "idx": 1}, ...]``) names its values; without
it the values are taken to be the project's schema values. MONAI Label has no ignore label.
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
from segloop.errors import CorruptFileError, NotFoundError

__all__ = [
    "DATASTORE_JSON",
    "FINAL_TAG",
    "ORIGINAL_TAG",
    "DatastoreItem",
    "list_datastore",
    "make_datastore_json",
]

DATASTORE_JSON = "datastore_v2.json"
FINAL_TAG = "final"
ORIGINAL_TAG = "original"
_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd")


@dataclass(frozen=True)
class DatastoreItem:
    """One image of a datastore and its labels per tag.

    Attributes:
        image_id: the datastore's id (file name without extension).
        image: the image file.
        labels: ``{tag: label file}``.
        label_names: ``{tag: {name: value}}`` from ``label_info``, where given.
    """

    image_id: str
    image: Path
    labels: dict[str, Path] = field(default_factory=dict)
    label_names: dict[str, dict[str, int]] = field(default_factory=dict)


def _split_id(name: str) -> tuple[str, str] | None:
    for extension in sorted(_EXTENSIONS, key=len, reverse=True):
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


def _label_names(info: Any, where: str) -> dict[str, int]:
    entries = info.get("label_info") if isinstance(info, Mapping) else None
    if not entries:
        return {}
    try:
        return {str(e["name"]): int(e["idx"]) for e in entries}
    except (KeyError, TypeError, ValueError) as error:
        msg = f'{where}: label_info must be [{{"name": ..., "idx": ...}}, ...]; got {entries!r:.120}'
        raise CorruptFileError(msg) from error


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
            table = _label_names(info, f"{root / DATASTORE_JSON} {image_id}/{tag}")
            if table:
                names[tag] = table
        items.append(DatastoreItem(image_id, path, labels, names))
    if not items:
        msg = f"{images_dir} holds no image ({', '.join(_EXTENSIONS)}): expected a MONAI Label datastore"
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
