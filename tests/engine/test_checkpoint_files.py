"""Checkpoint files that are not what they claim: one `CorruptFileError`, never another exception."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segloop.engine.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, read_checkpoint, save_checkpoint
from segloop.errors import CorruptFileError


@pytest.fixture
def checkpoint(tmp_path):
    network = torch.nn.Conv2d(1, 3, 3)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": {"dims": 2},
        "in_channels": 1,
        "n_classes": 3,
        "model_state": network.state_dict(),
        "best_state": network.state_dict(),
        "epoch": 1,
        "history": [{"epoch": 0, "loss": 1.0}],
    }
    path = tmp_path / "good.pt"
    save_checkpoint(path, payload)
    return path


def test_a_complete_checkpoint_reads_back(checkpoint):
    assert read_checkpoint(checkpoint)["n_classes"] == 3


def test_truncated_and_random_files_are_corrupt_files(checkpoint, tmp_path):
    data = checkpoint.read_bytes()
    rng = np.random.default_rng(0)
    variants = [data[:n] for n in rng.integers(0, len(data), 25)]
    variants += [rng.bytes(int(n)) for n in rng.integers(1, 400, 25)]
    variants += [b"hello\n", b"\x80\x02}q\x00.", b""]
    bad = tmp_path / "bad.pt"
    for content in variants:
        bad.write_bytes(content)
        with pytest.raises(CorruptFileError, match="segloop") as caught:
            read_checkpoint(bad)
        assert "\n" not in str(caught.value) and "weights_only" not in str(caught.value)


def test_a_checkpoint_missing_its_keys_is_refused(tmp_path):
    path = tmp_path / "half.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "n_classes": "3"}, path)
    with pytest.raises(CorruptFileError, match="lacks config, in_channels, n_classes, model_state"):
        read_checkpoint(path)
