"""Prediction: slice-wise (2D) or sliding-window (3D) softmax, flip TTA, MC dropout, uncertainty.

MC dropout switches on *only* the dropout modules (``module.train()`` on each of them); the rest
of the network stays in eval mode, so batch-norm layers keep using (and never update) their
running statistics. Every module's train/eval flag is restored afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

from segloop.engine.checkpoint import read_checkpoint
from segloop.engine.config import InferConfig, TrainConfig, model_tta_flips
from segloop.engine.data import (
    compute_intensity_parameters,
    context_indices,
    normalize_intensity,
    resample_image,
    swap_table,
)
from segloop.engine.device import autocast, resolve_device
from segloop.engine.networks import build_network, size_divisor
from segloop.engine.postprocess import keep_largest_component
from segloop.engine.uncertainty import voxel_entropy
from segloop.errors import InvalidInputError

__all__ = [
    "Prediction",
    "TrainedModel",
    "argmax_classes",
    "load_model",
    "predict",
    "predict_mean_probabilities",
]


@dataclass(frozen=True, eq=False)
class Prediction:
    """What a network says about one volume, on the input's grid.

    Attributes:
        labels: ``(I, J, K)`` uint8 (uint16 above 255 classes) argmax of ``probabilities``.
        probabilities: ``(C, I, J, K)`` float16 softmax probabilities (C classes, background first),
            averaged over TTA / MC-dropout passes.
        entropy: ``(I, J, K)`` float16 normalised entropy of ``probabilities``, in [0, 1].
        disagreement: ``(I, J, K)`` float16 std over passes averaged over classes, or None for
            a single pass.
        passes: number of forward passes averaged.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    entropy: np.ndarray
    disagreement: np.ndarray | None
    passes: int


@dataclass(frozen=True, eq=False)
class TrainedModel:
    """A network read from a checkpoint, ready for `predict`.

    Attributes:
        network: the module (eval mode) on ``device``, holding the best validation weights.
        config: the resolved training config (slice axis and patch size filled in).
        n_classes: output classes, background included (the ignore value is ``n_classes``).
        in_channels: image channels.
        epoch: epochs trained.
        best_metric: best mean validation Dice, or None without validation.
        device: where ``network`` lives.
    """

    network: torch.nn.Module
    config: TrainConfig
    n_classes: int
    in_channels: int
    epoch: int
    best_metric: float | None
    device: torch.device


def load_model(checkpoint_path: str | os.PathLike, device: str | torch.device = "auto") -> TrainedModel:
    """Read a checkpoint written by `segloop.engine.train.train` (its best weights).

    Raises:
        NotFoundError, CorruptFileError: no such file / not a segloop checkpoint.
        InvalidInputError: ``device`` not available.
    """
    target = resolve_device(device)
    payload = read_checkpoint(checkpoint_path, map_location="cpu")
    config = TrainConfig.from_dict(payload["config"])
    network = build_network(config, int(payload["in_channels"]), int(payload["n_classes"]))
    network.load_state_dict(payload["best_state"])
    network.to(target).eval()
    best = payload.get("best_metric")
    return TrainedModel(
        network,
        config,
        int(payload["n_classes"]),
        int(payload["in_channels"]),
        int(payload["epoch"]),
        None if best is None else float(best),
        target,
    )


@contextlib.contextmanager
def _inference_modes(network: torch.nn.Module, *, dropout: bool) -> Iterator[None]:
    """Eval mode everywhere (dropout modules in train mode if ``dropout``); flags restored after."""
    flags = [(module, module.training) for module in network.modules()]
    network.eval()
    if dropout:
        droppers = [
            m for m in network.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0
        ]
        if not droppers:
            msg = (
                "mc_dropout_samples > 0 needs a network trained with dropout > 0; this one has no dropout:"
                " set mc_dropout_samples=0 or retrain with dropout"
            )
            raise InvalidInputError(msg)
        for module in droppers:
            module.train()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def argmax_classes(probabilities: torch.Tensor) -> torch.Tensor:
    """The most probable class per voxel (the first on ties, as ``argmax``), as uint8 (int32 > 256).

    Class by class with running maxima: about 6x faster than ``probabilities.argmax(0)`` on a CPU,
    which reduces over the outermost dimension slowly.

    Args:
        probabilities: ``(C, *spatial)`` float tensor (any strides).

    Returns:
        ``(*spatial)`` contiguous tensor.

    Examples:
        >>> argmax_classes(torch.tensor([[0.2, 0.5], [0.8, 0.5]])).tolist()
        [1, 0]
    """
    best = probabilities[0].clone()
    dtype = torch.uint8 if probabilities.shape[0] <= 256 else torch.int32
    labels = torch.zeros_like(best, dtype=dtype)
    for value in range(1, probabilities.shape[0]):
        better = probabilities[value] > best
        labels.masked_fill_(better, value)
        torch.maximum(best, probabilities[value], out=best)
    return labels.contiguous()


