"""Tiny synthetic cases and configs for the engine tests (CPU, seconds)."""

from __future__ import annotations

import importlib.util

import pytest

from segloop.engine.config import TrainConfig
from segloop.synthetic import make_ct_phantom

# The engine is an optional extra: without torch and MONAI these tests are not collected.
if importlib.util.find_spec("torch") is None or importlib.util.find_spec("monai") is None:
    collect_ignore_glob = ["test_*.py"]

N_CLASSES = 5  # background + the phantom's 4 organs; the ignore value is 5


def phantom_case(seed: int, shape: tuple[int, int, int] = (32, 32, 16)):
    from segloop.engine.data import Case

    phantom = make_ct_phantom(shape, seed=seed)
    return Case(f"case{seed}", phantom.image.array, phantom.labels.array, phantom.image.spacing)


@pytest.fixture(scope="session")
def cases() -> list:
    return [phantom_case(seed) for seed in range(3)]


@pytest.fixture(scope="session")
def val_case():
    return phantom_case(7)


def tiny_config(**changes) -> TrainConfig:
    """A 3-level 2D UNet with 4-16 features: a step takes milliseconds."""
    settings = {
        "features": (4, 8, 16),
        "num_res_units": 1,
        "batch_size": 2,
        "epochs": 2,
        "time_budget_min": None,
        "steps_per_epoch": 2,
        "num_threads": 1,
    }
    settings.update(changes)
    return TrainConfig(**settings)
