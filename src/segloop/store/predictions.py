"""Prediction files: a model's float16 probabilities and uncertainty of a case, content-addressed.

A batch prediction writes each case's arrays where any worker of a cluster can (the project folder
on a shared filesystem) without touching the database: ``predictions/<model>/<case>.<k>.npz``,
where ``k`` is the first 16 hex digits of the SHA-256 of the stored arrays, written to a temporary
name and renamed, never replacing another content. The client then records the file with its
``pseudo`` label version (`segloop.store.Project.add_predictions`); a file no record names was
left by an interrupted or refused batch and is removed when its own batch is refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segloop.core.names import path_inside
from segloop.errors import GeometryMismatchError
from segloop.io.atomic import atomic_file
from segloop.store.records import NewLabel, PredictionArrays

__all__ = [
    "NewPrediction",
    "StoredPredictionFile",
    "check_prediction_arrays",
    "compute_prediction_key",
    "write_prediction_file",
]


@dataclass(frozen=True)
class StoredPredictionFile:
    """A prediction file written by `write_prediction_file`.

    Args:
        relative: its path relative to the project folder (``predictions/<model>/<case>.<k>.npz``).
        mean_entropy: the mean of its ``(I, J, K)`` entropy, in [0, 1].
    """

    relative: str
    mean_entropy: float


@dataclass(frozen=True)
class NewPrediction:
    """A prediction to record (`Project.add_predictions`): its label object and file are published.

    Args:
        case_id: the case predicted.
        label: its ``pseudo`` label version (object already in ``objects/``).
        file: its arrays (`write_prediction_file`).
        params: how it was predicted (model id, passes, flips, post-processing).
    """

    case_id: str
    label: NewLabel
    file: StoredPredictionFile
    params: Mapping[str, object]


def check_prediction_arrays(arrays: PredictionArrays, shape: Sequence[int]) -> dict[str, np.ndarray]:
    """The arrays to store (float16 ``probabilities`` ``(C, I, J, K)``, ``entropy`` and optional
    ``disagreement`` ``(I, J, K)``), each checked to lie on the case grid ``shape``.

    Raises:
        GeometryMismatchError: an array is not on the case grid.

    Examples:
        >>> arrays = PredictionArrays(np.zeros((2, 3, 4, 5)), np.zeros((3, 4, 5)))
        >>> {k: (v.dtype.name, v.shape) for k, v in check_prediction_arrays(arrays, (3, 4, 5)).items()}
        {'probabilities': ('float16', (2, 3, 4, 5)), 'entropy': ('float16', (3, 4, 5))}
    """
    grid = tuple(int(n) for n in shape)
    stored = {"probabilities": arrays.probabilities, "entropy": arrays.entropy}
    if arrays.disagreement is not None:
        stored["disagreement"] = arrays.disagreement
    for name, array in stored.items():
        dims = 4 if name == "probabilities" else 3
        if array.ndim != dims or tuple(array.shape[-3:]) != grid:
            expected = f"(C, {', '.join(map(str, grid))})" if dims == 4 else str(grid)
            msg = f"prediction {name} has shape {tuple(array.shape)}; expected {expected} (the case grid)"
            raise GeometryMismatchError(msg)
    return {name: np.asarray(array, dtype=np.float16) for name, array in stored.items()}


def compute_prediction_key(stored: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) of named arrays: each name, dtype, shape and C-order bytes, names sorted.

    Examples:
        >>> a = {"entropy": np.zeros((2, 2, 2), np.float16)}
        >>> compute_prediction_key(a) == compute_prediction_key({"entropy": np.ones((2, 2, 2), np.float16)})
        False
    """
    digest = hashlib.sha256()
    for name in sorted(stored):
        array = np.ascontiguousarray(stored[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.data)
    return digest.hexdigest()


def write_prediction_file(
    root: Path, model_id: int, case_id: str, shape: Sequence[int], arrays: PredictionArrays
) -> StoredPredictionFile:
    """Write a case's prediction arrays under ``root`` (a project folder), content-addressed.

    The database is not touched (a worker of a cluster calls this); the same content written twice
    lands on the same file, which is left as it is.

    Args:
        root: the project folder.
        model_id: the model that predicted (its folder under ``predictions/``).
        case_id: the case (a validated case id).
        shape: the case grid ``(I, J, K)``.
        arrays: probabilities ``(C, I, J, K)``, entropy and optional disagreement ``(I, J, K)``.

    Raises:
        GeometryMismatchError: an array is not on the case grid.
    """
    stored = check_prediction_arrays(arrays, shape)
    relative = f"predictions/{int(model_id)}/{case_id}.{compute_prediction_key(stored)[:16]}.npz"
    target = path_inside(root, relative)
    if not target.is_file():
        with atomic_file(target, overwrite=True) as temporary, open(temporary, "wb") as out:
            np.savez_compressed(out, **stored)
    return StoredPredictionFile(relative, float(np.mean(stored["entropy"], dtype=np.float64)))
