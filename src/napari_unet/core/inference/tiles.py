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
from dataclasses import dataclass

import numpy as np
import torch

from ..constants import TILING_MODES
from ..model.unet import UNet

# Fast tiling keeps this fraction of the receptive radius as context around each tile's kept
# part (at least one pooling block): 80 px at depth 4 instead of 100. Measured on the shipped
# model (v2) with seams exactly at the margin (docs/tiling.md): max |dp| 0.006 (synthetic
# nuclei) and 0.031 (cells3d nuclei), 1 and 3 pixels changed; 64 px left 0.026 / 0.063 and 8-10
# pixels, 48 px (v1's choice: v2 draws on more of its context) 0.20 / 0.41 and 38-78 pixels.
FAST_MARGIN_FRACTION = 0.8
# CUDA: tiles up to this side, then as many per batch as the memory holds ("fill the device").
MAX_CUDA_TILE = 2048
# Bytes per input pixel of one forward pass of the predictors' ``UNet.lean_forward`` (no
# concatenation, maps freed when used): 4 * (in + 2 * classes + 3 * base) + 300. Peak resident
# memory above a warmed-up process, inference mode, freed memory kept as on the predictors'
# main thread (core.runtime.heap), 2026-12-01: UNet.small 466-696 B/px at 816-1408 px tiles (704 by
# the formula), the shipped base-16 net 288-513 B/px at 1152-1840 px (512). Most of the spread
# is the kept heap's fragmentation (the same run repeated: 467, 601, 696 B/px), which is why
# a part does not scale with the channels. Without kept memory: ~390 and ~245 B/px; the plain
# forward with kept memory: 880-1,370 and 510-740 B/px (9 floats per base channel before).
_FLOATS_PER_BASE_CHANNEL = 3
_BYTES_PER_PIXEL_FIXED = 300


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


def tile_margin(model: UNet, tiling: str = "fast", overlap: int | None = None) -> int:
    """Context pixels kept on each side of a tile's kept part.

    Valid nets: their context (tiling is exact at any tile size). Padded nets: ``overlap`` if
    given, else the receptive radius (``"exact"``) or a measured fraction of it (``"fast"``).
    """
    if tiling not in TILING_MODES:
        raise ValueError(f"tiling must be one of {TILING_MODES}, got {tiling!r}")
    if model.is_valid:
        return model.context
    if overlap is not None:
        return int(overlap)
    radius = receptive_radius(model)
    if tiling == "exact":
        return radius
    return max(model.divisor, round(FAST_MARGIN_FRACTION * radius))


def forward_bytes_per_pixel(model: UNet) -> int:
    """Upper bound of the memory one input pixel costs in a forward pass (inference mode)."""
    base = model.config["base_channels"]
    return (4 * (model.in_channels + 2 * model.num_classes + _FLOATS_PER_BASE_CHANNEL * base)
            + _BYTES_PER_PIXEL_FIXED)


