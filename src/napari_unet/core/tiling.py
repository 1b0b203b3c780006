"""Overlap-tile prediction (the paper's Fig. 2) for images of any size, stacks and channels.

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
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .device import resolve_device
from .events import Message, Progress
from .model import UNet

BLEND_MODES = ("discard", "gaussian")
UNCERTAINTY_METHODS = ("entropy", "variance")
# Outputs bigger than this are not allocated in RAM but as (unlinked) temporary memory maps.
IN_RAM_BYTES = 256 * 2**20
# Tile sides chosen automatically stay below this (bigger tiles gain little and cost latency).
MAX_AUTO_TILE = {"cuda": 2048, "cpu": 1024, "mps": 1024}
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


# -- tile geometry ---------------------------------------------------------------------------
def receptive_radius(model: UNet) -> int:
    """Pixels on each side that influence one output pixel of a net of this depth.

    That is the context of the valid net of the same depth, ``(12 * 2**d - 8) / 2``, plus
    ``2**d / 2`` for the pooling-block alignment of padded nets: with this overlap, "discard"
    stitching of He-initialised depth-2, 3 and 4 padded nets matched the un-tiled prediction to
    float rounding (< 1e-5), while the valid context alone left seams (up to 0.013 and 0.006)
    at depths 2 and 3 (tests/core/test_tiling.py for depths 2 and 3).
    """
    return (12 * model.divisor - 8) // 2 + model.divisor // 2


def check_tile_size(model: UNet, tile: tuple[int, int], overlap: int | None = None) -> None:
    """Raise a clear ``ValueError`` if ``tile`` cannot be used with ``model``."""
    if model.is_valid:
        model.output_shape(tile)  # "tile 570 is not legal ...; nearest are 556 and 572"
        return
    d = model.divisor
    for t in tile:
        if t % d:
            lo, hi = max(t // d * d, d), (t // d + 1) * d
            raise ValueError(f"tile {t} is not legal for this padded depth-"
                             f"{model.config['depth']} net (multiples of {d}); nearest are "
                             f"{lo} and {hi}")
    m = receptive_radius(model) if overlap is None else overlap
    if min(tile) < 2 * m + d:
        raise ValueError(f"tile {min(tile)} is too small for an overlap of {m} px on each side "
                         f"(needs >= {2 * m + d}); use a bigger tile or a smaller overlap")


def auto_tile_size(model: UNet, device: torch.device, batch_size: int = 1,
                   memory_budget: int | None = None) -> tuple[int, int]:
    """Largest square tile whose forward pass of ``batch_size`` tiles fits a memory budget.

    The budget is half the free CUDA memory on CUDA; on CPU ``memory_budget`` or a quarter of
    the available RAM (at most 2 GiB). The cost per input pixel is estimated from the widths of
    the net (the skip connections of all levels plus the working buffers of the first level).
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = free // 2
    else:
        budget = memory_budget or min(2 * 2**30, _available_ram() // 4)
    base = model.config["base_channels"]
    bytes_per_pixel = 4 * (model.in_channels + 2 * model.num_classes + 12 * base)
    side = int(math.sqrt(budget / (batch_size * bytes_per_pixel)))
    side = min(side, MAX_AUTO_TILE.get(device.type, 1024))
    d = model.divisor
    if model.is_valid:
        first = model.valid_input_shape((1, 1))[0]
        side = max(first, first + (side - first) // d * d)
    else:
        side = max(side // d * d, 2 * receptive_radius(model) + d)
        side = -(-side // d) * d
    return side, side


def fit_tile_to_image(model: UNet, largest: tuple[int, int], hw: tuple[int, int],
                      overlap: int | None = None) -> tuple[int, int]:
    """The smallest tile, no bigger than ``largest``, that covers ``hw`` with as few tiles.

    An automatic 1024 px tile on a 2048 px image would need three tiles per axis (they must
    overlap), mostly recomputing the same pixels; three tiles of ~700 px do the same job with
    half the work. Explicit tile sizes are used as given.
    """
    d = model.divisor
    m = receptive_radius(model) if overlap is None else overlap
    tile = []
    for t_max, n_px in zip(largest, hw, strict=True):
        if model.is_valid:
            first = model.valid_input_shape((d + 2 * model.context,) * 2)[0]
            candidates = range(first, max(t_max, first) + 1, d)
            count = lambda t, n_px=n_px: len(valid_axis_tiles(n_px, t, model.context, d))  # noqa: E731
        else:
            candidates = range(min(2 * m + d, t_max) // d * d or d, t_max + 1, d)
            count = lambda t, n_px=n_px: len(padded_axis_tiles(n_px, t, m, d))  # noqa: E731
        # fewest tiles first, then the least computed area
        tile.append(min(candidates, key=lambda t: (count(t), count(t) * t)))
    return tile[0], tile[1]


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def valid_axis_tiles(length: int, tile: int, context: int, divisor: int) -> list[int]:
    """Output origins of the tiles covering ``length`` pixels with a valid net.

    Tile ``i`` covers output ``[o_i, o_i + tile - 2 * context)``; all origins are multiples of
    ``divisor`` and consecutive tiles overlap by less than ``divisor`` pixels plus the
    remainder of the output size.
    """
    out = tile - 2 * context
    step = out // divisor * divisor
    if length <= out:
        return [0]
    if step == 0:
        raise ValueError(f"tile {tile} gives {out} output px, less than one pooling step "
                         f"({divisor}); use a tile >= {tile - out + divisor}")
    last = -(-(length - out) // divisor) * divisor
    n = -(-last // step) + 1  # as few tiles as the step allows, spread evenly
    return [i * last // (n - 1) // divisor * divisor for i in range(n - 1)] + [last]


def padded_axis_tiles(length: int, tile: int, margin: int,
                      divisor: int) -> list[tuple[int, int, int, int]]:
    """Tiles ``(start, stop, keep_start, keep_stop)`` of a padded net along one axis.

    Tiles start at multiples of ``divisor`` (so the pooling grid agrees with the un-tiled
    image's) and never leave the image; the last one ends at ``length`` (it may be up to
    ``divisor - 1`` pixels longer than ``tile``). Kept parts meet half-way in each overlap, so
    every kept pixel is at least ``margin`` pixels from an inner tile border.
    """
    if length <= tile:
        return [(0, length, 0, length)]
    step = max((tile - 2 * margin) // divisor * divisor, divisor)
    last = (length - tile) // divisor * divisor
    # as few tiles as the step allows, spread evenly (gaps stay <= step: both are multiples
    # of the divisor)
    n = -(-last // step) + 1
    starts = [i * last // (n - 1) // divisor * divisor for i in range(n - 1)] + [last] \
        if n > 1 else [0]
    stops = [s + tile for s in starts[:-1]] + [length]
    keeps = [0]
    for i in range(1, len(starts)):
        keeps.append((starts[i] + stops[i - 1]) // 2)
    keeps.append(length)
    return [(starts[i], stops[i], keeps[i], keeps[i + 1]) for i in range(len(starts))]


def _gaussian_window(n: int, sigma_scale: float = 0.125) -> np.ndarray:
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2
    g = np.exp(-0.5 * (x / max(sigma_scale * n, 1e-6)) ** 2)
    return np.maximum(g / g.max(), 1e-3).astype(np.float32)


# -- the plane predictor ---------------------------------------------------------------------
class _OutOfMemory(Exception):
    pass


def _is_oom(err: BaseException) -> bool:
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t)
    if isinstance(err, (MemoryError, *oom_types)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)


def _d4(x: torch.Tensor, k: int) -> torch.Tensor:
    """View ``k`` of the 8 flips/rotations (``k = 0`` is ``x`` itself, not a copy)."""
    if k >= 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x


def _d4_inverse(y: torch.Tensor, k: int) -> torch.Tensor:
    if k % 4:
        y = torch.rot90(y, -(k % 4), dims=(-2, -1))
    if k >= 4:
        y = torch.flip(y, dims=(-1,))
    return y


class _PlanePredictor:
    """Predicts one normalised ``(C, H, W)`` float32 plane by overlap-tiles."""

    def __init__(self, model: UNet, device: torch.device, tile: tuple[int, int], batch_size: int,
                 tta: bool, variance: bool, blend: str, overlap: int | None, half: bool | str):
        self.model = model
        self.device = device
        self.tile = tile
        self.batch_size = batch_size
        self.tta = tta
        self.variance = variance
        self.blend = blend
        self.margin = receptive_radius(model) if overlap is None else overlap
        # float16 only where CUDA runs it; "auto" is decided on the first batch
        self.half: bool | str = half if device.type == "cuda" else False
        self.notes: list[str] = []

    # one batch -------------------------------------------------------------------------------
    def _net(self, x: torch.Tensor, half: bool) -> torch.Tensor:
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=half):
            logits = self.model(x)
        return torch.softmax(logits.float(), dim=1)

    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(N, C, h, w)`` -> probabilities ``(N, K, h', w')`` and variance ``(N, h', w')``."""
        x = torch.from_numpy(batch).to(self.device)
        if self.half == "auto":
            full = self._net(x, False)
            low = self._net(x, True)
            self.half = bool(torch.equal(full.argmax(1), low.argmax(1)))
            self.notes.append("float16 gives the same labels; using it" if self.half else
                              "float16 changes labels; staying with float32")
        views = range(8) if self.tta else range(1)
        total = sq = None
        for k in views:
            p = _d4_inverse(self._net(_d4(x, k), bool(self.half)), k)
            total = p if total is None else total + p
            if self.variance:
                sq = p * p if sq is None else sq + p * p
        mean = total / len(views) if len(views) > 1 else total
        var = None
        if self.variance:
            # mean over classes of E[p^2] - E[p]^2; x4 maps the largest variance (0.25) to 1
            var = (4 * (sq / len(views) - mean * mean).clamp_min(0).mean(1)).cpu().numpy()
        return mean.cpu().numpy(), var

    # one plane -------------------------------------------------------------------------------
    def run(self, plane: np.ndarray) -> Generator[Progress, None,
                                                   tuple[np.ndarray, np.ndarray | None]]:
        """Generator of tile progress; returns ``(probabilities (K,H,W), variance or None)``."""
        h, w = plane.shape[-2:]
        k = self.model.num_classes
        probs = np.zeros((k, h, w), np.float32)
        var = np.zeros((h, w), np.float32) if self.variance else None
        if self.model.is_valid:
            jobs, src = self._valid_jobs(plane)
            weights = None
        else:
            jobs, src = self._padded_jobs(plane)
            weights = np.zeros((h, w), np.float32) if self.blend == "gaussian" else None
        groups: dict[tuple[int, int], list] = {}
        for job in jobs:
            groups.setdefault(job[0], []).append(job)
        total, done = len(jobs), 0
        for shape_jobs in groups.values():
            for i in range(0, len(shape_jobs), self.batch_size):
                chunk = shape_jobs[i:i + self.batch_size]
                batch = np.stack([src[:, sy, sx] for _, (sy, sx), _, _ in chunk])
                try:
                    out, v = self.forward(batch)
                except Exception as err:
                    if _is_oom(err):
                        raise _OutOfMemory(str(err)) from err
                    raise
                for j, (_, _, (ty, tx), (oy, ox)) in enumerate(chunk):
                    if weights is None:
                        probs[:, ty, tx] = out[j][:, oy, ox]
                        if var is not None:
                            var[ty, tx] = v[j][oy, ox]
                    else:
                        g = np.outer(_gaussian_window(out.shape[-2]),
                                     _gaussian_window(out.shape[-1]))
                        probs[:, ty, tx] += out[j] * g
                        weights[ty, tx] += g
                        if var is not None:
                            var[ty, tx] += v[j] * g
                done += len(chunk)
                yield Progress(done, total, f"tile {done}/{total}")
        if weights is not None:
            probs /= weights
            if var is not None:
                var /= weights
        return probs, var

    def _valid_jobs(self, plane: np.ndarray):
        c, d = self.model.context, self.model.divisor
        h, w = plane.shape[-2:]
        # a tile bigger than needed for a small image shrinks to the smallest legal cover
        cover = self.model.input_shape_for_output((h, w))
        tile = (min(self.tile[0], cover[0]), min(self.tile[1], cover[1]))
        oy_n, ox_n = tile[0] - 2 * c, tile[1] - 2 * c
        ys = valid_axis_tiles(h, tile[0], c, d)
        xs = valid_axis_tiles(w, tile[1], c, d)
        after_y = ys[-1] + tile[0] - h - c
        after_x = xs[-1] + tile[1] - w - c
        padded = np.pad(plane, ((0, 0), (c, after_y), (c, after_x)), mode="symmetric")
        jobs = []
        for y in ys:
            for x in xs:
                hy, wx = min(oy_n, h - y), min(ox_n, w - x)
                jobs.append((tile, (slice(y, y + tile[0]), slice(x, x + tile[1])),
                             (slice(y, y + hy), slice(x, x + wx)),
                             (slice(0, hy), slice(0, wx))))
        return jobs, padded

    def _padded_jobs(self, plane: np.ndarray):
        h, w = plane.shape[-2:]
        d = self.model.divisor
        ys = padded_axis_tiles(h, self.tile[0], self.margin, d)
        xs = padded_axis_tiles(w, self.tile[1], self.margin, d)
        gauss = self.blend == "gaussian"
        jobs = []
        for y0, y1, ky0, ky1 in ys:
            for x0, x1, kx0, kx1 in xs:
                if gauss:
                    target = (slice(y0, y1), slice(x0, x1))
                    own = (slice(None), slice(None))
                else:
                    target = (slice(ky0, ky1), slice(kx0, kx1))
                    own = (slice(ky0 - y0, ky1 - y0), slice(kx0 - x0, kx1 - x0))
                jobs.append(((y1 - y0, x1 - x0), (slice(y0, y1), slice(x0, x1)), target, own))
        return jobs, plane

    def shrink(self) -> bool:
        """Use less memory after an out-of-memory error; False when nothing is left to try."""
        if self.batch_size > 1:
            self.batch_size //= 2
            return True
        half = (self.tile[0] // 2, self.tile[1] // 2)
        try:
            if self.model.is_valid:
                smaller = self.model.valid_input_shape(half)
            else:
                d = self.model.divisor
                smaller = tuple(max(-(-t // d) * d, 2 * self.margin + d) for t in half)
        except ValueError:
            return False
        if smaller[0] >= self.tile[0] and smaller[1] >= self.tile[1]:
            return False
        self.tile = (min(smaller[0], self.tile[0]), min(smaller[1], self.tile[1]))
        return True


# -- image layout ----------------------------------------------------------------------------
def as_stack(image: Any, in_channels: int, channel_axis: int | None) -> tuple[Any, bool]:
    """View ``image`` as ``(Z, C, H, W)`` without reading it.

    Returns the view and whether the image is a stack. Memory maps stay memory maps, dask
    stays dask; other array-likes (zarr) are wrapped in dask so nothing is loaded here.
    """
    if not hasattr(image, "shape") or not hasattr(image, "ndim"):
        image = np.asarray(image)
    if not isinstance(image, np.ndarray) and not _is_dask(image):
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


def _is_dask(x: Any) -> bool:
    return type(x).__module__.startswith("dask.")


def _allocate(name: str, shape: tuple[int, ...], dtype: Any, out: Mapping[str, Any] | None,
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
def _normalize(plane: np.ndarray, spec: Mapping[str, Any] | None) -> np.ndarray:
    from .data import normalize

    return normalize(plane, spec, channel_axis=0)


def _instances(fg: np.ndarray, config: PredictConfig) -> np.ndarray:
    from .postprocess import instances_from_probability

    kwargs = {} if config.min_size is None else {"min_size": int(config.min_size)}
    return np.asarray(instances_from_probability(fg, threshold=config.threshold,
                                                 split=config.split_touching, **kwargs),
                      dtype=np.int32)


def _semantic(probs: np.ndarray) -> np.ndarray:
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
    probabilities = (_allocate("probabilities", (k, *spatial), np.float32, out)
                     if config.keep_probabilities else None)
    semantic = _allocate("semantic", spatial, np.uint8 if k <= 256 else np.int32, out)
    instances = _allocate("instances", spatial, np.int32, out) if mode == "instances" else None
    uncertainty = _allocate("uncertainty", spatial, np.float32, out) if config.uncertainty \
        else None

    model.eval().to(device)
    predictor = _PlanePredictor(
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
            plane = np.ascontiguousarray(_normalize(plane, spec))
            if scale != 1.0:
                size = (max(1, round(h * scale)), max(1, round(w * scale)))
                plane = _resize(plane, size, order=1)
            while True:
                try:
                    run = predictor.run(plane)
                    if stacked:
                        probs, var = _drain(run)
                    else:
                        probs, var = yield from run
                    break
                except _OutOfMemory as err:
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
            semantic[idx] = _semantic(probs)
            if instances is not None:
                labels = _instances(probs[1], config)
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


def _drain(gen: Generator[Any, None, Any]) -> Any:
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


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


def predict_tiles_dask(model: UNet, image: Any, config: PredictConfig | None = None,
                       meta: Mapping[str, Any] | None = None, chunk: int = 1024) -> Any:
    """Lazy probabilities ``(K, H, W)`` of one big normalised ``(C, H, W)`` plane via dask.

    The plane is split into chunks (multiples of ``model.divisor``) that are predicted with
    :func:`dask.array.map_overlap` and the net's context as overlap (``boundary="reflect"``,
    numpy's ``"symmetric"``), so on a distributed cluster the tiles of one huge image run on
    all workers. For valid nets the result equals the local prediction; for padded nets chunk
    borders are treated like tile borders with ``overlap`` = the receptive radius.

    The image must already be normalised (e.g. with percentiles from a subsample), because a
    chunk cannot see the whole image's intensity distribution.
    """
    import dask
    import dask.array as da

    config = config or PredictConfig()
    if not _is_dask(image):
        image = da.from_array(np.asarray(image))
    if image.ndim != 3 or image.shape[0] != model.in_channels:
        raise ValueError(f"expected a ({model.in_channels}, H, W) plane, got {image.shape}")
    d = model.divisor
    chunk = max(chunk // d * d, d)
    # Valid nets: the context plus one pooling block, because the receptive field of an output
    # pixel reaches up to divisor - 1 px further on one side than the context (it depends on
    # the pixel's place in the pooling grid); the block function drops the extra on the low side.
    depth = model.context + d if model.is_valid else (
        receptive_radius(model) if config.overlap is None else config.overlap)
    if min(image.shape[1:]) < depth:
        raise ValueError(f"a {image.shape[1]}x{image.shape[2]} image is smaller than the "
                         f"{depth} px overlap of dask tiling; use predict() for small images")
    chunks = (image.shape[0], _chunks(image.shape[1], chunk, depth),
              _chunks(image.shape[2], chunk, depth))
    image = image.astype(np.float32).rechunk(chunks)
    tile = config.tile_size or auto_tile_size(model, torch.device("cpu"), config.batch_size,
                                              config.memory_budget)
    k = model.num_classes
    state = {name: t.detach().cpu() for name, t in model.state_dict().items()}
    arch = dict(model.config)

    def block(x: np.ndarray, weights: dict | None = None) -> np.ndarray:
        net = _cached_model(arch, weights)
        return _predict_block(net, x, depth, tile, config)

    # The weights are one graph key that every block depends on: a cluster sends them to each
    # worker once instead of with every task.
    weights = dask.delayed(state, pure=True)
    return da.map_overlap(
        block, image, depth={0: 0, 1: depth, 2: depth}, boundary="reflect", trim=False,
        dtype=np.float32, chunks=((k,), image.chunks[1], image.chunks[2]),
        meta=np.empty((0, 0, 0), np.float32), weights=weights)


def _chunks(length: int, chunk: int, depth: int) -> tuple[int, ...]:
    # every chunk starts at a multiple of the divisor and none is thinner than the overlap
    # (dask would otherwise rechunk, moving the starts)
    sizes = [chunk] * (length // chunk)
    rest = length - sum(sizes)
    if rest and (rest >= depth or not sizes):
        sizes.append(rest)
    elif rest:
        sizes[-1] += rest
    return tuple(sizes)


_MODEL_CACHE: dict[int, UNet] = {}


def _cached_model(arch: dict, state: dict) -> UNet:
    # one net per worker process per shipped state (dask hands every task the same object)
    key = id(state)
    net = _MODEL_CACHE.get(key)
    if net is None:
        net = UNet.from_config(arch)
        net.load_state_dict(state)
        net.eval()
        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = net
    return net


def _predict_block(net: UNet, block: np.ndarray, depth: int, tile: tuple[int, int],
                   config: PredictConfig) -> np.ndarray:
    """Probabilities of the centre of a block that carries ``depth`` pixels of context."""
    h, w = block.shape[1] - 2 * depth, block.shape[2] - 2 * depth
    predictor = _PlanePredictor(net, torch.device("cpu"), tile, config.batch_size, config.tta,
                                False, config.blend, depth if not net.is_valid else None, False)
    with torch.inference_mode():
        if net.is_valid:
            d = net.divisor  # the low-side extra pooling block is not needed
            probs = _valid_premargined(predictor, block[:, d:, d:], h, w)
        else:
            probs, _ = _drain(predictor.run(np.ascontiguousarray(block)))
            probs = probs[:, depth:depth + h, depth:depth + w]
    return np.ascontiguousarray(probs, dtype=np.float32)


def _valid_premargined(predictor: _PlanePredictor, block: np.ndarray, h: int,
                       w: int) -> np.ndarray:
    """Valid-net prediction of a block that already holds the context on every side."""
    c = predictor.model.context
    d = predictor.model.divisor
    cover = predictor.model.input_shape_for_output((h, w))
    tile = (min(predictor.tile[0], cover[0]), min(predictor.tile[1], cover[1]))
    ys = valid_axis_tiles(h, tile[0], c, d)
    xs = valid_axis_tiles(w, tile[1], c, d)
    # The block carries divisor px beyond the context at its far end, which covers how far the
    # last tiles run past it; any padding added here only fills what no kept output sees.
    extra = ((0, 0), (0, max(ys[-1] + tile[0] - block.shape[1], 0)),
             (0, max(xs[-1] + tile[1] - block.shape[2], 0)))
    src = np.pad(block, extra, mode="symmetric").astype(np.float32)
    probs = np.zeros((predictor.model.num_classes, h, w), np.float32)
    oy_n, ox_n = tile[0] - 2 * c, tile[1] - 2 * c
    jobs = [(y, x) for y in ys for x in xs]
    for i in range(0, len(jobs), predictor.batch_size):
        chunk = jobs[i:i + predictor.batch_size]
        batch = np.stack([src[:, y:y + tile[0], x:x + tile[1]] for y, x in chunk])
        out, _ = predictor.forward(batch)
        for j, (y, x) in enumerate(chunk):
            hy, wx = min(oy_n, h - y), min(ox_n, w - x)
            probs[:, y:y + hy, x:x + wx] = out[j][:, :hy, :wx]
    return probs


__all__ = [
    "PredictConfig", "PredictionResult", "predict", "predict_image", "predict_tiles_dask",
    "auto_tile_size", "fit_tile_to_image", "check_tile_size", "valid_axis_tiles",
    "padded_axis_tiles", "as_stack",
    "receptive_radius", "run_to_result",
]
