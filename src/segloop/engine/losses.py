"""Dice + cross-entropy that learns nothing from ignored voxels (nnU-Net's ignore label).

- Cross-entropy uses ``ignore_index``: ignored voxels add nothing to the sum nor to the count it
  is averaged over. A batch without any annotated voxel gives a zero loss (with a graph, so
  ``backward`` still works).
- Dice is computed on probabilities and one-hot targets multiplied by the not-ignored mask, so
  true positives, false positives and false negatives all count annotated voxels only. It is a
  *batch* Dice (sums over the batch and space, as nnU-Net's ``batch_dice``) over the foreground
  classes present in the batch's annotated reference. A class absent from the reference is left
  out of the Dice mean: its Dice would be ~0 whatever the network does (a constant with no useful
  gradient); its false positives are still penalised by the cross-entropy. A batch with no
  foreground class gets a Dice term of 0.

Both terms are ratios of sums over the batch (cross-entropy sum / annotated voxels; per class
intersection, predicted and reference sizes). With ``combine`` those sums are added over the
processes of a distributed run before the ratios are taken, so the loss is the loss of the whole
global batch, not a mean of per-process losses (`segloop.engine.distributed.sum_across_ranks`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

__all__ = ["dice_ce_loss", "supervised_loss"]


def dice_ce_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    smooth: float = 1e-5,
    combine: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Cross-entropy + (1 - soft Dice), both over not-ignored voxels only.

    Args:
        logits: ``(B, C, *spatial)`` float network output (C classes, background included).
        labels: ``(B, *spatial)`` integer targets in ``0..C-1``, or ``ignore_index`` to leave out.
        ignore_index: the ignore value (``C`` for segloop schemas: `LabelSchema.ignore_index`).
        dice_weight: weight of the Dice term.
        ce_weight: weight of the cross-entropy term.
        smooth: added to the Dice numerator and denominator.
        combine: maps this batch's sums, a vector ``[ce_sum, annotated, intersection (C),
            predicted (C), reference (C)]``, to those of the global batch (None: this batch is all).

    Returns:
        A scalar tensor. Changing ``labels`` only where they equal ``ignore_index`` (or changing
        ``logits`` only at those voxels) leaves it unchanged.

    Examples:
        >>> logits = torch.zeros(1, 3, 4, 4)
        >>> labels = torch.full((1, 4, 4), 3)
        >>> float(dice_ce_loss(logits, labels, ignore_index=3))
        0.0
    """
    n_classes = logits.shape[1]
    labels = labels.long()
    mask = labels != ignore_index
    n_annotated = int(mask.sum())
    if n_annotated == 0 and combine is None:
        return logits.sum() * 0.0
    log_probabilities = F.log_softmax(logits.float(), dim=1)
    ce_sum = F.nll_loss(log_probabilities, labels, ignore_index=ignore_index, reduction="sum")
    probabilities = log_probabilities.exp()
    flat = probabilities.flatten(2)  # (B, C, V)
    if n_annotated == labels.numel():
        targets = labels.reshape(-1)
        predicted = flat.sum((0, 2))
        true_class = flat.gather(1, labels.reshape(labels.shape[0], 1, -1)).reshape(-1)
    else:  # tp, fp and fn count annotated voxels only
        keep = mask.reshape(-1)
        safe = torch.where(mask, labels, 0).reshape(labels.shape[0], 1, -1)
        predicted = torch.einsum("bcv,bv->c", flat, mask.reshape(mask.shape[0], -1).to(flat.dtype))
        true_class = flat.gather(1, safe).reshape(-1)[keep]
        targets = labels.reshape(-1)[keep]
    # per class: sum of the true class's probability (tp), its reference size and predicted size
    intersection = torch.zeros(n_classes, dtype=flat.dtype, device=flat.device).index_add(
        0, targets, true_class
    )
    reference = torch.bincount(targets, minlength=n_classes).to(flat.dtype)
    if combine is None:
        ce = ce_sum / n_annotated
    else:
        count = torch.tensor([float(n_annotated)], dtype=flat.dtype, device=flat.device)
        sums = combine(
            torch.cat([ce_sum.reshape(1).to(flat.dtype), count, intersection, predicted, reference])
        )
        if float(sums[1].detach()) == 0.0:  # no annotated voxel in the global batch
            return logits.sum() * 0.0
        ce = sums[0] / sums[1]
        intersection, predicted, reference = sums[2:].reshape(3, n_classes).unbind(0)
    dice = (2.0 * intersection + smooth) / (predicted + reference + smooth)
    present = reference[1:] > 0
    dice_loss = 1.0 - dice[1:][present].mean() if bool(present.any()) else logits.sum() * 0.0
    return ce_weight * ce + dice_weight * dice_loss


def supervised_loss(
    outputs: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int,
    combine: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """`dice_ce_loss` of a network's output, or nnU-Net's weighted sum over deep-supervision heads.

    Args:
        outputs: ``(B, C, *spatial)`` logits, or ``(B, H, C, *spatial)`` from a network with deep
            supervision in training mode (MONAI's DynUNet: head 0 at full resolution, head ``i``
            from ``i`` levels deeper, upsampled to the full resolution).
        labels: ``(B, *spatial)`` integer targets (``ignore_index`` left out).
        ignore_index: the ignore value.
        combine: as in `dice_ce_loss` (a distributed run's sums).

    Returns:
        A scalar tensor: head ``i``'s loss at its own resolution (every ``2 ** i``-th voxel of it
        and of ``labels``) weighted by ``2 ** -i``, the weights normalised to sum to 1 (one head:
        `dice_ce_loss` itself).

    Examples:
        Outputs and targets constant over 2 x 2 blocks lose the same at every head's resolution:

        >>> def blocks(x):
        ...     return x.repeat_interleave(2, -1).repeat_interleave(2, -2)
        >>> labels, one = blocks(torch.randint(0, 3, (2, 4, 4))), blocks(torch.randn(2, 3, 4, 4))
        >>> same = supervised_loss(torch.stack([one, one], 1), labels, ignore_index=3)
        >>> bool(torch.isclose(same, dice_ce_loss(one, labels, ignore_index=3), rtol=1e-4))
        True
    """
    if outputs.ndim == labels.ndim + 1:
        return dice_ce_loss(outputs, labels, ignore_index=ignore_index, combine=combine)
    weights = [2.0**-i for i in range(outputs.shape[1])]
    norm = sum(weights)
    total = 0.0
    for level, (weight, head) in enumerate(zip(weights, outputs.unbind(1), strict=True)):
        # DynUNet upsamples head `level` (2**level coarser) by repeating voxels: every 2**level-th
        # voxel is the head itself, scored against the targets there (nnU-Net scores each head on
        # targets downsampled to it; against full-resolution targets a coarse head cannot draw a
        # structure thinner than its voxels, and learns to erase it)
        grid = (..., *[slice(None, None, 2**level)] * (labels.ndim - 1))
        total = total + weight / norm * dice_ce_loss(
            head[grid], labels[grid], ignore_index=ignore_index, combine=combine
        )
    return total
