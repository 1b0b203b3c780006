"""Object size: the factor between the image's scale and the model's, and resampling back."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..model.meta import ModelMeta
from .config import PredictConfig
from .diameter import band_text, model_scale

#: Largest resampling factor (either way) from ``object_diameter``/``pixel_size``: beyond it the
#: model's scale and the image's are too far apart for the net to help, and sizes explode.
MAX_RESCALE = 16.0


# -- scale -----------------------------------------------------------------------------------
def scale_factor(config: PredictConfig, meta: ModelMeta, diameter: float | None,
                  hw: tuple[int, int]) -> tuple[float, str | None]:
    """Factor image -> model resolution, and a note for the user (None if nothing to say).

    Raises ``ValueError`` naming the factor and the resulting size when it is beyond
    :data:`MAX_RESCALE` either way.
    """
    factor, note = 1.0, None
    if diameter is not None:
        if not meta.object_diameter:
            return 1.0, ("the model does not record the object diameter it was trained at; "
                         "object_diameter is ignored")
        trained = float(meta.object_diameter)
        factor = model_scale(diameter, trained)
        source = f"object_diameter {diameter:g} px against the model's {band_text(trained)}"
        if factor == 1.0:
            return 1.0, (f"object_diameter {diameter:g} px lies within the model's "
                         f"{band_text(trained)}: predicted at the image's own scale")
    elif config.pixel_size is not None:
        if not meta.pixel_size:
            return 1.0, ("the model does not record the pixel size it was trained at; "
                         "pixel_size is ignored")
        factor = config.pixel_size / float(meta.pixel_size)
        source = f"pixel_size {config.pixel_size:g} against the model's {meta.pixel_size:g}"
    else:
        return 1.0, None
    if not 1.0 / MAX_RESCALE <= factor <= MAX_RESCALE:
        size = f"{max(1, round(hw[0] * factor))} x {max(1, round(hw[1] * factor))}"
        raise ValueError(f"{source} means resizing the image by {factor:.3g}x ({hw[0]} x "
                         f"{hw[1]} -> {size} px); the factor must lie between 1/{MAX_RESCALE:g} "
                         f"and {MAX_RESCALE:g}: check the value")
    return factor, note


def resize_plane(arr: np.ndarray, hw: tuple[int, int], order: int) -> np.ndarray:
    """Resample the last two axes to ``hw`` (linear: ``order=1``), as float32."""
    from skimage.transform import resize

    shrinking = hw[0] < arr.shape[-2] or hw[1] < arr.shape[-1]
    out = resize(arr, arr.shape[:-2] + tuple(hw), order=order, mode="symmetric",
                 preserve_range=True, anti_aliasing=shrinking and order > 0)
    return out.astype(np.float32, copy=False)


def labels_at_image_scale(model_labels: Any, model_fg: Any, image_fg: Any,
                          threshold: float = 0.5,
                          where: tuple[slice, slice] | None = None) -> np.ndarray:
    """Instances found at a model's scale, at the image's: the part ``where`` (all when None).

    ``model_labels`` and ``model_fg`` are a rescaled plane's instances and foreground
    probability at the model's scale, ``image_fg`` the foreground probability resampled to the
    image. Each image pixel takes the object of the model pixel nearest to it; the outline is
    ``image_fg``'s (finer than a resampled mask) plus the gaps and holes the post-processing gave
    back at the model's scale; pixels just outside the nearest object's staircase take the
    nearest object within reach. Any array-likes (memory maps): only ``where`` and a margin
    are read.
    """
    from skimage.segmentation import expand_labels

    h, w = image_fg.shape
    mh, mw = model_labels.shape
    rows, cols = where if where is not None else (slice(0, h), slice(0, w))
    # an outline from the finer map reaches at most one model pixel beyond the staircase
    reach = int(math.ceil(max(h / mh, w / mw))) + 1
    y0, y1 = max(rows.start - reach, 0), min(rows.stop + reach, h)
    x0, x1 = max(cols.start - reach, 0), min(cols.stop + reach, w)
    iy = _nearest_index(y0, y1, h, mh)
    ix = _nearest_index(x0, x1, w, mw)
    box = (slice(iy[0], iy[-1] + 1), slice(ix[0], ix[-1] + 1))
    pick = np.ix_(iy - iy[0], ix - ix[0])
    nearest = np.asarray(model_labels[box])[pick]
    given_back = (nearest > 0) & (np.asarray(model_fg[box])[pick] <= threshold)
    inside = (np.asarray(image_fg[y0:y1, x0:x1]) > threshold) | given_back
    labels = np.where(inside, expand_labels(nearest, distance=reach), 0).astype(np.int32)
    return labels[rows.start - y0:rows.stop - y0, cols.start - x0:cols.stop - x0]


def _nearest_index(start: int, stop: int, n: int, m: int) -> np.ndarray:
    """For pixels ``start..stop`` of an axis of ``n``, the nearest of ``m`` resampled ones."""
    centres = (np.arange(start, stop) + 0.5) * (m / n)
    return np.minimum(centres.astype(np.int64), m - 1)
