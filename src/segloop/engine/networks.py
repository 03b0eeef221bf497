"""`build_network`: a name -> MONAI constructor table (no subclass per variant), 2D and 3D.

SwinUNETR comes from ``monai.networks.nets.swin_unetr``, which imports torch, einops and MONAI's own
blocks only (no torchvision).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.nets import DynUNet, SwinUNETR, UNet

from segloop.engine.config import TrainConfig
from segloop.errors import InvalidInputError

__all__ = ["average_states", "build_network", "size_divisor"]


def _unet(config: TrainConfig, in_channels: int, n_classes: int) -> torch.nn.Module:
    return UNet(
        spatial_dims=config.dims,
        in_channels=in_channels,
        out_channels=n_classes,
        channels=config.features,
        strides=(2,) * (len(config.features) - 1),
        num_res_units=config.num_res_units,
        norm=config.norm.upper(),
        dropout=config.dropout,
    )


def _dynunet(config: TrainConfig, in_channels: int, n_classes: int) -> torch.nn.Module:
    levels = len(config.features)
    strides = [1] + [2] * (levels - 1)
    norm = ("INSTANCE", {"affine": True}) if config.norm == "instance" else "BATCH"
    return DynUNet(
        spatial_dims=config.dims,
        in_channels=in_channels,
        out_channels=n_classes,
        kernel_size=[3] * levels,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=config.features,
        dropout=config.dropout or None,
        norm_name=norm,
        res_block=config.num_res_units > 0,
        deep_supervision=config.deep_supervision > 0,
        deep_supr_num=max(config.deep_supervision, 1),
    )


def _swinunetr(config: TrainConfig, in_channels: int, n_classes: int) -> torch.nn.Module:
    return SwinUNETR(
        in_channels=in_channels,
        out_channels=n_classes,
        feature_size=config.features[0],
        norm_name=config.norm,
        drop_rate=config.dropout,
        spatial_dims=config.dims,
    )


_CONSTRUCTORS: dict[str, Callable[[TrainConfig, int, int], torch.nn.Module]] = {
    "unet": _unet,
    "dynunet": _dynunet,
    "swinunetr": _swinunetr,
}


def build_network(config: TrainConfig, in_channels: int, n_classes: int) -> torch.nn.Module:
    """The network of ``config`` with fresh weights (seed the torch RNG first for reproducibility).

    Args:
        config: ``network``, ``dims``, ``features``, ``num_res_units``, ``norm``, ``dropout`` are used.
        in_channels: image channels (1 for a grey-value volume).
        n_classes: output channels, background included (a schema with N classes: N + 1).

    Returns:
        A ``torch.nn.Module`` mapping ``(B, in_channels, *spatial)`` float32 to
        ``(B, n_classes, *spatial)`` logits; spatial sizes must be multiples of `size_divisor`.

    Examples:
        >>> net = build_network(TrainConfig(features=(4, 8)), 1, 3)
        >>> tuple(net(torch.zeros(1, 1, 8, 8)).shape)
        (1, 3, 8, 8)
    """
    if in_channels < 1 or n_classes < 2:
        msg = f"a network needs in_channels >= 1 and n_classes >= 2; got {in_channels}, {n_classes}"
        raise InvalidInputError(msg)
    return _CONSTRUCTORS[config.network](config, in_channels, n_classes)


def size_divisor(config: TrainConfig) -> int:
    """Spatial sizes the network accepts are multiples of this (2 ** number of downsamplings).

    SwinUNETR embeds 2x2(x2) patches, then merges them 4 times: 32 (and its instance norms need at
    least 2 voxels along an axis at the deepest level, so 64 and more in practice).
    """
    return 32 if config.network == "swinunetr" else 2 ** (len(config.features) - 1)


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts of one architecture (integer buffers: the last one's).

    Args:
        states: at least one state dict, all with the same keys and shapes (e.g. the weights at the
            end of the last epochs; batch-norm running statistics are averaged like weights, the
            integer ``num_batches_tracked`` counters are taken from the last state).

    Returns:
        A new state dict (tensors on the device and in the dtype of the inputs).

    Examples:
        >>> average_states([{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}])["w"].tolist()
        [2.0, 4.0]
    """
    if not states:
        msg = "average_states needs at least one state dict; got none"
        raise InvalidInputError(msg)
    last = states[-1]
    return {
        name: torch.stack([s[name] for s in states]).mean(0) if value.is_floating_point() else value.clone()
        for name, value in last.items()
    }
