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

Several processes (``nproc``, or a group started by ``torchrun``; `segloop.engine.distributed`)
train one network with DistributedDataParallel. ``batch_size`` stays the *global* batch: each
rank draws the random numbers of the whole batch and reads only its share of it (the union is
what one process draws), the loss adds its sums over the ranks before dividing (the loss of the
whole batch), so a run with N processes follows the run with one up to float rounding, and a
run may be resumed with another process count. Two things still differ per rank: batch-norm
statistics on the CPU (each rank normalises its share; CUDA uses SyncBatchNorm) and dropout
masks. Rank 0 alone validates (its result is broadcast), writes the checkpoint (the others
wait at a barrier) and reports progress; it decides when the time budget ends and broadcasts
that decision before every step, so all ranks run the same steps.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segloop.engine import distributed
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
    CompressedVolume,
    PatchSampler,
    PreparedCase,
    compress_case,
    prepare_case,
    resolve_patch_size,
    resolve_slice_axis,
)
from segloop.engine.device import autocast, available_cpu_threads, resolve_device
from segloop.engine.distributed import Group
from segloop.engine.infer import argmax_classes, predict_mean_probabilities
from segloop.engine.losses import supervised_loss
from segloop.engine.networks import average_states, build_network, size_divisor
from segloop.engine.postprocess import choose_keep_largest, largest_component_scores
from segloop.engine.weights import read_initial_weights
from segloop.errors import ConflictError, InvalidInputError, LabelValueError
from segloop.metrics import dice_per_class

__all__ = ["PreviewSlice", "TrainResult", "train"]

#: Config fields a resumed run may change (everything else must match the checkpoint).
RESUMABLE_CHANGES = ("epochs", "time_budget_min", "num_threads")
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
        samples_per_s: training throughput of this call (slices or patches per second, steps only;
            all processes together).
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


@dataclass(frozen=True)
class PreviewSlice:
    """One slice of the first validation case after an epoch's validation: the live preview.

    Attributes:
        case_id: the validation case.
        axis: the voxel axis the slice is taken along (the 2D slice axis; 3D: the last axis).
        index: the slice's index along ``axis``, the one with most reference foreground.
        image: ``(H, W)`` float32 image values as the case holds them (before normalisation).
        prediction: ``(H, W)`` the epoch's predicted class values.
        reference: ``(H, W)`` the reference class values (``n_classes``: ignore).
        epoch: the epoch (0-based) it shows.
        val_dice: that epoch's mean validation Dice (None: no class scored).
    """

    case_id: str
    axis: int
    index: int
    image: np.ndarray
    prediction: np.ndarray
    reference: np.ndarray
    epoch: int = 0
    val_dice: float | None = None


