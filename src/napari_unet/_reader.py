"""npe2 reader: TIFF stacks (and PNG/JPEG) with their axes, channels and pixel size.

The pixel size becomes the layer ``scale`` so that measurements and the Annotate dock's training
layer are in micrometres; a channel axis opens one layer per channel (napari's
``channel_axis``). Integer images whose file name says "label" or "mask" open as Labels layers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .core.io import OTHER_SUFFIXES, TIFF_SUFFIXES, ImageData, read_image

LayerData = tuple[Any, dict[str, Any], str]
LABEL_WORDS = ("label", "mask")


def napari_get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """Our reader for TIFF/PNG/JPEG/BMP/GIF paths (or a list of them), else None."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(str(p).lower().endswith(TIFF_SUFFIXES + OTHER_SUFFIXES)
                            for p in paths):
        return None
    return read_layers


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Layer data tuples for each file: an image (or labels) layer with scale and metadata."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    return [layer_data(read_image(p), Path(p)) for p in paths]


def layer_data(data: ImageData, path: Path) -> LayerData:
    """The napari layer tuple for one read image; pure, so it is testable without a viewer."""
    name = path.name.split(".")[0]
    spatial_axes = data.axes.replace("C", "")
    metadata = {"napari_unet_axes": spatial_axes, "pixel_size": data.pixel_size,
                "source_path": str(path)}
    kwargs: dict[str, Any] = {"name": name, "scale": data.scale, "metadata": metadata}
    array = data.array
    is_int = np.issubdtype(array.dtype, np.integer)
    if data.channel_axis is None and is_int and any(w in name.lower() for w in LABEL_WORDS):
        return array, kwargs, "labels"
    if data.channel_axis is not None:
        rgb = (data.channel_axis == array.ndim - 1 and array.shape[-1] in (3, 4)
               and array.dtype == np.uint8)
        if rgb:
            kwargs["rgb"] = True
        else:
            kwargs["channel_axis"] = data.channel_axis
            kwargs["name"] = [f"{name} [ch{i}]" for i in range(array.shape[data.channel_axis])]
    return array, kwargs, "image"
