"""The gaps the starting model sees between objects, kept as background while fine-tuning
(``TrainConfig.keep_gaps``; the finetune preset's).

A user who paints ten nuclei says nothing about the hundreds around them. Trained on that paint
alone, a model soon stops separating the touching nuclei it separated before (on the clusters
proxy of ``benchmarks/finetune_proxies.py``, 61 % -> 96 % of the nuclei merged), while holding
every unpainted pixel at the starting model's prediction also holds its outlines, which the paint
is there to correct. So only the gaps are kept: unpainted pixels the starting model calls
background with two of its *different* objects within ``radius`` pixels become background in the
training labels. Outlines elsewhere are left to the paint, and the starting model runs once per
painted plane instead of once per step.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from scipy import ndimage as ndi

from ..inference.config import PredictConfig
from ..inference.labelling import instance_labels
from ..inference.predictor import drain, plane_predictor
from ..inference.tiles import auto_tile_size
from ..model.unet import UNet


def gaps_between_objects(instances: np.ndarray, radius: int) -> np.ndarray:
    """Background pixels of ``instances`` (0 = background) with two different object ids in
    the ``(2 radius + 1)`` square around them.

    A hole inside one object, or the background beside a lone object, is no gap.
    """
    ids = np.asarray(instances)
    if ids.ndim != 2:
        raise ValueError(f"instances must be a 2D label image, got shape {ids.shape}")
    radius = int(radius)
    if radius < 1:
        return np.zeros(ids.shape, bool)
    ids = ids.astype(np.int64, copy=False)
    size = 2 * radius + 1
    beyond = ids.max() + 1  # background counts as no id for the smallest id around
    largest = ndi.maximum_filter(ids, size, mode="constant", cval=0)
    smallest = ndi.minimum_filter(np.where(ids > 0, ids, beyond), size, mode="constant",
                                  cval=beyond)
    return (ids == 0) & (smallest < beyond) & (largest != smallest)


class StartModelGaps:
    """``(C, H, W)`` normalised plane -> ``(gaps, foreground)``, bool ``(H, W)`` each: the gaps
    between the objects a frozen copy of ``model`` finds there (its instances with a
    prediction's default post-processing) and what it calls foreground (a
    :class:`~.hints.BackgroundHint`, which finds from it the paint the model gets wrong).

    The copy is taken now, so the gaps stay those of the weights a run starts from while the
    model itself trains. A training set calls it under its lock, from whichever thread updates
    it.
    """

    def __init__(self, model: UNet, radius: int, device: torch.device | str = "cpu") -> None:
        if model.num_classes != 2:
            raise ValueError("gaps between objects need an instance model (2 classes), got "
                             f"{model.num_classes} classes")
        self.radius = int(radius)
        self.device = torch.device(device)
        self.model = copy.deepcopy(model).to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._predictor = plane_predictor(self.model, self.device,
                                          auto_tile_size(self.model, self.device), 1,
                                          tta=False, variance=False, blend="discard",
                                          margin=None, half=False)
        self._post = PredictConfig()

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        plane = np.asarray(image, np.float32)
        if plane.ndim == 2:
            plane = plane[None]
        probabilities, _ = drain(self._predictor.run(plane))
        gaps = gaps_between_objects(instance_labels(probabilities[1], self._post), self.radius)
        return gaps, probabilities[1] > self._post.threshold


__all__ = ["StartModelGaps", "gaps_between_objects"]
