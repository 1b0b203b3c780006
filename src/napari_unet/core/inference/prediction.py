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
    seams; ``blend="gaussian"`` averages overlapping tiles instead (see docs/performance.md for
    the seam errors measured for both).

Stacks ``(Z, [C,] H, W)`` are predicted slice by slice (one 2D plane in memory at a time, with
one progress event per slice), so inputs may be memory maps, zarr or dask arrays of any size;
outputs go into caller-supplied arrays (``out=``) or, when large, unlinked temporary memory maps.

Planes larger than ``block_size`` are predicted and labelled block by block
(:mod:`.blockwise`), so memory stays bounded whatever the plane's area; smaller planes take the
whole-plane path, which gives the same objects. Z stacks (``axes`` with a Z, or
``volume=True``) become 3D objects: the net still sees single slices, then the foreground is
labelled and split in 3D, block by block (or, with ``stitch_threshold``, 2D objects are linked
across slices by overlap); by default the XZ and YZ slices are predicted too and folded into
the foreground first (``orthogonal_views``, :mod:`.views`). Stacks whose axis is not known stay
slice by slice, with a note.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..constants import DEFAULT_NORMALIZATION, DEFAULT_TILING, mode_for_classes
from ..events import Message, Progress
from ..io.outputs import check_free_space, format_bytes
from ..io.resources import check_memory
from ..layout import channels_at_minus3
from ..model.meta import ModelMeta
from ..model.unet import UNet
from ..runtime.device import check_device_name, resolve_device
from ..runtime.heap import reuse_freed_memory
from .blockwise import (
    DEFAULT_BLOCK,
    MIN_BLOCK,
    IntensityRange,
    Window,
    auto_halo,
    block_grid,
    block_windows,
    intensity_range,
    label_blocks,
    needs_blocks,
    normalize_region,
    predict_blocks,
    tile_windows,
)
from .diameter import band_text, choose_scale, estimate_diameter, model_scale
from .predictor import OutOfMemory, drain, plane_predictor
from .tiles import TILING_MODES, check_tile_size, padded_axis_tiles, plan_tiles, tile_margin
from .views import fold_orthogonal_views
from .volume import check_axes, link_slices, stack_is_volume

