"""Uncertainty maps from softmax probabilities (pure: arrays or tensors in, new ones out).

Each function takes a ``numpy.ndarray`` or a ``torch.Tensor`` and returns the same kind, in
float32 (the caller decides whether to store float16). Inputs are never modified.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["disagreement", "voxel_entropy"]


def _as_tensor(values: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, bool]:
    if isinstance(values, torch.Tensor):
        return values.float(), False
    return torch.from_numpy(np.asarray(values, dtype=np.float32)), True


def _back(values: torch.Tensor, was_numpy: bool) -> np.ndarray | torch.Tensor:
    return values.numpy() if was_numpy else values


def voxel_entropy(probabilities: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Shannon entropy of the class distribution per voxel, divided by ``log C`` (so in [0, 1]).

    Args:
        probabilities: ``(C, *spatial)`` softmax probabilities (summing to 1 over C), C >= 2.

    Returns:
        ``(*spatial)`` float32: 0 where one class has probability 1, 1 where all are equal.

    Examples:
        >>> voxel_entropy(np.array([[1.0, 0.5], [0.0, 0.5]])).round(3).tolist()
        [0.0, 1.0]
    """
    p, was_numpy = _as_tensor(probabilities)
    n_classes = p.shape[0]
    # class by class: about 2x faster than one (C, ...) xlogy and a sum over C on a CPU
    entropy = torch.special.xlogy(p[0], p[0])
    for c in range(1, n_classes):
        entropy += torch.special.xlogy(p[c], p[c])
    entropy.mul_(-1.0 / math.log(n_classes))
    return _back(entropy.clamp_(0.0, 1.0).add_(0.0), was_numpy)  # add 0: no -0.0


def disagreement(samples: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Standard deviation over samples (TTA flips, MC-dropout passes), averaged over classes.

    Args:
        samples: ``(S, C, *spatial)`` probabilities of S passes.

    Returns:
        ``(*spatial)`` float32, 0 where every pass agrees (population std, 0 for S = 1).

    Examples:
        >>> disagreement(np.array([[[1.0], [0.0]], [[0.0], [1.0]]])).tolist()
        [0.5]
    """
    s, was_numpy = _as_tensor(samples)
    return _back(s.std(dim=0, correction=0).mean(0), was_numpy)
