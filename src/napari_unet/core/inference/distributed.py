"""One huge plane on a dask cluster.

:func:`segment_plane_distributed` runs the blockwise path of :func:`.prediction.predict` with the
net on the cluster: each block's window (the block plus the net's context, normalised here with
percentiles of a subsample) is predicted by a worker, the probabilities come back block by block
into memory-mapped outputs, and the objects are labelled and merged block by block
(:func:`.blockwise.label_blocks`). Every block sees exactly what the local blockwise path gives
it, so the labels equal the local result. The net's weights go to each worker once (scattered),
and a worker builds the net once per weights, keyed by a hash of their content.

:func:`predict_tiles_dask` is the lazy ``dask.array.map_overlap`` form for callers that want
probabilities as a dask array; :func:`connect_scheduler` is how a batch reaches a cluster.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Generator, Mapping
from typing import Any

import numpy as np
import torch

from ..events import Message, Progress
from ..model.meta import ModelMeta
from ..model.unet import UNet
from ..normalize import normalize_region
from .config import PredictConfig, PredictionResult
from .job import PredictionJob
from .prediction import as_model_meta, check_model, predict_at
from .predictor import PlanePredictor, drain, plane_predictor
from .stack import is_dask
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
    tile = config.tile_size or auto_tile_size(model, torch.device("cpu"), config.batch_size or 1,
                                              config.memory_budget)
    k = model.num_classes
    state = {name: t.detach().cpu() for name, t in model.state_dict().items()}
    arch = dict(model.config)
    token = weights_token(state)

    settings = (tuple(tile), config.batch_size or 1, config.tta, False, config.blend,
                None if model.is_valid else depth, False)

    def block(x: np.ndarray, weights: dict | None = None) -> np.ndarray:
        return _predict_block(_cached_predictor(arch, weights, token, settings), x, depth)

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


_PREDICTOR_CACHE: dict[tuple[str, tuple], PlanePredictor] = {}


def weights_token(state: Mapping[str, torch.Tensor]) -> str:
    """A hash of a state dict's names, shapes and values: the key of a worker's net cache
    (``id()`` of the shipped dict would be reused by Python after garbage collection and could
    serve another model's net)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16
                      else tensor.float().numpy().tobytes())
    return digest.hexdigest()


def _cached_predictor(arch: dict, state: dict, token: str, settings: tuple) -> PlanePredictor:
    """One plane predictor per worker process for these weights and settings (the last one
    used): the net and its CPU channels-last copy are made once, not for every block."""
    key = (token, settings)
    predictor = _PREDICTOR_CACHE.get(key)
    if predictor is None:
        net = UNet.from_config(arch)
        net.load_state_dict(state)
        net.eval()
        predictor = plane_predictor(net, torch.device("cpu"), *settings)
        _PREDICTOR_CACHE.clear()
        _PREDICTOR_CACHE[key] = predictor
    return predictor


def _predict_block(predictor: PlanePredictor, block: np.ndarray, depth: int) -> np.ndarray:
    """Probabilities of the centre of a block that carries ``depth`` pixels of context."""
    net = predictor.model
    h, w = block.shape[1] - 2 * depth, block.shape[2] - 2 * depth
    with torch.inference_mode():
        if net.is_valid:
            d = net.divisor  # the low-side extra pooling block is not needed
            probs = _valid_premargined(predictor, block[:, d:, d:], h, w)
        else:
            # only the centre: tiles that keep none of it are skipped, and rows cut
            probs, _ = drain(predictor.run(np.ascontiguousarray(block), keep=(
                slice(depth, depth + h), slice(depth, depth + w))))
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


# -- one huge plane, blockwise, on a cluster --------------------------------------------------
def _predict_window(arch: dict, weights: dict, token: str, region: np.ndarray,
                    settings: tuple) -> tuple[np.ndarray, np.ndarray | None]:
    """Runs on a worker: the probabilities of one normalised window."""
    predictor = _cached_predictor(arch, weights, token, settings)
    with torch.inference_mode():
        return drain(predictor.run(np.ascontiguousarray(region)))