def _flip_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every combination of ``axes`` (the identity first)."""
    return [combo for n in range(len(axes) + 1) for combo in itertools.combinations(axes, n)]


@dataclass(frozen=True)
class _Passes:
    """What every inference pass of one image shares.

    Args:
        network: the model, on ``device``.
        config: its training config (dims, slice axis, patch size, amp).
        infer_config: batch size, overlap, blending, flips and MC-dropout samples.
        pad_value: the normalised intensity of padding.
        device: where the network runs.
        n_classes: output channels, background included.
    """

    network: torch.nn.Module
    config: TrainConfig
    infer_config: InferConfig
    pad_value: float
    device: torch.device
    n_classes: int


def _unmirror(run: _Passes, logits: torch.Tensor, flips: tuple[int, ...]) -> torch.Tensor:
    """Logits of a pass mirrored along the lateral axis with the paired classes swapped back."""
    config = run.config
    if not config.mirror_pairs or config.lateral_axis not in flips:
        return logits
    order = torch.from_numpy(swap_table(run.n_classes, config.mirror_pairs)).to(logits.device)
    return logits.index_select(1, order)


def _forward_slices(run: _Passes, volume: torch.Tensor, flips: tuple[int, ...]) -> torch.Tensor:
    """Softmax probabilities ``(C, I, J, K)`` of a 2D network, slice by slice along the slice axis.

    The work runs slice-major (contiguous ``(S, H, W)`` slices, a contiguous ``(C, S, H, W)``
    output); the result is that buffer seen as ``(C, I, J, K)`` (a permuted view, no copy). With
    ``context_slices`` k, each slice's input holds its k neighbours on each side as channels.
    """
    network, config, device = run.network, run.config, run.device
    batch_size = run.infer_config.batch_size
    axis = config.slice_axis
    slices = volume.movedim(axis, 0).contiguous()  # (S, H, W)
    height, width = slices.shape[1:]
    divisor = size_divisor(config)
    pad_h, pad_w = -height % divisor, -width % divisor
    padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    plane_axes = [a for a in range(3) if a != axis]
    dims = tuple(2 + plane_axes.index(a) for a in flips if a in plane_axes)
    out = torch.empty((run.n_classes, *slices.shape), dtype=torch.float32)  # (C, S, H, W)
    count, k = slices.shape[0], config.context_slices
    for start in range(0, count, batch_size):
        if k:
            centres = np.arange(start, min(start + batch_size, count))
            batch = slices[torch.from_numpy(context_indices(centres, k, count))].to(device)
        else:
            batch = slices[start : start + batch_size].unsqueeze(1).to(device)
        if pad_h or pad_w:
            batch = F.pad(batch, padding, value=run.pad_value)
        if dims:
            batch = batch.flip(dims)
        with autocast(device, cuda_float16=config.amp, cpu_bfloat16=config.cpu_bfloat16):
            logits = network(batch)
        if dims:
            logits = _unmirror(run, logits.flip(dims), flips)
        probabilities = torch.softmax(logits.float(), dim=1)
        if pad_h or pad_w:
            probabilities = probabilities[
                :, :, padding[2] : padding[2] + height, padding[0] : padding[0] + width
            ]
        out[:, start : start + batch.shape[0]] = probabilities.movedim(1, 0)
    return out.movedim(1, axis + 1)


def _forward_patches(run: _Passes, volume: torch.Tensor, flips: tuple[int, ...]) -> torch.Tensor:
    """Softmax probabilities ``(C, I, J, K)`` of a 3D network (MONAI sliding window, blended logits)."""
    from monai.inferers import sliding_window_inference

    dims = tuple(2 + a for a in flips)
    batch = volume[None, None].to(run.device)
    if dims:
        batch = batch.flip(dims)
    with autocast(run.device, cuda_float16=run.config.amp, cpu_bfloat16=run.config.cpu_bfloat16):
        logits = sliding_window_inference(
            batch,
            roi_size=run.config.patch_size,
            sw_batch_size=run.infer_config.batch_size,
            predictor=run.network,
            overlap=run.infer_config.overlap,
            mode=run.infer_config.blend,
            cval=run.pad_value,
        )
    if dims:
        logits = _unmirror(run, logits.flip(dims), flips)
    return torch.softmax(logits[0].float(), dim=0).cpu()


def predict_mean_probabilities(
    network: torch.nn.Module,
    image: np.ndarray,
    spacing: Sequence[float],
    config: TrainConfig,
    infer_config: InferConfig,
    *,
    device: torch.device,
    n_classes: int,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Probabilities on the input grid averaged over passes, the disagreement map, and the pass count.

    Returns:
        ``(C, I, J, K)`` float32 CPU tensor, ``(I, J, K)`` float32 tensor or None, passes.
    """
    if config.dims == 2 and config.slice_axis is None:
        msg = "the config's slice_axis is unresolved: use the config stored with the model (load_model)"
        raise InvalidInputError(msg)
    if config.dims == 3 and config.patch_size is None:
        msg = "the config's patch_size is unresolved: use the config stored with the model (load_model)"
        raise InvalidInputError(msg)
    original_shape = image.shape
    if config.target_spacing is not None:
        image = resample_image(image, spacing, config.target_spacing)
    params = compute_intensity_parameters(image, config)
    volume = torch.from_numpy(np.asarray(image, dtype=np.float32))
    normalize_intensity(volume[None], params.low, params.high, params.shift, params.scale)
    pad_value = (params.pad_value - params.shift) * params.scale
    flip_sets = _flip_sets(model_tta_flips(config, infer_config))
    if config.dims == 2:  # mirroring along the slice axis only re-orders slices: the same pass again
        flip_sets = sorted({tuple(a for a in s if a != config.slice_axis) for s in flip_sets}, key=len)
    with torch.inference_mode():
        run = _Passes(network, config, infer_config, pad_value, device, n_classes)
        return _average_passes(run, volume, flip_sets, original_shape)


