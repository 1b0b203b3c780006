"""What the docks need to know about an image layer that napari's readers do not tell them.

napari's built-in reader (or napari-bioio-reader) opens TIFF/PNG files; napari-unet contributes no
reader, so napari never asks "Choose reader". The docks find the pixel size and the axes
themselves, from the layer's scale and units, else from the file it was opened from
(``layer.source.path``, read with ``core.io``: TIFF tags, ImageJ and OME metadata).

Public API
----------
``LayerGeometry(axes, pixel_size, channel_axis, origin, z_spacing)``
    ``axes``: one letter per axis of the layer's data from "TZCYX" (RGB samples are "C"), or
    None when unknown; ``pixel_size``: micrometres per pixel in the image plane, or None;
    ``channel_axis``: index of "C" in the layer's data (None for RGB layers and single-channel
    images); ``origin``: where the pixel size came from (``"scale"``, ``"file"`` or ``"none"``);
    ``z_spacing``: distance between Z slices in plane pixels, when both are known.
``layer_geometry(layer) -> LayerGeometry``
    Never raises for an unreadable or vanished source file (the geometry is then what the layer
    itself says).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerGeometry:
    """Axes, plane pixel size (micrometres) and channel axis of an image layer."""

    axes: str | None
    pixel_size: float | None
    channel_axis: int | None
    origin: str = "none"
    z_spacing: float | None = None


def _micrometres(value: float, unit: Any) -> float | None:
    """``value`` in ``unit`` as micrometres; None when the unit is not a length."""
    try:
        import pint

        quantity = pint.Quantity(float(value), unit)
        if quantity.dimensionality != pint.Quantity(1, "m").dimensionality:
            return None
        return float(quantity.to("micrometer").magnitude)
    except (ImportError, AttributeError, TypeError, ValueError):
        return None


def _scale_pixel_size(layer: Any) -> float | None:
    """Plane pixel size from the layer's scale: set by a reader, the sample data or the user."""
    scale = float(layer.scale[-1])
    units = getattr(layer, "units", None)
    unit = units[-1] if units is not None and len(units) else None
    if unit is not None and str(unit) not in ("pixel", "px"):
        return _micrometres(scale, unit)
    # napari's default unit is "pixel"; a scale other than 1 then is micrometres by convention
    return None if scale == 1.0 else scale


@lru_cache(maxsize=32)
def _file_header(path: str, mtime_ns: int, size: int) -> tuple[str, tuple[float, ...] | None]:
    from ..core.io.images import read_image

    data = read_image(path, lazy_bytes=0)  # lazily: only the header is needed
    return data.axes, data.pixel_size


def source_file_geometry(path: str | os.PathLike) -> tuple[str, tuple[float, ...] | None] | None:
    """``(axes, pixel_size)`` of an image file, or None when it cannot be read."""
    try:
        stat = Path(path).stat()
        return _file_header(str(path), stat.st_mtime_ns, stat.st_size)
    except (OSError, ValueError) as err:
        log.debug("no geometry from %s: %s", path, err)
        return None


def _layer_axes(file_axes: str, layer: Any) -> str | None:
    """The file's axes as they apply to this layer's data, or None when they do not fit."""
    ndim = len(layer.data[0].shape if getattr(layer, "multiscale", False) else layer.data.shape)
    if ndim == len(file_axes):
        return file_axes
    if "C" in file_axes and ndim == len(file_axes) - 1:  # one channel per layer (channel_axis)
        return file_axes.replace("C", "")
    return None


def layer_geometry(layer: Any) -> LayerGeometry:
    """See the module docstring."""
    pixel_size = _scale_pixel_size(layer)
    origin = "scale" if pixel_size is not None else "none"
    axes, z_spacing = None, None
    source = getattr(getattr(layer, "source", None), "path", None)
    if source:
        header = source_file_geometry(source)
        if header is not None:
            file_axes, file_pixel = header
            axes = _layer_axes(file_axes, layer)
            if pixel_size is None and file_pixel and axes is not None:
                pixel_size, origin = float(file_pixel[-1]), "file"
            if origin == "file" and file_pixel and len(file_pixel) == 3 and "Z" in file_axes:
                z_spacing = float(file_pixel[0]) / float(file_pixel[-1])
    if origin == "scale" and axes is not None and "Z" in axes:
        scale = [float(v) for v in layer.scale]
        z_spacing = scale[axes.index("Z")] / scale[-1]  # same unit on both axes
    channel_axis = None
    if axes is not None and "C" in axes and not getattr(layer, "rgb", False):
        channel_axis = axes.index("C")
    return LayerGeometry(axes, pixel_size, channel_axis, origin, z_spacing)


__all__ = ["LayerGeometry", "layer_geometry", "source_file_geometry"]
