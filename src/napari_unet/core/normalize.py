"""Image normalisation: percentile scaling per channel, the one place it is computed.

The spec format (``{"method": "percentile", "low": 1.0, "high": 99.8}`` or ``{"method": "none"}``)
is validated by :func:`napari_unet.core.model.meta.check_normalization`; the default lives in
:data:`napari_unet.core.constants.DEFAULT_NORMALIZATION`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .constants import DEFAULT_NORMALIZATION
from .model.meta import check_normalization


def normalize(
    image: np.ndarray,
    spec: Mapping[str, Any] | None = None,
    channel_axis: int | None = None,
) -> np.ndarray:
    """Percentile-normalise an image, each channel on its own.

    Parameters
    ----------
    image : array of any shape
        Numeric image. All axes except ``channel_axis`` are treated as one image, so callers
        that want one normalisation per 2D plane (as :class:`TrainingSet` does) pass planes.
    spec : dict, optional
        ``{"method": "percentile", "low": 1.0, "high": 99.8}`` (default) maps the ``low``
        percentile to 0 and the ``high`` percentile to 1, without clipping;
        ``{"method": "none"}`` only converts to float32.
    channel_axis : int, optional
        Axis of the channels (each normalised separately); kept in place in the output.

    Returns
    -------
    float32 array, same shape as ``image``

    Raises
    ------
    ValueError
        Empty image, non-numeric dtype, NaN or infinite values, bad spec.

    Notes
    -----
    Flat images do not divide by ~0: if the percentile range is (almost) zero, the min-max range
    is used instead, and if that is zero too, the image is only shifted (giving zeros).
    """
    spec = check_normalization(spec)
    image = np.asarray(image)
    if image.size == 0:
        raise ValueError(f"image is empty, shape {image.shape}")
    if image.dtype == bool:
        image = image.astype(np.uint8)
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"image must be a real-valued numeric array, got dtype {image.dtype}")
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values")
    if spec["method"] == "none":
        return image.astype(np.float32)
    if channel_axis is None:
        return _normalize_one(image, spec["low"], spec["high"])
    axis = check_axis(channel_axis, image.ndim, "channel_axis")
    moved = np.moveaxis(image, axis, 0)
    out = np.stack([_normalize_one(c, spec["low"], spec["high"]) for c in moved])
    return np.moveaxis(out, 0, axis)


def _normalize_one(channel: np.ndarray, low: float, high: float) -> np.ndarray:
    data = channel.astype(np.float64, copy=False)
    p_low, p_high = np.percentile(data, [low, high])
    scale = p_high - p_low
    tiny = 1e-6 * max(1.0, abs(p_low), abs(p_high))
    if scale <= tiny:
        # e.g. a sparse spot image whose percentiles coincide: fall back to the full range.
        scale = float(data.max() - data.min())
        if scale <= tiny:
            scale = 1.0
    return ((data - p_low) / scale).astype(np.float32)


def check_axis(axis: int, ndim: int, name: str) -> int:
    """``axis`` as a non-negative index into ``ndim`` axes; ``ValueError`` naming ``name``."""
    if int(axis) != axis or not -ndim <= axis < ndim:
        raise ValueError(f"{name} {axis!r} is out of range for a {ndim}D image")
    return int(axis) % ndim


__all__ = ["DEFAULT_NORMALIZATION", "check_axis", "check_normalization", "normalize"]
