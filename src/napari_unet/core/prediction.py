"""Overlap-tile prediction (the paper's Fig. 2) for images of any size, stacks and channels.

Settings, results and the stack-level job; tile geometry is in :mod:`.tiles`, the plane
predictor in :mod:`.predictor`, dask in :mod:`.distributed`.

Valid-convolution nets
    The image is mirror-padded by the net's context (numpy ``"symmetric"``, which is dask's
    ``"reflect"``; one mode everywhere) and cut into input tiles of a legal size whose origins
    step by a multiple of ``model.divisor`` (2**depth). A depth-d net is shift-equivariant only
    by such multiples, so the stitched probabilities equal the un-tiled valid prediction of the
    mirror-padded image (to float rounding), whatever the tile size.

Padded ("same") nets
    Tiles overlap by ``2 * overlap`` pixels; by default ``overlap`` is the net's receptive
    radius (the context of the valid net of the same depth), and each tile keeps only the part
    nearer to its centre than to a neighbour's ("discard"), which then also equals the un-tiled
    prediction: no pixel that is kept sees a tile border. Smaller overlaps are faster and leave
    seams; ``blend="gaussian"`` averages overlapping tiles instead (see docs/benchmarks.md for
    the seam errors measured for both).

Stacks ``(Z, [C,] H, W)`` are predicted slice by slice (one 2D plane in memory at a time, with
one progress event per slice), so inputs may be memory maps, zarr or dask arrays of any size;
outputs go into caller-supplied arrays (``out=``) or, when large, unlinked temporary memory maps.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .device import resolve_device
from .events import Message, Progress
from .model import UNet
from .predictor import OutOfMemory, PlanePredictor, drain
from .tiles import auto_tile_size, check_tile_size, fit_tile_to_image

BLEND_MODES = ("discard", "gaussian")
UNCERTAINTY_METHODS = ("entropy", "variance")
# Outputs bigger than this are not allocated in RAM but as (unlinked) temporary memory maps.
IN_RAM_BYTES = 256 * 2**20
DEFAULT_NORMALIZATION: dict[str, Any] = {"method": "percentile", "low": 1.0, "high": 99.8}


# -- settings and results --------------------------------------------------------------------
@dataclass(frozen=True)
class PredictConfig:
    """Settings of one prediction job.

    Parameters
    ----------
    tile_size : int or (int, int), optional
        Input tile size ``(H, W)``; legal sizes for valid nets, multiples of ``model.divisor``
        for padded nets. None chooses it from a memory budget (free CUDA memory, or
        ``memory_budget`` / a quarter of the free RAM on CPU).
    batch_size : int
        Tiles per forward pass.
    tta : bool
        Test-time augmentation: average the 8 flips/rotations of every tile.
    uncertainty : bool
        Also return a per-pixel uncertainty map in [0, 1] (``uncertainty_method``).
    uncertainty_method : {"entropy", "variance"}
        Normalised entropy of the (mean) class probabilities, or the variance of the class
        probabilities over the TTA views (needs ``tta``), averaged over classes, times 4.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    channel_axis : int, optional
        Axis of the channels in the image; None guesses it from ``model.in_channels``.
    threshold : float
        Foreground probability threshold for instances.
    min_size : int, optional
        Instances smaller than this many pixels are dropped; None = post-processing default.
    split_touching : bool
        Also split instances at the necks between round parts (distance-transform
        watershed), for touching objects whose gap the net did not separate. Measured on the
        default model's held-out nuclei (docs/models.md); switch it off for long or
        irregular objects, which it may cut.
    object_diameter : float, optional
        Typical object diameter (pixels) in the image; with the model's ``object_diameter``
        the image is resampled so objects have the size the net was trained on.
    pixel_size : float, optional
        Micrometres per pixel of the image; used with the model's ``pixel_size`` when no
        diameter is given.
    half : {"auto", True, False}
        float16 on CUDA. ``"auto"`` tries it on the first batch and keeps it only if the labels
        (argmax) are identical to float32. Ignored on CPU/MPS.
    blend : {"discard", "gaussian"}
        Padded nets: keep each tile's centre part, or Gaussian-weighted averaging.
    overlap : int, optional
        Padded nets: pixels of context kept on each side of a tile's kept part. None = the
        net's receptive radius (exact stitching).
    memory_budget : int, optional
        Bytes for the automatic tile size on CPU.
    keep_probabilities : bool
        Return the probability maps (they are the biggest output: ``num_classes`` float32
        values per pixel).
    """

    tile_size: int | tuple[int, int] | None = None
    batch_size: int = 4
    tta: bool = False
    uncertainty: bool = False
    uncertainty_method: str = "entropy"
    device: str = "auto"
    channel_axis: int | None = None
    threshold: float = 0.5
    min_size: int | None = None
    split_touching: bool = True
    object_diameter: float | None = None
    pixel_size: float | None = None
    half: bool | str = "auto"
    blend: str = "discard"
    overlap: int | None = None
    memory_budget: int | None = None
    keep_probabilities: bool = True

    def __post_init__(self) -> None:
        tile = self.tile_size
        if tile is not None:
            if isinstance(tile, (int, np.integer)):
                tile = (int(tile), int(tile))
            tile = tuple(tile)
            if len(tile) != 2 or any(int(t) != t or t < 1 for t in tile):
                raise ValueError(f"tile_size must be a positive int or (H, W), got "
                                 f"{self.tile_size!r}")
            object.__setattr__(self, "tile_size", (int(tile[0]), int(tile[1])))
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.uncertainty_method not in UNCERTAINTY_METHODS:
            raise ValueError(f"uncertainty_method must be one of {UNCERTAINTY_METHODS}, got "
                             f"{self.uncertainty_method!r}")
        if self.uncertainty and self.uncertainty_method == "variance" and not self.tta:
            raise ValueError("uncertainty_method='variance' is the variance over the TTA views "
                             "and needs tta=True")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")
        if self.min_size is not None and (int(self.min_size) != self.min_size
                                          or self.min_size < 0):
            raise ValueError(f"min_size must be a non-negative integer, got {self.min_size!r}")
        for name in ("object_diameter", "pixel_size"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not (self.half is True or self.half is False or self.half == "auto"):
            raise ValueError(f"half must be 'auto', True or False, got {self.half!r}")
        if self.blend not in BLEND_MODES:
            raise ValueError(f"blend must be one of {BLEND_MODES}, got {self.blend!r}")
        if self.overlap is not None and (int(self.overlap) != self.overlap or self.overlap < 0):
            raise ValueError(f"overlap must be a non-negative integer, got {self.overlap!r}")
        if self.memory_budget is not None and self.memory_budget < 2**20:
            raise ValueError(f"memory_budget is in bytes and must be >= 1 MiB, got "
                             f"{self.memory_budget!r}")
        resolve_device_name(self.device)


@dataclass(frozen=True)
class PredictionResult:
    """What :func:`predict` returns.

    Attributes
    ----------
    probabilities : (K, *spatial) float32 or None
        Class probabilities (``K = model.num_classes``; spatial is ``(H, W)`` or
        ``(Z, H, W)``); None when ``keep_probabilities`` is False.
    semantic : (*spatial) uint8
        Arg-max class per pixel.
    instances : (*spatial) int32 or None
        Instance labels (0 = background) for instance-mode nets; ids are unique over a stack.
    uncertainty : (*spatial) float32 or None
        Per-pixel uncertainty in [0, 1] when requested.
    tile_size : (int, int)
        Input tile size used (after any out-of-memory retries).
    device : str
        Device that ran the net.
    messages : tuple of str
        Notes (fallbacks, rescaling) also yielded as :class:`Message` events.
    """

    probabilities: Any
    semantic: Any
    instances: Any
    uncertainty: Any
    tile_size: tuple[int, int]
    device: str
    messages: tuple[str, ...] = field(default_factory=tuple)


def resolve_device_name(name: str) -> None:
    """Check a device name's spelling without touching any accelerator."""
    if name not in ("auto", "cpu", "cuda", "mps") and not str(name).startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {name!r}")


