"""From napari layers to training data: image axes, label mode, the ``TrainingSet``.

Pure functions over layer-like objects (``.data``, ``.rgb``, ``.multiscale``, ``.scale``,
``.metadata``, ``.name``), so they are tested without a viewer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.layout import pick_channel
from ..core.training.labels import SEMANTIC_CONVENTIONS, SEMANTIC_IGNORE
from ..core.training.trainingset import TrainingSet
from . import CLASS_NAMES_KEY
from .layer_info import layer_geometry


def arrange_image(data: Any, rgb: bool, labels_shape: tuple[int, ...]) -> tuple[Any, int | None]:
    """Image data with channels (if any) just before ``(H, W)``, and that channel axis.

    Parameters
    ----------
    data : array-like
        Image layer data: ``(H, W)``, ``(Z, H, W)``, a channel axis anywhere before ``(H, W)``,
        or RGB(A) with channels last.
    rgb : bool
        Whether the layer is RGB(A).
    labels_shape : tuple of int
        Shape of the training labels: ``(H, W)`` or ``(Z, H, W)``.

    Returns
    -------
    image : array-like
        ``(H, W)``, ``(Z, H, W)``, ``(C, H, W)`` or ``(Z, C, H, W)`` (a view; dask stays lazy).
    channel_axis : int or None
        0 or 1 for images with channels, else None.
    """
    shape, labels_shape = tuple(data.shape), tuple(labels_shape)
    if len(labels_shape) not in (2, 3):
        raise ValueError(f"training labels must be 2D or a 3D stack, got shape {labels_shape}")
    if rgb:
        axis = len(shape) - 1
        if shape[:-1] != labels_shape:
            raise ValueError(f"labels shape {labels_shape} does not match the RGB image's "
                             f"shape {shape[:-1]}")
    elif shape == labels_shape:
        return data, None
    else:
        candidates = [a for a in range(len(shape) - 2)
                      if shape[:a] + shape[a + 1:] == labels_shape]
        if not candidates:
            raise ValueError(f"labels shape {labels_shape} does not match image shape {shape} "
                             "(the labels must cover the image, without its channel axis)")
        axis = candidates[0]
    target = len(shape) - 3
    if axis == target:
        return data, target
    order = list(range(len(shape)))
    order.insert(target, order.pop(axis))
    moved = np.transpose(data, order) if isinstance(data, np.ndarray) else data.transpose(order)
    return moved, target


def labels_mode(convention: str, labels: np.ndarray, class_names: Any = None) -> tuple[str, int]:
    """``(mode, num_classes)`` for labels in ``convention`` (semantic: named or counted classes)."""
    if convention not in SEMANTIC_CONVENTIONS:
        return "instances", 2
    if class_names:
        return "semantic", max(2, len(class_names))
    values = np.asarray(labels)
    if convention == "semantic":
        values = values[values != SEMANTIC_IGNORE]
        top = int(values.max()) if values.size else 0
        return "semantic", max(2, top + 1)
    return "semantic", max(2, int(values.max()) if values.size else 0)


@dataclass(frozen=True)
class TrainingData:
    """What a run trains on: the samples, and the image (for preview crops)."""

    samples: TrainingSet
    image: Any
    channel_axis: int | None


def training_data(image_layer: Any, labels_layer: Any, convention: str,
                  channel: int | None = None) -> TrainingData:
    """Build the training data of an image layer and its painted labels layer.

    The labels are copied (painting goes on during training; updates go through
    ``TrainingSet.update``). The model records one pixel size (x, in the layer's units), as the
    CLI does; a scale of 1 is napari's "unknown". With ``channel``, only that channel of the
    image is trained on (and recorded in the model). ``ValueError`` for layers that cannot train.
    """
    data = image_layer.data[0] if image_layer.multiscale else image_layer.data
    labels = np.array(labels_layer.data, copy=True)
    image, channel_axis = arrange_image(data, image_layer.rgb, labels.shape)
    if not labels.any():
        raise ValueError(f"'{labels_layer.name}' has no annotation yet: paint background "
                         "and some objects first")
    names = labels_layer.metadata.get(CLASS_NAMES_KEY)
    mode, num_classes = labels_mode(convention, labels, names)
    samples = TrainingSet([image], [labels], convention=convention,
                          channel_axis=channel_axis, mode=mode, num_classes=num_classes,
                          channel=channel)
    if channel is not None:  # what the preview shows the model: that channel alone
        image, channel_axis = pick_channel(image, channel_axis, channel), None
    # Stored in the model's meta by Trainer.meta() (it reads these attributes if present).
    if mode == "semantic" and names and len(names) == num_classes:
        samples.class_names = list(names)
    # From the layer's scale, or from its source file when napari's reader left the scale at 1.
    samples.pixel_size = layer_geometry(image_layer).pixel_size
    return TrainingData(samples, image, channel_axis)


__all__ = ["TrainingData", "arrange_image", "labels_mode", "training_data"]
