"""`train`: a plain function assembled from small parts (network, loss, optimiser, sampler).

One run: prepare the cases (resample, index foreground), resolve the slice axis and patch size,
build the network (fresh, from ``init_weights``, or from the checkpoint when resuming), then
epochs of sampled batches -> Dice + CE loss (ignore excluded) -> AdamW with a polynomial
learning-rate decay. After every epoch: 3D Dice per class on the validation cases (ignore
excluded), the best weights kept, and an atomic checkpoint (temp file, fsync, rename) holding
weights, optimiser, RNG states and history, so ``resume=True`` continues after a kill exactly
where the last finished epoch left off.

Stopping: at ``config.epochs`` or when the next step plus the final validation would overrun
``config.time_budget_min`` (measured from the call, validation and checkpoints included; a
resumed run counts the time of the killed one). On CPU the run is deterministic given the seed
when it stops by epochs; with a time budget the step count and learning-rate schedule follow the
wall clock, so two runs differ.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segloop.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    check_compatible,
    read_checkpoint,
    save_checkpoint,
)
from segloop.engine.config import InferConfig, TrainConfig
from segloop.engine.data import (
    Case,
    PatchSampler,
    prepare_case,
    resolve_patch_size,
    resolve_slice_axis,
)
from segloop.engine.device import available_cpu_threads, resolve_device
from segloop.engine.evaluate import dice_per_class
from segloop.engine.infer import predict_mean_probabilities
from segloop.engine.losses import dice_ce_loss
from segloop.engine.networks import build_network, size_divisor
from segloop.errors import SegloopError

__all__ = ["TrainResult", "train"]

#: Config fields a resumed run may change (everything else must match the checkpoint).
RESUMABLE_CHANGES = ("epochs", "time_budget_min", "num_threads")
_IN_CHANNELS = 1
_POLY_EXPONENT = 0.9


@dataclass(frozen=True)
class TrainResult:
    """What a training run did.

    Attributes:
        checkpoint_path: the checkpoint (best weights in ``best_state``; read with `load_model`).
        config: the resolved config (slice axis and patch size filled in).
        epochs: epochs finished (a resumed run counts those before the kill).
        steps: optimiser steps in total.
        best_epoch: epoch (0-based) whose weights were kept; the last one without validation.
        best_metric: mean validation Dice over classes at ``best_epoch``, or None.
        best_dice_per_class: class value -> validation Dice at ``best_epoch`` (NaN: in no case).
        stopped_by: ``"epochs"`` or ``"time"``.
        elapsed_s: wall time of the run in seconds (a resumed run includes the killed one's).
        samples_per_s: training throughput of this call (slices or patches per second, steps only).
        unseen_classes: classes with no voxel in any training case (the network cannot learn them).
        history: one dict per epoch (loss, val_dice, val_dice_per_class, seconds).
    """

    checkpoint_path: Path
    config: TrainConfig
    epochs: int
    steps: int
    best_epoch: int
    best_metric: float | None
    best_dice_per_class: dict[int, float]
    stopped_by: str
    elapsed_s: float
    samples_per_s: float
    unseen_classes: tuple[int, ...]
    history: tuple[dict[str, Any], ...] = field(default_factory=tuple)


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _learning_rate(config: TrainConfig, step: int, total_steps: int | None, elapsed: float) -> float:
    """Polynomial decay over the run: by steps, or by the budget's time fraction when that is later."""
    progress = step / total_steps if total_steps else 0.0
    if config.time_budget_min is not None:
        progress = max(progress, elapsed / (60.0 * config.time_budget_min))
    return config.learning_rate * (1.0 - min(progress, 1.0)) ** _POLY_EXPONENT


def _default_steps_per_epoch(config: TrainConfig, prepared: Sequence, slice_axis: int) -> int:
    if config.steps_per_epoch is not None:
        return config.steps_per_epoch
    if config.dims == 2:
        samples = sum(
            round(p.case.image.shape[slice_axis] * max(p.annotated_fraction, 1e-3)) or 1 for p in prepared
        )
    else:
        samples = 4 * len(prepared)
    return max(1, math.ceil(samples / config.batch_size))


def _validate(
    network: torch.nn.Module,
    cases: Sequence[Case],
    config: TrainConfig,
    n_classes: int,
    device: torch.device,
) -> tuple[float | None, dict[int, float]]:
    """Mean over classes of the per-class Dice averaged over cases (NaN cases skipped).

    3D validation uses non-overlapping windows: about 3x cheaper than the default overlap of the
    final prediction, and good enough to pick the best epoch.
    """
    if config.dims == 2:
        infer_config = InferConfig(batch_size=max(config.batch_size, 8))
    else:
        infer_config = InferConfig(batch_size=max(config.batch_size, 2), overlap=0.0)
    scores = []
    for case in cases:
        probabilities, _, _ = predict_mean_probabilities(
            network, case.image, case.spacing, config, infer_config, device=device, n_classes=n_classes
        )
        labels = probabilities.argmax(0).numpy()
        scores.append(dice_per_class(labels, case.labels, n_classes))  # type: ignore[arg-type]
    table = np.asarray(scores, dtype=np.float64)
    per_class = {}
    for index in range(n_classes - 1):
        column = table[:, index]
        per_class[index + 1] = (
            float(np.mean(column[~np.isnan(column)])) if np.any(~np.isnan(column)) else math.nan
        )
    values = [v for v in per_class.values() if not math.isnan(v)]
    return (float(np.mean(values)) if values else None), per_class


def _check_cases(train_cases: Sequence[Case], val_cases: Sequence[Case], n_classes: int) -> None:
    if not train_cases:
        msg = "no labelled training cases: label at least one case (or pass cases with labels)"
        raise SegloopError(msg)
    if n_classes < 2:
        msg = f"n_classes counts background too and must be >= 2; got {n_classes}"
        raise SegloopError(msg)
    for case in val_cases:
        if case.labels is None:
            msg = f"validation case {case.case_id} has no labels: validation needs labelled cases"
            raise SegloopError(msg)


def _check_resumable(payload: dict[str, Any], config: TrainConfig, source: Path) -> None:
    theirs = payload["requested_config"]
    ours = config.to_dict()
    differences = [k for k in ours if k not in RESUMABLE_CHANGES and theirs.get(k) != ours[k]]
    if differences:
        shown = "; ".join(f"{k} {theirs.get(k)!r} != {ours[k]!r}" for k in differences[:4])
        msg = (
            f"cannot resume {source}: it was written with other settings ({shown});"
            " resume with the same settings or start a new run (no --resume)"
        )
        raise SegloopError(msg)


def train(
    config: TrainConfig,
    train_cases: Sequence[Case],
    val_cases: Sequence[Case] = (),
    *,
    n_classes: int,
    device: str | torch.device = "auto",
    checkpoint_path: str | os.PathLike,
    init_weights: str | os.PathLike | None = None,
    resume: bool = False,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a segmentation network on labelled cases (ignore voxels teach nothing).

    Args:
        config: the `TrainConfig`.
        train_cases: cases with labels in ``0..n_classes-1`` and ``n_classes`` for ignore.
        val_cases: labelled cases scored after every epoch (3D Dice per class); may be empty.
        n_classes: output classes including background (a schema of N classes: N + 1, so the
            ignore value is ``n_classes`` = `LabelSchema.ignore_index`).
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        checkpoint_path: where the checkpoint is written after every epoch (atomically).
        init_weights: a segloop checkpoint to start from (continual training); its architecture
            and classes must match.
        resume: continue the run in ``checkpoint_path`` if it exists (same settings, except
            `RESUMABLE_CHANGES`); start fresh when there is none yet.
        on_progress: called with a dict after every step (``phase="train"``) and epoch
            (``phase="epoch"``, after its checkpoint): epoch (0-based index of the epoch running or
            just finished), epochs, step (optimiser steps so far), epoch_step, steps_per_epoch, loss
            (this step's, or the epoch's mean), lr, val_dice, best_dice, elapsed_s, eta_s (None
            until the first step is timed).

    Returns:
        A `TrainResult`.

    Raises:
        SegloopError: no training cases or no annotated foreground at all, CUDA asked for
            without a GPU, incompatible ``init_weights`` or a checkpoint written with other settings.
    """
    started = time.perf_counter()
    target = resolve_device(device)
    _check_cases(train_cases, val_cases, n_classes)
    checkpoint_path = Path(checkpoint_path)
    threads = config.num_threads or available_cpu_threads()
    with _torch_threads(threads):
        prepared = [
            prepare_case(case, config, n_classes, seed=config.seed + i) for i, case in enumerate(train_cases)
        ]
        seen = set().union(*(p.foreground for p in prepared))
        if not seen:
            msg = (
                f"no training case holds a voxel of any class 1..{n_classes - 1}:"
                " annotate some foreground before training"
            )
            raise SegloopError(msg)
        unseen = tuple(c for c in range(1, n_classes) if c not in seen)
        slice_axis = resolve_slice_axis(config, [p.case.spacing for p in prepared])
        patch_size = resolve_patch_size(
            config, [p.case.image.shape for p in prepared], slice_axis, size_divisor(config)
        )
        resolved = config.replace(slice_axis=slice_axis, patch_size=patch_size)

        torch.manual_seed(config.seed)
        network = build_network(resolved, _IN_CHANNELS, n_classes).to(target)
        optimizer = torch.optim.AdamW(
            network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        use_amp = config.amp and target.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        sampler = PatchSampler(
            prepared,
            resolved,
            n_classes=n_classes,
            patch_size=patch_size,
            slice_axis=slice_axis,
            seed=config.seed,
        )
        steps_per_epoch = _default_steps_per_epoch(resolved, prepared, slice_axis)
        total_steps = steps_per_epoch * config.epochs if config.epochs is not None else None

        epoch, step, elapsed_before = 0, 0, 0.0
        history: list[dict[str, Any]] = []
        best_metric: float | None = None
        best_epoch, best_per_class = -1, {}
        best_state: dict[str, torch.Tensor] | None = None
        if resume and checkpoint_path.exists():
            payload = read_checkpoint(checkpoint_path, map_location=target)
            check_compatible(
                payload, resolved, in_channels=_IN_CHANNELS, n_classes=n_classes, source=checkpoint_path
            )
            _check_resumable(payload, config, checkpoint_path)
            network.load_state_dict(payload["model_state"])
            optimizer.load_state_dict(payload["optimizer_state"])
            if use_amp and payload.get("scaler_state"):
                scaler.load_state_dict(payload["scaler_state"])
            torch.set_rng_state(payload["rng"]["torch"].cpu())
            if target.type == "cuda" and payload["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state_all([s.cpu() for s in payload["rng"]["cuda"]])
            sampler.set_state(payload["rng"]["sampler"])
            epoch, step, elapsed_before = (
                int(payload["epoch"]),
                int(payload["step"]),
                float(payload["elapsed_s"]),
            )
            history = list(payload["history"])
            best_metric, best_epoch = payload["best_metric"], int(payload["best_epoch"])
            best_per_class = {int(k): float(v) for k, v in payload["best_dice_per_class"].items()}
            best_state = payload["best_state"]
        elif init_weights is not None:
            payload = read_checkpoint(init_weights, map_location=target)
            check_compatible(
                payload, resolved, in_channels=_IN_CHANNELS, n_classes=n_classes, source=init_weights
            )
            network.load_state_dict(payload["best_state"])

        def elapsed() -> float:
            return elapsed_before + time.perf_counter() - started

        budget_s = None if config.time_budget_min is None else 60.0 * config.time_budget_min
        step_time = None  # seconds per optimiser step (moving average)
        val_time = None  # seconds per validation (last measured)
        samples_run, train_seconds = 0, 0.0
        stopped_by = "epochs"
        last_loss = math.nan
        val_dice: float | None = history[-1]["val_dice"] if history else None

        def eta() -> float | None:
            if step_time is None:
                return None
            left = []
            if total_steps is not None:
                val_left = (config.epochs - epoch) * (val_time or 0.0) if val_cases else 0.0
                left.append(max(total_steps - step, 0) * step_time + val_left)
            if budget_s is not None:
                left.append(max(budget_s - elapsed(), 0.0))
            return min(left) if left else None

        def report(phase: str, epoch_index: int, epoch_step: int, loss: float) -> None:
            if on_progress is None:
                return
            on_progress(
                {
                    "phase": phase,
                    "epoch": epoch_index,
                    "epochs": config.epochs,
                    "step": step,
                    "epoch_step": epoch_step,
                    "steps_per_epoch": steps_per_epoch,
                    "loss": loss,
                    "lr": optimizer.param_groups[0]["lr"],
                    "val_dice": val_dice,
                    "best_dice": best_metric,
                    "elapsed_s": elapsed(),
                    "eta_s": eta(),
                }
            )

        def estimate_validation() -> float:
            if not val_cases:
                return 0.0
            if val_time is not None:
                return val_time
            # before the first validation: a forward pass (with softmax and accumulation) costs
            # about half a training step per sample on CPU
            per_sample = (step_time or 0.0) / config.batch_size / 2.0
            if resolved.dims == 2:
                samples = sum(c.image.shape[slice_axis] for c in val_cases)
            else:
                windows = [np.ceil(np.asarray(c.image.shape) / np.asarray(patch_size)) for c in val_cases]
                samples = float(sum(np.prod(w) for w in windows))
            return float(samples * per_sample * 1.5 + 1.0)

        while config.epochs is None or epoch < config.epochs:
            network.train()
            epoch_losses = []
            epoch_started = time.perf_counter()
            out_of_time = False
            for epoch_step in range(steps_per_epoch):
                budget_left = None if budget_s is None else budget_s - elapsed()
                if budget_left is not None and step_time is not None:
                    out_of_time = step_time + estimate_validation() + 1.0 > budget_left
                if out_of_time:
                    break
                tick = time.perf_counter()
                for group in optimizer.param_groups:
                    group["lr"] = _learning_rate(config, step, total_steps, elapsed())
                images, labels = sampler.sample()
                images, labels = images.to(target, non_blocking=True), labels.to(target, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext():
                    logits = network(images)
                loss = dice_ce_loss(logits, labels, ignore_index=n_classes)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                last_loss = float(loss.detach())
                epoch_losses.append(last_loss)
                step += 1
                seconds = time.perf_counter() - tick
                step_time = seconds if step_time is None else 0.9 * step_time + 0.1 * seconds
                samples_run += images.shape[0]
                train_seconds += seconds
                report("train", epoch, epoch_step + 1, last_loss)
            if not epoch_losses:  # the budget was spent before this epoch could start
                stopped_by = "time"
                break
            tick = time.perf_counter()
            per_class: dict[int, float] = {}
            if val_cases:
                val_dice, per_class = _validate(network, val_cases, resolved, n_classes, target)
                val_time = time.perf_counter() - tick
            improved = best_state is None or (
                val_dice is not None and (best_metric is None or val_dice > best_metric)
            )
            if not val_cases or improved:
                best_metric, best_epoch, best_per_class = val_dice, epoch, per_class
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()}
            history.append(
                {
                    "epoch": epoch,
                    "loss": float(np.mean(epoch_losses)),
                    "steps": len(epoch_losses),
                    "val_dice": val_dice,
                    "val_dice_per_class": {str(k): v for k, v in per_class.items()},
                    "seconds": time.perf_counter() - epoch_started,
                    "validation_seconds": val_time,
                }
            )
            epoch += 1
            finished = out_of_time or (config.epochs is not None and epoch >= config.epochs)
            _write(
                checkpoint_path,
                resolved,
                config,
                n_classes,
                network,
                best_state,
                optimizer,
                scaler if use_amp else None,
                sampler,
                target,
                epoch=epoch,
                step=step,
                elapsed_s=elapsed(),
                best_metric=best_metric,
                best_epoch=best_epoch,
                best_per_class=best_per_class,
                history=history,
                finished=finished,
            )
            report("epoch", epoch - 1, len(epoch_losses), float(np.mean(epoch_losses)))
            if out_of_time:
                stopped_by = "time"
                break
            if (
                budget_s is not None
                and elapsed() + (step_time or 0.0) + estimate_validation() + 1.0 > budget_s
            ):
                stopped_by = "time"
                if not finished:
                    _mark_finished(checkpoint_path)
                break
        if best_state is None:
            msg = (
                f"the time budget ({config.time_budget_min} min) ended before one training step:"
                " raise time_budget_min or lower the work per step"
            )
            raise SegloopError(msg)
    return TrainResult(
        checkpoint_path=checkpoint_path,
        config=resolved,
        epochs=epoch,
        steps=step,
        best_epoch=best_epoch,
        best_metric=best_metric,
        best_dice_per_class=dict(best_per_class),
        stopped_by=stopped_by,
        elapsed_s=elapsed(),
        samples_per_s=samples_run / train_seconds if train_seconds else 0.0,
        unseen_classes=unseen,
        history=tuple(history),
    )


def _write(
    path: Path,
    resolved: TrainConfig,
    requested: TrainConfig,
    n_classes: int,
    network: torch.nn.Module,
    best_state: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    sampler: PatchSampler,
    device: torch.device,
    **progress: Any,
) -> None:
    """The checkpoint of the state after an epoch (layout in `segloop.engine.checkpoint`)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": resolved.to_dict(),
        "requested_config": requested.to_dict(),
        "in_channels": _IN_CHANNELS,
        "n_classes": n_classes,
        "model_state": {k: v.detach().cpu() for k, v in network.state_dict().items()},
        "best_state": best_state,
        "optimizer_state": optimizer.state_dict(),
        "scaler_state": scaler.state_dict() if scaler is not None else None,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None,
            "sampler": sampler.state,
        },
        "epoch": progress["epoch"],
        "step": progress["step"],
        "elapsed_s": progress["elapsed_s"],
        "best_metric": progress["best_metric"],
        "best_epoch": progress["best_epoch"],
        "best_dice_per_class": {str(k): v for k, v in progress["best_per_class"].items()},
        "history": progress["history"],
        "finished": progress["finished"],
    }
    save_checkpoint(path, payload)


def _mark_finished(path: Path) -> None:
    payload = read_checkpoint(path)
    payload["finished"] = True
    save_checkpoint(path, payload)
