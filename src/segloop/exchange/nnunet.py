"""nnU-Net v2 raw datasets and prediction folders.

A raw dataset (nnU-Net's ``documentation/dataset_format.md``)::

    DatasetXXX_Name/
      dataset.json      {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, ...,
                         "ignore": N + 1}, "numTraining": n, "file_ending": ".nii.gz"}
      imagesTr/<case>_0000.nii.gz   one file per channel (4-digit channel index)
      labelsTr/<case>.nii.gz        integer labels, background 0, consecutive values
      imagesTs/<case>_0000.nii.gz   cases without labels

``ignore`` (nnU-Net's ignore label, ``documentation/ignore_label.md``) must be the highest value and
is declared only when some label holds it. Images and labels of a case share one grid (shape,
spacing, origin, direction), which nnU-Net's integrity check compares.

A prediction folder (``nnUNetv2_predict -o``) holds ``<case><file_ending>`` label maps and a copy
of the dataset's ``dataset.json``, whose ``labels`` say what each value means.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segloop.core.labels import BACKGROUND_NAME, IGNORE_NAME, LabelSchema
from segloop.core.names import path_inside
from segloop.core.volume import Volume
from segloop.errors import CorruptFileError, InvalidInputError, NotFoundError, UnsupportedFormatError
from segloop.io import write_volume

__all__ = [
    "DATASET_JSON",
    "FILE_ENDING",
    "NnunetDataset",
    "dataset_folder_name",
    "image_file_name",
    "list_label_files",
    "list_raw_cases",
    "make_dataset_json",
    "read_dataset_json",
    "write_case",
]

DATASET_JSON = "dataset.json"
FILE_ENDING = ".nii.gz"
_REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")
_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_\-]+")
_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset<id:03d>_<name>`` with characters nnU-Net's folder parsing dislikes replaced.

    Examples:
        >>> dataset_folder_name(501, "head neck/CT")
        'Dataset501_head_neck_CT'
    """
    if not 1 <= int(dataset_id) <= 999:
        msg = f"nnU-Net dataset ids are 1..999; got {dataset_id}"
        raise InvalidInputError(msg)
    cleaned = _NAME_CHARACTERS.sub("_", name).strip("_") or "segloop"
    return f"Dataset{int(dataset_id):03d}_{cleaned}"


def image_file_name(case_id: str, channel: int, file_ending: str = FILE_ENDING) -> str:
    """``<case>_<channel:04d><file_ending>``.

    Examples:
        >>> image_file_name("pt_4", 0)
        'pt_4_0000.nii.gz'
    """
    return f"{case_id}_{channel:04d}{file_ending}"


def make_dataset_json(
    schema: LabelSchema,
    *,
    channel_names: Sequence[str],
    num_training: int,
    with_ignore: bool,
    name: str = "",
    description: str = "",
    file_ending: str = FILE_ENDING,
) -> dict[str, Any]:
    """The ``dataset.json`` of a raw dataset in the project's schema values.

    Args:
        schema: the project's classes (values 1..N).
        channel_names: one name per input channel; ``"CT"`` selects nnU-Net's CT normalisation,
            anything else z-scoring.
        num_training: number of cases in ``labelsTr``.
        with_ignore: declare ``"ignore": N + 1`` (only when some label holds it).
        name: dataset name.
        description: free text.
        file_ending: suffix of every image and label file.

    Examples:
        >>> doc = make_dataset_json(LabelSchema.from_names(["liver"]), channel_names=["CT"],
        ...                         num_training=3, with_ignore=True)
        >>> doc["labels"], doc["channel_names"]
        ({'background': 0, 'liver': 1, 'ignore': 2}, {'0': 'CT'})
    """
    labels = {BACKGROUND_NAME: 0, **{c.name: c.index for c in schema.classes}}
    if with_ignore:
        labels[IGNORE_NAME] = schema.ignore_index
    document: dict[str, Any] = {
        "channel_names": {str(i): str(n) for i, n in enumerate(channel_names)},
        "labels": labels,
        "numTraining": int(num_training),
        "file_ending": file_ending,
    }
    if name:
        document["name"] = name
    if description:
        document["description"] = description
    return document


@dataclass(frozen=True)
class NnunetDataset:
    """What segloop needs from a ``dataset.json``.

    Attributes:
        labels: ``{name: value}`` (regions are refused).
        file_ending: suffix of the image and label files (``.nii.gz``, ``.png``, ...).
        channel_names: ``{channel index: name}``.
        num_training: ``numTraining`` as written.
    """

    labels: dict[str, int]
    file_ending: str
    channel_names: dict[int, str]
    num_training: int