def _preview_slice(
    case: Case, prediction: np.ndarray, reference: np.ndarray, axis: int, n_classes: int
) -> PreviewSlice:
    """The slice along ``axis`` with the most reference foreground (no forward pass: already predicted)."""
    other = tuple(a for a in range(3) if a != axis)
    index = int(np.argmax(np.count_nonzero((reference > 0) & (reference < n_classes), axis=other)))
    image = np.take(np.asarray(case.image), index, axis=axis).astype(np.float32)
    return PreviewSlice(
        case.case_id,
        axis,
        index,
        image,
        np.take(prediction, index, axis=axis),
        np.take(reference, index, axis=axis),
    )


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
) -> tuple[float | None, dict[int, float], PreviewSlice, tuple[int, ...]]:
    """Mean over classes of the per-class Dice averaged over cases (NaN cases skipped), the
    first case's `PreviewSlice` (cut from the prediction already made: no extra forward pass) and
    the classes that keep their largest component (``config.keep_largest``, or decided on these
    cases with `segloop.engine.postprocess.choose_keep_largest` when it is None).

    3D validation uses non-overlapping windows: about 3x cheaper than the default overlap of the
    final prediction, and good enough to pick the best epoch. Compressed cases are decompressed
    one at a time.
    """
    if config.dims == 2:  # without test-time mirroring: half the time, and good enough to pick the epoch
        infer_config = InferConfig(batch_size=max(config.batch_size, 8), tta_flips=())
    else:
        infer_config = InferConfig(batch_size=max(config.batch_size, 2), overlap=0.0, tta_flips=())
    scores, preview, kept, one_piece = [], None, [], []
    for case in cases:
        probabilities, _, _ = predict_mean_probabilities(
            network,
            np.asarray(case.image),
            case.spacing,
            config,
            infer_config,
            device=device,
            n_classes=n_classes,
        )
        labels = argmax_classes(probabilities).numpy()
        del probabilities
        reference = np.asarray(case.labels)
        scores.append(dice_per_class(labels, reference, n_classes))
        if config.keep_largest is None:
            case_kept, case_one_piece = largest_component_scores(labels, reference, n_classes)
            kept.append(case_kept)
            one_piece.append(case_one_piece)
        if preview is None:
            axis = config.slice_axis if config.dims == 2 and config.slice_axis is not None else 2
            preview = _preview_slice(case, labels, reference, axis, n_classes)
    table = np.asarray(scores, dtype=np.float64)
    per_class = {}
    for index in range(n_classes - 1):
        column = table[:, index]
        per_class[index + 1] = (
            float(np.mean(column[~np.isnan(column)])) if np.any(~np.isnan(column)) else math.nan
        )
    values = [v for v in per_class.values() if not math.isnan(v)]
    mean = float(np.mean(values)) if values else None
    keep_largest = (
        config.keep_largest
        if config.keep_largest is not None
        else choose_keep_largest(table, kept, one_piece)
    )
    return mean, per_class, dataclasses.replace(preview, val_dice=mean), keep_largest  # type: ignore[arg-type]


def _decided(resolved: TrainConfig, progress: _Progress) -> TrainConfig:
    """The resolved config with the best epoch's post-processing decision (when it was left to one)."""
    if resolved.keep_largest is not None:
        return resolved
    return resolved.replace(keep_largest=progress.best_keep_largest)


def _check_cases(train_cases: Sequence[Case], val_cases: Sequence[Case], n_classes: int) -> None:
    if not train_cases:
        msg = "no labelled training cases: label at least one case (or pass cases with labels)"
        raise LabelValueError(msg)
    if n_classes < 2:
        msg = f"n_classes counts background too and must be >= 2; got {n_classes}"
        raise InvalidInputError(msg)
    for case in val_cases:
        if case.labels is None:
            msg = f"validation case {case.case_id} has no labels: validation needs labelled cases"
            raise LabelValueError(msg)


def _check_resumable(payload: dict[str, Any], config: TrainConfig, source: Path) -> None:
    theirs = payload["requested_config"]
    ours = config.to_dict()
    differences = [k for k in ours if k not in RESUMABLE_CHANGES and theirs.get(k) != ours[k]]
    if differences:
        shown = "; ".join(f"{k}: run {theirs.get(k)!r}, asked {ours[k]!r}" for k in differences[:4])
        msg = (
            f"cannot resume {source}: it was written with other settings ({shown});"
            " resume with the same settings or start a new run"
        )
        raise ConflictError(msg)


