"""bfloat16 autocast on a CPU: only where the CPU has it natively, and training and prediction run in it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segloop.engine import device as device_module
from segloop.engine.device import autocast
from segloop.engine.infer import load_model, predict
from segloop.engine.train import train
from tests.engine.conftest import N_CLASSES, tiny_config

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("native", "asked", "expected"), [(True, True, True), (False, True, False), (True, False, False)]
)
def test_cpu_bfloat16_autocast_only_when_asked_and_native(monkeypatch, native, asked, expected):
    monkeypatch.setattr(device_module, "cpu_has_native_bfloat16", lambda: native)
    with autocast(CPU, cuda_float16=True, cpu_bfloat16=asked):
        assert torch.is_autocast_enabled("cpu") is expected
        out = torch.nn.Linear(4, 2)(torch.ones(1, 4))
    assert out.dtype == (torch.bfloat16 if expected else torch.float32)
    assert not torch.is_autocast_enabled("cpu")


def test_training_and_prediction_run_in_bfloat16_and_give_float32_probabilities(
    monkeypatch, cases, val_case, tmp_path
):
    monkeypatch.setattr(device_module, "cpu_has_native_bfloat16", lambda: True)
    seen = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: seen.append(out.dtype) if isinstance(module, torch.nn.Conv2d) else None
    )
    try:
        result = train(
            tiny_config(cpu_bfloat16=True),
            cases,
            [val_case],
            n_classes=N_CLASSES,
            device="cpu",
            checkpoint_path=tmp_path / "model.pt",
        )
        model = load_model(tmp_path / "model.pt", "cpu")
        assert model.config.cpu_bfloat16
        seen.clear()
        prediction = predict(model.network, val_case.image, val_case.spacing, model.config, device="cpu")
    finally:
        hook.remove()
    assert result.best_metric is not None and np.isfinite(result.best_metric)
    assert seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.network.parameters())
    probabilities = np.asarray(prediction.probabilities, dtype=np.float32)
    assert np.allclose(probabilities.sum(axis=0), 1.0, atol=1e-2)