# -- image layout ----------------------------------------------------------------------------
def as_stack(image: Any, in_channels: int, channel_axis: int | None) -> tuple[Any, bool]:
    """View ``image`` as ``(Z, C, H, W)`` without reading it.

    Returns the view and whether the image is a stack. Memory maps stay memory maps, dask
    stays dask; other array-likes (zarr) are wrapped in dask so nothing is loaded here.
    """
    if not hasattr(image, "shape") or not hasattr(image, "ndim"):
        image = np.asarray(image)
    if not isinstance(image, np.ndarray) and not is_dask(image):
        import dask.array as da

        image = da.from_array(image, chunks=(1,) * (image.ndim - 2) + tuple(image.shape[-2:]))
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
        view = image[..., None, :, :]
    else:
        if ndim - 1 not in (2, 3):
            raise ValueError(f"expected (C, H, W) or (Z, C, H, W) around the channel axis; got "
                             f"shape {shape}")
        view = np.moveaxis(image, ax, -3)
    stacked = view.ndim == 4
    if not stacked:
        view = view[None]
    return view, stacked


def is_dask(x: Any) -> bool:
    return type(x).__module__.startswith("dask.")


def allocate_output(name: str, shape: tuple[int, ...], dtype: Any, out: Mapping[str, Any] | None,
              scratch: str | None = None) -> Any:
    if out is not None and out.get(name) is not None:
        arr = out[name]
        if tuple(arr.shape) != tuple(shape):
            raise ValueError(f"out[{name!r}] has shape {tuple(arr.shape)}, expected {shape}")
        return arr
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes <= IN_RAM_BYTES:
        return np.zeros(shape, dtype)
    # A memory map whose file is unlinked at once: the pages live as long as the array does,
    # and the disk space is freed with it (file-backed pages do not count as anonymous memory).
    fd, path = tempfile.mkstemp(prefix=f"napari-unet-{name}-", suffix=".dat", dir=scratch)
    os.close(fd)
    arr = np.memmap(path, dtype=dtype, mode="w+", shape=shape)
    try:
        os.unlink(path)
    except OSError:  # pragma: no cover - Windows keeps open files
        pass
    return arr