@dataclass
class _Parts:
    """The pieces one run trains with."""

    network: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None  # only with AMP on CUDA
    sampler: PatchSampler
    device: torch.device
    group: Group = field(default_factory=Group)
    trainer: torch.nn.Module | None = None  # what steps call: the network, or its DDP wrapper
    cpu_bfloat16: bool = False  # bfloat16 autocast on a CPU that has it natively

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of a training batch (through DDP in a group: its gradients are averaged)."""
        return (self.trainer or self.network)(images)


class _WeightWindow:
    """The network to validate and keep: itself, or the mean of its last epochs' weights.

    Args:
        size: `TrainConfig.average_last` (1: no averaging).
    """

    def __init__(self, size: int) -> None:
        self.states: collections.deque[dict[str, torch.Tensor]] = collections.deque(maxlen=size)
        self.shadow: torch.nn.Module | None = None

    def evaluated(self, network: torch.nn.Module) -> torch.nn.Module:
        """``network``, or (averaging) a copy holding the mean of the last epochs' weights, this one's too."""
        if self.states.maxlen == 1:
            return network
        self.states.append({k: v.detach().to("cpu", copy=True) for k, v in network.state_dict().items()})
        if self.shadow is None:
            self.shadow = copy.deepcopy(network)
        self.shadow.load_state_dict(average_states(list(self.states)))
        return self.shadow


@dataclass
class _Progress:
    """What a checkpoint carries over between runs: counters, history and the best weights."""

    epoch: int = 0
    step: int = 0
    elapsed_before_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int = -1
    best_per_class: dict[int, float] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] | None = None
    best_keep_largest: tuple[int, ...] = ()


class _Clock:
    """Wall time of the run against its budget, with step and validation time estimates."""

    def __init__(
        self, config: TrainConfig, *, started: float, elapsed_before_s: float, validation_work: float
    ) -> None:
        self.started = started  # time.perf_counter() at the start of this call
        self.elapsed_before_s = elapsed_before_s
        self.budget_s = None if config.time_budget_min is None else 60.0 * config.time_budget_min
        self.batch_size = config.batch_size
        self.validation_work = validation_work  # forward samples (2D slices, 3D windows) per validation
        self.step_s: float | None = None  # moving average
        self.validation_s: float | None = None  # last measured

    def elapsed(self) -> float:
        return self.elapsed_before_s + time.perf_counter() - self.started

    def add_step(self, seconds: float) -> None:
        self.step_s = seconds if self.step_s is None else 0.9 * self.step_s + 0.1 * seconds

    def validation_estimate(self) -> float:
        if self.validation_s is not None or not self.validation_work:
            return self.validation_s or 0.0
        # before the first validation: a forward pass with softmax costs about half a training
        # step per sample on CPU; 1.5x margin and a second for the checkpoint
        return self.validation_work * (self.step_s or 0.0) / self.batch_size / 2.0 * 1.5 + 1.0

    def fits_another_step(self) -> bool:
        """False when one more step plus the final validation would overrun the budget."""
        if self.budget_s is None:
            return True
        if self.step_s is None:  # nothing timed yet: one step is always tried
            return self.elapsed() < self.budget_s
        return self.elapsed() + self.step_s + self.validation_estimate() + 1.0 <= self.budget_s


def _prepare(
    config: TrainConfig, train_cases: Sequence[Case], n_classes: int
) -> tuple[list[PreparedCase], TrainConfig, tuple[int, ...]]:
    """Prepared cases, the config with slice axis and patch size resolved, and unseen classes."""
    prepared = [
        prepare_case(case, config, n_classes, seed=config.seed + i) for i, case in enumerate(train_cases)
    ]
    seen = set().union(*(p.foreground for p in prepared))
    if not seen:
        msg = (
            f"no training case holds a voxel of any class 1..{n_classes - 1}: annotate some foreground first"
        )
        raise LabelValueError(msg)
    slice_axis = resolve_slice_axis(config, [p.case.spacing for p in prepared])
    if config.dims == 2:  # a compressed case must hold its planes along the slice axis: 1 plane a slice
        prepared = [_planes_along(p, slice_axis) for p in prepared]
    shapes = [p.case.image.shape for p in prepared]
    patch_size = resolve_patch_size(config, shapes, slice_axis, size_divisor(config))
    resolved = config.replace(slice_axis=slice_axis, patch_size=patch_size)
    return prepared, resolved, tuple(c for c in range(1, n_classes) if c not in seen)


def _planes_along(prepared: PreparedCase, axis: int) -> PreparedCase:
    """The prepared case with compressed arrays recompressed along ``axis`` if they are not already."""
    arrays = (prepared.case.image, prepared.case.labels)
    if all(not isinstance(a, CompressedVolume) or a.axis == axis for a in arrays):
        return prepared
    return dataclasses.replace(prepared, case=compress_case(prepared.case, axis))


def _build_parts(
    resolved: TrainConfig,
    prepared: Sequence[PreparedCase],
    n_classes: int,
    device: torch.device,
    group: Group,
) -> _Parts:
    """Fresh network (seeded), AdamW, AMP scaler (CUDA only), sampler; DDP in a group of 2+."""
    torch.manual_seed(resolved.seed)
    network = build_network(resolved, resolved.in_channels, n_classes).to(device)
    trainer = None
    if group.distributed:
        if device.type == "cuda":  # batch statistics of the global batch (SyncBatchNorm needs a GPU)
            network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)
        trainer = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = torch.optim.AdamW(
        network.parameters(),
        lr=resolved.learning_rate,
        weight_decay=resolved.weight_decay,
        fused=device.type in ("cpu", "cuda"),  # one kernel for all tensors: 6x faster steps on a CPU
    )
    scaler = torch.amp.GradScaler("cuda") if resolved.amp and device.type == "cuda" else None
    sampler = PatchSampler(
        prepared,
        resolved,
        n_classes=n_classes,
        patch_size=resolved.patch_size,  # type: ignore[arg-type]
        slice_axis=resolved.slice_axis,  # type: ignore[arg-type]
        seed=resolved.seed,
    )
    return _Parts(network, optimizer, scaler, sampler, device, group, trainer, resolved.cpu_bfloat16)


def _restore(payload: dict[str, Any], parts: _Parts) -> _Progress:
    """Load weights, optimiser, scaler and RNG states of a checkpoint; its progress."""
    parts.network.load_state_dict(payload["model_state"])
    parts.optimizer.load_state_dict(payload["optimizer_state"])
    if parts.scaler is not None and payload.get("scaler_state"):
        parts.scaler.load_state_dict(payload["scaler_state"])
    torch.set_rng_state(payload["rng"]["torch"].cpu())
    if parts.device.type == "cuda" and payload["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state_all([s.cpu() for s in payload["rng"]["cuda"]])
    parts.sampler.set_state(payload["rng"]["sampler"])
    return _Progress(
        epoch=int(payload["epoch"]),
        step=int(payload["step"]),
        elapsed_before_s=float(payload["elapsed_s"]),
        history=list(payload["history"]),
        best_metric=payload["best_metric"],
        best_epoch=int(payload["best_epoch"]),
        best_per_class={int(k): float(v) for k, v in payload["best_dice_per_class"].items()},
        best_state=payload["best_state"],
        best_keep_largest=tuple(payload["config"].get("keep_largest") or ()),
    )


def _train_step(parts: _Parts, n_classes: int, learning_rate: float) -> tuple[float, int]:
    """One optimiser step on this rank's share of a sampled batch; the global batch's loss and size."""
    for param_group in parts.optimizer.param_groups:
        param_group["lr"] = learning_rate
    group = parts.group
    images, labels = parts.sampler.sample((group.rank, group.world_size))
    images = images.to(parts.device, non_blocking=True)
    labels = labels.to(parts.device, non_blocking=True)
    parts.optimizer.zero_grad(set_to_none=True)
    with autocast(parts.device, cuda_float16=parts.scaler is not None, cpu_bfloat16=parts.cpu_bfloat16):
        logits = parts.forward(images)
    combine = distributed.sum_across_ranks if group.distributed else None
    whole = supervised_loss(logits, labels, ignore_index=n_classes, combine=combine)
    # the loss of the global batch; x world size: DDP averages the gradients
    loss = whole * group.world_size if group.distributed else whole
    if parts.scaler is not None:
        parts.scaler.scale(loss).backward()
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
    else:
        loss.backward()
        parts.optimizer.step()
    return float(whole.detach()), int(images.shape[0]) * group.world_size


def _validation_work(config: TrainConfig, val_cases: Sequence[Case]) -> float:
    """Forward samples one validation takes: slices (2D) or windows without overlap (3D)."""
    if config.dims == 2:
        return float(sum(c.image.shape[config.slice_axis] for c in val_cases))  # type: ignore[index]
    patch = np.asarray(config.patch_size)
    return float(sum(np.prod(np.ceil(np.asarray(c.image.shape) / patch)) for c in val_cases))


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
    nproc: int = 1,
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
        init_weights: weights to start from (continual training, a pretrained network): a segloop
            checkpoint, a PyTorch/MONAI state dict or a MONAI bundle's ``model.pt``
            (`segloop.engine.weights`); its architecture and classes must match.
        resume: continue the run in ``checkpoint_path`` if it exists (same settings, except
            `RESUMABLE_CHANGES`); start fresh when there is none yet.
        on_progress: called (on rank 0 only) with a dict after every step (``phase="train"``) and epoch
            (``phase="epoch"``, after its checkpoint): epoch (0-based index of the epoch running or
            just finished), epochs, step (optimiser steps so far), epoch_step, steps_per_epoch, loss
            (this step's, or the epoch's mean), lr, val_dice, best_dice, elapsed_s, eta_s (None
            until the first step is timed); an epoch's dict also holds ``preview``, the
            `PreviewSlice` of its validation (None without validation cases).
        nproc: processes to train with (1: this one). With 2+ this call spawns them
            (`segloop.engine.distributed.spawn`: gloo on the CPU, one GPU each with CUDA) and
            returns rank 0's result; ``batch_size`` is the global batch, split evenly. Inside a
            group started elsewhere (``torchrun``) every rank calls `train` and the group's size
            counts (``nproc`` must be 1 or that size).

    Returns:
        A `TrainResult`.

    Raises:
        LabelValueError: no training cases or no annotated foreground at all.
        InvalidInputError: CUDA asked for without a GPU, incompatible ``init_weights``, an
            ``nproc`` the run cannot use (`segloop.engine.distributed.check_nproc`).
        CorruptFileError: ``init_weights`` or the checkpoint is not a segloop checkpoint.
        ConflictError: resuming a checkpoint written with other settings.
    """
    started = time.perf_counter()
    target = resolve_device(device)
    _check_cases(train_cases, val_cases, n_classes)
    group = distributed.current_group()
    if group.distributed and nproc not in (1, group.world_size):
        msg = (
            f"nproc={nproc} inside a group of {group.world_size} processes: expected 1 or {group.world_size}"
        )
        raise InvalidInputError(msg)
    size = group.world_size if group.distributed else nproc
    distributed.check_nproc(size, target, cases=len(train_cases), batch_size=config.batch_size)
    run = _Run(config, n_classes, Path(checkpoint_path), init_weights, resume)
    if size > 1 and not group.distributed:
        since = time.time() - (time.perf_counter() - started)  # the budget counts the workers' start
        return distributed.spawn(
            _train_rank, nproc, target, (run, train_cases, val_cases, target, since), on_message=on_progress
        )
    return _train_in_group(run, train_cases, val_cases, target, group, on_progress, started)


