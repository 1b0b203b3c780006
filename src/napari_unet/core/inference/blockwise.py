"""Instances of planes of any size with bounded memory: block by block, merged consistently.

A plane is cut into square *blocks* (2-4 k pixels a side); each block is read together with a
*halo* of neighbouring pixels, so that an object near the block's border is seen whole. Three
passes, each holding one block (plus halo) in memory and writing into arrays on disk (memory
maps or zarr):

1. **Probabilities.** Each block is read with the net's context around it, normalised with
   intensity percentiles taken once from a subsample of the whole plane
   (:func:`intensity_range`, the same numbers the whole-plane path uses), predicted by an
   injected ``predict`` callable, and its centre written out.
2. **Objects.** The foreground of each block plus halo is labelled as the whole-plane path does
   (:func:`~core.inference.postprocess.base_instances`). A block *owns* the objects whose
   bounding box starts (top-left corner) inside the block: every object has exactly one owner,
   and an object smaller than the halo lies wholly inside its owner's window, where it comes out
   exactly as in the whole plane. Owned objects get global ids and are written; the rest is
   left to their owners. (stardist's ``predict_instances_big`` keeps objects by a similar
   ownership rule; dask-image instead relabels and merges touching ids across chunk faces.)
3. **Split** (optional). Touching objects are split with the seed distance of the *whole* plane
   (from the sizes of all objects of pass 2), each block splitting only the objects it owns.

On a plane that fits in memory the result equals the whole-plane labels up to the ids, when the
halo exceeds the largest object by a few pixels (tests/core/test_blockwise.py). Objects that
reach the outer edge of a halo are counted and reported: they may be cut in two.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..events import PART_STEPS, Message, Progress, within
from ..normalize import IntensityRange, normalize_region
from .postprocess import DEFAULT_MIN_SIZE, base_instances, seed_distance, split_touching

#: Default block side: an ``(2048 + 2 * halo)``-pixel window's labelling needs ~0.3-0.4 GB.
DEFAULT_BLOCK = 2048
MIN_BLOCK = 64  # small blocks are only slower (tests use them to get many blocks)
#: Smallest automatic halo; it grows with the object diameter (see :func:`auto_halo`).
MIN_HALO = 64
#: Forward-pass memory of blockwise planes on CPU when ``memory_budget`` is not set: with a
#: block's labelling (~0.4 GB), which runs after it, the job stays under 1 GB (bench_memory.py).
#: 768 MiB buys 1152 px tiles for the shipped model: 1.27x the plane's pixels computed at
#: 4096^2 against 1.43x with 816 px tiles at 384 MiB.
BLOCKWISE_FORWARD_BUDGET = 768 * 2**20
# Pixels an owned object must stay away from its window's edge: the gap filling and the
# smoothed distance transform of the split look ~5 px around an object.
_MARGIN = 8


# -- block geometry --------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    """One block: ``core`` (the pixels it is responsible for) inside ``window`` (core + halo,
    clipped to the image), both as ``((start, stop), ...)`` per axis in image coordinates."""

    core: tuple[tuple[int, int], ...]
    window: tuple[tuple[int, int], ...]

    @property
    def window_slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in self.window)

    @property
    def core_slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in self.core)

    @property
    def core_in_window(self) -> tuple[slice, ...]:
        return tuple(slice(a - w, b - w) for (a, b), (w, _) in zip(self.core, self.window,
                                                                     strict=True))


def block_grid(shape: tuple[int, ...], block: int | tuple[int, ...], halo: int | tuple[int, ...],
               align: int = 1) -> list[Block]:
    """Blocks of about ``block`` px a side covering ``shape`` (2D or 3D), in raster order.

    Core starts are multiples of ``align`` along the last two axes (the net's pooling step, so
    a block's tiles see the pooling grid the whole plane's tiles see); the last block along an
    axis takes the rest.
    """
    shape = tuple(int(s) for s in shape)
    n = len(shape)
    blocks_ = (block,) * n if isinstance(block, (int, np.integer)) else tuple(block)
    halos = (halo,) * n if isinstance(halo, (int, np.integer)) else tuple(halo)
    if len(blocks_) != n or len(halos) != n or min(blocks_) < 1 or min(halos) < 0:
        raise ValueError(f"block and halo need {n} values >= 1 and >= 0, got {block} and {halo}")
    ranges = []
    for axis, (length, b) in enumerate(zip(shape, blocks_, strict=True)):
        a = align if axis >= n - 2 else 1
        starts = _starts(length, max(b // a * a, a))
        ranges.append([(s0, starts[i + 1] if i + 1 < len(starts) else length)
                       for i, s0 in enumerate(starts)])
    out = []
    for core in itertools.product(*ranges):
        window = tuple((max(a - hl, 0), min(b + hl, length))
                       for (a, b), hl, length in zip(core, halos, shape, strict=True))
        out.append(Block(tuple(core), window))
    return out


def _starts(length: int, step: int) -> list[int]:
    starts = list(range(0, length, step))
    # a last block thinner than half a step joins its neighbour
    if len(starts) > 1 and length - starts[-1] < step // 2:
        starts.pop()
    return starts


def auto_halo(object_diameter: float | None) -> int:
    """Halo for objects of about ``object_diameter`` px: 3 diameters (clusters of touching
    objects and elongated ones are longer than one), at least :data:`MIN_HALO`."""
    if object_diameter is None or not math.isfinite(object_diameter):
        return 2 * MIN_HALO
    return max(MIN_HALO, int(math.ceil(3 * object_diameter / 8)) * 8)


def needs_blocks(shape: tuple[int, int], block: int) -> bool:
    """Whether a plane is labelled block by block (either side larger than ``block``)."""
    return max(int(shape[0]), int(shape[1])) > block


# -- pass 1: probabilities ---------------------------------------------------------------------

@dataclass(frozen=True)
class Window:
    """What one block of pass 1 reads and keeps: ``core`` (its pixels in the plane), ``window``
    (the pixels read: core plus the net's context, clipped), ``inner`` (the core inside the
    window's result)."""

    core: tuple[slice, slice]
    window: tuple[slice, slice]
    inner: tuple[slice, slice]


def block_windows(shape: tuple[int, int], context: int, align: int = 1,
                  block: int = DEFAULT_BLOCK) -> list[Window]:
    """The windows of pass 1 over an ``(H, W)`` plane, in raster order.

    Each window starts at a multiple of ``align`` (so its tiles see the whole plane's pooling
    grid) and reaches ``context`` pixels beyond its core where the plane goes on; at the plane's
    edges it stops, as the whole plane does.
    """
    h, w = (int(s) for s in shape)
    out = []
    for b in block_grid((h, w), block, 0, align):
        (y0, y1), (x0, x1) = b.core
        wy0 = max(y0 - context, 0) // align * align
        wx0 = max(x0 - context, 0) // align * align
        wy1, wx1 = min(y1 + context, h), min(x1 + context, w)
        out.append(Window((slice(y0, y1), slice(x0, x1)), (slice(wy0, wy1), slice(wx0, wx1)),
                          (slice(y0 - wy0, y1 - wy0), slice(x0 - wx0, x1 - wx0))))
    return out


def tile_windows(ys: list[tuple[int, int, int, int]],
                 xs: list[tuple[int, int, int, int]]) -> list[Window]:
    """Windows that are the tiles of a plane's own tiling, in raster order.

    ``ys`` and ``xs`` hold ``(start, stop, keep_start, keep_stop)`` per tile along each axis
    (:func:`~core.inference.tiles.padded_axis_tiles`); a window's core is its tile's kept
    part. Predicting these windows one by one computes what tiling the whole plane computes,
    with one tile in memory.
    """
    out = []
    for y0, y1, ky0, ky1 in ys:
        for x0, x1, kx0, kx1 in xs:
            out.append(Window((slice(ky0, ky1), slice(kx0, kx1)), (slice(y0, y1), slice(x0, x1)),
                              (slice(ky0 - y0, ky1 - y0), slice(kx0 - x0, kx1 - x0))))
    return out


def predict_blocks(
    plane: Any,
    rng: IntensityRange | None,
    predict: Callable[[np.ndarray, Window], Generator[Any, None, Any]],
    sink: Callable[[Window, Any], None],
    windows: list[Window],
) -> Iterator[Any]:
    """Run ``predict`` over a ``(C, H, W)`` plane window by window (:func:`block_windows` or
    :func:`tile_windows`).

    ``predict(region, window)`` is a sub-job (a generator of events) that gets the window's
    normalised pixels and the window (so it may keep only the core, ``window.inner`` in the
    region, or write it straight where it goes); its events pass on, its progress mapped into
    the window's share of the plane (:func:`~napari_unet.core.events.within`); ``sink(window,
    result)`` receives what it returned.
    """
    n = len(windows)
    for i, win in enumerate(windows, start=1):
        region = normalize_region(plane[(slice(None), *win.window)], rng)
        message = f"block {i}/{n}"
        result = yield from within(predict(region, win), (i - 1) * PART_STEPS, PART_STEPS,
                                   n * PART_STEPS, message)
        sink(win, result)
        yield Progress(i * PART_STEPS, n * PART_STEPS, message)


# -- passes 2 and 3: objects -------------------------------------------------------------------
@dataclass
class _Owned:
    first_id: int  # global ids first_id .. first_id + count - 1
    count: int


def label_blocks(
    foreground: Any,
    out: Any,
    threshold: float = 0.5,
    min_size: int = DEFAULT_MIN_SIZE,
    split: bool = True,
    block: int | tuple[int, ...] = DEFAULT_BLOCK,
    halo: int | tuple[int, ...] = 2 * MIN_HALO,
    scratch: Any = None,
    spacing: tuple[float, ...] | None = None,
    first_id: int = 1,
) -> Generator[Progress | Message, None, int]:
    """Instance labels of a foreground-probability plane or volume of any size, block by block.

    Parameters
    ----------
    foreground : (H, W) or (Z, H, W) float array-like
        E.g. a memory map of ``probabilities[1]``; read one window at a time.
    out : int32 array-like of the same shape
        Written in place (memory map, zarr or numpy); must start as zeros.
    threshold, min_size, split
        As :func:`~napari_unet.core.inference.postprocess.instances_from_probability` (volumes:
        :func:`~napari_unet.core.inference.postprocess.base_instances`).
    block, halo : int or one int per axis
        Block side and halo in pixels.
    scratch : int32 array-like of the same shape, optional
        Zeros, for the unsplit objects when ``split`` (a temporary memory map); not needed
        without ``split``.
    spacing : tuple of float, optional
        Volumes: the z step in lateral pixels first, e.g. ``(2, 1, 1)`` (for the split).
    first_id : int
        The first object id (the slices of a stack continue each other's ids).

    Returns (as the generator's value)
    ----------------------------------
    int
        The number of objects (ids ``first_id .. first_id + n - 1``).
    """
    shape = tuple(int(s) for s in foreground.shape)
    if tuple(out.shape) != shape:
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {shape}")
    if split and scratch is None:
        raise ValueError("split=True needs a scratch array for the unsplit objects")
    base = scratch if split else out
    blocks = block_grid(shape, block, halo)
    steps = len(blocks) * (2 if split else 1)
    owned: list[_Owned] = []
    sizes: list[np.ndarray] = []
    cut = 0
    next_id = int(first_id)
    for i, b in enumerate(blocks, start=1):
        fg = np.asarray(foreground[b.window_slices], dtype=np.float32)
        local = base_instances(fg, threshold, min_size)
        mine, n_cut = _owned_ids(local, b, shape)
        cut += n_cut
        lut = np.zeros(int(local.max()) + 1, np.int64)
        lut[mine] = np.arange(next_id, next_id + len(mine))
        _write_where(base, b.window_slices, lut[local])
        counts = np.bincount(local.ravel(), minlength=len(lut))
        sizes.append(counts[mine])
        owned.append(_Owned(next_id, len(mine)))
        next_id += len(mine)
        del fg, local
        yield Progress(i, steps, f"objects: block {i}/{len(blocks)}")
    if cut:
        yield Message(f"{cut} object(s) reach the edge of the {halo} px halo around a "
                      f"{block} px block and may be cut in two: they are larger than the halo; "
                      "use a bigger block_halo", level="warning")
    if not split:
        return next_id - first_id
    all_sizes = np.concatenate(sizes) if sizes else np.zeros(0)
    min_distance = seed_distance(all_sizes, spacing if len(shape) == 3 else None)
    for i, (b, own) in enumerate(zip(blocks, owned, strict=True), start=len(blocks) + 1):
        if own.count:
            window = np.asarray(base[b.window_slices])
            # renumber the window's ids 1..n (0 stays background) to keep the split's tables small
            ids = np.union1d([0], window)
            local = np.searchsorted(ids, window).astype(np.int32)
            del window
            # the owned ids in this numbering
            lo = np.searchsorted(ids, own.first_id)
            hi = np.searchsorted(ids, own.first_id + own.count)
            parts = split_touching(local, min_distance, only=np.arange(lo, hi),
                                   spacing=spacing if len(shape) == 3 else None)
            n_local = len(ids) - 1
            # input ids map back to global ids; new parts get fresh global ids
            extra = max(int(parts.max()) - n_local, 0)
            lut = np.concatenate([ids, np.arange(next_id, next_id + extra)])
            next_id += extra
            mask = (local >= lo) & (local < hi)
            _write_where(out, b.window_slices, np.where(mask, lut[parts], 0))
            del local, parts, mask
        yield Progress(i, steps, f"split: block {i - len(blocks)}/{len(blocks)}")
    return next_id - first_id


def _owned_ids(local: np.ndarray, b: Block, shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """Ids of ``local`` (labels of the block's window) the block owns, and how many of them
    come within ``_MARGIN`` pixels of an inner window edge (possibly cut)."""
    mine, cut = [], 0
    for i, box in enumerate(ndi.find_objects(local), start=1):
        if box is None:
            continue
        corner = [sl.start + w0 for sl, (w0, _) in zip(box, b.window, strict=True)]
        if not all(c0 <= c < c1 for c, (c0, c1) in zip(corner, b.core, strict=True)):
            continue
        mine.append(i)
        for axis, (sl, (w0, w1), length) in enumerate(zip(box, b.window, shape, strict=True)):
            # how close an object may come to a window edge: only inner edges matter, and
            # along z (volumes) one slice is enough (the split smooths ~1 slice)
            margin = _MARGIN if axis >= local.ndim - 2 else 1
            if (w0 > 0 and sl.start < margin) or (w1 < length and (w1 - w0) - sl.stop < margin):
                cut += 1
                break
    return np.asarray(mine, np.int64), cut


def _write_where(dst: Any, where: tuple[slice, slice], values: np.ndarray) -> None:
    """``dst[where] = values`` at the non-zero values only (memory map, zarr or numpy)."""
    keep = values > 0
    if not keep.any():
        return
    region = np.asarray(dst[where])
    region[keep] = values[keep]
    dst[where] = region


