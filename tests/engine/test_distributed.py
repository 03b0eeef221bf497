"""Training with 2 gloo processes on the CPU follows training with one (torch.distributed, DDP).

The runs compare on the same samples: ``batch_size`` is the global batch, each rank reads its half
of what one process draws, and the loss adds its sums over the ranks before dividing. What stays
per rank is kept out of the config: instance norm (per-sample statistics; batch norm on the CPU
would normalise each rank's half with its own statistics) and no dropout (masks drawn per rank).
"""

from __future__ import annotations

import pytest
import torch

from segloop.engine.checkpoint import read_checkpoint
from segloop.engine.distributed import Group, check_nproc, current_group
from segloop.engine.train import train
from segloop.errors import InvalidInputError
from tests.engine.conftest import N_CLASSES, tiny_config

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")

CONFIG = tiny_config(norm="instance", batch_size=4, epochs=2, steps_per_epoch=2)


class KilledError(Exception):
    """Stands for a kill in the middle of a run."""


def _compared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights whose gradient is not zero by construction.

    A convolution's bias followed by instance norm (its ``adn`` unit) is subtracted again with the
    channel mean: its true gradient is 0 and its computed one float rounding, which AdamW divides
    by its own square root, so these biases wander by up to the learning rate per step in any run
    whose sums are added in another order. They never change the network's output.
    """
    return {
        name: value
        for name, value in state.items()
        if not (name.endswith("conv.bias") and name.replace("conv.bias", "adn.A.weight") in state)
    }


def _assert_same_weights(a_path, b_path) -> None:
    a, b = (_compared(read_checkpoint(p)["model_state"]) for p in (a_path, b_path))
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=0, msg=name)


def _one_process(cases, val_case, path):
    return train(CONFIG, cases, [val_case], n_classes=N_CLASSES, device="cpu", checkpoint_path=path)


@pytest.mark.slow
def test_two_processes_train_the_weights_of_one_process(cases, val_case, tmp_path):
    one = _one_process(cases, val_case, tmp_path / "one.pt")
    events: list[dict] = []
    two = train(
        CONFIG,
        cases,
        [val_case],
        n_classes=N_CLASSES,
        device="cpu",
        checkpoint_path=tmp_path / "two.pt",
        on_progress=events.append,
        nproc=2,
    )
    _assert_same_weights(tmp_path / "one.pt", tmp_path / "two.pt")
    assert (two.epochs, two.steps, two.config) == (one.epochs, one.steps, one.config)
    assert two.stopped_by == "epochs"
    assert [h["loss"] for h in two.history] == pytest.approx([h["loss"] for h in one.history], abs=1e-6)
    assert two.best_metric == pytest.approx(one.best_metric, abs=1e-4)  # validated on rank 0, shared
    # rank 0 alone reports, each step once: the events of one process
    assert [e["phase"] for e in events] == ["train", "train", "epoch", "train", "train", "epoch"]
    assert [e["step"] for e in events] == [1, 2, 2, 3, 4, 4]
    assert read_checkpoint(tmp_path / "two.pt")["finished"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.pt", "two.pt"]  # one writer, no temp file
    assert current_group() == Group()  # the caller stays out of the workers' group


@pytest.mark.slow
def test_a_killed_run_resumes_on_two_processes_where_it_stopped(cases, val_case, tmp_path):
    _one_process(cases, val_case, tmp_path / "whole.pt")

    def kill_in_second_epoch(event):
        if event["phase"] == "train" and event["epoch"] == 1:
            raise KilledError

    with pytest.raises(KilledError):
        train(
            CONFIG,
            cases,
            [val_case],
            n_classes=N_CLASSES,
            device="cpu",
            checkpoint_path=tmp_path / "killed.pt",
            on_progress=kill_in_second_epoch,
        )
    assert read_checkpoint(tmp_path / "killed.pt")["epoch"] == 1  # every rank loads this one
    resumed = train(
        CONFIG,
        cases,
        [val_case],
        n_classes=N_CLASSES,
        device="cpu",
        checkpoint_path=tmp_path / "killed.pt",
        resume=True,
        nproc=2,
    )
    assert (resumed.epochs, resumed.steps) == (2, 4)
    _assert_same_weights(tmp_path / "whole.pt", tmp_path / "killed.pt")


@pytest.mark.parametrize(
    ("nproc", "device", "cases", "batch", "expected"),
    [
        (0, "cpu", 3, 4, "expected a whole number of processes >= 1"),
        (3, "cpu", 2, 6, "3 processes for 2 training cases"),
        (2, "cpu", 3, 5, "a batch of 5 does not split over 2 processes"),
        (2, "cuda:0", 3, 4, "expected device cuda (one GPU per process) or cpu"),
        (2, "meta", 3, 4, "expected cpu or cuda"),
    ],
)
def test_a_process_count_the_run_cannot_use_is_one_line(nproc, device, cases, batch, expected):
    with pytest.raises(InvalidInputError, match=expected.replace("(", r"\(").replace(")", r"\)")) as error:
        check_nproc(nproc, torch.device(device), cases=cases, batch_size=batch)
    assert "\n" not in str(error.value)


@pytest.mark.skipif(torch.cuda.device_count() > 1, reason="needs fewer than 2 GPUs")
def test_more_processes_than_gpus_are_refused():
    with pytest.raises(InvalidInputError, match=f"2 processes on {torch.cuda.device_count()} GPUs"):
        check_nproc(2, torch.device("cuda"), cases=3, batch_size=4)


def test_one_process_is_a_group_of_one(cases, tmp_path):
    with pytest.raises(InvalidInputError, match="nproc=0"):
        train(CONFIG, cases, n_classes=N_CLASSES, device="cpu", checkpoint_path=tmp_path / "a.pt", nproc=0)
    assert not (tmp_path / "a.pt").exists()


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        (
            {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "29500"},
            (1, 2),
        ),
        (
            {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "29500"},
            None,
        ),
        (
            {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h"},
            None,
        ),  # no port: not launched
    ],
)
def test_a_launcher_is_recognised_by_its_environment(monkeypatch, environment, expected):
    from segloop.engine.distributed import LAUNCH_VARIABLES, launched_rank, launched_size

    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert (None if launched_size() is None else (launched_rank(), launched_size())) == expected
