"""Image layout for prediction: any array as a (Z, C, H, W) view, and output allocation."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..io.outputs import check_free_space, format_bytes
from ..io.resources import check_memory
from ..layout import channels_at_minus3, pick_channel
from .config import is_int

# Outputs bigger than this are not allocated in RAM but as (unlinked) temporary memory maps.
IN_RAM_BYTES = 256 * 2**20


# -- image layout ----------------------------------------------------------------------------
def channel_axis_of(image: Any, axes: str | None, channel_axis: int | None) -> int | None:
    """The channel axis: ``axes``' "C" where it has one (``channel_axis`` must agree)."""
    ndim = getattr(image, "ndim", None)
    if axes is None or ndim is None:
        return channel_axis
    if len(axes) != ndim:
        raise ValueError(f"axes {axes!r} has {len(axes)} letters but the image has "
                         f"{ndim} dimensions (shape {tuple(image.shape)})")
    if "C" not in axes:
        return channel_axis
    if channel_axis is not None and channel_axis % ndim != axes.index("C"):
        raise ValueError(f"channel_axis {channel_axis} disagrees with axes {axes!r}")
    return axes.index("C")


def image_layout(image: Any, config: Any, in_channels: int, recorded: int | None = None
                 ) -> tuple[Any, str | None, int | None, str | None]:
    """``(image, axes, channel_axis, note)`` as the model will see them: the channel axis from
    ``config.axes`` where it says; with ``config.channel`` only that channel (no channel axis
    left); without it, a one-channel model takes the channel it was trained on (``recorded``)
    from a multi-channel image, and ``note`` says so."""
    axes = config.axes
    channel_axis = channel_axis_of(image, axes, config.channel_axis)
    channel, note = config.channel, None
    if channel is None and recorded is not None and in_channels == 1 \
            and channel_axis is not None and image.shape[channel_axis] > 1:
        channel, note = recorded, f"channel {recorded}: the one the model was trained on"
    if channel is None:
        return image, axes, channel_axis, None
    picked = pick_channel(image, channel_axis, channel)
    return picked, None if axes is None else axes.replace("C", ""), None, note


def check_finite_in_memory(image: Any) -> None:
    """NaN or infinity in an in-memory float image is refused up front (lazy inputs are checked
    region by region, when they are read)."""
    if isinstance(image, np.ndarray) and not isinstance(image, np.memmap) \
            and np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values")


def as_stack(image: Any, in_channels: int, channel_axis: int | None) -> tuple[Any, bool]:
    """View ``image`` as ``(Z, C, H, W)`` without reading it.

    Returns the view and whether the image is a stack. Memory maps stay memory maps, dask
    stays dask; other array-likes (zarr) are wrapped in dask so nothing is loaded here.
    """
    if channel_axis is not None and not is_int(channel_axis):
        raise TypeError(f"channel_axis must be an integer or None, got {channel_axis!r}")
    if not hasattr(image, "shape") or not hasattr(image, "ndim"):
        if image is None:
            raise TypeError("image must be an array, got None")
        image = np.asarray(image)
    if not isinstance(image, np.ndarray) and not is_dask(image):
        import dask.array as da

        # the array's own chunks (zarr, tiled TIFF stores), else 1024-px squares: a block or a
        # window then reads only the chunks it covers, never the whole plane
        chunks = getattr(image, "chunks", None)
        if not (isinstance(chunks, tuple) and len(chunks) == image.ndim
                and all(isinstance(c, (int, np.integer)) for c in chunks)):
            chunks = (1,) * (image.ndim - 2) + tuple(min(int(n), 1024)
                                                     for n in image.shape[-2:])
        image = da.from_array(image, chunks=chunks)
    shape = tuple(image.shape)
    if any(n == 0 for n in shape):
        raise ValueError(f"image is empty (shape {shape})")
    dtype = np.dtype(image.dtype)
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
            or dtype == np.dtype(bool)):
        raise ValueError(f"image must be a real-valued numeric array, got dtype {dtype}")
    ndim = len(shape)
    if channel_axis is not None:
        if not -ndim <= channel_axis < ndim:
            raise ValueError(f"channel_axis {channel_axis} is out of range for an image of "
                             f"shape {shape}")
        ax = channel_axis % ndim
        if shape[ax] != in_channels and in_channels == 1:
            raise ValueError(f"the model takes one channel and the image has {shape[ax]}: "
                             f"choose which one with the channel setting (0 to {shape[ax] - 1}; "
                             "--channel on the command line)")
        if shape[ax] != in_channels:
            raise ValueError(f"the model expects {in_channels} channel(s) but the image has "
                             f"{shape[ax]} along channel_axis {channel_axis} (shape {shape})")
    elif in_channels == 1:
        ax = None
    else:
        candidates = [a for a in ((ndim - 3), ndim - 1) if a >= 0 and shape[a] == in_channels]
        if ndim < 3 or not candidates:
            raise ValueError(f"the model expects {in_channels} channels but no axis of the image "
                             f"(shape {shape}) has that size; pass channel_axis")
        ax = candidates[0]
    if ax is None:
        if ndim not in (2, 3):
            raise ValueError(f"a 1-channel model takes (H, W) or (Z, H, W) images; got shape "
                             f"{shape} (pass channel_axis for a channel axis)")
    else:
        if ndim - 1 not in (2, 3):
            raise ValueError(f"expected (C, H, W) or (Z, C, H, W) around the channel axis; got "
                             f"shape {shape}")
    view, _ = channels_at_minus3(image, ax)
    stacked = view.ndim == 4
    if not stacked:
        view = view[None]
    return view, stacked


def is_dask(x: Any) -> bool:
    """Whether ``x`` is a dask array (checked without importing dask)."""
    return type(x).__module__.startswith("dask.")


def allocate_output(name: str, shape: tuple[int, ...], dtype: Any,
                    out: Mapping[str, Any] | None = None, scratch: str | None = None) -> Any:
    """An output array: ``out[name]`` if given (shape checked), zeros in RAM when small, else a
    temporary memory map whose file is unlinked at once.

    The memory or disk it needs is checked first (``ValueError``/``OSError`` naming both
    sizes), and a temp file is never left behind, also when mapping it fails.
    """
    if out is not None and out.get(name) is not None:
        arr = out[name]
        if tuple(arr.shape) != tuple(shape):
            raise ValueError(f"out[{name!r}] has shape {tuple(arr.shape)}, expected {shape}")
        return arr
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    what = f"the {name} output ({' x '.join(map(str, shape))} {np.dtype(dtype).name})"
    if nbytes <= IN_RAM_BYTES:
        check_memory(nbytes, what)
        return np.zeros(shape, dtype)
    folder = scratch or tempfile.gettempdir()
    check_free_space(folder, nbytes, f"{what} as a temporary memory map")
    # A memory map whose file is unlinked at once: the pages live as long as the array does,
    # and the disk space is freed with it (file-backed pages do not count as anonymous memory).
    fd, path = tempfile.mkstemp(prefix=f"napari-unet-{name}-", suffix=".dat", dir=folder)
    try:
        os.close(fd)
        arr = np.memmap(path, dtype=dtype, mode="w+", shape=shape)
    except (OSError, ValueError, MemoryError) as err:
        raise OSError(f"cannot create {what} ({format_bytes(nbytes)}) in {folder}: "
                      f"{err}") from err
    finally:
        try:
            os.unlink(path)
        except OSError:  # pragma: no cover - Windows keeps open files
            pass
    return arr
