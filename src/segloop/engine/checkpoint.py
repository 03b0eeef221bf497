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
import uuid
import zipfile
from pathlib import Path
from typing import Any

import torch

from segloop.engine.config import TrainConfig
from segloop.errors import CorruptFileError, NotFoundError, SegloopError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "check_compatible",
    "read_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "segloop-engine-checkpoint"
CHECKPOINT_VERSION = 1


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


def read_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a segloop checkpoint (tensors mapped to ``map_location``).

    Raises:
        NotFoundError: no file at ``path``.
        CorruptFileError: not a readable segloop checkpoint (truncated, another format, newer version).
    """
    source = Path(path)
    if not source.is_file():
        msg = f"checkpoint {source} does not exist: expected a model file written by segloop train"
        raise NotFoundError(msg)
    try:
        payload = torch.load(source, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        msg = f"checkpoint {source} cannot be read ({first[:200]}): expected a model file from segloop train"
        raise CorruptFileError(msg) from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        msg = (
            f"{source} is not a segloop checkpoint: expected format {CHECKPOINT_FORMAT!r} (bare state_dict?)"
        )
        raise CorruptFileError(msg)
    if payload.get("version") != CHECKPOINT_VERSION:
        version = payload.get("version")
        msg = f"checkpoint {source} has version {version!r}; this segloop reads {CHECKPOINT_VERSION}"
        raise CorruptFileError(msg)
    return payload


def check_compatible(
    payload: dict[str, Any],
    config: TrainConfig,
    *,
    in_channels: int,
    n_classes: int,
    source: str | os.PathLike,
) -> None:
    """Raise a one-line `SegloopError` unless the checkpoint's network matches ``config`` and classes.

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
            " train from scratch (no --init-weights) or pick a model of this schema"
        )
        raise SegloopError(msg)
    theirs = TrainConfig.from_dict(payload["config"]).architecture()
    ours = config.architecture()
    differences = [f"{k} {theirs[k]!r} != {ours[k]!r}" for k in ours if theirs[k] != ours[k]]
    if differences:
        msg = (
            f"weights {source} come from another architecture ({'; '.join(differences)}):"
            " use the same network settings or train from scratch"
        )
        raise SegloopError(msg)
