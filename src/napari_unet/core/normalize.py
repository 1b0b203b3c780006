"""Image normalisation: percentile scaling per channel, the one place it is computed.

The spec format (``{"method": "percentile", "low": 1.0, "high": 99.8}`` or ``{"method": "none"}``)
is validated by :func:`napari_unet.core.model.meta.check_normalization`; the default lives in
:data:`napari_unet.core.constants.DEFAULT_NORMALIZATION`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .constants import DEFAULT_NORMALIZATION
from .model.meta import check_normalization

#: Percentiles come from at most this many pixels per channel (a regular subsample): exact
#: for planes up to 2048 x 2048, and the same numbers in the whole-plane and blockwise paths.
MAX_SAMPLES = 2048 * 2048
#: Normalised values are clipped to +- this (the 1st..99.8th percentiles map to 0..1).
NORMALIZED_LIMIT = 1e6


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
    The percentiles are those of every pixel up to :data:`MAX_SAMPLES` pixels per channel, of a
    regular subsample beyond (:func:`intensity_range`, which prediction uses too). Flat images
    do not divide by ~0: if the percentile range is (almost) zero, the min-max range is used
    instead, and if that is zero too, the image is only shifted (giving zeros).
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
    # one normaliser: the range of every pixel (a regular subsample beyond MAX_SAMPLES pixels),
    # fitted and applied as prediction fits and applies it
    axis = None if channel_axis is None else check_axis(channel_axis, image.ndim, "channel_axis")
    channels = image[None] if axis is None else np.moveaxis(image, axis, 0)
    planes = channels[None] if channels.ndim == 3 else channels.reshape(1, len(channels), 1, -1)
    out = intensity_range(planes, spec).apply(planes[0]).reshape(channels.shape)
    return out[0] if axis is None else np.moveaxis(out, 0, axis)


def check_axis(axis: int, ndim: int, name: str) -> int:
    """``axis`` as a non-negative index into ``ndim`` axes; ``ValueError`` naming ``name``."""
    if int(axis) != axis or not -ndim <= axis < ndim:
        raise ValueError(f"{name} {axis!r} is out of range for a {ndim}D image")
    return int(axis) % ndim



# -- prediction: a range fitted on a subsample, then applied region by region ----------------
@dataclass(frozen=True)
class IntensityRange:
    """Per-channel ``(x - low) / scale``, with the percentiles of the whole plane/volume."""

    low: tuple[float, ...]
    scale: tuple[float, ...]

    def apply(self, region: np.ndarray) -> np.ndarray:
        """``(C, h, w)`` raw values -> float32 normalised (the formula of core.normalize).

        Values beyond +-:data:`NORMALIZED_LIMIT` (far outliers, e.g. a finite 1e308 in a
        float64 image) are clipped there instead of overflowing float32 to infinity.
        """
        data = np.asarray(region).astype(np.float64, copy=False)
        out = np.empty(data.shape, np.float32)
        for c in range(data.shape[0]):
            out[c] = np.clip((data[c] - self.low[c]) / self.scale[c], -NORMALIZED_LIMIT,
                             NORMALIZED_LIMIT)
        return out


def sample_step(n_pixels: int, max_samples: int = MAX_SAMPLES) -> int:
    """Stride of the regular subsample (every ``step``-th row and column)."""
    return max(1, math.ceil(math.sqrt(n_pixels / max_samples)))


def intensity_range(
    stack: Any,
    spec: Mapping[str, Any] | None,
    max_samples: int = MAX_SAMPLES,
    rows_per_read: int = 1024,
) -> IntensityRange | None:
    """Percentile range of a ``(Z, C, H, W)`` array-like, from a regular subsample.

    Every ``step``-th row and column of every plane (``step`` from :func:`sample_step`; 1 for
    images up to ``max_samples`` pixels, which then gives exactly core.normalize's numbers), read
    ``rows_per_read`` rows at a time so a memory-mapped or tiled input is never loaded whole.
    None for ``{"method": "none"}`` (only a conversion to float32).

    Raises
    ------
    ValueError
        NaN or infinite values in the sample; bad spec.
    """
    spec = check_normalization(spec)
    if spec["method"] == "none":
        return None
    n_z, n_c, h, w = (int(s) for s in stack.shape)
    step = sample_step(n_z * h * w, max_samples)
    band = max(step, rows_per_read // step * step)
    lows, scales = [], []
    for c in range(n_c):
        parts = []
        for z in range(n_z):
            for y0 in range(0, h, band):
                rows = np.asarray(stack[z, c, y0:y0 + band])
                parts.append(rows[::step, ::step].astype(np.float64).ravel())
        data = np.concatenate(parts)
        if not np.isfinite(data).all():
            raise ValueError("image contains NaN or infinite values")
        p_low, p_high = np.percentile(data, [spec["low"], spec["high"]])
        scale = p_high - p_low
        tiny = 1e-6 * max(1.0, abs(p_low), abs(p_high))
        if scale <= tiny:  # flat or sparse image: the full range, else only a shift
            scale = float(data.max() - data.min())
            if scale <= tiny:
                scale = 1.0
        lows.append(float(p_low))
        scales.append(float(scale))
    return IntensityRange(tuple(lows), tuple(scales))


def normalize_region(region: np.ndarray, rng: IntensityRange | None) -> np.ndarray:
    """Apply a range (or only convert to float32 when ``rng`` is None); NaN/inf rejected."""
    region = np.asarray(region)
    if np.issubdtype(region.dtype, np.floating) and not np.isfinite(region).all():
        raise ValueError("image contains NaN or infinite values")
    if rng is None:  # read only afterwards: no copy of a float32 region
        return region.astype(np.float32, copy=False)
    return rng.apply(region)


def normalize_plane(plane: np.ndarray, spec: Mapping[str, Any] | None) -> np.ndarray:
    """A ``(C, H, W)`` plane normalised as :func:`predict` does it: percentiles per channel
    from a regular subsample (every pixel up to 2048 x 2048; :func:`intensity_range`),
    so the whole-plane and blockwise paths use the same numbers."""
    plane = np.asarray(plane)
    return normalize_region(plane, intensity_range(plane[None], spec))

__all__ = ["DEFAULT_NORMALIZATION", "IntensityRange", "check_axis", "check_normalization",
           "intensity_range", "normalize", "normalize_plane", "normalize_region", "sample_step"]