class _ClusterJob(PredictionJob):
    """:class:`~core.inference.job.PredictionJob` with the block windows predicted on
    a dask cluster (always blockwise, one plane)."""

    def __init__(self, client: Any, *args: Any, in_flight: int | None = None) -> None:
        super().__init__(*args)
        if self.stacked:
            raise ValueError("segment_plane_distributed takes one plane; predict stacks with "
                             "predict() or batch_segment")
        self.blockwise = True  # the windows are what the workers get
        self.client = client
        workers = len(client.scheduler_info().get("workers", {})) or 1
        self.in_flight = in_flight or 2 * workers + 1

    def _tiles_are_windows(self) -> bool:
        return False  # a worker gets a whole block with its context, not one tile

    def _plane_blockwise(self, z: int, rng: Any) -> Generator[Any, None, None]:
        from distributed import wait

        model, config = self.model, self.config
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        token = weights_token(state)
        weights = self.client.scatter(state, broadcast=True, hash=False)
        settings = (self.tile, self.plan.batch_size, config.tta,
                    config.uncertainty and config.uncertainty_method == "variance",
                    config.blend, self.plan.margin, False)
        windows = self._windows()
        pending: dict[Any, Any] = {}
        done = 0
        plane = self.view[z]
        try:
            for win in [*windows, None]:
                if win is not None:
                    region = normalize_region(plane[(slice(None), *win.window)], rng)
                    hw = region.shape[-2:]
                    if self.scale != 1.0:
                        region = _resize_region(region, self._model_hw(hw))
                    future = self.client.submit(_predict_window, dict(model.config), weights,
                                                token, region, settings, pure=False)
                    pending[future] = (win, hw)
                # keep a few windows in flight; at the end wait for all
                while pending and (len(pending) >= self.in_flight or win is None):
                    finished, _ = wait(list(pending), return_when="FIRST_COMPLETED")
                    for future in finished:
                        w, hw = pending.pop(future)
                        probs, var = future.result()
                        self._keep_at_model_scale(z, w, probs)
                        if self.scale != 1.0:
                            probs = _resize_region(probs, hw)
                            var = None if var is None else _resize_region(var, hw)
                        self._store(z, w.core, probs[(slice(None), *w.inner)],
                                    None if var is None else var[w.inner])
                        done += 1
                        yield Progress(done, len(windows), f"block {done}/{len(windows)} "
                                                           "(cluster)")
        finally:
            if pending:  # stopped early: the cluster stops too
                self.client.cancel(list(pending))
        self._last_fg = self._last_image_fg = None


def _resize_region(arr: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    from .scaling import resize_plane

    return resize_plane(arr, hw, order=1)


def segment_plane_distributed(
    client: Any,
    model: UNet,
    image: Any,
    config: PredictConfig | None = None,
    meta: ModelMeta | Mapping[str, Any] | None = None,
    chunk: int = 2048,
    out: Mapping[str, Any] | None = None,
) -> Generator[Progress | Message, None, PredictionResult]:
    """Predict and label one huge plane with its blocks computed on a dask cluster.

    The same job as :func:`~core.inference.prediction.predict` with ``block_size=chunk``:
    percentiles from a subsample of the plane (read here, block by block), windows of
    ``chunk`` px plus the net's context predicted by the workers, probabilities gathered into
    (memory-mapped) outputs, objects labelled and merged block by block here. The labels equal
    those of the local run.

    Yields :class:`Progress` per block and :class:`Message` notes; returns (as the generator's
    value) the :class:`~napari_unet.core.inference.prediction.PredictionResult`.
    """
    from dataclasses import replace

    check_model(model)
    config = replace(config or PredictConfig(), block_size=int(chunk))
    job = _ClusterJob(client, model, image, config, as_model_meta(meta, model), out, predict_at)
    result = None
    for event in job.run():
        if isinstance(event, PredictionResult):
            result = event
        else:
            yield event
    return result


# -- reaching a cluster --------------------------------------------------------------------
#: Seconds a scheduler's port may take to accept a connection before it counts as unreachable.
CONNECT_CHECK_S = 5.0


def connect_scheduler(address: str, timeout_s: float = 20.0) -> Any:
    """A ``dask.distributed`` Client of the scheduler at ``address`` (``tcp://host:port``,
    ``host:port``; other protocols are left to distributed).

    ``ValueError`` in one line, "cannot reach the scheduler at ...", when it cannot be reached:
    no port in the address, a host name that does not resolve, a closed port (found at once
    with a plain connection, not after distributed's timeout), no answer, or a dask.distributed
    that does not import; ``TypeError`` for an address that is not text.
    """
    if not isinstance(address, str):
        raise TypeError(f"address must be text such as 'tcp://10.0.0.5:8786', got "
                        f"{type(address).__name__}")
    where = f"cannot reach the scheduler at {address!r}"
    scheme, _, rest = address.strip().rpartition("://")
    if scheme in ("", "tcp", "tls"):
        host, port = _host_port(rest, where)
        try:
            socket.create_connection((host, port), timeout=min(timeout_s, CONNECT_CHECK_S)).close()
        except socket.gaierror:
            raise ValueError(f"{where}: no computer of the name {host!r} is known") from None
        except ConnectionRefusedError:
            raise ValueError(f"{where}: nothing listens on port {port} there (is the "
                             "scheduler running?)") from None
        except OSError as err:
            raise ValueError(f"{where}: {err.strerror or 'no answer'}") from None
    try:
        from distributed import Client
    except ImportError as err:
        raise ValueError(f"{where}: the dask.distributed package does not import "
                         f"({' '.join(str(err).split())})") from None
    try:
        return Client(address, timeout=f"{timeout_s:g}s")
    except (OSError, ValueError, TimeoutError) as err:
        raise ValueError(f"{where}: {' '.join(str(err).split())}") from None


def _host_port(text: str, where: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) as a host and a port number."""
    host, colon, port = text.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{where}: give its address as host:port, for example "
                         "tcp://10.0.0.5:8786")
    return host, int(port)


__all__ = ["connect_scheduler", "predict_tiles_dask", "segment_plane_distributed",
           "weights_token"]
