"""Checkpoint files: written atomically (temp file, fsync, rename), read with one-line errors.

A checkpoint is a ``torch.save`` dict of plain data and tensors only (read back with
``weights_only=True``, so loading never runs code from the file):

- ``format`` / ``version``: `CHECKPOINT_FORMAT`, `CHECKPOINT_VERSION`;
- ``config``: the resolved `TrainConfig` as plain data; ``requested_config``: as given;
- ``in_channels``, ``n_classes`` (background included; ignore value = ``n_classes``);
- ``model_state`` (weights after the last finished epoch) and ``best_state`` (best validation);
- ``optimizer_state``, ``epoch`` (finished epochs), ``step``, ``elapsed_s``;
- ``best_metric``, ``best_epoch``, ``history`` (one dict per epoch);
- ``rng``: torch CPU (and CUDA) generator states and the sampler's numpy generator state;
- ``finished``: True once training ended normally.
"""

from __future__ import annotations

import os
import pickle
import struct
import uuid
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from segloop.engine.config import TrainConfig
from segloop.errors import CorruptFileError, InvalidInputError, NotFoundError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "check_compatible",
    "load_torch_file",
    "read_checkpoint",
    "read_weights",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "segloop-engine-checkpoint"
CHECKPOINT_VERSION = 1

#: What ``torch.load(weights_only=True)`` raises on bytes that are not a torch file, as measured on
#: text files, random bytes, truncated and byte-flipped checkpoints: the weights-only unpickler's
#: refusals (UnpicklingError), a truncated zip (RuntimeError, EOFError, BadZipFile), a pickle
#: reading past its memo or stack (KeyError, IndexError, struct.error), text as bytes (ValueError).
_UNREADABLE = (
    RuntimeError,
    EOFError,
    OSError,
    ValueError,
    KeyError,
    IndexError,
    struct.error,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
)
#: Keys (and their types) every segloop checkpoint holds; a file without them is refused on read.
_REQUIRED = {
    "config": dict,
    "in_channels": int,
    "n_classes": int,
    "model_state": dict,
    "best_state": dict,
    "epoch": int,
}


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically: a reader sees the old file or the new one, never half.

    The bytes go to a temporary file beside ``path``, are fsynced, then renamed over ``path``
    (and the folder fsynced). A failure removes the temporary file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{target.name}")
    try:
        with open(temporary, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    descriptor = os.open(target.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load_torch_file(
    path: str | os.PathLike,
    *,
    map_location: str | torch.device = "cpu",
    expected: str = "a model file written by segloop training",
) -> Any:
    """Whatever a ``torch.save`` file holds, read with ``weights_only=True`` (never runs its code).

    Raises:
        NotFoundError: no file at ``path``.
        CorruptFileError: not a PyTorch file of plain data and tensors, or truncated.
    """
    source = Path(path)
    if not source.is_file():
        msg = f"checkpoint {source} does not exist: expected {expected}"
        raise NotFoundError(msg)
    try:
        with warnings.catch_warnings():  # torch's note on an odd pickle protocol: a junk file, refused below
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(source, map_location=map_location, weights_only=True)
    except _UNREADABLE as error:  # torch's own text suggests unsafe loading: not repeated
        msg = (
            f"checkpoint {source} cannot be read (not a PyTorch file of plain tensors, or truncated):"
            f" expected {expected}"
        )
        raise CorruptFileError(msg) from error


def read_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a segloop checkpoint (tensors mapped to ``map_location``).

    Raises:
        NotFoundError: no file at ``path``.
        CorruptFileError: not a readable segloop checkpoint (truncated, another format, newer version).
    """
    source = Path(path)
    payload = load_torch_file(source, map_location=map_location)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        msg = (
            f"{source} is not a segloop checkpoint: expected format {CHECKPOINT_FORMAT!r} (bare state_dict?)"
        )
        raise CorruptFileError(msg)
    if payload.get("version") != CHECKPOINT_VERSION:
        version = payload.get("version")
        msg = f"checkpoint {source} has version {version!r}; this segloop reads {CHECKPOINT_VERSION}"
        raise CorruptFileError(msg)
    wrong = [key for key, kind in _REQUIRED.items() if not isinstance(payload.get(key), kind)]
    if wrong:
        msg = (
            f"checkpoint {source} lacks {', '.join(wrong)} (or holds another type):"
            " expected a complete segloop checkpoint"
        )
        raise CorruptFileError(msg)
    return payload


def read_weights(
    path: str | os.PathLike,
    config: TrainConfig,
    *,
    n_classes: int,
    in_channels: int = 1,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """A checkpoint whose network fits ``config`` and ``n_classes``: initial weights of a run.

    Args:
        path: the checkpoint file.
        config: the config of the run that wants these weights (its architecture fields count).
        n_classes: output classes of the run, background included.
        in_channels: image channels of the run.
        map_location: where tensors are loaded.

    Returns:
        The payload (`read_checkpoint`); its ``best_state`` holds the weights.

    Raises:
        NotFoundError: no file.
        CorruptFileError: not a segloop checkpoint.
        InvalidInputError: a checkpoint of another schema or architecture.
    """
    payload = read_checkpoint(path, map_location=map_location)
    check_compatible(payload, config, in_channels=in_channels, n_classes=n_classes, source=path)
    return payload


def check_compatible(
    payload: dict[str, Any],
    config: TrainConfig,
    *,
    in_channels: int,
    n_classes: int,
    source: str | os.PathLike,
) -> None:
    """Raise a one-line `InvalidInputError` unless the checkpoint's network matches ``config`` and classes.

    Args:
        payload: a dict from `read_checkpoint`.
        config: the config of the run that wants these weights.
        in_channels: image channels of the run.
        n_classes: output classes of the run (background included).
        source: the checkpoint path, for the message.
    """
    if int(payload["n_classes"]) != n_classes or int(payload["in_channels"]) != in_channels:
        msg = (
            f"weights {source} were trained for {payload['n_classes'] - 1} classes and"
            f" {payload['in_channels']} channel(s); this run has {n_classes - 1} classes and"
            f" {in_channels} channel(s) (another label schema):"
            " train from scratch or pick a model of this schema"
        )
        raise InvalidInputError(msg)
    try:
        theirs = TrainConfig.from_dict(payload["config"]).architecture()
    except InvalidInputError as error:
        msg = f"checkpoint {source} holds an unreadable training config ({error})"
        raise CorruptFileError(msg) from error
    ours = config.architecture()
    differences = [f"{k} {theirs[k]!r} != {ours[k]!r}" for k in ours if theirs[k] != ours[k]]
    if differences:
        msg = (
            f"weights {source} come from another architecture ({'; '.join(differences)}):"
            " use the same network settings or train from scratch"
        )
        raise InvalidInputError(msg)
