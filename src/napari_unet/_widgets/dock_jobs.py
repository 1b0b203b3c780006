"""What the Predict and Batch docks run, free of Qt: the input they select and their jobs.

:func:`prediction_job`, :func:`diameter_job` and :func:`batch_job` are the generators the docks
run, in the docks' job process (:class:`core.runtime.processes.JobProcess`, which imports
this module without Qt or napari) or in a worker thread. A job there must not start processes
of its own (the job process is a daemon).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.events import Message
from .model_spec import ModelSpec


# -- pure helpers ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PredictInput:
    """What one prediction run reads: the array handed to the core and where results go.

    Attributes
    ----------
    array : array-like
        ``(H, W)``, ``(Z, H, W)`` or with a channel axis (``channel_axis``).
    channel_axis : int or None
        Channel axis of ``array``.
    in_channels : int
        Channels the model must take.
    index : tuple of int
        Leading indices of the slice when only the slice on screen is predicted (else ``()``).
    out_shape : tuple of int
        Shape of the full labels layer (the image without channels).
    """

    array: Any
    channel_axis: int | None
    in_channels: int
    index: tuple[int, ...]
    out_shape: tuple[int, ...]
    axes: str | None = None


def prediction_input(
    data: Any, channel_axis: int | None, rgb: bool, slice_index: tuple[int, ...] | None,
    channel: int | None = None, axes: str | None = None,
) -> PredictInput:
    """Select what to predict from an image layer's data.

    Parameters
    ----------
    data : array-like
        The layer data (full resolution), RGB images with colour last.
    channel_axis : int or None
        Axis of ``data`` holding channels (not for RGB).
    rgb : bool
        The last axis holds colour samples.
    slice_index : tuple of int or None
        Indices along the leading non-channel axes of the slice to predict (None: everything).
    channel : int or None
        Predict only this channel (for single-channel models); None: all channels.
    axes : str or None
        One letter per axis of ``data`` ("TZCYX"), when known; passed on without the axes
        that the selection removes.

    Returns
    -------
    PredictInput
    """
    shape = tuple(data.shape)
    if axes is not None and len(axes) != len(shape):
        axes = None  # the layer is not laid out as its file (e.g. one layer per channel)
    if rgb:
        channel_axis = len(shape) - 1
    if channel_axis is not None:
        channel_axis %= len(shape)
    if channel is not None:
        if channel_axis is None:
            raise ValueError("choose the channel axis before choosing one channel")
        if not 0 <= channel < shape[channel_axis]:
            raise ValueError(f"channel {channel} does not exist: the image has "
                             f"{shape[channel_axis]} along axis {channel_axis}")
        data = data[(slice(None),) * channel_axis + (int(channel),)]
        if axes is not None:
            axes = axes[:channel_axis] + axes[channel_axis + 1:]
        shape = tuple(data.shape)
        channel_axis = None
    spatial = [i for i in range(len(shape)) if i != channel_axis]
    out_shape = tuple(shape[i] for i in spatial)
    if len(out_shape) < 2:
        raise ValueError(f"the image (shape {shape}) has no 2D plane to segment")
    if len(out_shape) > 3 and not slice_index:
        raise ValueError(f"the image has {len(out_shape)} non-channel axes {out_shape}; "
                         "predict the current slice, or a 2D/3D image")
    in_channels = shape[channel_axis] if channel_axis is not None else 1
    lead = spatial[:-2]
    if not slice_index or not lead:
        return PredictInput(data, channel_axis, in_channels, (), out_shape, axes)
    if len(slice_index) != len(lead):
        raise ValueError(f"slice index {slice_index} does not fit axes {lead}")
    full: list[Any] = [slice(None)] * len(shape)
    for axis, i in zip(lead, slice_index, strict=True):
        full[axis] = int(i)
    array = data[tuple(full)]
    new_channel = None
    if channel_axis is not None:
        new_channel = channel_axis - sum(1 for a in lead if a < channel_axis)
    if axes is not None:
        axes = "".join(a for i, a in enumerate(axes) if i not in lead)
    return PredictInput(array, new_channel, in_channels, tuple(int(i) for i in slice_index),
                        out_shape, axes)


def prediction_job(spec: ModelSpec, request: PredictInput, config: Any,
                   normalization: dict[str, Any] | None = None) -> Iterator[Any]:
    """The worker's generator: load the model, then yield the core's prediction events.

    ``normalization`` (a checked spec) replaces the model's own for this run. An image pixel
    size is only used when the model records one too: most models do not, and that is normal,
    so it is dropped quietly instead of warning.
    """
    from ..core.inference.prediction import predict

    model, meta = spec.build(request.in_channels, num_classes=None, device="cpu")
    yield Message(f"model: {spec.describe()}")
    if normalization is not None:
        meta = meta.replace(normalization=normalization)
    if config.pixel_size is not None and not meta.pixel_size:
        config = dataclasses.replace(config, pixel_size=None)
    yield from predict(model, request.array, config, meta)


def diameter_job(spec: ModelSpec, request: PredictInput,
                 normalization: dict[str, Any] | None, options: dict[str, Any]) -> Iterator[Any]:
    """The worker's generator for the Estimate button: load the model, measure, yield the
    ``core.inference.diameter.DiameterEstimate`` last."""
    from ..core.inference.diameter import estimate_diameter
    from ..core.inference.prediction import predict_at

    model, meta = spec.build(request.in_channels, num_classes=None, device="cpu")
    if normalization is not None:
        meta = meta.replace(normalization=normalization)
    yield Message(f"measuring objects with {spec.describe()}...")
    yield estimate_diameter(model, request.array, meta, channel_axis=request.channel_axis,
                            device="cpu", predict_at=predict_at, **options)


def place(result: Any, request: PredictInput, dtype: Any = np.int32) -> np.ndarray:
    """Result of a slice prediction placed into a zero array of the full layer shape."""
    result = np.asarray(result)
    if not request.index:
        return result.astype(dtype, copy=False)
    out = np.zeros(request.out_shape, dtype)
    out[request.index] = result
    return out


def batch_job(spec: ModelSpec, input_dir: Path, output_dir: Path,
              options: dict[str, Any]) -> Iterator[Any]:
    """The worker's generator: load the model, then yield the core batch engine's events.

    ``options`` are ``batch_segment`` overrides (BatchConfig and PredictConfig fields).
    """
    from ..core.inference.batch import batch_segment

    model, meta = spec.build(None, num_classes=None, device="cpu")
    yield Message(f"model: {spec.describe()}")
    yield from batch_segment(model, input_dir, output_dir, meta=meta,
                             model_source=spec.source_file(), **options)


__all__ = ["PredictInput", "batch_job", "diameter_job", "place", "prediction_input",
           "prediction_job"]
