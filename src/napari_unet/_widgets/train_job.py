"""The Train dock's job: the generator its worker thread runs, and its clean-up.

Nothing here touches Qt, so the job can be driven and tested without a viewer.
:class:`TrainJob` builds the net in the worker thread, runs ``Trainer.events`` once, and
between steps predicts the region the GUI thread left in a
:class:`~napari_unet._widgets.train_preview.PreviewBox` (the view), as ``Preview`` events.
napari's ``worker.quit()`` stops pulling from the generator without closing it, so nothing
here relies on ``finally``: the dock calls :meth:`TrainJob.close` once the worker has finished,
which ends the trainer's batch worker processes and restores torch's thread count.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..core.events import LossReport, Preview
from .train_preview import PreviewBox, Region


@dataclasses.dataclass(frozen=True)
class Started:
    """First item the job yields: the trainer (the dock saves it after the run)."""

    trainer: Any


def crop(image: Any, channel_axis: int | None, region: Region) -> np.ndarray:
    """The raw ``(h, w)`` or ``(C, h, w)`` crop of ``image`` at ``region = (z, rows, cols)``."""
    z, rows, cols = region
    plane = image if z is None else image[z]
    return np.asarray(plane[..., rows, cols] if channel_axis is not None else plane[rows, cols])


def gui_friendly_threads(cpu_count: int | None = None) -> int:
    """Torch intra-op threads for training next to a viewer: all cores but one for the GUI."""
    return max(1, (cpu_count if cpu_count is not None else os.cpu_count() or 2) - 1)


_warmed = threading.Event()


def warm_up_in_background() -> None:
    """Import, in a daemon thread, what the first training step needs and torch loads lazily.

    A torch optimizer's first use imports ``torch._dynamo`` (7 s on a busy 2-core machine,
    ~1 s on a quiet laptop): done while the user paints, Start reaches its first step sooner.
    Once per process; harmless if Start comes first (the import lock makes one wait).
    """
    if _warmed.is_set():
        return
    _warmed.set()

    def work() -> None:
        lower_this_thread_priority()
        from ..core.training.trainer import warm_up_imports

        warm_up_imports()

    threading.Thread(target=work, name="napari-unet-warm-up", daemon=True).start()


def lower_this_thread_priority(increment: int = 10) -> None:
    """Let the GUI thread win the CPU over training (Linux: per-thread nice value).

    Threads started from here inherit it. An unprivileged process cannot raise a priority
    again, so the pool thread stays "nice" until Qt retires it (30 s idle); other napari-unet
    jobs it may run are background work too.
    """
    if not sys.platform.startswith("linux") or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if current < 10:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, current + increment))
    except OSError:
        pass  # not allowed here: train at normal priority


def foreground_probability(model: Any, raw: np.ndarray, normalization: Any,
                           device: Any) -> np.ndarray:
    """``1 - P(background)`` of a raw ``(h, w)`` or ``(C, h, w)`` crop, ``(h, w)`` float32.

    Normalised like the training data and run by the core's whole-image forward (valid nets
    see the crop mirror-padded by their context). Every module's train/eval mode is put back
    afterwards (a trainer may keep BatchNorm layers in eval mode on purpose).
    """
    import torch

    from ..core.normalize import normalize
    from ..core.training.trainer import forward_full

    arr = np.asarray(raw)
    arr = arr[None] if arr.ndim == 2 else arr
    image = np.asarray(normalize(arr, normalization, 0), np.float32)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            probs = torch.softmax(forward_full(model, image, device), 0)
    finally:
        for module, training in modes:
            module.training = training
    return (1.0 - probs[0]).cpu().numpy().astype(np.float32)


class TrainJob:
    """One training run of the dock.

    Parameters
    ----------
    build : callable
        ``build(in_channels, num_classes) -> (UNet, meta)``; called in the worker thread
        (e.g. ``ModelSpec.build``).
    samples : TrainingSet
        The training data; the dock updates its labels while the job runs.
    config : TrainConfig
        The run's settings (time budget, iterations, preview period, ...).
    image : array-like
        The image, ``(H, W)``, ``(C, H, W)``, ``(Z, H, W)`` or ``(Z, C, H, W)``, for preview crops.
    channel_axis : int or None
        Channel axis of ``image``.
    box : PreviewBox, optional
        Where the GUI thread leaves the preview region; None: no preview.
    threads : int, optional
        Torch threads while training on the CPU (default: all cores but one); restored by
        :meth:`close`.
    """

    def __init__(self, build: Any, samples: Any, config: Any, image: Any = None,
                 channel_axis: int | None = None, box: PreviewBox | None = None,
                 threads: int | None = None) -> None:
        self.build = build
        self.samples = samples
        self.config = config
        self.image = image
        self.channel_axis = channel_axis
        self.box = box
        self.trainer: Any = None
        from ..core.runtime.threads import TorchThreads  # torch only once a job is made

        self._threads = TorchThreads(gui_friendly_threads() if threads is None else threads)

    def events(self) -> Iterator[Any]:
        """The generator for the worker: ``Started(trainer)``, then the trainer's events, with
        ``Preview`` events of the region in the box: every ``preview_every_s`` (or longer, so
        that previews take at most a fifth of the time) and at the end.
        """
        from ..core.training.trainer import Trainer

        lower_this_thread_priority()
        model, _meta = self.build(self.samples.in_channels, self.samples.num_classes)
        trainer = Trainer(model, self.samples, self.config)
        self.trainer = trainer
        if trainer.device.type == "cpu":
            # torch's threads spinning on every core starve the GUI thread.
            self._threads.apply()
        yield Started(trainer)
        # The preview is made here rather than by ``Trainer.events(preview=...)``, which takes
        # one fixed crop: following the view would mean restarting the trainer (new batch
        # worker processes, a fresh time budget) whenever the view moves.
        last_preview = -float("inf")
        wait = self.config.preview_every_s
        for event in trainer.events():
            yield event
            if isinstance(event, LossReport) and time.monotonic() - last_preview >= wait:
                started = time.monotonic()
                preview = self._preview(event.step)
                if preview is not None:
                    last_preview = time.monotonic()
                    # A big crop through a big net takes seconds on a CPU: keep previews to
                    # at most a fifth of the time, whatever the period asked for.
                    wait = max(self.config.preview_every_s, 4.0 * (last_preview - started))
                    yield preview
        if last_preview > -float("inf"):
            final = self._preview(trainer.step)  # the model as it ends
            if final is not None:
                yield final

    def _preview(self, step: int) -> Preview | None:
        region = self.box.get()[0] if self.box is not None else None
        if region is None:
            return None
        raw = crop(self.image, self.channel_axis, region)
        with self.trainer.evaluation_weights() as model:  # what the run would give now
            probs = foreground_probability(model, raw, self.samples.normalization,
                                           self.trainer.device)
        return Preview(step, probs, region)

    def close(self) -> None:
        """End the trainer's batch workers and restore torch's thread count (idempotent).

        Call after the worker has stopped iterating :meth:`events`.
        """
        if self.trainer is not None:
            self.trainer.close()
        self._threads.restore()


__all__ = ["Started", "TrainJob", "crop", "foreground_probability",
           "gui_friendly_threads", "lower_this_thread_priority",
           "warm_up_in_background"]