def forward_memory_budget(device: torch.device, budget: int | None = None) -> int:
    """Bytes the forward passes may use: ``budget`` if given, else half the free CUDA memory
    on CUDA and a quarter of the available RAM (at most 2 GiB) elsewhere."""
    if budget:
        return int(budget)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return min(2 * 2**30, available_ram() // 4)


def auto_tile_size(model: UNet, device: torch.device, batch_size: int = 1,
                   memory_budget: int | None = None) -> tuple[int, int]:
    """Largest legal square tile whose forward pass of ``batch_size`` tiles fits the budget
    (:func:`forward_memory_budget`), whatever the image; :func:`plan_tiles` fits tiles to an
    image."""
    budget = forward_memory_budget(device, memory_budget)
    side = int(math.sqrt(budget / (batch_size * forward_bytes_per_pixel(model))))
    if device.type == "cuda":
        side = min(side, MAX_CUDA_TILE)
    d = model.divisor
    if model.is_valid:
        first = model.valid_input_shape((1, 1))[0]
        side = max(first, first + (side - first) // d * d)
    else:
        side = max(side // d * d, 2 * receptive_radius(model) + d)
        side = -(-side // d) * d
    return side, side


@dataclass(frozen=True)
class TilePlan:
    """How one plane is tiled.

    Attributes
    ----------
    tile : (int, int)
        Input tile size.
    batch_size : int
        Tiles per forward pass.
    margin : int
        Context kept around each tile's kept part (padded nets; the context for valid nets).
    tiles : int
        Tiles per plane.
    computed : int
        Input pixels the net computes per plane (the sum of the tiles' areas): the cost.
    """

    tile: tuple[int, int]
    batch_size: int
    margin: int
    tiles: int
    computed: int


def axis_cost(model: UNet, length: int, tile: int, margin: int) -> tuple[int, int, int]:
    """``(tiles, computed pixels, largest tile extent)`` along one axis of ``length`` px."""
    d = model.divisor
    if model.is_valid:
        c = model.context
        tile = min(tile, model.input_shape_for_output((length, length))[0])
        n = len(valid_axis_tiles(length, tile, c, d))
        return n, n * tile, tile
    spans = [stop - start for start, stop, _, _ in padded_axis_tiles(length, tile, margin, d)]
    return len(spans), sum(spans), max(spans)


def _axis_candidates(model: UNet, length: int, margin: int,
                     largest: int) -> list[tuple[int, int, int, int]]:
    """Tile sizes along one axis that are not dominated: each computes fewer pixels than every
    smaller one, or as many in fewer tiles. Items ``(tile, tiles, computed, extent)``, by growing
    extent."""
    d = model.divisor
    first = _smallest_tile(model, margin)
    if model.is_valid:
        top = max(first, model.input_shape_for_output((length, length))[0])
    else:
        top = max(first, -(-length // d) * d)
    top = min(top, max(largest, first))
    kept: list[tuple[int, int, int, int]] = []
    for tile in range(first, top + 1, d):
        n, computed, extent = axis_cost(model, length, tile, margin)
        # (with no overlap every tile computes each pixel once: then fewer tiles count)
        if not kept or computed < kept[-1][2] or (computed == kept[-1][2] and n < kept[-1][1]):
            kept.append((tile, n, computed, extent))
    return kept


def plan_tiles(model: UNet, hw: tuple[int, int], device: torch.device | str = "cpu", *,
               tiling: str = "fast", overlap: int | None = None,
               tile_size: tuple[int, int] | None = None, batch_size: int | None = None,
               memory_budget: int | None = None) -> TilePlan:
    """Choose tile size and batch for a ``(H, W)`` plane by total cost.

    The cost is the number of input pixels the net computes (tiles overlap by their margins,
    so small tiles recompute much). Among the tiles whose forward pass fits the memory budget
    (:func:`forward_memory_budget`, :func:`forward_bytes_per_pixel`), the plan computes the fewest
    pixels, then uses the fewest tiles. On CPU one tile per pass: batching does not speed up a
    CPU forward pass, and the memory it would take buys a larger tile, which overlaps less. On
    CUDA tiles are at most :data:`MAX_CUDA_TILE` px and the batch fills the budget.
    ``tile_size`` and ``batch_size`` given by the user are kept.
    """
    device = torch.device(device)
    margin = tile_margin(model, tiling, overlap)
    budget_px = forward_memory_budget(device, memory_budget) // forward_bytes_per_pixel(model)
    h, w = (int(s) for s in hw)
    if tile_size is not None:
        tile = (int(tile_size[0]), int(tile_size[1]))
    else:
        per_pass = max(1, budget_px // (batch_size or 1))
        side = MAX_CUDA_TILE if device.type == "cuda" else per_pass
        one = (_one_tile(model, h, margin), _one_tile(model, w, margin))
        if one[0][1] * one[1][1] <= per_pass and max(one[0][0], one[1][0]) <= side:
            # one tile over the plane computes the fewest pixels there are: nothing to search
            tile = (one[0][0], one[1][0])
            return _plan(model, (h, w), tile, margin, budget_px, batch_size, device)
        ys = _axis_candidates(model, h, margin, side)
        xs = _axis_candidates(model, w, margin, side)
        best = None
        for ty, ny, cy, ey in ys:
            for tx, nx, cx, ex in xs:
                if ey * ex > per_pass:
                    break  # wider tiles only get bigger
                key = (cy * cx, ny * nx, ey * ex)
                if best is None or key < best[0]:
                    best = (key, (ty, tx))
        # nothing fits: the smallest legal tile (an out-of-memory error says so later)
        tile = best[1] if best is not None else (ys[0][0], xs[0][0])
    return _plan(model, (h, w), tile, margin, budget_px, batch_size, device)


def _one_tile(model: UNet, length: int, margin: int) -> tuple[int, int]:
    """``(tile, extent)`` of the smallest tile that covers ``length`` px alone: what the search
    over :func:`_axis_candidates` picks for this axis when the budget allows one tile."""
    first = _smallest_tile(model, margin)
    if model.is_valid:
        tile = max(first, model.input_shape_for_output((length, length))[0])
        return tile, tile
    # the last tile may be up to ``d - 1`` px longer than asked (:func:`padded_axis_tiles`)
    return max(first, length // model.divisor * model.divisor), length


def _smallest_tile(model: UNet, margin: int) -> int:
    """The smallest legal tile side: one pooling step of output (valid nets) or of kept pixels
    inside the margins (padded nets)."""
    d = model.divisor
    if model.is_valid:
        return model.valid_input_shape((d + 2 * model.context,) * 2)[0]
    return -(-(2 * margin + d) // d) * d


def _plan(model: UNet, hw: tuple[int, int], tile: tuple[int, int], margin: int,
          budget_px: int, batch_size: int | None, device: torch.device) -> TilePlan:
    h, w = hw
    ny, cy, ey = axis_cost(model, h, tile[0], margin)
    nx, cx, ex = axis_cost(model, w, tile[1], margin)
    if batch_size is None:
        batch_size = 1
        if device.type == "cuda":
            batch_size = int(min(ny * nx, max(1, budget_px // (ey * ex))))
    return TilePlan(tile, int(batch_size), margin, ny * nx, cy * cx)


def available_ram() -> int:
    """Bytes of RAM available to new allocations (MemAvailable; 4 GiB if unknown)."""
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
    """Weights for Gaussian blending of a tile side of ``n`` px (1 at the centre, >= 1e-3)."""
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2
    g = np.exp(-0.5 * (x / max(sigma_scale * n, 1e-6)) ** 2)
    return np.maximum(g / g.max(), 1e-3).astype(np.float32)


__all__ = [
    "FAST_MARGIN_FRACTION", "MAX_CUDA_TILE", "TILING_MODES", "TilePlan", "auto_tile_size",
    "available_ram", "axis_cost", "check_tile_size", "forward_bytes_per_pixel",
    "forward_memory_budget", "gaussian_window", "padded_axis_tiles", "plan_tiles",
    "receptive_radius", "tile_margin", "valid_axis_tiles",
]
