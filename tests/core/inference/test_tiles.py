"""Tile geometry: layouts, legal sizes, margins per tiling mode, and the cost-based tile plan."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core.inference.prediction import predict_image
from napari_unet.core.inference.tiles import (
    MAX_CUDA_TILE,
    auto_tile_size,
    axis_cost,
    forward_bytes_per_pixel,
    padded_axis_tiles,
    plan_tiles,
    receptive_radius,
    tile_margin,
    valid_axis_tiles,
)
from napari_unet.core.model.unet import UNet

RAW = {"normalization": {"method": "none"}}
GIB = 2**30


def _net(padding: str, depth: int = 2, base: int = 4):
    torch.manual_seed(0)
    return UNet(1, 2, base_channels=base, depth=depth, padding=padding).eval()


def _image(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _computed(model: UNet, hw, tile, margin) -> int:
    """Input pixels of a padded net's tile grid, summed tile by tile from the layout."""
    d = model.divisor
    ys = padded_axis_tiles(hw[0], tile[0], margin, d)
    xs = padded_axis_tiles(hw[1], tile[1], margin, d)
    return sum((y1 - y0) * (x1 - x0) for y0, y1, _, _ in ys for x0, x1, _, _ in xs)


# -- layouts -----------------------------------------------------------------------------------
def test_valid_axis_tiles_cover_with_aligned_origins():
    # depth 4: tile 572 -> output 388; 3 tiles needed, origins multiples of 16, spread evenly
    origins = valid_axis_tiles(1000, 572, 92, 16)
    assert origins == [0, 304, 624]
    assert origins[-1] + 388 >= 1000 and origins[-1] + 388 - 1000 < 16
    assert valid_axis_tiles(100, 572, 92, 16) == [0]
    with pytest.raises(ValueError, match="less than one pooling step"):
        valid_axis_tiles(1000, 188, 92, 16)


def test_padded_axis_tiles_keep_parts_partition_the_axis():
    tiles = padded_axis_tiles(301, 128, 30, 16)
    keeps = [(k0, k1) for _, _, k0, k1 in tiles]
    assert keeps[0][0] == 0 and keeps[-1][1] == 301
    assert all(a[1] == b[0] for a, b in zip(keeps[:-1], keeps[1:], strict=True))
    for start, stop, k0, k1 in tiles:
        assert start % 16 == 0 and stop <= 301
        assert (k0 == 0 or k0 - start >= 30) and (k1 == 301 or stop - k1 >= 30)
    assert tiles[-1][1] == 301


# -- margins per mode --------------------------------------------------------------------------
def test_tile_margin_per_mode():
    small = UNet.small()  # depth 4: receptive radius (12 * 16 - 8) / 2 + 8 = 100
    assert receptive_radius(small) == 100
    assert tile_margin(small, "exact") == 100
    assert tile_margin(small, "fast") == 80  # round(0.8 * 100)
    assert tile_margin(small, "fast", overlap=50) == 50 == tile_margin(small, "exact", 50)
    tiny = _net("same")  # depth 2: radius 22, fast round(17.6) = 18
    assert (tile_margin(tiny, "exact"), tile_margin(tiny, "fast")) == (22, 18)
    valid = _net("valid")
    assert tile_margin(valid, "fast") == tile_margin(valid, "exact") == valid.context
    with pytest.raises(ValueError, match="tiling must be one of"):
        tile_margin(small, "fastest")


# -- the cost-based plan -----------------------------------------------------------------------
@pytest.mark.parametrize("hw, old_tile, old_computed", [
    # what the previous choice did (largest square tile for a batch of 4 in the budget, then
    # the smallest tile giving as few tiles; exact overlap): UNet.small, 2 GiB budget
    ((1536, 1536), 544, 4_734_976),      # 4 x 4 tiles: 2.01x the image's pixels
    ((4096, 4096), 576, 40_144_896),     # 11 x 11 tiles: 2.39x
])
def test_cost_based_plan_computes_fewer_pixels_than_the_old_choice(hw, old_tile, old_computed):
    small = UNet.small()
    assert _computed(small, hw, (old_tile, old_tile), 100) == old_computed
    budget_px = 2 * GIB // forward_bytes_per_pixel(small)
    for tiling, most in (("exact", 1.3), ("fast", 1.25)):  # fast: 80 px margin, 4096²: 1.21
        plan = plan_tiles(small, hw, "cpu", tiling=tiling, memory_budget=2 * GIB)
        # the plan's own count agrees with the layout, tile by tile
        assert plan.computed == _computed(small, hw, plan.tile, plan.margin)
        assert plan.computed < old_computed
        assert plan.computed <= most * hw[0] * hw[1]
        assert plan.batch_size == 1  # CPU: one large tile per pass
        extent = [max(b - a for a, b, _, _ in padded_axis_tiles(n, t, plan.margin, 16))
                  for n, t in zip(hw, plan.tile, strict=True)]
        assert extent[0] * extent[1] <= budget_px  # the forward pass fits the budget
    exact = plan_tiles(small, hw, "cpu", tiling="exact", memory_budget=2 * GIB)
    fast = plan_tiles(small, hw, "cpu", tiling="fast", memory_budget=2 * GIB)
    # 1536²: one tile in either mode (the whole image); 4096²: the fast margin computes less
    assert fast.computed < exact.computed or fast.tiles == exact.tiles == 1