def _average_passes(
    run: _Passes, volume: torch.Tensor, flip_sets: list[tuple[int, ...]], original_shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Run every flip x MC-dropout pass; mean probabilities, disagreement (None for one pass), count."""
    forward = _forward_slices if run.config.dims == 2 else _forward_patches
    mc_samples = run.infer_config.mc_dropout_samples
    total: torch.Tensor | None = None
    squares: torch.Tensor | None = None
    passes = 0
    with _inference_modes(run.network, dropout=mc_samples > 0):
        for flips in flip_sets:
            for _ in range(max(1, mc_samples)):
                one = forward(run, volume, flips)
                if total is None:
                    total, squares = one, (one.square() if len(flip_sets) * max(1, mc_samples) > 1 else None)
                else:
                    total += one
                    squares.add_(one.square_())  # type: ignore[union-attr]
                passes += 1
    if passes > 1:
        total /= passes  # type: ignore[operator]
    disagreement = None
    if squares is not None:
        variance = (squares / passes).sub_(total.square()).clamp_min_(0.0)
        disagreement = variance.sqrt_().mean(0)
    if tuple(total.shape[1:]) != tuple(original_shape):
        total = F.interpolate(total[None], size=original_shape, mode="trilinear", align_corners=False)[0]
        if disagreement is not None:
            disagreement = F.interpolate(
                disagreement[None, None], size=original_shape, mode="trilinear", align_corners=False
            )[0, 0]
    return total, disagreement, passes


def predict(
    model: torch.nn.Module,
    image: np.ndarray,
    spacing: Sequence[float],
    config: TrainConfig,
    infer_config: InferConfig | None = None,
    *,
    device: str | torch.device = "auto",
) -> Prediction:
    """Segment one volume with a trained network.

    Args:
        model: the network (e.g. `TrainedModel.network` from `load_model`), already on ``device``.
        image: ``(I, J, K)`` intensities in their stored dtype (normalised here like in training).
        spacing: voxel size in mm along I, J, K (used when the config resamples).
        config: the model's resolved `TrainConfig` (`TrainedModel.config`).
        infer_config: TTA, MC dropout, overlap, batch size; default `InferConfig()`.
        device: where ``model`` lives (``"auto"``, ``"cpu"``, ``"cuda"``).

    Returns:
        A `Prediction` on the input grid (resampled back if the config has a target spacing); its
        labels keep only the largest component of the classes of ``config.keep_largest``, its
        probabilities and entropy are the network's.

    Raises:
        InvalidInputError: a 4D or empty image, MC dropout on a network without dropout, unresolved config.
    """
    infer_config = infer_config or InferConfig()
    image = np.asarray(image)
    if image.ndim != 3 or min(image.shape) < 1:
        msg = f"predict needs an (I, J, K) image; got shape {image.shape}"
        raise InvalidInputError(msg)
    target = resolve_device(device)
    out_channels = _out_channels(model)
    probabilities, disagreement, passes = predict_mean_probabilities(
        model, image, spacing, config, infer_config, device=target, n_classes=out_channels
    )
    labels = (
        argmax_classes(probabilities)
        .numpy()
        .astype(np.uint8 if out_channels <= 256 else np.uint16, copy=False)
    )
    if config.keep_largest:  # the network's classes only (a checkpoint's config is not trusted further)
        labels = keep_largest_component(labels, [v for v in config.keep_largest if v < out_channels])
    entropy = voxel_entropy(probabilities)

    def half(values: torch.Tensor) -> np.ndarray:
        return values.to(torch.float16).contiguous().numpy()

    return Prediction(
        labels=labels,
        probabilities=half(probabilities),
        entropy=half(entropy),
        disagreement=None if disagreement is None else half(disagreement),
        passes=passes,
    )


def _out_channels(network: torch.nn.Module) -> int:
    """Output channels of a MONAI UNet / DynUNet (its ``out_channels`` attribute)."""
    value = getattr(network, "out_channels", None)
    if value is None:
        msg = (
            f"cannot tell the classes {type(network).__name__} outputs: expected a network from build_network"
        )
        raise InvalidInputError(msg)
    return int(value)
