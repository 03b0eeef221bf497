"""Class-balanced sampling, spatial augmentation and the averaging of the last epochs' weights."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from segloop.engine.checkpoint import read_checkpoint
from segloop.engine.data import PatchSampler, prepare_case, spatial_transform
from segloop.engine.networks import average_states
from segloop.engine.train import train
from segloop.errors import InvalidInputError
from tests.engine.conftest import N_CLASSES, tiny_config


def _sampler(cases, **changes) -> PatchSampler:
    config = tiny_config(**changes)
    prepared = [prepare_case(c, config, N_CLASSES) for c in cases]
    return PatchSampler(prepared, config, n_classes=N_CLASSES, patch_size=(16, 16), slice_axis=2, seed=0)


def test_foreground_centres_are_balanced_over_classes_not_voxels(cases):
    """The phantom's classes hold 397, 69, 31 and 30 voxels; centres fall on each about equally."""
    sampler = _sampler(cases[:1], foreground_ratio=1.0)
    labels = cases[0].labels
    counts = Counter(int(labels[sampler._centre(sampler.cases[0])]) for _ in range(4000))
    assert set(counts) == {1, 2, 3, 4}
    assert all(abs(n / 4000 - 0.25) < 0.03 for n in counts.values()), counts
    background = _sampler(cases[:1], foreground_ratio=0.0)
    uniform = Counter(int(labels[background._centre(background.cases[0])]) for _ in range(2000))
    assert uniform[0] / 2000 > 0.9  # uniform over voxels: mostly background


def test_identity_transform_changes_nothing():
    images = torch.rand(2, 3, 8, 12)
    labels = torch.randint(0, 5, (2, 8, 12))
    moved, moved_labels = spatial_transform(
        images, labels, [0.0, 0.0], [1.0, 1.0], pad_values=torch.zeros(2), ignore_index=5
    )
    torch.testing.assert_close(moved, images, atol=1e-5, rtol=0)
    assert torch.equal(moved_labels, labels)


def test_a_quarter_turn_is_a_quarter_turn_and_labels_stay_labels():
    images = torch.rand(1, 1, 8, 8)
    labels = torch.randint(0, 6, (1, 8, 8))  # 5 = ignore among them: ignore stays ignore
    moved, moved_labels = spatial_transform(
        images, labels, [90.0], [1.0], pad_values=torch.zeros(1), ignore_index=5
    )
    turned = [k for k in (1, 3) if torch.equal(moved_labels, torch.rot90(labels, k, (1, 2)))]
    assert turned, "a 90 degree rotation of a square patch moves every voxel to a voxel"
    torch.testing.assert_close(moved, torch.rot90(images, turned[0], (2, 3)), atol=1e-5, rtol=0)


def test_three_dimensional_rotation_acts_in_the_given_plane():
    labels = torch.randint(0, 4, (1, 6, 6, 3))
    _, moved = spatial_transform(
        torch.rand(1, 1, 6, 6, 3),
        labels,
        [90.0],
        [1.0],
        pad_values=torch.zeros(1),
        ignore_index=9,
        plane=(0, 1),
    )
    assert any(torch.equal(moved, torch.rot90(labels, k, (1, 2))) for k in (1, 3))


def test_zooming_out_pads_with_the_pad_value_and_ignore():
    images = torch.ones(1, 1, 16, 16)
    labels = torch.ones(1, 16, 16, dtype=torch.long)
    moved, moved_labels = spatial_transform(
        images, labels, [10.0], [0.85], pad_values=torch.tensor([-2.0]), ignore_index=7
    )
    outside = moved_labels == 7
    assert 0 < int(outside.sum()) < 16 * 16 // 2
    assert set(torch.unique(moved_labels).tolist()) == {1, 7}
    assert float(moved[0, 0][outside[0]].max()) < 0.0  # padding (interpolated toward -2)
    assert float(moved[0, 0, 8, 8]) == pytest.approx(1.0)


def test_spatially_augmented_batches_keep_valid_labels_and_ignore(cases):
    sparse = []
    for case in cases:
        labels = case.labels.copy()
        labels[:, :, ::2] = N_CLASSES  # every other slice ignored
        sparse.append(type(case)(case.case_id, case.image, labels, case.spacing))
    plain_images, plain_labels = _sampler(sparse, spatial_augmentation=0.0, batch_size=16).sample()
    images, labels = _sampler(sparse, spatial_augmentation=1.0, batch_size=16).sample()
    assert images.shape == plain_images.shape and labels.dtype == torch.int64
    assert set(torch.unique(labels).tolist()) <= set(range(N_CLASSES + 1))
    assert not torch.equal(labels, plain_labels)
    # the same samples are drawn (rotation draws come after the samples'): only their geometry differs
    assert torch.equal((labels == N_CLASSES).all(-1).all(-1), (plain_labels == N_CLASSES).all(-1).all(-1))
    with pytest.raises(InvalidInputError, match="spatial_augmentation"):
        tiny_config(spatial_augmentation=1.5)


def test_average_states_is_the_mean_and_keeps_counters():
    states = [
        {"w": torch.tensor([1.0, 4.0]), "n": torch.tensor(3)},
        {"w": torch.tensor([3.0, 8.0]), "n": torch.tensor(5)},
    ]
    mean = average_states(states)
    assert mean["w"].tolist() == [2.0, 6.0] and int(mean["n"]) == 5
    with pytest.raises(InvalidInputError, match="at least one"):
        average_states([])


class _StopError(Exception):
    """Ends a run right after its first epoch's checkpoint."""


def _stop_after_first_epoch(event: dict) -> None:
    if event["phase"] == "epoch":
        raise _StopError


def test_training_keeps_the_average_of_the_last_epochs(cases, tmp_path):
    def run(name: str, average_last: int, on_progress=None) -> dict:
        config = tiny_config(epochs=2, average_last=average_last)
        path = tmp_path / f"{name}.pt"
        train(config, cases, n_classes=N_CLASSES, device="cpu", checkpoint_path=path, on_progress=on_progress)
        return read_checkpoint(path)

    with pytest.raises(_StopError):
        run("first", 1, _stop_after_first_epoch)
    first = read_checkpoint(tmp_path / "first.pt")  # the weights after epoch 1 of 2
    second, averaged = run("second", 1), run("averaged", 2)
    assert averaged["config"]["average_last"] == 2
    for name, value in averaged["best_state"].items():
        if value.is_floating_point():
            expected = (first["model_state"][name] + second["model_state"][name]) / 2
            torch.testing.assert_close(value, expected, atol=1e-5, rtol=0, msg=name)
        else:
            assert torch.equal(value, second["model_state"][name])
    for name, value in averaged["model_state"].items():  # training itself goes on unaveraged
        torch.testing.assert_close(value, second["model_state"][name], atol=0, rtol=0, msg=name)
