"""Initial weights of a run: a segloop checkpoint, a plain PyTorch/MONAI state dict, or a bundle's model.pt.

A MONAI bundle keeps its trained network in ``models/model.pt``: ``torch.save(net.state_dict())``,
a plain dict of parameter name -> tensor. Some training scripts wrap it (``{"model": ...}``,
``{"state_dict": ...}``, ``{"model_state_dict": ...}``, ``{"network": ...}``) or save it from a
``DataParallel`` (every name prefixed ``module.``); both are unwrapped. The names and shapes must
then be exactly those of the network this run builds; otherwise one line names the keys that are
missing, unexpected or of another shape, and nothing is trained.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from segloop.engine.checkpoint import CHECKPOINT_FORMAT, load_torch_file, read_weights
from segloop.engine.config import TrainConfig
from segloop.engine.networks import build_network
from segloop.errors import InvalidInputError

__all__ = ["WRAPPER_KEYS", "match_state_dict", "read_initial_weights", "unwrap_state_dict"]

#: keys under which training scripts nest a state dict (the first one present is used)
WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "network", "net")
_SHOWN = 3
_EXPECTED = "a segloop checkpoint, a PyTorch/MONAI state dict or a MONAI bundle's model.pt"


def unwrap_state_dict(payload: Any, source: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The parameter dict inside ``payload`` (a state dict, or one nested under `WRAPPER_KEYS`).

    Args:
        payload: what ``torch.load`` returned.
        source: the file, for the message.

    Returns:
        ``{name: tensor}`` with a ``module.`` prefix (DataParallel) removed from every name.

    Raises:
        InvalidInputError: no dict of tensors found.

    Examples:
        >>> unwrap_state_dict({"model": {"module.w": torch.zeros(1)}}, "x.pt").keys()
        dict_keys(['w'])
    """
    state = payload
    if isinstance(payload, Mapping):
        nested = [key for key in WRAPPER_KEYS if isinstance(payload.get(key), Mapping)]
        state = payload[nested[0]] if nested else payload
    if not isinstance(state, Mapping) or not state or not all(torch.is_tensor(v) for v in state.values()):
        kind = type(state).__name__ if not isinstance(state, Mapping) else "a dict not only of tensors"
        msg = f"weights {source} hold {kind}: expected {_EXPECTED}"
        raise InvalidInputError(msg)
    if all(str(k).startswith("module.") for k in state):
        return {str(k)[len("module.") :]: v for k, v in state.items()}
    return {str(k): v for k, v in state.items()}


def match_state_dict(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    *,
    source: str | os.PathLike,
    network: str,
) -> None:
    """Raise one line naming every mismatch unless ``state`` has exactly ``expected``'s names and shapes.

    Args:
        state: the loaded ``{name: tensor}``.
        expected: the run's network's ``state_dict()``.
        source: the file, for the message.
        network: the network's name, for the message.

    Raises:
        InvalidInputError: missing, unexpected or reshaped keys (the first few of each, with counts).

    Examples:
        >>> try:
        ...     match_state_dict({"a": torch.zeros(2)}, {"a": torch.zeros(3)}, source="w.pt", network="unet")
        ... except InvalidInputError as error:
        ...     print(str(error)[:72])
        weights w.pt do not fit this unet network: 1 of another shape (a (2,) !=
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    parts = [
        f"{len(keys)} {what} ({', '.join(keys[:_SHOWN])}{', ...' if len(keys) > _SHOWN else ''})"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped))
        if keys
    ]
    if parts:
        msg = (
            f"weights {source} do not fit this {network} network: {'; '.join(parts)};"
            " expected the keys and shapes of a network with the same network settings and classes"
        )
        raise InvalidInputError(msg)


def read_initial_weights(
    path: str | os.PathLike,
    config: TrainConfig,
    *,
    n_classes: int,
    in_channels: int = 1,
    map_location: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """The weights a run of ``config`` starts from, checked against the network it builds.

    Args:
        path: a segloop checkpoint (its best weights), a plain state dict, or a bundle's ``model.pt``.
        config: the run's config (its network settings build the network the keys are matched to).
        n_classes: output classes of the run, background included.
        in_channels: image channels of the run.
        map_location: where tensors are loaded.

    Returns:
        ``{name: tensor}`` for ``network.load_state_dict``.

    Raises:
        NotFoundError: no file.
        CorruptFileError: not a PyTorch file of plain tensors.
        InvalidInputError: another architecture or class count (one line naming the keys).
    """
    payload = load_torch_file(path, map_location=map_location, expected=_EXPECTED)
    if isinstance(payload, Mapping) and payload.get("format") == CHECKPOINT_FORMAT:
        return read_weights(
            path, config, n_classes=n_classes, in_channels=in_channels, map_location=map_location
        )["best_state"]
    state = unwrap_state_dict(payload, path)
    expected = build_network(config, in_channels, n_classes).state_dict()
    match_state_dict(state, expected, source=path, network=config.network)
    return state