@dataclass(frozen=True)
class _Run:
    """What one training run is asked to do (the arguments of `train` every rank gets)."""

    config: TrainConfig
    n_classes: int
    checkpoint_path: Path
    init_weights: str | os.PathLike | None
    resume: bool


def _train_rank(
    run: _Run,
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    device: torch.device,
    since: float,
    send: Callable[[Any], None],
) -> TrainResult:
    """One spawned process of a run (``since``: its `time.time` start); rank 0 sends the progress."""
    group = distributed.current_group()
    on_progress = send if group.is_writer else None
    started = time.perf_counter() - (time.time() - since)
    return _train_in_group(run, train_cases, val_cases, device, group, on_progress, started)


def _start_state(run: _Run, resolved: TrainConfig, parts: _Parts) -> _Progress:
    """Load the checkpoint to resume (every rank reads the same file) or the initial weights."""
    if run.resume and run.checkpoint_path.exists():
        payload = read_checkpoint(run.checkpoint_path, map_location=parts.device)
        check_compatible(
            payload,
            resolved,
            in_channels=resolved.in_channels,
            n_classes=run.n_classes,
            source=run.checkpoint_path,
        )
        _check_resumable(payload, run.config, run.checkpoint_path)
        return _restore(payload, parts)
    if run.init_weights is not None:
        state = read_initial_weights(
            run.init_weights,
            resolved,
            n_classes=run.n_classes,
            in_channels=resolved.in_channels,
            map_location=parts.device,
        )
        try:
            parts.network.load_state_dict(state)
        except RuntimeError as error:  # tensors of other shapes under the right names
            msg = (
                f"weights {run.init_weights} do not fit this network:"
                " expected a checkpoint of the same architecture"
            )
            raise InvalidInputError(msg) from error
    return _Progress()


