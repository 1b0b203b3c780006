"""Tile geometry of overlap-tile prediction: how far a net sees, legal tile sizes, tile layouts.

Valid-convolution nets
    The image is mirror-padded by the net's context and cut into input tiles of a legal size
    whose origins step by a multiple of ``model.divisor`` (2**depth); a depth-d net is
    shift-equivariant only by such multiples, so stitching equals the un-tiled prediction.

Padded ("same") nets
    Tiles overlap by ``2 * overlap`` pixels; with ``overlap`` = :func:`receptive_radius` each
    tile's kept centre equals the un-tiled prediction.

Nothing here runs a net: these are pure functions of the model's architecture and the sizes.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from .model import UNet

# Tile sides chosen automatically stay below this (bigger tiles gain little and cost latency).
MAX_AUTO_TILE = {"cuda": 2048, "cpu": 1024, "mps": 1024}


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
        budget = memory_budget or min(2 * 2**30, available_ram() // 4)
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


def available_ram() -> int:
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


def gaussian_window(n: int, sigma_scale: float = 0.125) -> np.ndarray:
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2
    g = np.exp(-0.5 * (x / max(sigma_scale * n, 1e-6)) ** 2)
    return np.maximum(g / g.max(), 1e-3).astype(np.float32)



__all__ = [
    "MAX_AUTO_TILE", "auto_tile_size", "available_ram", "check_tile_size", "fit_tile_to_image",
    "gaussian_window", "padded_axis_tiles", "receptive_radius", "valid_axis_tiles",
]