# -- scale -----------------------------------------------------------------------------------
def _scale_factor(config: PredictConfig, meta: Mapping[str, Any]) -> tuple[float, str | None]:
    """Factor image -> model resolution, and a note for the user (None if nothing to say)."""
    if config.object_diameter is not None:
        trained = meta.get("object_diameter")
        if not trained:
            return 1.0, ("the model does not record the object diameter it was trained at; "
                         "object_diameter is ignored")
        return float(trained) / config.object_diameter, None
    if config.pixel_size is not None:
        trained = meta.get("pixel_size")
        if isinstance(trained, (list, tuple)):
            trained = trained[-1] if trained else None
        if not trained:
            return 1.0, ("the model does not record the pixel size it was trained at; "
                         "pixel_size is ignored")
        return config.pixel_size / float(trained), None
    return 1.0, None


def _resize(arr: np.ndarray, hw: tuple[int, int], order: int) -> np.ndarray:
    from skimage.transform import resize

    shrinking = hw[0] < arr.shape[-2] or hw[1] < arr.shape[-1]
    out = resize(arr, arr.shape[:-2] + tuple(hw), order=order, mode="symmetric",
                 preserve_range=True, anti_aliasing=shrinking and order > 0)
    return out.astype(np.float32, copy=False)


# -- post-processing and normalisation (from the shared modules) -----------------------------
def normalize_plane(plane: np.ndarray, spec: Mapping[str, Any] | None) -> np.ndarray:
    from .normalize import normalize

    return normalize(plane, spec, channel_axis=0)