def _train_in_group(
    run: _Run,
    train_cases: Sequence[Case],
    val_cases: Sequence[Case],
    device: torch.device,
    group: Group,
    on_progress: Callable[[dict[str, Any]], None] | None,
    started: float,
) -> TrainResult:
    """The run on this process, one rank of ``group`` (alone: a group of one)."""
    config, n_classes, checkpoint_path = run.config, run.n_classes, run.checkpoint_path
    target = distributed.rank_device(device, group)
    threads = config.num_threads or max(1, available_cpu_threads() // group.local_world_size)
    with _torch_threads(threads):
        prepared, resolved, unseen = _prepare(config, train_cases, n_classes)
        parts = _build_parts(resolved, prepared, n_classes, target, group)
        progress = _start_state(run, resolved, parts)
        clock = _Clock(
            config,
            started=started,
            elapsed_before_s=progress.elapsed_before_s,
            validation_work=_validation_work(resolved, val_cases),
        )
        steps_per_epoch = _default_steps_per_epoch(resolved, prepared, resolved.slice_axis)  # type: ignore[arg-type]
        total_steps = steps_per_epoch * config.epochs if config.epochs is not None else None
        val_dice: float | None = progress.history[-1]["val_dice"] if progress.history else None
        samples_run, train_seconds, stopped_by = 0, 0.0, "epochs"

        def fits_another_step() -> bool:  # rank 0's clock decides for all
            return distributed.agree(clock.fits_another_step(), group)

        def report(
            phase: str, epoch_index: int, epoch_step: int, loss: float, preview: PreviewSlice | None = None
        ) -> None:
            if on_progress is None:
                return
            shown = {"preview": preview} if phase == "epoch" else {}
            left = []
            if clock.step_s is not None and total_steps is not None:
                validations = (config.epochs - progress.epoch) if val_cases else 0  # type: ignore[operator]
                left.append(
                    max(total_steps - progress.step, 0) * clock.step_s
                    + validations * clock.validation_estimate()
                )
            if clock.step_s is not None and clock.budget_s is not None:
                left.append(max(clock.budget_s - clock.elapsed(), 0.0))
            on_progress(
                {
                    "phase": phase,
                    "epoch": epoch_index,
                    "epochs": config.epochs,
                    "step": progress.step,
                    "epoch_step": epoch_step,
                    "steps_per_epoch": steps_per_epoch,
                    "loss": loss,
                    "lr": parts.optimizer.param_groups[0]["lr"],
                    "val_dice": val_dice,
                    "best_dice": progress.best_metric,
                    "elapsed_s": clock.elapsed(),
                    "eta_s": min(left) if left else None,
                    **shown,
                }
            )

        window = _WeightWindow(config.average_last)
        while (config.epochs is None or progress.epoch < config.epochs) and fits_another_step():
            parts.network.train()
            losses: list[float] = []
            epoch_started = time.perf_counter()
            for epoch_step in range(steps_per_epoch):
                tick = time.perf_counter()
                go, rate = distributed.from_writer(
                    (
                        float(clock.fits_another_step()),
                        _learning_rate(config, progress.step, total_steps, clock.elapsed()),
                    ),
                    group,
                )
                if not go:
                    stopped_by = "time"
                    break
                loss, batch = _train_step(parts, n_classes, rate)
                losses.append(loss)
                progress.step += 1
                seconds = time.perf_counter() - tick
                clock.add_step(seconds)
                samples_run, train_seconds = samples_run + batch, train_seconds + seconds
                report("train", progress.epoch, epoch_step + 1, loss)
            if not losses:  # the budget ended right at the start of this epoch
                stopped_by = "time"
                break
            tick = time.perf_counter()
            kept = window.evaluated(parts.network) if group.is_writer else parts.network
            per_class: dict[int, float] = {}
            keep_largest: tuple[int, ...] = ()
            preview = None
            if val_cases:  # on rank 0, the others get its scores
                scores = _validate(kept, val_cases, resolved, n_classes, target) if group.is_writer else None
                if scores is not None:
                    preview = dataclasses.replace(scores[2], epoch=progress.epoch)
                    keep_largest = scores[3]
                val_dice, per_class = distributed.share(scores[:2] if scores is not None else None, group)
                clock.validation_s = time.perf_counter() - tick
            improved = val_dice is not None and (
                progress.best_metric is None or val_dice > progress.best_metric
            )
            if progress.best_epoch < 0 or not val_cases or improved:
                progress.best_metric, progress.best_epoch, progress.best_per_class = (
                    val_dice,
                    progress.epoch,
                    per_class,
                )
                progress.best_keep_largest = keep_largest
                if group.is_writer:  # the one that writes them
                    progress.best_state = {
                        k: v.detach().to("cpu", copy=True) for k, v in kept.state_dict().items()
                    }
            progress.history.append(
                {
                    "epoch": progress.epoch,
                    "loss": float(np.mean(losses)),
                    "steps": len(losses),
                    "val_dice": val_dice,
                    "val_dice_per_class": {str(k): v for k, v in per_class.items()},
                    "seconds": time.perf_counter() - epoch_started,
                    "validation_seconds": clock.validation_s,
                }
            )
            progress.epoch += 1
            if config.epochs is None or progress.epoch < config.epochs:
                stopped_by = "epochs" if fits_another_step() else "time"
            finished = stopped_by == "time" or (config.epochs is not None and progress.epoch >= config.epochs)
            if group.is_writer:
                _write(
                    checkpoint_path,
                    _decided(resolved, progress),
                    config,
                    n_classes,
                    parts,
                    progress,
                    clock.elapsed(),
                    finished=finished,
                )
            distributed.barrier(group)  # the checkpoint is complete before any rank goes on
            report("epoch", progress.epoch - 1, len(losses), float(np.mean(losses)), preview)
            if stopped_by == "time":
                break
        if progress.best_epoch < 0:
            msg = (
                f"the time budget ({config.time_budget_min} min) ended before one training step:"
                " raise time_budget_min or lower the work per step"
            )
            raise InvalidInputError(msg)
        if config.epochs is None or progress.epoch < config.epochs:
            stopped_by = "time"
    return TrainResult(
        checkpoint_path=checkpoint_path,
        config=_decided(resolved, progress),
        epochs=progress.epoch,
        steps=progress.step,
        best_epoch=progress.best_epoch,
        best_metric=progress.best_metric,
        best_dice_per_class=dict(progress.best_per_class),
        stopped_by=stopped_by,
        elapsed_s=clock.elapsed(),
        samples_per_s=samples_run / train_seconds if train_seconds else 0.0,
        unseen_classes=unseen,
        history=tuple(progress.history),
    )


def _write(
    path: Path,
    resolved: TrainConfig,
    requested: TrainConfig,
    n_classes: int,
    parts: _Parts,
    progress: _Progress,
    elapsed_s: float,
    *,
    finished: bool,
) -> None:
    """The checkpoint of the state after an epoch (layout in `segloop.engine.checkpoint`)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": resolved.to_dict(),
        "requested_config": requested.to_dict(),
        "in_channels": resolved.in_channels,
        "n_classes": n_classes,
        "model_state": {k: v.detach().cpu() for k, v in parts.network.state_dict().items()},
        "best_state": progress.best_state,
        "optimizer_state": parts.optimizer.state_dict(),
        "scaler_state": parts.scaler.state_dict() if parts.scaler is not None else None,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if parts.device.type == "cuda" else None,
            "sampler": parts.sampler.state,
        },
        "epoch": progress.epoch,
        "step": progress.step,
        "elapsed_s": elapsed_s,
        "best_metric": progress.best_metric,
        "best_epoch": progress.best_epoch,
        "best_dice_per_class": {str(k): v for k, v in progress.best_per_class.items()},
        "history": progress.history,
        "finished": finished,
    }
    save_checkpoint(path, payload)