def test_plan_for_a_small_budget_on_a_tiny_net_by_hand():
    tiny = _net("same", base=8)  # 4 * (1 + 4 + 3 * 8) + 300 = 416 bytes per pixel
    assert forward_bytes_per_pixel(tiny) == 416
    # 5.4 MB: at most 12,980 px per tile; the old batch-of-4 choice took 48 px tiles: 39 per
    # axis, 3,504,384 px computed for a 200 x 200 image
    assert _computed(tiny, (200, 200), (48, 48), 22) == 3_504_384
    plan = plan_tiles(tiny, (200, 200), "cpu", tiling="exact", memory_budget=5_400_000)
    # by hand: rows of 96 px start at 0, 52, 104 (288 px), columns of 124 px at 0, 76
    # (248 px): 288 * 248 = 71,424 px; 96 * 124 = 11,904 px per tile fits the budget
    assert plan.tile == (96, 124) and plan.tiles == 6 and plan.computed == 71_424
    # one tile when the image fits: the whole image, no overlap at all
    whole = plan_tiles(tiny, (200, 200), "cpu", tiling="exact", memory_budget=GIB)
    assert (whole.tiles, whole.computed) == (1, 40_000)


def test_plan_without_overlap_takes_few_large_tiles():
    tiny = _net("same", base=8)
    # no overlap: every tiling computes each pixel once, so the fewest tiles win (the search
    # used to stop at the smallest legal tile: 10,000 tiles of 4 x 4 here)
    plan = plan_tiles(tiny, (400, 400), "cpu", overlap=0, memory_budget=416 * 100 * 400)
    assert (plan.tile, plan.tiles, plan.computed) == ((100, 400), 4, 160_000)
    # a plane that fits: one tile, its last rows and columns past a multiple of the divisor
    # included (the tile as the search names it: 200 // 4 * 4 covers 202 px)
    one = plan_tiles(tiny, (202, 203), "cpu", memory_budget=GIB)
    assert (one.tile, one.tiles, one.computed) == ((200, 200), 1, 202 * 203)


def test_plan_keeps_user_settings_and_batches_on_cuda_without_touching_it():
    tiny = _net("same", base=8)
    kept = plan_tiles(tiny, (300, 300), "cpu", tile_size=(64, 96), batch_size=3,
                      memory_budget=GIB)
    assert (kept.tile, kept.batch_size) == ((64, 96), 3)
    assert kept.computed == _computed(tiny, (300, 300), (64, 96), kept.margin)
    # CUDA (with an explicit budget nothing asks the device): tiles up to MAX_CUDA_TILE, then
    # as many per pass as the budget holds
    big = plan_tiles(tiny, (5000, 5000), "cuda", memory_budget=64 * GIB)
    assert max(big.tile) <= MAX_CUDA_TILE + tiny.divisor and big.batch_size == big.tiles
    half = plan_tiles(tiny, (5000, 5000), "cuda", tile_size=(1024, 1024),
                      memory_budget=2 * 1024 * 1024 * forward_bytes_per_pixel(tiny) + 1)
    assert half.batch_size == 2


def test_valid_net_plan_is_legal_and_counts_input_tiles():
    original = UNet.original()
    plan = plan_tiles(original, (1000, 2048), "cpu", memory_budget=GIB)
    original.output_shape(plan.tile)  # legal: no error
    ny, cy, _ = axis_cost(original, 1000, plan.tile[0], original.context)
    nx, cx, _ = axis_cost(original, 2048, plan.tile[1], original.context)
    assert plan.tiles == ny * nx == len(valid_axis_tiles(1000, plan.tile[0], 92, 16)) * len(
        valid_axis_tiles(2048, plan.tile[1], 92, 16))
    assert plan.computed == cy * cx


def test_auto_tile_size_is_legal_and_follows_the_budget():
    cpu = torch.device("cpu")
    valid, padded = _net("valid"), _net("same")
    small = auto_tile_size(valid, cpu, 1, memory_budget=2**22)
    big = auto_tile_size(valid, cpu, 1, memory_budget=2**30)
    assert small[0] < big[0]
    valid.output_shape(small), valid.output_shape(big)  # legal: no error
    t = auto_tile_size(padded, cpu, 4, memory_budget=2**26)
    assert t[0] % padded.divisor == 0 and t[0] >= 2 * receptive_radius(padded)
    result = predict_image(valid, _image((50, 50)), meta=RAW, device="cpu")
    valid.output_shape(result.tile_size)


# -- bad input ---------------------------------------------------------------------------------
def test_illegal_tile_sizes_name_the_nearest_legal_ones():
    with pytest.raises(ValueError, match="tile 46 is not legal .* nearest are 44 and 48"):
        predict_image(_net("valid"), _image((30, 30)), meta=RAW, tile_size=46, device="cpu")
    with pytest.raises(ValueError, match="tile 50 is not legal .* nearest are 48 and 52"):
        predict_image(_net("same"), _image((30, 30)), meta=RAW, tile_size=50, device="cpu")
    # a tile must hold the margin on both sides plus one pooling block: 2 * 22 + 4 exact,
    # 2 * 18 + 4 fast
    with pytest.raises(ValueError, match="too small for an overlap of 22"):
        predict_image(_net("same"), _image((30, 30)), meta=RAW, tile_size=32, device="cpu",
                      tiling="exact")
    with pytest.raises(ValueError, match="too small for an overlap of 18"):
        predict_image(_net("same"), _image((30, 30)), meta=RAW, tile_size=24, device="cpu")
    big = UNet.original()
    with pytest.raises(ValueError, match="tile 570 is not legal .* nearest are 556 and 572"):
        predict_image(big, _image((30, 30)), meta=RAW, tile_size=570, device="cpu")
