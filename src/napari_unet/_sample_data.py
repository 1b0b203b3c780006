"""Sample data contributed to napari's File > Open Sample menu."""

from __future__ import annotations

from typing import Any

from .core.synthetic import synthetic_nuclei


def synthetic_nuclei_sample() -> list[tuple[Any, dict, str]]:
    """A 256x256 synthetic fluorescence image with touching nuclei and its ground-truth labels."""
    image, labels = synthetic_nuclei((256, 256), seed=2015)
    return [
        (image, {"name": "synthetic nuclei", "colormap": "gray"}, "image"),
        (labels, {"name": "synthetic nuclei ground truth", "opacity": 0.4}, "labels"),
    ]
