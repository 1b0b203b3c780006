"""The "predicted" class weights (``TrainConfig.class_weights="predicted"``, the finetune
preset's): sparse paint says little about how much of an image each class covers, and a patch
of a dense cluster overstates its few background pixels, so the weights come from the class
shares the starting model sees in the whole training images."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .sampling import Snapshot

#: "predicted" class weights look at (at most) this many rows and columns of a plane, and at
#: planes spread over the training set until they have seen this many pixels (the finetune
#: preset's: it runs before the first step, so a big stack must not hold the start up) ...
PREDICTED_WEIGHTS_SIDE = 1024
PREDICTED_WEIGHTS_PIXELS = 1024 * 1024
#: ... and weigh a rare class at most this much more than the most frequent one.
MAX_PREDICTED_WEIGHT = 10.0


def predicted_class_weights(snapshot: Snapshot, num_classes: int,
                            logits: Callable[[np.ndarray], torch.Tensor]) -> Any:
    """Fixed class weights from the class shares the starting model predicts, whatever share of
    the images is painted (``"balanced"`` when there is nothing to train on).

    Parameters
    ----------
    snapshot : Snapshot
        The training set's current split; its training regions are predicted.
    num_classes : int
        Classes of the model.
    logits : callable
        ``(C, H, W)`` normalised image -> logits ``(K, H, W)`` of the starting model, without
        gradients (the trainer's whole-image forward pass in eval mode).

    Returns
    -------
    tuple of float or str
        One weight per class (the most frequent one weighs 1), or ``"balanced"``.
    """
    if not snapshot.train:
        return "balanced"
    counts = np.zeros(num_classes)
    regions, side = snapshot.train, PREDICTED_WEIGHTS_SIDE
    pixels = np.mean([min(r.image.shape[-2], side) * min(r.image.shape[-1], side)
                      for r in regions])
    n = min(len(regions), max(1, int(np.ceil(PREDICTED_WEIGHTS_PIXELS / pixels))))
    for i in np.unique(np.linspace(0, len(regions) - 1, n).round().astype(int)):
        image = regions[i].image[:, :side, :side]
        probs = torch.softmax(logits(image), 0)
        counts += probs.sum(dim=(1, 2)).cpu().numpy()
    share = counts / counts.sum()
    # like "balanced", the most frequent class weighs 1, but a rarer one only the square
    # root of its share ratio: the full ratio keeps object sizes yet merges touching nuclei
    # (sparse paint shows no gaps between them), the square root keeps both (TrainConfig
    # doc). Capped so a class the model barely sees does not dominate.
    ratio = share.max() / np.maximum(share, 1e-12)
    weights = np.minimum(np.sqrt(ratio), MAX_PREDICTED_WEIGHT)
    return tuple(float(w) for w in weights)


__all__ = [
    "MAX_PREDICTED_WEIGHT",
    "PREDICTED_WEIGHTS_PIXELS",
    "PREDICTED_WEIGHTS_SIDE",
    "predicted_class_weights",
]