BLEND_MODES = ("discard", "gaussian")
UNCERTAINTY_METHODS = ("entropy", "variance")
# Outputs bigger than this are not allocated in RAM but as (unlinked) temporary memory maps.
IN_RAM_BYTES = 256 * 2**20
#: Largest resampling factor (either way) from ``object_diameter``/``pixel_size``: beyond it the
#: model's scale and the image's are too far apart for the net to help, and sizes explode.
MAX_RESCALE = 16.0
#: Forward-pass memory of blockwise planes on CPU when ``memory_budget`` is not set: with a
#: block's labelling (~0.4 GB), which runs after it, the job stays under 1 GB (bench_memory.py).
#: 768 MiB buys 1152 px tiles for the shipped model: 1.27x the plane's pixels computed at
#: 4096^2 against 1.43x with 816 px tiles at 384 MiB.
BLOCKWISE_FORWARD_BUDGET = 768 * 2**20
#: Volumes: blocks are this many slices deep and ``block_size / 8`` pixels a side (halo: two
#: object diameters), so that a window with its halo stays near the memory of a 2D block
#: (16 + 2 x 40 slices of 336 x 336 px for the default model at z spacing 1: ~11 M voxels).
VOLUME_BLOCK_SLICES = 16


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
    batch_size : int, optional
        Tiles per forward pass; None chooses it with the tile size (:func:`.tiles.plan_tiles`:
        one large tile per pass on CPU, as many as the memory holds on CUDA).
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
        Axis of the channels in the image; None guesses it from ``model.in_channels`` (or takes
        the "C" of ``axes``).
    threshold : float
        Foreground probability threshold for instances.
    min_size : int, optional
        Instances smaller than this many pixels are dropped; None = post-processing default.
    split_touching : bool
        Also split instances at the necks between round parts (distance-transform
        watershed), for touching objects whose gap the net did not separate. Measured on the
        default model's held-out nuclei (docs/models.md); switch it off for long or
        irregular objects, which it may cut.
    object_diameter : float or "auto", optional
        Typical object diameter (pixels) in the image; with the model's ``object_diameter``,
        objects outside the model's band are resampled into it, and those inside it to the
        training diameter when the net is surer of its objects there
        (:func:`.diameter.choose_scale`, decided once per job on a crop); their instances are
        found at that scale and brought back (:func:`labels_at_image_scale`). ``"auto"``
        measures it with the model first (:mod:`.diameter`).
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
        net's receptive radius (exact stitching) or the fast fraction of it (``tiling``).
    tiling : {"fast", "exact"}
        Padded nets: ``"exact"`` overlaps tiles by the receptive radius, so the result equals
        the un-tiled prediction to float rounding; ``"fast"`` keeps a third of it, computing
        fewer pixels, with seam differences measured on the shipped model (docs/tiling.md).
    memory_budget : int, optional
        Bytes for the automatic tile size on CPU (default: :func:`.tiles.plan_tiles`'s, and
        ``BLOCKWISE_FORWARD_BUDGET`` for planes predicted block by block).
    keep_probabilities : bool
        Return the probability maps (they are the biggest output: ``num_classes`` float32
        values per pixel).
    axes : str, optional
        The image's axes, one letter from "TZCYX" per axis (e.g. ``"ZYX"``, ``"TCYX"``), from
        the file or the layer. A "Z" stack gives 3D objects; "T" stays slice by slice.
    volume : bool, optional
        True: the stack is a Z stack, build 3D objects (a 3D image without ``axes`` is taken
        as ZYX); False: slice by slice; None: 3D only when ``axes`` says Z (an ambiguous stack
        is segmented slice by slice, with a :class:`Message` saying so).
    z_spacing : float, optional
        Volumes: the distance between slices in lateral pixels (z pixel size / x pixel size);
        None = 1. Used by the 3D split (distances, seed spacing) and the z halo.
    stitch_threshold : float, optional
        Volumes: None labels and splits the foreground in 3D (measured best); a number in
        (0, 1] instead links the 2D objects of neighbouring slices whose IoU reaches it
        (cellpose's stitching).
    orthogonal_views : bool, optional
        Volumes ("2.5D", :mod:`.views`): also predict every XZ and YZ slice (stretched along z
        by ``z_spacing``) and keep a voxel as foreground only where all three views see it, so
        nuclei stacked along z get the gap the net draws between neighbours (merged + split
        nuclei 5.3 % -> 2.7 %, AP@0.75 0.66 -> 0.88), for about 3.5x the prediction time
        (measured, docs/big-images-and-volumes.md). None (default): wherever the objects are
        labelled in 3D (a Z stack, an instance model, no ``stitch_threshold``); True: asked
        for (a note when it cannot apply; not with ``stitch_threshold``); False: XY slices
        only. The uncertainty's entropy is then that of the combined probabilities (the
        variance stays the XY slices').
    block_size : int
        Planes with a side longer than this are predicted and labelled block by block with
        bounded memory (blocks of this side, plus a halo); the objects are those of the
        whole-plane path. Volumes use blocks of 16 slices x ``block_size / 8`` px.
    block_halo : int, optional
        Pixels around each block that are labelled with it; must exceed the largest object
        (a :class:`Message` warns when objects reach it). None: 3x the model's object
        diameter, at least 64.
    """

    tile_size: int | tuple[int, int] | None = None
    batch_size: int | None = None
    tta: bool = False
    uncertainty: bool = False
    uncertainty_method: str = "entropy"
    device: str = "auto"
    channel_axis: int | None = None
    threshold: float = 0.5
    min_size: int | None = None
    split_touching: bool = True
    object_diameter: float | str | None = None
    pixel_size: float | None = None
    half: bool | str = "auto"
    blend: str = "discard"
    overlap: int | None = None
    tiling: str = DEFAULT_TILING
    memory_budget: int | None = None
    keep_probabilities: bool = True
    axes: str | None = None
    volume: bool | None = None
    z_spacing: float | None = None
    stitch_threshold: float | None = None
    orthogonal_views: bool | None = None
    block_size: int = DEFAULT_BLOCK
    block_halo: int | None = None

    def __post_init__(self) -> None:
        tile = self.tile_size
        if tile is not None:
            if isinstance(tile, (int, np.integer)) and not isinstance(tile, bool):
                tile = (int(tile), int(tile))
            tile = tuple(tile)
            if len(tile) != 2 or any(not _is_int(t) or t < 1 for t in tile):
                raise ValueError(f"tile_size must be a positive int or (H, W), got "
                                 f"{self.tile_size!r}")
            object.__setattr__(self, "tile_size", (int(tile[0]), int(tile[1])))
        if self.batch_size is not None and (not _is_int(self.batch_size)
                                            or self.batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.channel_axis is not None and not _is_int(self.channel_axis):
            raise TypeError(f"channel_axis must be an integer or None, got "
                            f"{self.channel_axis!r} ({type(self.channel_axis).__name__})")
        if self.uncertainty_method not in UNCERTAINTY_METHODS:
            raise ValueError(f"uncertainty_method must be one of {UNCERTAINTY_METHODS}, got "
                             f"{self.uncertainty_method!r}")
        if self.uncertainty and self.uncertainty_method == "variance" and not self.tta:
            raise ValueError("uncertainty_method='variance' is the variance over the TTA views "
                             "and needs tta=True")
        _check_number("threshold", self.threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")
        if self.min_size is not None and (not _is_int(self.min_size) or self.min_size < 0):
            raise ValueError(f"min_size must be a non-negative integer, got {self.min_size!r}")
        if isinstance(self.object_diameter, str):
            if self.object_diameter != "auto":
                raise ValueError(f"object_diameter must be a positive number or 'auto', got "
                                 f"{self.object_diameter!r}")
        else:
            _check_positive("object_diameter", self.object_diameter)
        _check_positive("pixel_size", self.pixel_size)
        _check_positive("z_spacing", self.z_spacing)
        if not (self.half is True or self.half is False or self.half == "auto"):
            raise ValueError(f"half must be 'auto', True or False, got {self.half!r}")
        if self.blend not in BLEND_MODES:
            raise ValueError(f"blend must be one of {BLEND_MODES}, got {self.blend!r}")
        if self.overlap is not None and (not _is_int(self.overlap) or self.overlap < 0):
            raise ValueError(f"overlap must be a non-negative integer, got {self.overlap!r}")
        if self.tiling not in TILING_MODES:
            raise ValueError(f"tiling must be one of {TILING_MODES}, got {self.tiling!r}")
        if self.memory_budget is not None and (not _is_int(self.memory_budget)
                                               or self.memory_budget < 2**20):
            raise ValueError(f"memory_budget is in bytes and must be >= 1 MiB, got "
                             f"{self.memory_budget!r}")
        object.__setattr__(self, "axes", check_axes(self.axes))
        if self.volume is not None and not isinstance(self.volume, bool):
            raise TypeError(f"volume must be True, False or None, got {self.volume!r}")
        if self.stitch_threshold is not None:
            _check_number("stitch_threshold", self.stitch_threshold)
            if not 0.0 < self.stitch_threshold <= 1.0:
                raise ValueError(f"stitch_threshold must be in (0, 1], got "
                                 f"{self.stitch_threshold!r}")
        if self.orthogonal_views is not None and not isinstance(self.orthogonal_views, bool):
            raise TypeError(f"orthogonal_views must be True, False or None, got "
                            f"{self.orthogonal_views!r}")
        if self.orthogonal_views and self.stitch_threshold is not None:
            raise ValueError("orthogonal_views combines the views' probabilities before the 3D "
                             "labelling; it does not work with stitch_threshold (linking 2D "
                             "objects): give one of them")
        if not _is_int(self.block_size) or self.block_size < MIN_BLOCK:
            raise ValueError(f"block_size must be an integer >= {MIN_BLOCK}, got "
                             f"{self.block_size!r}")
        if self.block_halo is not None and (not _is_int(self.block_halo)
                                            or self.block_halo < 8):
            raise ValueError(f"block_halo must be an integer >= 8 (pixels), got "
                             f"{self.block_halo!r}")
        check_device_name(self.device)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")


def _check_positive(name: str, value: Any) -> None:
    if value is None:
        return
    _check_number(name, value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


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
        Instance labels (0 = background) for instance-mode nets; ids are unique over a stack,
        and an object of a volume keeps one id through its slices.
    uncertainty : (*spatial) float32 or None
        Per-pixel uncertainty in [0, 1] when requested.
    tile_size : (int, int)
        Input tile size used (after any out-of-memory retries).
    device : str
        Device that ran the net.
    messages : tuple of str
        Notes (fallbacks, rescaling) also yielded as :class:`Message` events.
    volume : bool
        Whether the stack was segmented as a volume (3D objects).
    """

    probabilities: Any
    semantic: Any
    instances: Any
    uncertainty: Any
    tile_size: tuple[int, int]
    device: str
    messages: tuple[str, ...] = field(default_factory=tuple)
    volume: bool = False


def resolve_device_name(name: str) -> None:
    """Check a device name's spelling without touching any accelerator."""
    check_device_name(name)


# -- image layout ----------------------------------------------------------------------------
def as_stack(image: Any, in_channels: int, channel_axis: int | None) -> tuple[Any, bool]:
    """View ``image`` as ``(Z, C, H, W)`` without reading it.

    Returns the view and whether the image is a stack. Memory maps stay memory maps, dask
    stays dask; other array-likes (zarr) are wrapped in dask so nothing is loaded here.
    """
    if channel_axis is not None and not _is_int(channel_axis):
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


# -- scale -----------------------------------------------------------------------------------
def _scale_factor(config: PredictConfig, meta: ModelMeta, diameter: float | None,
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


# -- post-processing and normalisation (from the shared modules) -----------------------------
def normalize_plane(plane: np.ndarray, spec: Mapping[str, Any] | None) -> np.ndarray:
    """A ``(C, H, W)`` plane normalised as :func:`predict` does it: percentiles per channel
    from a regular subsample (every pixel up to 2048 x 2048; :func:`.blockwise.intensity_range`),
    so the whole-plane and blockwise paths use the same numbers."""
    plane = np.asarray(plane)
    return normalize_region(plane, intensity_range(plane[None], spec))


def instance_labels(fg: np.ndarray, config: PredictConfig, scale: float = 1.0) -> np.ndarray:
    """Instances of one plane's foreground probability with ``config``'s post-processing;
    ``fg`` at ``scale`` x the image's size (``config.min_size`` counts image pixels)."""
    from .postprocess import instances_from_probability

    return np.asarray(instances_from_probability(fg, threshold=config.threshold,
                                                 split=config.split_touching,
                                                 **_min_size(config, scale)),
                      dtype=np.int32)


def _min_size(config: PredictConfig, scale: float = 1.0) -> dict[str, int]:
    """``config.min_size`` (image pixels) as the post-processing's keyword for a map at
    ``scale`` x the image's size; none when unset (the post-processing's default)."""
    if config.min_size is None:
        return {}
    return {"min_size": int(round(config.min_size * scale**2))}


def semantic_labels(probs: np.ndarray) -> np.ndarray:
    """Arg-max class per pixel (uint8 up to 256 classes)."""
    if probs.shape[0] == 2:  # the same labels (ties go to class 0), 5x faster than argmax
        return np.greater(probs[1], probs[0]).view(np.uint8)
    return np.argmax(probs, axis=0).astype(np.uint8 if probs.shape[0] <= 256 else np.int32)


def _entropy(probs: np.ndarray) -> np.ndarray:
    k = probs.shape[0]
    p = np.clip(probs, 1e-12, 1.0)
    return (-(p * np.log(p)).sum(0) / math.log(k)).astype(np.float32)


def as_model_meta(meta: Any, model: UNet) -> ModelMeta:
    """``meta`` as a :class:`ModelMeta` (None: the model's defaults; a dict: validated)."""
    if meta is None:
        return ModelMeta.for_model(model)
    if isinstance(meta, ModelMeta):
        return meta
    if isinstance(meta, Mapping):
        return ModelMeta.from_dict(meta, model)
    raise TypeError(f"meta must be a ModelMeta, a dict or None, got {type(meta).__name__}")


def check_model(model: Any) -> None:
    """``TypeError`` with a clear text unless ``model`` is a UNet."""
    if not isinstance(model, UNet):
        raise TypeError(f"model must be a UNet (load one with checkpoint.resolve_model, or pass "
                        f"a model name or file to predict_image), got {type(model).__name__}")


# -- public entry points ---------------------------------------------------------------------
def predict(
    model: UNet,
    image: Any,
    config: PredictConfig | None = None,
    meta: ModelMeta | Mapping[str, Any] | None = None,
    out: Mapping[str, Any] | None = None,
) -> Iterator[Progress | Message | PredictionResult]:
    """Overlap-tile prediction of an image or a stack, as a generator of events.

    Parameters
    ----------
    model : UNet
        The net; it is put in eval mode and moved to ``config.device``.
    image : array-like
        ``(H, W)``, ``(Z, H, W)``, or with a channel axis (``config.channel_axis``, the "C" of
        ``config.axes``, or the axis of size ``model.in_channels``), e.g. ``(C, H, W)``,
        ``(Z, C, H, W)``, ``(H, W, C)``. numpy arrays, memory maps, dask and zarr arrays;
        integer or float. Stacks are read one slice at a time, big planes one block at a time.
    config : PredictConfig, optional
    meta : ModelMeta (or its dict), optional
        The model's metadata: ``normalization``, ``mode``, ``object_diameter``,
        ``pixel_size``. Without it, percentile normalisation and the mode implied by the
        class count.
    out : dict, optional
        Arrays to write into, by name (``"probabilities"``, ``"semantic"``, ``"instances"``,
        ``"uncertainty"``), e.g. memory maps or zarr arrays of the shapes in
        :class:`PredictionResult`. Missing big outputs become temporary memory maps.

    Yields
    ------
    Progress
        Per tile batch for a 2D image, per block of a big plane, per slice for a stack.
    Message
        Notes: float16 decisions, ignored scale hints, out-of-memory retries, a stack taken
        as slices, objects bigger than the block halo.
    PredictionResult
        Last.

    Raises
    ------
    TypeError
        ``model`` is not a UNet; wrong argument types.
    ValueError
        Wrong number of dims or channels, empty image, NaN/inf values, illegal tile size,
        rescale factor out of bounds, an output that does not fit in memory.
    OSError
        Not enough disk for the temporary memory maps of big outputs.
    MemoryError
        Out of memory even with one smallest tile.
    """
    check_model(model)
    config = config or PredictConfig()
    if not isinstance(config, PredictConfig):
        raise TypeError(f"config must be a PredictConfig, got {type(config).__name__}")
    meta = as_model_meta(meta, model)
    job = PredictionJob(model, image, config, meta, out)
    return job.run()


class PredictionJob:
    """One prediction: the checks up front (in the constructor), then :meth:`run`'s loop
    (allocations, planes or blocks, labelling). :mod:`.distributed` overrides how a plane's
    blocks are predicted."""

    def __init__(self, model: UNet, image: Any, config: PredictConfig, meta: ModelMeta,
                 out: Mapping[str, Any] | None) -> None:
        self.model, self.config, self.meta = model, config, meta
        channel_axis = config.channel_axis
        axes = config.axes
        ndim = getattr(image, "ndim", None)
        if axes is not None and ndim is not None:
            if len(axes) != ndim:
                raise ValueError(f"axes {axes!r} has {len(axes)} letters but the image has "
                                 f"{ndim} dimensions (shape {tuple(image.shape)})")
            if "C" in axes:
                if channel_axis is not None and channel_axis % ndim != axes.index("C"):
                    raise ValueError(f"channel_axis {channel_axis} disagrees with axes {axes!r}")
                channel_axis = axes.index("C")
        self.view, self.stacked = as_stack(image, model.in_channels, channel_axis)
        self.image, self.channel_axis = image, channel_axis
        if isinstance(image, np.ndarray) and not isinstance(image, np.memmap) \
                and np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
            raise ValueError("image contains NaN or infinite values")
        self.is_volume, self.layout_note = stack_is_volume(axes, self.stacked, config.volume)
        self.device = resolve_device(config.device)
        if config.tile_size is not None:
            check_tile_size(model, config.tile_size,
                            tile_margin(model, config.tiling, config.overlap))
        elif not model.is_valid and config.overlap is not None:
            check_tile_size(model, (10**6, 10**6), config.overlap)
        self.n_z, _, self.h, self.w = (int(s) for s in self.view.shape)
        self.diameter = None if config.object_diameter == "auto" else config.object_diameter
        self.mode = meta.mode or mode_for_classes(model.num_classes)
        self.spec = meta.normalization or DEFAULT_NORMALIZATION
        self.blockwise = needs_blocks((self.h, self.w), config.block_size)
        self.scale, self.scale_note = 1.0, None
        if config.object_diameter != "auto":  # "auto" is measured when the job runs
            self.scale, self.scale_note = _scale_factor(config, meta, self.diameter,
                                                        (self.h, self.w))
        self.out = out
        self.notes: list[str] = []
        # objects labelled and split in 3D (a Z stack of an instance model, not linked by
        # overlap): where the orthogonal views apply
        self.label_3d = (self.mode == "instances" and self.is_volume
                         and config.stitch_threshold is None)
        self.views = config.orthogonal_views is not False and self.label_3d
        self.views_note = None
        if config.orthogonal_views and not self.views:  # asked for, and it cannot apply
            self.views_note = ("orthogonal views ignored: they need 3D objects of an "
                               "instance model" + ("" if self.is_volume else
                                                   " and this image is not taken as a Z stack"))

    # -- setup that may need the model (auto diameter) -------------------------------------
    def _setup(self) -> Iterator[Message]:
        config, model = self.config, self.model
        # the measuring passes on a crop (estimate, choice of scale) predict as the job does
        passes = dict(channel_axis=self.channel_axis, device=config.device,
                      tile_size=config.tile_size, batch_size=config.batch_size, tta=config.tta,
                      threshold=config.threshold)
        if config.object_diameter == "auto":
            estimate = estimate_diameter(model, self.image, self.meta, **passes)
            yield self._note(estimate.note, "info" if estimate.usable else "warning")
            if estimate.usable:
                self.diameter = estimate.diameter
            self.scale, self.scale_note = _scale_factor(config, self.meta, self.diameter,
                                                        (self.h, self.w))
        if (self.diameter is not None and self.scale == 1.0 and self.meta.object_diameter
                and self.mode == "instances"):
            # inside the model's band: its own scale, or the training diameter if the net is
            # surer of its objects there (measured on a crop; one rule for given and "auto")
            self.scale, self.scale_note = choose_scale(
                model, self.image, self.meta, float(self.diameter), **passes)
        if self.scale_note:
            yield self._note(self.scale_note, "warning")
        if self.layout_note:
            yield self._note(self.layout_note)
        if self.views_note:
            yield self._note(self.views_note, "warning")
        hw_model = self._model_hw((self.h, self.w))
        if self.blockwise and not self._tiles_are_windows():
            # tiles are fitted to one block's window (a plane's own tiles need the whole plane)
            side = config.block_size + 2 * self._context()
            hw_model = self._model_hw((min(self.h, side), min(self.w, side)))
        # tile, batch and overlap by total cost (the pixels the net computes)
        budget = config.memory_budget
        if budget is None and self.blockwise and self.device.type != "cuda":
            # bounded memory is the point of blocks: the net's passes get a fixed share
            budget = BLOCKWISE_FORWARD_BUDGET
        self.plan = plan_tiles(model, hw_model, self.device, tiling=config.tiling,
                               overlap=config.overlap, tile_size=config.tile_size,
                               batch_size=config.batch_size, memory_budget=budget)
        self.tile = self.plan.tile

    def _note(self, text: str, level: str = "info") -> Message:
        self.notes.append(text)
        return Message(text, level=level)

    def _model_hw(self, hw: tuple[int, int]) -> tuple[int, int]:
        if self.scale == 1.0:
            return hw
        return max(1, round(hw[0] * self.scale)), max(1, round(hw[1] * self.scale))

    def _windows(self) -> list[Window]:
        """The windows a blockwise plane is predicted in. A padded net at the image's scale with
        "discard" stitching: the plane's own tiles, one at a time, so it computes what tiling
        the whole plane computes (bigger windows would repeat the net's context at every window
        border too) and holds one tile. Otherwise (valid nets, rescaling, Gaussian blending):
        blocks of ``block_size`` with the net's context around them."""
        model, config = self.model, self.config
        if self._tiles_are_windows():
            # the predictor's tile: smaller than planned after running out of memory
            tile, margin, d = self.predictor.tile, self.predictor.margin, model.divisor
            return tile_windows(padded_axis_tiles(self.h, tile[0], margin, d),
                                padded_axis_tiles(self.w, tile[1], margin, d))
        align = model.divisor if self.scale == 1.0 else 1
        return block_windows((self.h, self.w), self._context(), align, config.block_size)

    def _tiles_are_windows(self) -> bool:
        """Whether a blockwise plane is predicted in its own tiles (:meth:`_windows`)."""
        return (not self.model.is_valid and self.scale == 1.0
                and self.config.blend == "discard")

    def _context(self) -> int:
        """Pixels (image scale) of input a block needs around it for exact probabilities."""
        model = self.model
        if model.is_valid:
            # the receptive field reaches up to one pooling block beyond the context
            ctx = model.context + model.divisor
        else:  # as much context as the tiles keep (exact tiling: the receptive radius)
            ctx = tile_margin(model, self.config.tiling, self.config.overlap)
        scale = getattr(self, "scale", 1.0)
        return int(math.ceil(ctx / scale)) + (2 if scale != 1.0 else 0)

    def _halo(self, volume: bool = False, scale: float = 1.0) -> int:
        """Halo (px) for labelling blocks of a plane or volume ``scale`` x the image's size."""
        if self.config.block_halo is not None:
            return round(self.config.block_halo * scale)
        diameter = self.diameter
        if diameter is None and self.meta.object_diameter:
            diameter = float(self.meta.object_diameter) / self.scale
        if diameter is not None:
            diameter *= scale
        if volume and diameter is not None:
            # in 3D the halo's volume dominates a block's memory: two diameters (the warning
            # names block_halo if objects reach it)
            return max(32, int(math.ceil(2 * diameter / 8)) * 8)
        return auto_halo(diameter)

    # -- outputs -----------------------------------------------------------------------------
    def _allocate(self) -> None:
        config, out = self.config, self.out
        spatial = (self.n_z, self.h, self.w) if self.stacked else (self.h, self.w)
        self.spatial = spatial
        k = self.model.num_classes
        self.probabilities = (allocate_output("probabilities", (k, *spatial), np.float32, out)
                              if config.keep_probabilities else None)
        self.semantic = allocate_output("semantic", spatial, np.uint8 if k <= 256 else np.int32,
                                        out)
        self.instances = (allocate_output("instances", spatial, np.int32, out)
                          if self.mode == "instances" else None)
        self.uncertainty = (allocate_output("uncertainty", spatial, np.float32, out)
                            if config.uncertainty else None)
        # the foreground probability is kept for blockwise or 3D labelling
        self.foreground = None
        if self.instances is not None and (self.blockwise or self.label_3d):
            self.foreground = (self.probabilities[1] if self.probabilities is not None
                               else allocate_output("foreground", spatial, np.float32))
        # a rescaled plane labelled block by block, or a rescaled volume: its foreground at the
        # model's scale too (one plane, reused; a volume's every plane), where its instances are
        # found
        self.model_foreground = None
        if self.foreground is not None and self.scale != 1.0:
            hw = self._model_hw((self.h, self.w))
            self.model_foreground = allocate_output(
                "model foreground", (self.n_z, *hw) if self.label_3d else hw, np.float32)

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> Iterator[Progress | Message | PredictionResult]:
        yield from self._setup()
        self._allocate()
        model, config = self.model, self.config
        # (each walks the net's modules: ~2 ms for the shipped net, skipped when not needed)
        if model.training:
            model.eval()
        if next(model.parameters()).device != self.device:
            model.to(self.device)
        self.predictor = plane_predictor(
            model, self.device, self.tile, self.plan.batch_size, config.tta,
            config.uncertainty and config.uncertainty_method == "variance", config.blend,
            self.plan.margin, config.half)
        volume_range = (intensity_range(self.view, self.spec) if self.is_volume else None)
        offset = 0
        # the net's passes over a plane reuse freed memory (core.heap: a pass frees big maps
        # that its next layers and passes allocate again); the labelling after them allocates
        # as usual, so a heap kept for the passes does not add to its peak
        with torch.inference_mode():
            for z in range(self.n_z):
                rng = volume_range if self.is_volume else intensity_range(
                    self.view[z:z + 1], self.spec)
                with reuse_freed_memory():
                    if self.blockwise:
                        yield from self._plane_blockwise(z, rng)
                    else:
                        yield from self._plane_whole(z, rng)
                if self.instances is not None and not self.label_3d:
                    offset = yield from self._plane_instances(z, offset)
                if self.stacked:
                    yield Progress(z + 1, self.n_z, f"slice {z + 1}/{self.n_z}")
            if self.views:
                with reuse_freed_memory():
                    yield from self._orthogonal_views(volume_range)
            if self.instances is not None and self.is_volume:
                yield from self._volume_instances()
        yield PredictionResult(self.probabilities, self.semantic, self.instances,
                               self.uncertainty, tuple(self.predictor.tile), str(self.device),
                               tuple(self.notes), self.is_volume)

    def _at(self, z: int, where: tuple[slice, ...] = ()) -> tuple:
        return ((z,) if self.stacked else ()) + where

    def _predict(self, plane: np.ndarray, progress: bool, into: np.ndarray | None = None,
                 keep: tuple[slice, slice] | None = None
                 ) -> Generator[Progress | Message, None, tuple[np.ndarray, Any]]:
        """One normalised plane or window, with out-of-memory retries on smaller tiles: the
        probabilities (and variance) of its part ``keep`` (all of it when None), stitched into
        ``into`` where that fits (see :meth:`PlanePredictor.run`)."""
        probs, var = yield from self._predict_at_model_scale(plane, progress, into, keep)
        return self._at_image_scale(probs, var, plane.shape[-2:], keep)

    def _predict_at_model_scale(self, plane: np.ndarray, progress: bool,
                                into: np.ndarray | None = None,
                                keep: tuple[slice, slice] | None = None
                                ) -> Generator[Progress | Message, None, tuple[np.ndarray, Any]]:
        """As :meth:`_predict`, but a rescaled plane's probabilities stay at the model's scale
        (whole: ``keep`` and ``into`` apply at the image's scale only)."""
        h, w = plane.shape[-2:]
        if self.scale != 1.0:
            plane = resize_plane(plane, self._model_hw((h, w)), order=1)
        predictor = self.predictor
        while True:
            try:
                # (no contiguous copy first: the predictor copies each tile into its batch)
                run = (predictor.run(plane, into, keep) if self.scale == 1.0
                       else predictor.run(plane))  # rescaled: cut after scaling back
                probs, var = (yield from run) if progress else drain(run)
                break
            except OutOfMemory as err:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                before = (predictor.batch_size, predictor.tile)
                if not predictor.shrink():
                    raise MemoryError(
                        f"out of memory on {self.device} even with one {predictor.tile[0]}x"
                        f"{predictor.tile[1]} tile per pass ({err}); free memory, use a "
                        "smaller model or device='cpu'") from None
                yield self._note(f"out of memory with {before[0]} tile(s) of {before[1]}; "
                                 f"retrying with {predictor.batch_size} of {predictor.tile}",
                                 "warning")
        for text in predictor.notes:
            yield self._note(text)
        predictor.notes.clear()
        return probs, var

    def _at_image_scale(self, probs: np.ndarray, var: np.ndarray | None, hw: tuple[int, int],
                        keep: tuple[slice, slice] | None = None) -> tuple[np.ndarray, Any]:
        """Model-scale probabilities (and variance) resampled to the plane's ``hw``, cut to
        ``keep``; unchanged when the plane was not rescaled."""
        if self.scale != 1.0:
            h, w = hw
            probs = resize_plane(probs, (h, w), order=1)
            if var is not None:
                var = resize_plane(var, (h, w), order=1)
            if keep is not None:
                probs = probs[(slice(None), *keep)]
                var = None if var is None else var[keep]
        return probs, var

    def _store(self, z: int, where: tuple[slice, slice], probs: np.ndarray,
               var: np.ndarray | None, uncertainty: bool = True) -> None:
        at = self._at(z, where)
        if self.probabilities is not None:
            if not np.may_share_memory(probs, self.probabilities):  # not stitched in place
                self.probabilities[(slice(None), *at)] = probs
        elif self.foreground is not None:
            self.foreground[at] = probs[1]
        self.semantic[at] = semantic_labels(probs)
        if self.uncertainty is not None and uncertainty:
            self.uncertainty[at] = var if var is not None else _entropy(probs)

    def _model_plane(self, z: int) -> Any:
        """Plane ``z`` of the model-scale foreground (a plane's is one plane, reused)."""
        return self.model_foreground[z] if self.label_3d else self.model_foreground

    def _keep_at_model_scale(self, z: int, win: Window, probs: np.ndarray) -> None:
        """A rescaled window's core, from its model-scale probabilities, into plane ``z``'s
        model-scale foreground (nothing to keep when the plane is not rescaled or labelled
        block by block). The core's model pixels are those of the whole plane's grid, so the
        windows' cores tile it."""
        if self.model_foreground is None:
            return
        target = self._model_plane(z)
        where = []
        for core, window, n, m, size in zip(win.core, win.window, (self.h, self.w),
                                            target.shape, probs.shape[-2:], strict=True):
            offset = round(window.start * m / n)
            start = round(core.start * m / n)
            stop = min(round(core.stop * m / n), offset + size)
            where.append((slice(start, stop), slice(start - offset, stop - offset)))
        target[where[0][0], where[1][0]] = probs[1][where[0][1], where[1][1]]

    def _plane_whole(self, z: int, rng: IntensityRange | None) -> Iterator[Any]:
        plane = normalize_region(np.asarray(self.view[z]), rng)
        # the plane's probabilities stitched straight into an output array in memory
        into = (self.probabilities[(slice(None), *self._at(z))]
                if isinstance(self.probabilities, np.ndarray) else None)
        model_probs, var = yield from self._predict_at_model_scale(
            plane, progress=not self.stacked, into=into)
        probs, var = self._at_image_scale(model_probs, var, plane.shape[-2:])
        self._store(z, (slice(None), slice(None)), probs, var)
        # instances are found where the net saw the objects: on a rescaled plane, at the
        # model's scale, whose pixel sizes the post-processing's gaps, specks and split seeds
        # are measured in (scaled back, 1-2-px gaps vanish or widen and nuclei merge or shrink)
        self._last_fg = model_probs[1]
        self._last_image_fg = probs[1]
        if self.label_3d and self.model_foreground is not None:
            self.model_foreground[z] = model_probs[1]

    def _plane_blockwise(self, z: int, rng: IntensityRange | None) -> Iterator[Any]:
        messages: list[Message] = []

        # the windows' cores stitched straight into an output array in memory
        plane_out = (self.probabilities[(slice(None), *self._at(z))]
                     if isinstance(self.probabilities, np.ndarray) else None)

        def predict_window(region: np.ndarray, win: Window) -> tuple[np.ndarray, Any]:
            into = None if plane_out is None else plane_out[(slice(None), *win.core)]
            # the messages wait until the block is done
            probs, var = _collect(self._predict_at_model_scale(region, False, into, win.inner),
                                  messages)
            self._keep_at_model_scale(z, win, probs)
            return self._at_image_scale(probs, var, region.shape[-2:], win.inner)

        def sink(win: Window, result: tuple[np.ndarray, Any]) -> None:
            self._store(z, win.core, *result)

        for event in predict_blocks(self.view[z], rng, predict_window, sink, self._windows()):
            yield from messages
            messages.clear()
            if not self.stacked:
                yield event
        self._last_fg = self._last_image_fg = None

    def _orthogonal_views(self, rng: IntensityRange | None) -> Iterator[Any]:
        """Fold the XZ/YZ slices' foreground into the XY pass's (:mod:`.views`), then write the
        combined probabilities back into every output."""
        messages: list[Message] = []

        def predict(plane: np.ndarray) -> np.ndarray:
            return _collect(self._predict(plane, progress=False), messages)[0]

        zs = float(self.config.z_spacing or 1.0)
        # a rescaled volume: the side views' own minimum, folded into the XY pass at the
        # image's scale and, resampled, at the model's (where its instances are found)
        sides = self.foreground
        if self.model_foreground is not None:
            sides = allocate_output("side views", self.spatial, np.float32)
            sides[...] = 1.0
        for event in fold_orthogonal_views(self.view, sides, rng, predict, zs):
            yield from messages
            messages.clear()
            yield event
        if sides is not self.foreground:
            hw = self.model_foreground.shape[-2:]
            for z in range(self.n_z):
                side = np.asarray(sides[z])
                self.foreground[z] = np.minimum(np.asarray(self.foreground[z]), side)
                self.model_foreground[z] = np.minimum(np.asarray(self.model_foreground[z]),
                                                      resize_plane(side, hw, order=1))
        whole = (slice(None), slice(None))
        # the TTA variance is the XY slices' (there is none of the side views); an entropy is
        # that of the combined probabilities
        entropy = self.config.uncertainty_method == "entropy"
        for z in range(self.n_z):
            fg = np.asarray(self.foreground[z], np.float32)
            self._store(z, whole, np.stack([1.0 - fg, fg]), None, uncertainty=entropy)

    def _plane_instances(self, z: int, offset: int) -> Generator[Any, None, int]:
        config = self.config
        target = self.instances[z] if self.stacked else self.instances
        if not self.blockwise:
            labels = instance_labels(self._last_fg, config, self.scale)
            if self.scale != 1.0:
                labels = labels_at_image_scale(labels, self._last_fg, self._last_image_fg,
                                               config.threshold)
            if offset:
                labels = np.where(labels > 0, labels + offset, 0).astype(np.int32)
            target[...] = labels
            return max(offset, int(labels.max()) if labels.size else 0)
        fg = self.foreground[z] if self.stacked else self.foreground
        if self.model_foreground is not None:
            return (yield from self._blocks_at_model_scale(fg, target, offset))
        scratch = (allocate_output("unsplit", fg.shape, np.int32)
                   if config.split_touching else None)
        n = yield from _events(label_blocks(
            fg, target, config.threshold, split=config.split_touching,
            block=config.block_size, halo=self._halo(), scratch=scratch, first_id=offset + 1,
            **_min_size(config)), forward_progress=not self.stacked, notes=self.notes)
        return offset + n

    def _blocks_at_model_scale(self, fg: Any, target: Any, offset: int
                               ) -> Generator[Any, None, int]:
        """A rescaled plane's instances, labelled block by block at the model's scale (as a
        whole plane is), then brought to the image's block by block."""
        config, model_fg = self.config, self.model_foreground
        model_labels = allocate_output("model instances", model_fg.shape, np.int32)
        scratch = (allocate_output("unsplit", model_fg.shape, np.int32)
                   if config.split_touching else None)
        n = yield from _events(label_blocks(
            model_fg, model_labels, config.threshold, split=config.split_touching,
            block=config.block_size, halo=self._halo(scale=self.scale), scratch=scratch,
            first_id=offset + 1, **_min_size(config, self.scale)),
            forward_progress=not self.stacked, notes=self.notes)
        self._to_image_scale(model_labels, model_fg, fg, target)
        return offset + n

    def _to_image_scale(self, model_labels: Any, model_fg: Any, fg: Any, target: Any) -> None:
        """A plane's model-scale instances into ``target`` at the image's scale, block by block
        (:func:`labels_at_image_scale`: each block reads only its part and a margin)."""
        for block in block_grid((self.h, self.w), self.config.block_size, 0):
            where = tuple(slice(a, b) for a, b in block.core)
            target[where] = labels_at_image_scale(model_labels, model_fg, fg,
                                                  self.config.threshold, where)

    def _volume_instances(self) -> Iterator[Any]:
        config = self.config
        if config.stitch_threshold is not None:
            yield from _events(link_slices(self.instances, threshold=config.stitch_threshold),
                               forward_progress=True, notes=self.notes)
            return
        # a rescaled volume is labelled at the model's scale (as a rescaled plane is), where
        # the slices lie z_spacing x scale of its pixels apart, then brought back plane by plane
        scale = self.scale
        fg, target = self.foreground, self.instances
        if self.model_foreground is not None:
            fg = self.model_foreground
            target = allocate_output("model instances", fg.shape, np.int32)
        zs = float(config.z_spacing or 1.0) * scale
        halo = self._halo(volume=True, scale=scale)
        side = max(config.block_size // 8, MIN_BLOCK)
        block = (VOLUME_BLOCK_SLICES, side, side)
        halos = (int(math.ceil(halo / zs)), halo, halo)
        scratch = (allocate_output("unsplit", fg.shape, np.int32)
                   if config.split_touching else None)
        yield from _events(label_blocks(
            fg, target, config.threshold, split=config.split_touching,
            block=block, halo=halos, scratch=scratch, spacing=(zs, 1.0, 1.0),
            **_min_size(config, scale)),
            forward_progress=True, notes=self.notes)
        if target is not self.instances:
            for z in range(self.n_z):
                self._to_image_scale(target[z], fg[z], self.foreground[z], self.instances[z])


def _collect(gen: Generator[Message, None, Any], messages: list[Message]) -> Any:
    """Run a sub-job to its value, keeping its messages for the caller to pass on later."""
    while True:
        try:
            messages.append(next(gen))
        except StopIteration as stop:
            return stop.value


def _events(gen: Generator[Any, None, Any], forward_progress: bool, notes: list[str]
            ) -> Generator[Any, None, Any]:
    """Pass a sub-job's messages on (and its progress, if asked); return its value."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if isinstance(event, Message):
            notes.append(event.text)
            yield event
        elif forward_progress:
            yield event


def run_to_result(events: Iterator[Any], callback: Callable[[Any], None] | None = None) -> Any:
    """Exhaust a job's generator and return its last item (calling ``callback`` on the rest)."""
    last = None
    for event in events:
        if last is not None and callback is not None:
            callback(last)
        last = event
    return last


def predict_image(model: UNet | str | os.PathLike, image: Any,
                  meta: ModelMeta | Mapping[str, Any] | None = None,
                  out: Mapping[str, Any] | None = None, **config_kwargs: Any) -> PredictionResult:
    """Predict ``image`` and return the :class:`PredictionResult` (see :func:`predict`).

    ``model`` is a UNet, or a model spec (``"default"``, an architecture name, a model file)
    resolved with :func:`~napari_unet.core.model.checkpoint.resolve_model` (its meta is used when
    ``meta`` is None). ``config_kwargs`` are :class:`PredictConfig` fields, e.g.
    ``tile_size=256, tta=True``.
    """
    if isinstance(model, (str, os.PathLike)):
        from ..model.checkpoint import resolve_model

        model, file_meta = resolve_model(model, device="cpu")
        meta = file_meta if meta is None else meta
    check_model(model)
    result = run_to_result(predict(model, image, PredictConfig(**config_kwargs), meta, out))
    if not isinstance(result, PredictionResult):  # pragma: no cover - predict always ends so
        raise RuntimeError("prediction ended without a result")
    return result


__all__ = [
    "BLEND_MODES", "DEFAULT_NORMALIZATION", "IN_RAM_BYTES", "MAX_RESCALE", "PredictConfig",
    "PredictionResult", "UNCERTAINTY_METHODS", "allocate_output", "as_stack", "instance_labels",
    "PredictionJob", "as_model_meta", "check_model", "is_dask", "normalize_plane", "predict",
    "labels_at_image_scale", "predict_image", "resize_plane", "resolve_device_name",
    "run_to_result", "semantic_labels",
]