def instance_labels(fg: np.ndarray, config: PredictConfig) -> np.ndarray:
    from .postprocess import instances_from_probability

    kwargs = {} if config.min_size is None else {"min_size": int(config.min_size)}
    return np.asarray(instances_from_probability(fg, threshold=config.threshold,
                                                 split=config.split_touching, **kwargs),
                      dtype=np.int32)


def semantic_labels(probs: np.ndarray) -> np.ndarray:
    return np.argmax(probs, axis=0).astype(np.uint8 if probs.shape[0] <= 256 else np.int32)


def _entropy(probs: np.ndarray) -> np.ndarray:
    k = probs.shape[0]
    p = np.clip(probs, 1e-12, 1.0)
    return (-(p * np.log(p)).sum(0) / math.log(k)).astype(np.float32)


# -- public entry points ---------------------------------------------------------------------
def predict(
    model: UNet,
    image: Any,
    config: PredictConfig | None = None,
    meta: Mapping[str, Any] | None = None,
    out: Mapping[str, Any] | None = None,
) -> Iterator[Progress | Message | PredictionResult]:
    """Overlap-tile prediction of an image or a stack, as a generator of events.

    Parameters
    ----------
    model : UNet
        The net; it is put in eval mode and moved to ``config.device``.
    image : array-like
        ``(H, W)``, ``(Z, H, W)``, or with a channel axis (``config.channel_axis``, or the
        axis of size ``model.in_channels``), e.g. ``(C, H, W)``, ``(Z, C, H, W)``,
        ``(H, W, C)``. numpy arrays, memory maps, dask and zarr arrays; integer or float.
        Stacks are read one slice at a time.
    config : PredictConfig, optional
    meta : dict, optional
        The model's meta (``load_model``): ``normalization``, ``mode``, ``object_diameter``,
        ``pixel_size``. Without it, percentile normalisation and the mode implied by the
        class count.
    out : dict, optional
        Arrays to write into, by name (``"probabilities"``, ``"semantic"``, ``"instances"``,
        ``"uncertainty"``), e.g. memory maps or zarr arrays of the shapes in
        :class:`PredictionResult`. Missing big outputs become temporary memory maps.

    Yields
    ------
    Progress
        Per tile batch for a 2D image, per slice for a stack.
    Message
        Notes: float16 decisions, ignored scale hints, out-of-memory retries.
    PredictionResult
        Last.

    Raises
    ------
    ValueError
        Wrong number of dims or channels, empty image, NaN/inf values, illegal tile size.
    MemoryError
        Out of memory even with one smallest tile.
    """
    config = config or PredictConfig()
    meta = dict(meta or {})
    view, stacked = as_stack(image, model.in_channels, config.channel_axis)
    if isinstance(image, np.ndarray) and not isinstance(image, np.memmap) \
            and np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values")
    device = resolve_device(config.device)
    if config.tile_size is not None:
        check_tile_size(model, config.tile_size, config.overlap)
    elif not model.is_valid and config.overlap is not None:
        check_tile_size(model, (10**6, 10**6), config.overlap)
    scale, note = _scale_factor(config, meta)
    n_z, _, h, w = view.shape
    tile = config.tile_size
    if tile is None:
        largest = auto_tile_size(model, device, config.batch_size, config.memory_budget)
        hw_model = (h, w)
        if scale != 1.0:
            hw_model = (max(1, round(h * scale)), max(1, round(w * scale)))
        tile = fit_tile_to_image(model, largest, hw_model, config.overlap)
    mode = meta.get("mode") or ("instances" if model.num_classes == 2 else "semantic")
    spec = meta.get("normalization", DEFAULT_NORMALIZATION)
    notes: list[str] = []
    if note:
        notes.append(note)
        yield Message(note, level="warning")

    spatial = (n_z, h, w) if stacked else (h, w)
    k = model.num_classes
    probabilities = (allocate_output("probabilities", (k, *spatial), np.float32, out)
                     if config.keep_probabilities else None)
    semantic = allocate_output("semantic", spatial, np.uint8 if k <= 256 else np.int32, out)
    instances = (allocate_output("instances", spatial, np.int32, out)
                 if mode == "instances" else None)
    uncertainty = allocate_output("uncertainty", spatial, np.float32, out) if config.uncertainty \
        else None

    model.eval().to(device)
    predictor = PlanePredictor(
        model, device, tile, config.batch_size, config.tta,
        config.uncertainty and config.uncertainty_method == "variance", config.blend,
        config.overlap, config.half)
    offset = 0
    with torch.inference_mode():
        for z in range(n_z):
            plane = np.asarray(view[z])
            if plane.dtype != np.float32:
                plane = plane.astype(np.float32)
            if not np.isfinite(plane).all():
                where = f" (slice {z})" if stacked else ""
                raise ValueError(f"image contains NaN or infinite values{where}")
            plane = np.ascontiguousarray(normalize_plane(plane, spec))
            if scale != 1.0:
                size = (max(1, round(h * scale)), max(1, round(w * scale)))
                plane = _resize(plane, size, order=1)
            while True:
                try:
                    run = predictor.run(plane)
                    if stacked:
                        probs, var = drain(run)
                    else:
                        probs, var = yield from run
                    break
                except OutOfMemory as err:
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    before = (predictor.batch_size, predictor.tile)
                    if not predictor.shrink():
                        raise MemoryError(
                            f"out of memory on {device} even with one {predictor.tile[0]}x"
                            f"{predictor.tile[1]} tile per pass ({err}); free memory, use a "
                            "smaller model or device='cpu'") from None
                    text = (f"out of memory with {before[0]} tile(s) of {before[1]}; retrying "
                            f"with {predictor.batch_size} of {predictor.tile}")
                    notes.append(text)
                    yield Message(text, level="warning")
            for text in predictor.notes:
                notes.append(text)
                yield Message(text)
            predictor.notes.clear()
            if scale != 1.0:
                probs = _resize(probs, (h, w), order=1)
                if var is not None:
                    var = _resize(var, (h, w), order=1)
            at = (slice(None), z) if stacked else (slice(None),)
            if probabilities is not None:
                probabilities[at] = probs
            idx = (z,) if stacked else ()
            semantic[idx] = semantic_labels(probs)
            if instances is not None:
                labels = instance_labels(probs[1], config)
                if stacked and offset:
                    labels = np.where(labels > 0, labels + offset, 0).astype(np.int32)
                instances[idx] = labels
                offset = max(offset, int(labels.max()) if labels.size else 0)
            if uncertainty is not None:
                uncertainty[idx] = var if var is not None else _entropy(probs)
            if stacked:
                yield Progress(z + 1, n_z, f"slice {z + 1}/{n_z}")
    yield PredictionResult(probabilities, semantic, instances, uncertainty,
                           tuple(predictor.tile), str(device), tuple(notes))


def run_to_result(events: Iterator[Any], callback: Callable[[Any], None] | None = None) -> Any:
    """Exhaust a job's generator and return its last item (calling ``callback`` on the rest)."""
    last = None
    for event in events:
        if last is not None and callback is not None:
            callback(last)
        last = event
    return last


def predict_image(model: UNet, image: Any, meta: Mapping[str, Any] | None = None,
                  out: Mapping[str, Any] | None = None, **config_kwargs: Any) -> PredictionResult:
    """Predict ``image`` and return the :class:`PredictionResult` (see :func:`predict`).

    ``config_kwargs`` are :class:`PredictConfig` fields, e.g. ``tile_size=256, tta=True``.
    """
    result = run_to_result(predict(model, image, PredictConfig(**config_kwargs), meta, out))
    assert isinstance(result, PredictionResult)
    return result


__all__ = [
    "BLEND_MODES", "DEFAULT_NORMALIZATION", "IN_RAM_BYTES", "PredictConfig", "PredictionResult",
    "UNCERTAINTY_METHODS", "allocate_output", "as_stack", "instance_labels", "is_dask",
    "normalize_plane", "predict", "predict_image", "resolve_device_name", "run_to_result",
    "semantic_labels",
]
