"""Training losses: the paper's pixel-weighted cross-entropy, a masked soft Dice, and their sum.

All losses take raw logits ``(N, C, h, w)``. Targets and weights may be larger than the logits
(a valid-convolution net's output is smaller than its input); they are centre-cropped to the
logits with :func:`crop_to_output`, which is where the output pixels sit in the input tile.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def crop_to_output(t: Tensor | np.ndarray, hw: tuple[int, int]) -> Tensor | np.ndarray:
    """Centre-crop the last two axes of ``t`` to ``hw``.

    Parameters
    ----------
    t : (..., H, W) tensor or array
        Target, weights or image of the net's input tile.
    hw : (h, w)
        Output size of the net, ``h <= H`` and ``w <= W``.

    Returns
    -------
    (..., h, w) view of ``t``
        For a valid net ``H - h`` is even; an odd difference puts the extra pixel after the crop.
    """
    if t.ndim < 2:
        raise ValueError(f"need an array with at least 2 axes to crop, got shape {tuple(t.shape)}")
    h, w = int(hw[0]), int(hw[1])
    big_h, big_w = int(t.shape[-2]), int(t.shape[-1])
    if h > big_h or w > big_w or h < 1 or w < 1:
        raise ValueError(
            f"cannot centre-crop {(big_h, big_w)} to {(h, w)}: the output must not be larger"
        )
    top, left = (big_h - h) // 2, (big_w - w) // 2
    return t[..., top : top + h, left : left + w]


def weighted_cross_entropy(
    logits: Tensor, target: Tensor, weights: Tensor, mask: Tensor | None = None
) -> Tensor:
    """Pixel-weighted cross-entropy, normalised by the number of annotated pixels.

    ``sum(weights * CE) / n_annotated``. Normalising by the annotated count (not by the sum
    of the weights) keeps the paper's relative emphasis of border pixels and makes sparse
    annotations (few painted pixels) as strong a signal per pixel as dense ones.

    Parameters
    ----------
    logits : (N, C, h, w) float
    target : (N, H, W) long
        Class per pixel; values at non-annotated pixels are never read (any value, e.g. 255).
    weights : (N, H, W) float
        E.g. :func:`napari_unet.core.training.weight_map.weight_map`; 0 = not annotated.
    mask : (N, H, W) bool, optional
        True = annotated (counts in the normaliser). By default ``weights > 0``.

    Returns
    -------
    scalar tensor
        0 (with a graph) when no pixel is annotated. Non-annotated pixels get exactly zero
        gradient.
    """
    _check_logits(logits)
    target, weights, mask = _prepare(logits, target, weights, mask, "weights")
    safe_target = torch.where(mask, target, torch.zeros_like(target))
    ce = F.cross_entropy(logits, safe_target, reduction="none")
    weights = torch.where(mask, weights.to(ce.dtype), torch.zeros_like(ce))
    n = mask.sum()
    return (weights * ce).sum() / n.clamp(min=1)


def soft_dice_loss(
    logits: Tensor, target: Tensor, mask: Tensor | None = None, eps: float = 1.0
) -> Tensor:
    """1 - mean soft Dice of the foreground classes over the masked pixels of the batch.

    Parameters
    ----------
    logits : (N, C, h, w) float
        C >= 2; class 0 is background and is left out of the mean.
    target : (N, H, W) long
        Class per pixel; values outside the mask are never read.
    mask : (N, H, W) bool or float, optional
        Pixels where ``mask`` is True / > 0 take part (a weight map can be passed as is);
        others get exactly zero gradient. None = all pixels.
    eps : float
        Smoothing added to numerator and denominator (a class absent from target and
        prediction then scores 1, not 0/0).

    Returns
    -------
    scalar tensor in [0, 1]
    """
    _check_logits(logits)
    target, _, mask = _prepare(logits, target, None, mask, "mask")
    m = mask.unsqueeze(1).to(logits.dtype)
    probs = torch.softmax(logits, dim=1) * m
    safe_target = torch.where(mask, target, torch.zeros_like(target))
    onehot = F.one_hot(safe_target, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype) * m
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)[1:]
    total = probs.sum(dims)[1:] + onehot.sum(dims)[1:]
    dice = (2 * intersection + eps) / (total + eps)
    return 1 - dice.mean()


def weighted_ce_plus_dice(logits: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """``weighted_cross_entropy + soft_dice_loss`` on the same annotated pixels
    (``weights > 0``)."""
    mask = weights > 0
    return weighted_cross_entropy(logits, target, weights, mask) + soft_dice_loss(logits, target,
                                                                                 mask)


def _dice(logits: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    return soft_dice_loss(logits, target, weights > 0)


def distillation(logits: Tensor, teacher_logits: Tensor, weights: Tensor) -> Tensor:
    """Soft cross-entropy to a teacher's probabilities on the *non-annotated* pixels.

    ``mean over pixels with weight 0 of -sum_c p_teacher(c) log p(c)``: fine-tuning on a few
    painted objects leaves most of each tile without a label; there the starting model's own
    predictions keep what it knew (learning without forgetting). Its value at a pixel is the
    teacher's entropy plus the KL divergence, so the gradient is that of the KL divergence.

    Parameters
    ----------
    logits, teacher_logits : (N, C, h, w) float
        The net's and the teacher's outputs for the same input.
    weights : (N, H, W) float
        The batch's weight map (0 = not annotated), cropped to the logits like the main loss.

    Returns
    -------
    scalar tensor
        0 (with a graph) when every pixel is annotated.
    """
    _check_logits(logits)
    if teacher_logits.shape != logits.shape:
        raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} do not match the net's "
                         f"{tuple(logits.shape)}")
    free = _cropped_weights(logits, weights) == 0
    count = free.sum()
    if count == 0:
        return logits.sum() * 0.0
    soft = -(teacher_logits.softmax(1) * F.log_softmax(logits, 1)).sum(1)
    return torch.where(free, soft, torch.zeros_like(soft)).sum() / count


#: The training losses by name, each ``f(logits, target, weights) -> scalar``; the one list
#: that TrainConfig, the CLI and the Train dock offer.
LOSSES = {
    "weighted_ce": weighted_cross_entropy,
    "dice": _dice,
    "weighted_ce+dice": weighted_ce_plus_dice,
}


def _check_logits(logits: Tensor) -> None:
    if logits.ndim != 4:
        raise ValueError(f"logits must be (N, C, h, w), got shape {tuple(logits.shape)}")
    if logits.shape[1] < 2:
        raise ValueError(f"logits need at least 2 classes, got {logits.shape[1]}")


def _cropped_weights(logits: Tensor, weights: Tensor) -> Tensor:
    """A ``(N, H, W)`` weight map checked, centre-cropped to the logits, on their device."""
    n, _, h, w = logits.shape
    if weights.ndim != 3 or weights.shape[0] != n:
        raise ValueError(f"weights must be (N, H, W), got shape {tuple(weights.shape)}")
    return crop_to_output(weights, (h, w)).to(logits.device)


def _prepare(
    logits: Tensor, target: Tensor, weights: Tensor | None, mask: Tensor | None, mask_name: str
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Crop target/weights/mask to the logits and check their shapes; mask becomes bool."""
    n, _, h, w = logits.shape
    if target.ndim != 3 or target.shape[0] != n:
        raise ValueError(
            f"target must be (N, H, W) with N = {n}, got shape {tuple(target.shape)}"
        )
    if target.dtype != torch.long:
        raise ValueError(f"target must be a long tensor of class indices, got {target.dtype}")
    target = crop_to_output(target, (h, w))
    if weights is not None:
        weights = _cropped_weights(logits, weights)
    if mask is None:
        mask = weights > 0 if weights is not None else torch.ones_like(target, dtype=torch.bool)
    else:
        if mask.ndim != 3 or mask.shape[0] != n:
            raise ValueError(f"{mask_name} must be (N, H, W), got shape {tuple(mask.shape)}")
        mask = crop_to_output(mask, (h, w))
        mask = mask if mask.dtype == torch.bool else mask > 0
    mask = mask.to(logits.device)
    return target.to(logits.device), weights, mask
