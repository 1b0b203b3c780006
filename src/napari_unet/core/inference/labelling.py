"""A plane's probabilities to its outputs, with a prediction's settings: instances (the
post-processing of :mod:`.postprocess`), semantic classes, the entropy uncertainty."""

from __future__ import annotations

import math

import numpy as np

from .config import PredictConfig
from .postprocess import instances_from_probability


def instance_labels(fg: np.ndarray, config: PredictConfig, scale: float = 1.0) -> np.ndarray:
    """Instances of one plane's foreground probability with ``config``'s post-processing;
    ``fg`` at ``scale`` x the image's size (``config.min_size`` counts image pixels)."""
    return np.asarray(instances_from_probability(fg, threshold=config.threshold,
                                                 split=config.split_touching,
                                                 **min_size_for(config, scale)),
                      dtype=np.int32)


def min_size_for(config: PredictConfig, scale: float = 1.0) -> dict[str, int]:
    """``config.min_size`` (image pixels) as the post-processing's keyword for a map at
    ``scale`` x the image's size; none when unset (the post-processing's default)."""
    if config.min_size is None:
        return {}
    return {"min_size": int(round(config.min_size * scale**2))}


def semantic_labels(probs: np.ndarray) -> np.ndarray:
    """Arg-max class per pixel (uint8 up to 256 classes)."""
    if probs.shape[0] == 2:  # the same labels (ties go to class 0), 5x faster than argmax
        return np.greater(probs[1], probs[0]).view(np.uint8)
    return np.argmax(probs, axis=0).astype(np.uint8 if probs.shape[0] <= 256 else np.int32)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Normalised entropy of ``(K, H, W)`` class probabilities: 0 = certain, 1 = uniform."""
    k = probs.shape[0]
    p = np.clip(probs, 1e-12, 1.0)
    return (-(p * np.log(p)).sum(0) / math.log(k)).astype(np.float32)
