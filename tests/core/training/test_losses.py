import math

import numpy as np
import pytest
import torch

from napari_unet.core.training.losses import (
    LOSSES,
    crop_to_output,
    distillation,
    soft_dice_loss,
    weighted_cross_entropy,
)

LN3 = math.log(3.0)


def two_by_two():
    """One 2x2 image, 2 classes. Pixel (1, 1) is not annotated (weight 0, label 255)."""
    logits = torch.tensor(
        [[[[0.0, LN3], [0.0, 5.0]], [[0.0, 0.0], [LN3, -5.0]]]], requires_grad=True
    )
    target = torch.tensor([[[1, 0], [0, 255]]])
    weights = torch.tensor([[[2.0, 1.0], [0.5, 0.0]]])
    return logits, target, weights


def test_weighted_cross_entropy_by_hand():
    logits, target, weights = two_by_two()
    # (0,0): p = (1/2, 1/2), class 1 -> ln 2, weight 2
    # (0,1): p = (3/4, 1/4), class 0 -> ln(4/3), weight 1
    # (1,0): p = (1/4, 3/4), class 0 -> ln 4, weight 0.5
    # 3 annotated pixels.
    expected = (2 * math.log(2) + math.log(4 / 3) + 0.5 * math.log(4)) / 3
    loss = weighted_cross_entropy(logits, target, weights)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss.item() == pytest.approx(0.789041, abs=1e-6)
    # An explicit mask overrides weights > 0 as the normaliser.
    mask = torch.tensor([[[True, True], [True, True]]])
    target_ok = torch.tensor([[[1, 0], [0, 0]]])
    assert weighted_cross_entropy(logits, target_ok, weights, mask).item() == pytest.approx(
        expected * 3 / 4, rel=1e-6
    )


def test_soft_dice_by_hand():
    logits, target, weights = two_by_two()
    # Foreground probabilities 1/2, 1/4, 3/4 on the annotated pixels; target 1, 0, 0.
    # intersection 1/2, sum p 3/2, sum t 1 -> Dice (2 * 1/2) / (5/2) = 0.4.
    loss = soft_dice_loss(logits, target, weights > 0, eps=0.0)
    assert loss.item() == pytest.approx(0.6, rel=1e-6)
    # With eps = 1: (1 + 1) / (5/2 + 1).
    assert soft_dice_loss(logits, target, weights).item() == pytest.approx(1 - 2 / 3.5, rel=1e-6)
    total = LOSSES["weighted_ce+dice"](logits, target, weights)
    wce = weighted_cross_entropy(logits, target, weights)
    assert total.item() == pytest.approx(wce.item() + (1 - 2 / 3.5), rel=1e-6)
    assert LOSSES["dice"](logits, target, weights).item() == pytest.approx(1 - 2 / 3.5)


@pytest.mark.parametrize("loss_name", ["wce", "dice", "combined"])
def test_ignored_pixels_get_exactly_zero_gradient(loss_name):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    weights = torch.rand(2, 8, 8) + 0.1
    ignore = torch.rand(2, 8, 8) < 0.4
    weights[ignore] = 0.0
    target[ignore] = 255
    loss = {
        "wce": lambda: weighted_cross_entropy(logits, target, weights),
        "dice": lambda: soft_dice_loss(logits, target, ~ignore),
        "combined": lambda: LOSSES["weighted_ce+dice"](logits, target, weights),
    }[loss_name]()
    loss.backward()
    grad = logits.grad.permute(1, 0, 2, 3)  # (C, N, H, W)
    assert torch.all(grad[:, ignore] == 0)
    assert torch.all(grad[:, ~ignore].abs().sum(0) > 0)


def test_nothing_annotated_gives_zero_loss():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    loss = weighted_cross_entropy(logits, target, torch.zeros(1, 4, 4))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_crop_to_output_for_valid_nets():
    t = torch.arange(36).reshape(1, 6, 6)
    np.testing.assert_array_equal(crop_to_output(t, (2, 2)), [[[14, 15], [20, 21]]])
    a = np.arange(7 * 9).reshape(7, 9)
    np.testing.assert_array_equal(crop_to_output(a, (5, 5)), a[1:6, 2:7])
    np.testing.assert_array_equal(crop_to_output(a, (6, 9)), a[0:6])  # odd: extra pixel after
    with pytest.raises(ValueError, match="must not be larger"):
        crop_to_output(a, (8, 9))


def test_losses_crop_larger_targets_to_the_logits():
    torch.manual_seed(1)
    logits = torch.randn(2, 2, 4, 4)
    target = torch.randint(0, 2, (2, 10, 10))
    weights = torch.rand(2, 10, 10)
    cropped = weighted_cross_entropy(
        logits, target[:, 3:7, 3:7].contiguous(), weights[:, 3:7, 3:7].contiguous()
    )
    assert weighted_cross_entropy(logits, target, weights).item() == pytest.approx(cropped.item())
    assert soft_dice_loss(logits, target).item() == pytest.approx(
        soft_dice_loss(logits, target[:, 3:7, 3:7]).item()
    )


def test_bad_shapes_raise():
    logits = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="logits"):
        weighted_cross_entropy(
            logits[0], torch.zeros(1, 4, 4, dtype=torch.long), torch.ones(1, 4, 4)
        )
    with pytest.raises(ValueError, match="long"):
        weighted_cross_entropy(logits, torch.zeros(1, 4, 4), torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="must not be larger"):
        soft_dice_loss(logits, torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="target"):
        soft_dice_loss(logits, torch.zeros(2, 4, 4, dtype=torch.long))


def test_distillation_is_the_soft_cross_entropy_on_the_unannotated_pixels_only():
    logits, _, weights = two_by_two()  # only pixel (1, 1) is not annotated
    # student at (1, 1): logits (5, -5); teacher there: p = (3/4, 1/4) (logits ln 3, 0)
    teacher = torch.zeros(1, 2, 2, 2)
    teacher[0, 0, 1, 1] = LN3
    expected = -(0.75 * math.log(1 / (1 + math.exp(-10))) + 0.25 * math.log(1 / (1 + math.exp(10))))
    loss = distillation(logits, teacher, weights)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert torch.count_nonzero(logits.grad[0, :, :, :].sum(0)[0]) == 0  # annotated rows: 0
    assert torch.count_nonzero(logits.grad[0, :, 1, 0]) == 0
    # the teacher's own logits: only its entropy is left, the minimum
    same = distillation(teacher.clone().requires_grad_(True), teacher, weights)
    assert float(same) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    # everything annotated: 0, with a graph
    none = distillation(logits, teacher, torch.ones(1, 2, 2))
    assert float(none) == 0.0 and none.requires_grad
    with pytest.raises(ValueError, match="teacher logits"):
        distillation(logits, teacher[:, :, :1], weights)
