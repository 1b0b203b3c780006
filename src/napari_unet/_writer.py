"""npe2 writer: a Labels layer -> ImageJ-compatible TIFF (uint16; OME uint32 above 65,535 ids).

The layer's spatial scale is written as the pixel size, so a label image reopens on top of its
image. napari's save dialog has already asked before replacing a file, hence ``overwrite``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .core.io.images import write_labels

DEFAULT_AXES = {2: "YX", 3: "ZYX", 4: "TZYX"}


def labels_axes_and_pixel_size(
    ndim: int, meta: dict[str, Any]
) -> tuple[str, tuple[float, ...] | None]:
    """Axes letters and pixel size (µm per Z/Y/X axis) for a labels layer of ``ndim`` dims.

    Uses the axes the Predict dock stored in the layer metadata when they fit, else Z/T by
    position; the pixel size is the layer scale on spatial axes, else the pixel size the Predict
    dock stored from the image's file, else None.
    """
    stored = (meta.get("metadata") or {}).get("napari_unet_axes")
    if isinstance(stored, str) and len(stored) == ndim and "C" not in stored:
        axes = stored
    elif ndim in DEFAULT_AXES:
        axes = DEFAULT_AXES[ndim]
    else:
        raise ValueError(f"cannot save a {ndim}D labels layer as ImageJ TIFF (2-4 dims)")
    scale = tuple(float(s) for s in (meta.get("scale") or (1.0,) * ndim))
    spatial = tuple(s for s, a in zip(scale, axes, strict=False) if a in "ZYX")
    pixel_size = None if all(s == 1.0 for s in spatial) else spatial
    if pixel_size is None:  # napari's reader left the scale at 1: the Predict dock's record
        stored = (meta.get("metadata") or {}).get("napari_unet_pixel_size")
        if isinstance(stored, (tuple, list)) and len(stored) == len(spatial):
            pixel_size = tuple(float(s) for s in stored)
    return axes, pixel_size


def napari_write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one Labels layer; returns the written path (napari's writer contract)."""
    axes, pixel_size = labels_axes_and_pixel_size(np.ndim(data), meta)
    written = write_labels(path, np.asarray(data), axes, pixel_size, overwrite=True)
    if written.note:
        from napari.utils.notifications import show_info

        show_info(f"{written.path.name}: {written.note}")
    return [str(written.path)]
