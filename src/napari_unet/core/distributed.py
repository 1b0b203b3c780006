"""Dask: one huge normalised plane predicted chunk by chunk with ``map_overlap``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .model import UNet
from .prediction import PredictConfig, is_dask
from .predictor import PlanePredictor, drain
from .tiles import auto_tile_size, receptive_radius, valid_axis_tiles


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
    if not is_dask(image):
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
    predictor = PlanePredictor(net, torch.device("cpu"), tile, config.batch_size, config.tta,
                                False, config.blend, depth if not net.is_valid else None, False)
    with torch.inference_mode():
        if net.is_valid:
            d = net.divisor  # the low-side extra pooling block is not needed
            probs = _valid_premargined(predictor, block[:, d:, d:], h, w)
        else:
            probs, _ = drain(predictor.run(np.ascontiguousarray(block)))
            probs = probs[:, depth:depth + h, depth:depth + w]
    return np.ascontiguousarray(probs, dtype=np.float32)


def _valid_premargined(predictor: PlanePredictor, block: np.ndarray, h: int,
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


__all__ = ["predict_tiles_dask"]
