"""Where an image's channels go: the one place that arranges images as ``(..., C, H, W)``.

Training (:func:`training_image_layout`, for ``core.training.trainingset``) and prediction
(``core.inference.prediction``) check their inputs in their own words, then both call
:func:`channels_at_minus3`, so both see the same arrangement; :func:`pick_channel` takes one
channel for a one-channel model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .normalize import check_axis


def channels_at_minus3(image: Any, channel_axis: int | None) -> tuple[Any, int]:
    """``image`` with its channel axis moved to ``-3`` (a length-1 axis inserted there when
    ``channel_axis`` is None) and the number of channels; never copies or reads.

    ``(H, W)`` -> ``(1, H, W)``; ``(Z, H, W)`` -> ``(Z, 1, H, W)``; ``(H, W, C)`` with axis -1
    -> ``(C, H, W)``; ``(Z, C, H, W)`` stays. Numpy arrays and memory maps give numpy views,
    dask arrays stay lazy. ``channel_axis`` must be valid for ``image.ndim`` (callers check it).
    """
    if channel_axis is None:
        return image[..., None, :, :], 1
    source = channel_axis % image.ndim
    if isinstance(image, np.ndarray):
        return np.moveaxis(image, source, -3), int(image.shape[source])
    axes = [a for a in range(image.ndim) if a != source]
    axes.insert(image.ndim - 3, source)
    return image.transpose(axes), int(image.shape[source])


def pick_channel(image: Any, channel_axis: int | None, channel: int) -> Any:
    """``image`` with only ``channel`` along ``channel_axis`` (that axis dropped; a view, or
    lazy for dask)."""
    if channel_axis is None:
        raise ValueError(f"channel {channel} was chosen but the image has no channel axis "
                         "(give it with channel_axis, --channel-axis on the command line)")
    axis = channel_axis % image.ndim
    n = int(image.shape[axis])
    if not 0 <= channel < n:
        raise ValueError(f"channel {channel} does not exist: the image has {n} channel(s), "
                         f"0 to {n - 1}")
    index: list[Any] = [slice(None)] * image.ndim
    index[axis] = channel
    return image[tuple(index)]


def training_image_layout(image: Any, channel_axis: int | None, index: int
                          ) -> tuple[Any, bool, int]:
    """Image ``index`` of a training set as (image with channels at axis -3 or none, is it a
    stack, channels), without copying."""
    if not hasattr(image, "shape") or not hasattr(image, "ndim"):
        image = np.asarray(image)
    shape = tuple(image.shape)
    if 0 in shape:
        raise ValueError(f"image {index} is empty, shape {shape}")
    if channel_axis is None:
        if image.ndim in (2, 3):
            return channels_at_minus3(image, None)[0], image.ndim == 3, 1
        raise ValueError(
            f"image {index} has shape {shape}: a {image.ndim}D image needs channel_axis "
            f"(2D images are (H, W), stacks (Z, H, W))"
        )
    if image.ndim not in (3, 4):
        raise ValueError(
            f"image {index} has shape {shape}: with channel_axis it must be 3D (C, H, W) or "
            f"4D (Z, C, H, W)"
        )
    axis = check_axis(channel_axis, image.ndim, "channel_axis")
    view, channels = channels_at_minus3(image, axis)
    return view, image.ndim == 4, channels


__all__ = ["channels_at_minus3", "pick_channel", "training_image_layout"]