def read_dataset_json(path: Path) -> NnunetDataset:
    """Read and check a ``dataset.json``.

    Raises:
        NotFoundError: the file is missing.
        CorruptFileError: not JSON, or a required key missing or malformed.
        UnsupportedFormatError: region-based labels (tuples of values).
    """
    if not path.is_file():
        msg = f"{path} does not exist: expected nnU-Net's dataset.json"
        raise NotFoundError(msg)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        msg = f"{path}: not valid JSON ({error})"
        raise CorruptFileError(msg) from error
    if not isinstance(document, dict):
        msg = f"{path}: expected a JSON object with {', '.join(_REQUIRED_KEYS)}"
        raise CorruptFileError(msg)
    missing = [key for key in ("labels", "file_ending") if key not in document]
    if missing:
        msg = f"{path}: missing keys {missing}; nnU-Net v2 needs {', '.join(_REQUIRED_KEYS)}"
        raise CorruptFileError(msg)
    labels = document["labels"]
    if not isinstance(labels, Mapping) or not labels:
        msg = f'{path}: "labels" must map names to values, e.g. {{"background": 0, "liver": 1}}'
        raise CorruptFileError(msg)
    parsed: dict[str, int] = {}
    for name, value in labels.items():
        if isinstance(value, list | tuple):
            msg = (
                f"{path}: label {name!r} is a region {value}; segloop reads label maps, not"
                " region-based datasets"
            )
            raise UnsupportedFormatError(msg)
        if isinstance(value, bool) or not isinstance(value, int):
            msg = f"{path}: label {name!r} must have an integer value; got {value!r}"
            raise CorruptFileError(msg)
        parsed[str(name)] = value
    if IGNORE_NAME in parsed and parsed[IGNORE_NAME] != max(parsed.values()):
        msg = f"{path}: nnU-Net's ignore label must be the highest value; got {parsed}"
        raise CorruptFileError(msg)
    channels = document.get("channel_names", document.get("modality", {}))
    try:
        channel_names = {int(k): str(v) for k, v in dict(channels).items()}
        num_training = int(document.get("numTraining", 0))
    except (TypeError, ValueError) as error:
        msg = f"{path}: malformed channel_names or numTraining ({error})"
        raise CorruptFileError(msg) from error
    return NnunetDataset(parsed, str(document["file_ending"]), channel_names, num_training)


def list_label_files(folder: Path, file_ending: str) -> dict[str, Path]:
    """``{case id: path}`` of the label (or prediction) files ``<case><file_ending>`` in ``folder``."""
    if not folder.is_dir():
        msg = f"{folder} is not a folder: expected nnU-Net label files <case>{file_ending}"
        raise NotFoundError(msg)
    return {
        path.name[: -len(file_ending)]: path
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name.endswith(file_ending) and not path.name.startswith(".")
    }


def list_raw_cases(folder: Path, file_ending: str) -> dict[str, dict[int, Path]]:
    """``{case id: {channel: path}}`` of ``<case>_XXXX<file_ending>`` images in ``folder``.

    Raises:
        CorruptFileError: a file without the 4-digit channel suffix, or a case with a gap in its
            channels.
    """
    cases: dict[str, dict[int, Path]] = {}
    for name, path in list_label_files(folder, file_ending).items():
        match = _CHANNEL_FILE.match(name)
        if match is None:
            msg = f"{path}: nnU-Net image files are <case>_XXXX{file_ending} (4-digit channel)"
            raise CorruptFileError(msg)
        cases.setdefault(match["case"], {})[int(match["channel"])] = path
    for case, channels in cases.items():
        if sorted(channels) != list(range(len(channels))):
            msg = f"{folder}: case {case!r} has channels {sorted(channels)}; expected 0..{len(channels) - 1}"
            raise CorruptFileError(msg)
    return cases


def write_case(
    dataset: Path,
    case_id: str,
    channels: Sequence[Volume],
    labels: Volume | None,
    *,
    file_ending: str = FILE_ENDING,
) -> None:
    """Write one case: ``imagesTr`` + ``labelsTr`` when labelled, else ``imagesTs``.

    Args:
        dataset: the ``DatasetXXX_Name`` folder.
        case_id: the case identifier.
        channels: one ``(I, J, K)`` volume per channel, on the label's grid.
        labels: ``(I, J, K)`` label volume in dataset values, or None.
        file_ending: suffix (the format) of every file.
    """
    images = "imagesTr" if labels is not None else "imagesTs"
    for channel, volume in enumerate(channels):
        write_volume(volume, path_inside(dataset, images, image_file_name(case_id, channel, file_ending)))
    if labels is not None:
        write_volume(labels, path_inside(dataset, "labelsTr", f"{case_id}{file_ending}"))
