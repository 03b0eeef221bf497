"""Choosing the torch device (``"auto"`` takes CUDA when there is one, else the CPU) and its precision."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

import torch

from segloop.errors import InvalidInputError

__all__ = ["autocast", "available_cpu_threads", "cpu_has_native_bfloat16", "resolve_device"]


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


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX).

    Without it, bfloat16 convolutions are emulated and slower than float32. torch exposes the test
    only as a private helper, hence the guarded lookup (False when a torch lacks it).
    """
    names = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    probes: list[Callable[[], bool]] = [getattr(torch.cpu, name, lambda: False) for name in names]
    return any(bool(probe()) for probe in probes)


def autocast(
    device: torch.device, *, cuda_float16: bool, cpu_bfloat16: bool
) -> contextlib.AbstractContextManager:
    """The mixed-precision context for forward passes on ``device``.

    Args:
        device: where the network runs.
        cuda_float16: float16 autocast on CUDA (`TrainConfig.amp`; training pairs it with a gradient scaler).
        cpu_bfloat16: bfloat16 autocast on a CPU with native bfloat16 (`TrainConfig.cpu_bfloat16`);
            ignored on a CPU without (see `cpu_has_native_bfloat16`).

    Returns:
        ``torch.autocast`` or a context that changes nothing. Outputs may be bfloat16/float16: cast
        logits to float32 before a softmax or a loss.
    """
    if device.type == "cuda" and cuda_float16:
        return torch.autocast("cuda", dtype=torch.float16)
    if device.type == "cpu" and cpu_bfloat16 and cpu_has_native_bfloat16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
