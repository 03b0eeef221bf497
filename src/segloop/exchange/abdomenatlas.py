"""The AbdomenAtlas layout (seed 002, ``MrGiovanni/AbdomenAtlas`` README)::

    ROOT/
      <case>/
        ct.nii.gz                  the image
        original_label.nii.gz      the dataset's own annotation (label map)   -> ``original``
        pseudo_label.nii.gz        the AI prediction (label map)               -> ``pseudo``
        segmentations/<class>.nii.gz   one binary mask per class: the assembled result

Label maps hold the project's schema values unless ``ROOT/labels.json`` (``{"1": "spleen", ...}``)
names them. Only ``ct.nii.gz`` is required per case.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segloop.core.geometry import align_to_grid
from segloop.core.labels import LabelSchema
from segloop.core.names import path_inside
from segloop.core.volume import Volume
from segloop.errors import CorruptFileError, LabelValueError, NotFoundError
from segloop.io import read_volume, write_volume

__all__ = [
    "CT_NAME",
    "LABEL_NAMES_JSON",
    "ORIGINAL_NAME",
    "PSEUDO_NAME",
    "SEGMENTATIONS_DIR",
    "AtlasCase",
    "list_atlas_cases",
    "read_label_names",
    "read_segmentations",
    "write_atlas_case",
]

CT_NAME = "ct.nii.gz"
ORIGINAL_NAME = "original_label.nii.gz"
PSEUDO_NAME = "pseudo_label.nii.gz"
SEGMENTATIONS_DIR = "segmentations"
LABEL_NAMES_JSON = "labels.json"
_MASK_SUFFIX = ".nii.gz"


@dataclass(frozen=True)
class AtlasCase:
    """The files of one case folder (absent ones are None / empty)."""

    case_id: str
    ct: Path
    original_label: Path | None = None
    pseudo_label: Path | None = None
    segmentations: dict[str, Path] = field(default_factory=dict)


def list_atlas_cases(root: Path) -> list[AtlasCase]:
    """Every ``<case>/ct.nii.gz`` folder under ``root``, with the label files it holds.

    Raises:
        NotFoundError: ``root`` is not a folder or no sub-folder holds ``ct.nii.gz``.
    """
    if not root.is_dir():
        msg = f"{root} is not a folder: expected an AbdomenAtlas folder of <case>/{CT_NAME}"
        raise NotFoundError(msg)
    cases = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (folder / CT_NAME).is_file():
            continue
        masks_dir = folder / SEGMENTATIONS_DIR
        masks = (
            {
                path.name[: -len(_MASK_SUFFIX)]: path
                for path in sorted(masks_dir.iterdir())
                if path.name.endswith(_MASK_SUFFIX) and not path.name.startswith(".")
            }
            if masks_dir.is_dir()
            else {}
        )
        cases.append(
            AtlasCase(
                folder.name,
                folder / CT_NAME,
                folder / ORIGINAL_NAME if (folder / ORIGINAL_NAME).is_file() else None,
                folder / PSEUDO_NAME if (folder / PSEUDO_NAME).is_file() else None,
                masks,
            )
        )
    if not cases:
        msg = f"{root} holds no <case>/{CT_NAME}: expected the AbdomenAtlas layout"
        raise NotFoundError(msg)
    return cases


def read_label_names(root: Path) -> dict[str, int] | None:
    """``{name: value}`` from ``ROOT/labels.json`` (``{"1": "spleen"}``), or None when absent."""
    path = root / LABEL_NAMES_JSON
    if not path.is_file():
        return None
    try:
        return {str(name): int(value) for value, name in json.loads(path.read_text("utf-8")).items()}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, ValueError) as error:
        msg = f'{path}: expected a JSON object mapping values to names, like {{"1": "spleen"}} ({error})'
        raise CorruptFileError(msg) from error


def read_segmentations(
    case: AtlasCase, schema: LabelSchema, shape: Sequence[int], affine: np.ndarray
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Combine ``segmentations/<class>.nii.gz`` masks into one schema label map on the CT's grid.

    Masks are applied in schema order, so where two overlap the later class wins.

    Returns:
        ``(labels, classes)``: ``(I, J, K)`` array in ``schema.dtype`` and the classes present.

    Raises:
        UnknownClassError: a mask file named after no class of the schema.
        GeometryMismatchError: a mask on another grid.
        LabelValueError: a mask with values other than 0 and 1 (or 0 and 255).
    """
    labels = np.zeros(tuple(shape), dtype=schema.dtype)
    ordered = sorted(case.segmentations.items(), key=lambda item: schema.index_of(item[0]))
    for name, path in ordered:
        volume = read_volume(path)
        mask = align_to_grid(volume.array, volume.affine, shape, affine, what=f"mask {path}")
        values = np.unique(mask)
        if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
            msg = f"mask {path} must be binary (0/1 or 0/255); got values {values[:6].tolist()}"
            raise LabelValueError(msg)
        labels[mask != 0] = schema.index_of(name)
    return labels, tuple(name for name, _ in ordered)


def write_atlas_case(
    folder: Path,
    ct: Volume,
    *,
    original_label: np.ndarray | None,
    pseudo_label: np.ndarray | None,
    masks: Mapping[str, np.ndarray],
) -> None:
    """Write one case folder; label arrays are ``(I, J, K)`` on the CT's grid (masks bool)."""
    write_volume(ct, folder / CT_NAME)
    if original_label is not None:
        write_volume(ct.with_array(original_label), folder / ORIGINAL_NAME)
    if pseudo_label is not None:
        write_volume(ct.with_array(pseudo_label), folder / PSEUDO_NAME)
    for name, mask in masks.items():
        mask_path = path_inside(folder, SEGMENTATIONS_DIR, f"{name}{_MASK_SUFFIX}")
        write_volume(ct.with_array(mask.astype(np.uint8)), mask_path)
