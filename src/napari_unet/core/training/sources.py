"""Where training batches come from: the batch recipe, and batches made ahead in a thread."""

from __future__ import annotations

import queue
import threading
import weakref
from typing import Any

import numpy as np

from ..model.unet import UNet
from .config import TrainConfig
from .sampling import BatchSpec, make_batch


def training_bytes(model: UNet, tile: int, config: TrainConfig, device: str) -> int:
    """Memory a training run of ``config`` takes for its batches: the batches made ahead
    (image, target and weight tiles) and, on the processor, the net's activations kept for the
    backward pass (about 12 maps of ``base_channels`` per pixel, summed over the levels)."""
    pixels = int(tile) ** 2 * int(config.batch_size)
    ahead = pixels * (model.in_channels + 3) * 4 * (int(config.prefetch) + 1)
    base = int(model.config.get("base_channels", 64))
    return ahead + (0 if device == "cuda" else pixels * 12 * base * 4)


def batch_spec(config: TrainConfig, model: UNet, instances_mode: bool,
               class_weights: Any = None) -> BatchSpec:
    """What the batch makers need from ``config`` and ``model`` (plain values).
    ``class_weights``: resolved weights replacing ``config.class_weights`` (see
    :meth:`Trainer.class_weights`); ``"predicted"`` alone means ``"balanced"``."""
    cw = config.class_weights if class_weights is None else class_weights
    cw = "balanced" if cw == "predicted" else cw
    tile = config.tile_for(model)
    return BatchSpec(
        batch_size=config.batch_size, out_hw=tuple(model.output_shape((tile, tile))),
        margin=model.context, instances_mode=instances_mode, num_classes=model.num_classes,
        w0=config.w0, sigma=config.sigma, class_weights=cw,
        separate_touching=config.separate_touching, augment=config.augment, seed=config.seed,
        annotated_bias=config.annotated_bias)

def patch_arrays(patch: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(image (C, H, W) float32, labels (H, W), ignore (H, W) bool | None)`` of a patch."""
    if isinstance(patch, tuple):
        image, labels, ignore = patch
    else:
        image, labels, ignore = patch.image, patch.labels, patch.ignore
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = image[None]
    return image, np.asarray(labels), None if ignore is None else np.asarray(ignore, bool)


# -- batch sources ---------------------------------------------------------------------------
class ThreadSource:
    """``workers=0``: a daemon thread filling a small queue with the batches of steps
    ``start .. stop - 1`` (read from the samples' current snapshot at making time).

    The thread stops when it has produced everything, when :meth:`close` is called, or when
    this object is garbage-collected (the generator that owns it was dropped).
    """

    def __init__(self, samples: Any, spec: BatchSpec, start: int, stop: int, depth: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_produce, args=(samples, spec, start, stop, self._queue, self._stop),
            name="napari-unet-train-data", daemon=True,
        )
        weakref.finalize(self, self._stop.set)
        self._thread.start()

    def get(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        while True:
            try:
                kind, value = self._queue.get(timeout=0.5)
            except queue.Empty:
                if not self._thread.is_alive():
                    raise RuntimeError("the training data thread stopped unexpectedly") from None
                continue
            if kind == "error":
                raise value
            return value

    def close(self) -> None:
        self._stop.set()


def _produce(samples: Any, spec: BatchSpec, start: int, stop: int, out: queue.Queue,
             stopped: threading.Event) -> None:
    for step in range(start, stop):
        try:
            item = ("batch", make_batch(samples.snapshot(), spec, step))
        except Exception as err:  # noqa: BLE001 - handed to the training loop, which re-raises
            item = ("error", err)
        while not stopped.is_set():
            try:
                out.put(item, timeout=0.2)
                break
            except queue.Full:
                continue
        if stopped.is_set() or item[0] == "error":
            return
