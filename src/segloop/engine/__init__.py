"""The learning engine (torch + MONAI): networks, data with the ignore label, train, predict, evaluate.

Importing ``segloop.engine`` is cheap: torch and MONAI load on first use of a name below, so the
rest of segloop can hold a reference to the engine without paying for torch at start-up.
`TrainConfig` and `InferConfig` never import torch.

Modules: `config` (settings), `networks` (name -> MONAI constructor), `data` (cases, normalisation,
resampling, sampler), `losses` (Dice + CE with ignore), `train`, `infer` (predict, load_model),
`uncertainty` (entropy, disagreement), `evaluate` (Dice, HD95, surface Dice), `checkpoint`,
`device`.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# OpenMP threads that spin while waiting for each other slow down about 5x (measured here) as soon
# as another process takes a core, which is the normal case on a shared 2-core machine; passive
# waiting avoids that. It must be set before torch loads its OpenMP runtime (a user's value wins).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = [
    "Case",
    "InferConfig",
    "Prediction",
    "TrainConfig",
    "TrainResult",
    "TrainedModel",
    "build_network",
    "dice_ce_loss",
    "disagreement",
    "evaluate_labels",
    "load_model",
    "predict",
    "resolve_device",
    "train",
    "voxel_entropy",
]

_HOMES = {
    "Case": "data",
    "InferConfig": "config",
    "Prediction": "infer",
    "TrainConfig": "config",
    "TrainResult": "train",
    "TrainedModel": "infer",
    "build_network": "networks",
    "dice_ce_loss": "losses",
    "disagreement": "uncertainty",
    "evaluate_labels": "evaluate",
    "load_model": "infer",
    "predict": "infer",
    "resolve_device": "device",
    "train": "train",
    "voxel_entropy": "uncertainty",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
