from __future__ import annotations

import torch

from segloop.engine.losses import dice_ce_loss

IGNORE = 4


def _batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 8, 8, generator=generator)
    labels = torch.randint(0, 4, (2, 8, 8), generator=generator)
    labels[:, :3] = IGNORE  # the first three rows are ignored
    return logits, labels


def test_changing_labels_inside_ignored_voxels_leaves_the_loss_identical():
    logits, labels = _batch()
    truth_a = labels.clone()
    truth_a[:, :3] = 1
    truth_b = labels.clone()
    truth_b[:, :3] = torch.randint(0, 4, (2, 3, 8), generator=torch.Generator().manual_seed(9))
    for truth in (truth_a, truth_b):  # two different truths under the ignore region ...
        truth[:, :3] = IGNORE  # ... both marked ignore there
    loss = dice_ce_loss(logits, truth_a, ignore_index=IGNORE)
    assert torch.equal(dice_ce_loss(logits, truth_b, ignore_index=IGNORE), loss)
    # the logits at ignored voxels do not matter either
    other_logits = logits.clone()
    other_logits[:, :, :3] = torch.randn(2, 4, 3, 8) * 10
    assert torch.allclose(dice_ce_loss(other_logits, truth_a, ignore_index=IGNORE), loss, atol=1e-6)
    # and the loss is the loss of the annotated part alone
    cropped = dice_ce_loss(logits[:, :, 3:], truth_a[:, 3:], ignore_index=IGNORE)
    assert torch.allclose(cropped, loss, atol=1e-6)


def test_ignored_voxels_get_no_gradient():
    logits, labels = _batch()
    logits.requires_grad_(True)
    dice_ce_loss(logits, labels, ignore_index=IGNORE).backward()
    assert torch.all(logits.grad[:, :, :3] == 0)
    assert torch.any(logits.grad[:, :, 3:] != 0)


def test_loss_equals_unmasked_loss_when_nothing_is_ignored_and_is_lower_for_right_answers():
    labels = torch.randint(0, 4, (2, 8, 8), generator=torch.Generator().manual_seed(1))
    perfect = torch.nn.functional.one_hot(labels, 4).movedim(-1, 1).float() * 20
    wrong = torch.roll(perfect, 1, dims=1)
    assert dice_ce_loss(perfect, labels, ignore_index=IGNORE) < 0.01
    assert dice_ce_loss(wrong, labels, ignore_index=IGNORE) > 1.0


def test_all_ignored_batch_gives_zero_loss_with_a_graph():
    logits = torch.randn(1, 4, 4, 4, requires_grad=True)
    loss = dice_ce_loss(logits, torch.full((1, 4, 4), IGNORE), ignore_index=IGNORE)
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.all(logits.grad == 0)


def test_classes_absent_from_the_batch_do_not_enter_the_dice_term():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, 2:5, 2:5] = 1  # only class 1 (and background) present
    logits = torch.nn.functional.one_hot(labels, 4).movedim(-1, 1).float() * 20
    # a perfect prediction: classes 2 and 3 are absent and predicted absent -> loss ~ 0, not ~ 2/3
    assert float(dice_ce_loss(logits, labels, ignore_index=IGNORE)) < 0.01
    background_only = torch.zeros(1, 8, 8, dtype=torch.long)
    loss = dice_ce_loss(torch.randn(1, 4, 8, 8), background_only, ignore_index=IGNORE)
    assert torch.isfinite(loss)


def test_three_dimensional_batches_work():
    logits = torch.randn(2, 3, 4, 4, 4)
    labels = torch.randint(0, 4, (2, 4, 4, 4))  # value 3 is the ignore of 3 classes
    assert torch.isfinite(dice_ce_loss(logits, labels, ignore_index=3))
