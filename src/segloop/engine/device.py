"""Choosing the torch device: ``"auto"`` takes CUDA when there is one, else the CPU."""

from __future__ import annotations

import os

import torch

from segloop.errors import InvalidInputError

__all__ = ["available_cpu_threads", "resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for ``device``.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (or a ``torch.device``).

    Raises:
        InvalidInputError: CUDA asked for but not available, or an unknown name.

    Examples:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            msg = f"device {device!r} asked for, but torch sees no CUDA GPU: use the CPU (device cpu or auto)"
            raise InvalidInputError(msg)
        index = device.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            msg = f"device {device!r} does not exist: expected cuda:0..cuda:{torch.cuda.device_count() - 1}"
            raise InvalidInputError(msg)
        return torch.device(device)
    msg = f"unknown device {device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
    raise InvalidInputError(msg)


def available_cpu_threads() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
