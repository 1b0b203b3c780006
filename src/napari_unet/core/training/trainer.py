"""The training loop as a generator of events.

``Trainer(model, samples, config).events()`` runs optimizer steps and yields
:class:`~napari_unet.core.events.Progress` (with ETA and steps/s),
:class:`~napari_unet.core.events.LossReport`, :class:`~napari_unet.core.events.ValidationReport`,
:class:`~napari_unet.core.events.Preview` and :class:`~napari_unet.core.events.Message` events.
Every yield comes after ``optimizer.step()``, so the caller may stop iterating at any yield
(napari's ``worker.quit()`` just stops pulling) and then save a consistent model with
:meth:`Trainer.save`; nothing relies on ``finally``.

**Budget.** Training stops after ``config.iterations`` steps or ``config.minutes`` of wall-clock
time (measured from the start of :meth:`Trainer.events`, start-up included), whichever comes
first; a time budget alone has no step limit. The clock is injectable
(``Trainer(..., clock=...)``) so tests do not sleep.

**Best model so far.** When the held-out part of the annotations is large enough to mean
something (:func:`validation_is_meaningful`), the weights of the best validation score are kept
in memory and :meth:`Trainer.save` writes those, recording their step as ``best_step``; otherwise
the last weights, and a :class:`Message` says so.

**Data.** Patches (annotation-aware, :mod:`core.training.sampling`) are prepared ahead of the
step that needs them, in ``config.workers`` spawned processes (:mod:`napari_unet.core.
batchworkers`: the GIL-holding warps and weight maps never stall a viewer) or, with
``workers=0``, in one background thread. The patches of step ``s`` depend only on
``(seed, s)`` and the labels, never on timing.
"""

from __future__ import annotations

import copy
import math
import queue
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from ..events import LossReport, Message, Preview, Progress, ValidationReport
from ..model.checkpoint import Checkpoint, save_model
from ..model.meta import ModelMeta
from ..model.unet import UNet
from ..normalize import normalize
from ..runtime.device import DEVICE_CHOICES, resolve_device
from . import losses as _losses
from .augment import AugmentConfig
from .batch_workers import BatchWorkers, auto_workers
from .sampling import BatchSpec, make_batch, mirror_indices
from .weight_map import targets_and_weights

LOSSES = tuple(_losses.LOSSES)
OPTIMIZERS = ("sgd", "adam")
CLASS_WEIGHTS = ("auto", "balanced", "predicted")
MAX_PREVIEW = 512
#: "predicted" class weights look at (at most) this many rows and columns of a plane, and at
#: planes spread over the training set until they have seen this many pixels (the finetune
#: preset's: it runs before the first step, so a big stack must not hold the start up) ...
PREDICTED_WEIGHTS_SIDE = 1024
PREDICTED_WEIGHTS_PIXELS = 1024 * 1024
#: ... and weigh a rare class at most this much more than the most frequent one.
MAX_PREDICTED_WEIGHT = 10.0
#: The longest time budget accepted (minutes): anything longer is a typo.
MAX_MINUTES = 24 * 60.0
#: Steps of a run given neither a step count nor a time budget. With a time budget and no step
#: count there is no step limit: "train for 3 minutes" means 3 minutes on any machine.
DEFAULT_ITERATIONS = 500
#: A held-out part chooses the best model only with at least this many annotated pixels ...
MIN_VALIDATION_PIXELS = 2000
#: ... and, in instance mode, at least this many (parts of) objects and some background.
MIN_VALIDATION_OBJECTS = 3

#: Top levels of the U the finetune preset keeps frozen (see ``TrainConfig.frozen_levels``).
FINETUNE_FROZEN_LEVELS = 2

# Preset defaults for the fields left as None. "paper": the paper's SGD with momentum 0.99,
# one big tile per step. "fast": Adam on a batch of smaller tiles, which converges in far fewer
# steps on a laptop (see docs/paper.md for the measurement behind the learning rates).
# "finetune": starting from a trained model on a few painted objects (benchmarks/
# bench_finetune.py): small tiles centred on the annotations, a short warm-up, and a lower
# rate for the contracting path and its top levels frozen, so the features the model already
# has survive, and class weights from what the model predicts, so outlines keep their width.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(optimizer="sgd", lr=1e-2, batch_size=1, tile_size=572, momentum=0.99,
                  augment=AugmentConfig.paper(), warmup_steps=0, encoder_lr_scale=1.0,
                  frozen_levels=0, channels_last=False, class_weights="balanced", distill=0.0,
                  average=0.0),
    "fast": dict(optimizer="adam", lr=1e-3, batch_size=4, tile_size=256, momentum=0.9,
                 augment=AugmentConfig(), warmup_steps=0, encoder_lr_scale=1.0,
                 frozen_levels=0, channels_last=False, class_weights="balanced", distill=0.0,
                 average=0.0),
    "finetune": dict(optimizer="adam", lr=1e-3, batch_size=4, tile_size=128, momentum=0.9,
                     augment=AugmentConfig(), warmup_steps=5, encoder_lr_scale=0.3,
                     frozen_levels=FINETUNE_FROZEN_LEVELS, channels_last=True,
                     class_weights="predicted", distill=6.0, average=0.995),
}
_PRESET_FIELDS = ("lr", "batch_size", "tile_size", "optimizer", "momentum", "augment",
                  "warmup_steps", "encoder_lr_scale", "frozen_levels", "channels_last",
                  "distill", "average")


def frozen_parameters(model: UNet, levels: int) -> list[torch.nn.Parameter]:
    """Parameters of the top ``levels`` resolution levels of ``model`` (level 1: ``inc``, the
    last up block and ``outc``; level k > 1 adds ``downs[k - 2]`` and ``ups[-k]``), at most
    ``depth - 1`` levels: the two lowest always train (a preset works for any net)."""
    depth = len(model.downs)
    levels = min(int(levels), depth - 1)
    if levels <= 0:
        return []
    modules = [model.inc, model.outc, *model.ups[depth - levels:], *model.downs[:levels - 1]]
    return [p for mod in modules for p in mod.parameters()]


def preset_for(from_trained: bool) -> str:
    """The recipe the CLI and the Train dock use by default: ``"finetune"`` when training starts
    from a trained model (the shipped default or a model file), ``"fast"`` for a new net."""
    return "finetune" if from_trained else "fast"


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run. Fields left as None take the preset's value.

    Parameters
    ----------
    preset : {"paper", "fast", "finetune"}
        ``"paper"``: SGD, momentum 0.99, batch 1, 572-px tiles, geometric augmentation only.
        ``"fast"``: Adam, batch 4, 256-px tiles, geometric + intensity augmentation.
        ``"finetune"``: Adam, batch 4, 128-px tiles, 5 warm-up steps, encoder at 0.3 x the rate,
        the top two levels frozen (:func:`preset_for`: the default when starting from a trained
        model), channels-last.
    iterations : int, optional
        Total number of optimizer steps (a resumed run continues up to this count). None: no
        step limit when ``minutes`` is given, else 500 (``DEFAULT_ITERATIONS``).
    minutes : float, optional
        Wall-clock budget; training stops at ``iterations`` or ``minutes``, whichever comes
        first. In (0, 24 h].
    lr : float, optional
        Learning rate (after the warm-up).
    warmup_steps : int, optional
        Linear warm-up of the learning rate over this many steps (0 = none).
    encoder_lr_scale : float, optional
        Learning-rate factor of the contracting path (``inc`` and ``downs``); 0 freezes it.
    frozen_levels : int, optional
        Resolution levels of the U, from the top, kept as they are (no gradients): 1 = the
        full-resolution end of both paths (the first block, the last up block, the output
        layer), 2 adds the half-resolution blocks, and so on; at most the net's depth - 1 (the
        two lowest levels always train: more are capped). Fine-tuned from a trained model on a
        few painted objects, the deeper levels learn what the new images' nuclei look like
        while the fine-detail layers keep what the model learned from many; no weight gradients
        at full resolution also make steps faster. Measured on three protocol images of
        benchmarks/bench_finetune.py at 3 min: AP@0.5 0.72 -> 0.75 with 2 levels frozen, pixel
        IoU unchanged (0.908), ~25 % more steps (docs/decisions.md, "Fine-tuning preset: the
        two top levels frozen").
        ``finetune``: ``FINETUNE_FROZEN_LEVELS``, the others 0.
    batch_size : int, optional
        Tiles per step.
    tile_size : int, optional
        Input tile side in pixels. For valid (unpadded) nets it must be a legal input size
        (checked against the model by :class:`Trainer`); for padded nets it is rounded up to a
        multiple of ``2**depth``.
    optimizer : {"sgd", "adam"}, optional
    momentum : float, optional
        SGD momentum (0.99 in the paper); unused by Adam.
    weight_decay : float
        L2 penalty.
    w0, sigma : float
        Border term of the paper's weight map (eq. 2): height and width in pixels.
    class_weights : "auto", "balanced", "predicted", sequence of floats, or None
        Class balancing of the weight map (see :func:`core.training.weight_map.weight_map`).
        ``"auto"``: the preset's (``"balanced"`` for ``paper`` and ``fast``, ``"predicted"``
        for ``finetune``). ``"predicted"``: with sparse labels, fixed weights from the class
        shares the starting model predicts over the whole training images (the balance the
        images would have if fully painted): the most frequent class weighs 1, a rarer one the
        square root of how much rarer it is; with dense labels ``"balanced"``. Why (issue 11):
        balancing each patch's few painted pixels ("balanced") weighs background above nuclei
        where the images have 3-6x more background, so sparse fine-tuning thins every outline
        (pixel IoU on unpainted parts falls below the starting model's); the full share ratio
        keeps sizes but merges touching nuclei (sparse paint shows no gaps between them); the
        square root keeps both. Three protocol images of benchmarks/bench_finetune.py, finetune
        preset, 3 min, mean AP@0.5 / pixel IoU on the unpainted half: "balanced" 0.750 / 0.908
        (two runs), the full ratio 0.677 / 0.926 (one run), the square root 0.775 / 0.921 and
        0.714 / 0.920 (two runs; IoU at or above the starting model's on every image), the
        starting model 0.706 / 0.917 (docs/decisions.md, "Class weights from what the model
        predicts").
    separate_touching : bool
        Train on a 1-px background gap between touching objects (instance mode).
    loss : {"weighted_ce", "dice", "weighted_ce+dice"}
        The paper's weighted cross-entropy, soft Dice, or their sum.
    augment : AugmentConfig or dict, optional
        Augmentation (``AugmentConfig.none()`` switches it off).
    annotated_bias : float, optional
        None: annotation-aware patches (sparse labels: every patch centred on an annotated
        object or background pixel, see :mod:`core.training.sampling`). A number in [0, 1]:
        the share of patches centred on a uniformly drawn annotated pixel, the rest anywhere
        (0.8 was the rule before annotation-aware sampling).
    freeze_norm : bool
        Keep BatchNorm layers in eval mode (running statistics of the trained model), as
        fine-tuning on a handful of patches would otherwise overwrite them.
    keep_best : bool
        Keep the weights of the best validation score (when the held-out part is meaningful).
    validate_every : int
        Steps between validation passes on the held-out part (0 = never).
    preview_every_s : float
        Wall-clock seconds between preview predictions (0 = after every step).
    seed : int
        Seed of patch sampling, augmentation and dropout.
    device : {"auto", "cuda", "mps", "cpu"}
    prefetch : int
        Batches prepared ahead.
    workers : int or "auto"
        Batch-preparation processes (0 = a background thread of this process; "auto" =
        :func:`napari_unet.core.training.batch_workers.auto_workers`).
    threads : int, optional
        Torch CPU threads while training (restored afterwards); None leaves torch's setting.
    channels_last : bool, optional
        Run the net in channels-last memory format: 18 % faster steps of the default net on
        this project's 2-core CPU (``finetune``: on).
    distill : float, optional
        Weight of a distillation term on the non-annotated pixels of each tile: the net's
        probabilities are pulled towards those of the weights this run started from (frozen),
        so that fine-tuning on a few painted objects does not unlearn the rest of the image
        (``core.losses.distillation``; ``finetune``: 6, the others 0). Costs one forward pass of
        the starting net per step. Measured on three protocol images of benchmarks/
        bench_finetune.py at 3 min, two runs each, mean AP@0.5 / pixel IoU on the unpainted half:
        3 -> 0.696 / 0.906, 6 -> 0.749 / 0.910 (the starting model: 0.706 / 0.917).
    average : float, optional
        Decay of an exponential moving average of the weights, started at the run's first
        weights and updated after every step. Previews, validation (so the best model kept)
        and the model a run gives (saved, and in ``Trainer.model`` after the run) are the
        average; the optimizer steps the live weights. Fine-tuned on a few painted objects,
        weights a few steps apart score +-0.05 AP@0.5 apart; the average of the last few
        hundred steps scored higher (docs/decisions.md). ``finetune``: 0.995; the others 0
        (the last weights). A checkpoint holds the average as its weights and the live
        weights beside them (``Checkpoint.live_state``), so a run resumed from it goes on
        exactly; calling ``events()`` again does too.
    """

    preset: str = "fast"
    iterations: int | None = None
    minutes: float | None = None
    lr: float | None = None
    warmup_steps: int | None = None
    encoder_lr_scale: float | None = None
    frozen_levels: int | None = None
    batch_size: int | None = None
    tile_size: int | None = None
    optimizer: str | None = None
    momentum: float | None = None
    weight_decay: float = 0.0
    w0: float = 10.0
    sigma: float = 5.0
    class_weights: str | tuple[float, ...] | None = "auto"
    separate_touching: bool = True
    loss: str = "weighted_ce"
    augment: AugmentConfig | None = None
    annotated_bias: float | None = None
    freeze_norm: bool = False
    keep_best: bool = True
    validate_every: int = 50
    preview_every_s: float = 2.0
    seed: int = 0
    device: str = "auto"
    prefetch: int = 2
    workers: int | str = 0
    threads: int | None = None
    channels_last: bool | None = None
    distill: float | None = None
    average: float | None = None

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {self.preset!r}")
        defaults = PRESETS[self.preset]
        for name in _PRESET_FIELDS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, defaults[name])
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", AugmentConfig(**self.augment))
        if not isinstance(self.augment, AugmentConfig):
            raise ValueError(f"augment must be an AugmentConfig, got {type(self.augment).__name__}")
        if self.iterations is None and self.minutes is None:
            object.__setattr__(self, "iterations", DEFAULT_ITERATIONS)
        if self.iterations is not None:
            _int_at_least(self, "iterations")
        _int_at_least(self, "batch_size")
        _int_at_least(self, "tile_size")
        _int_at_least(self, "prefetch")
        if self.minutes is not None:
            if not _finite(self.minutes) or not 0 < self.minutes <= MAX_MINUTES:
                raise ValueError(f"minutes must be a time budget in (0, {MAX_MINUTES:g}] "
                                 f"(at most a day), got {self.minutes!r}")
            object.__setattr__(self, "minutes", float(self.minutes))
        if not _finite(self.distill) or self.distill < 0:
            raise ValueError(f"distill must be a finite number >= 0, got {self.distill!r}")
        object.__setattr__(self, "distill", float(self.distill))
        if not _finite(self.average) or not 0 <= self.average < 1:
            raise ValueError(f"average must be a decay in [0, 1), got {self.average!r}")
        object.__setattr__(self, "average", float(self.average))
        if not _finite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if isinstance(self.warmup_steps, bool) or int(self.warmup_steps) != self.warmup_steps \
                or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        object.__setattr__(self, "warmup_steps", int(self.warmup_steps))
        if not _finite(self.encoder_lr_scale) or not 0 <= self.encoder_lr_scale <= 1:
            raise ValueError(f"encoder_lr_scale must be in [0, 1], got "
                             f"{self.encoder_lr_scale!r}")
        _int_at_least(self, "frozen_levels", minimum=0)
        if self.annotated_bias is not None and (
                not _finite(self.annotated_bias) or not 0 <= self.annotated_bias <= 1):
            raise ValueError(f"annotated_bias must be None or in [0, 1], got "
                             f"{self.annotated_bias!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not _finite(self.momentum) or not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not _finite(self.weight_decay) or self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not _finite(self.w0) or self.w0 < 0:
            raise ValueError(f"w0 must be a finite number >= 0, got {self.w0!r}")
        if not _finite(self.sigma) or self.sigma <= 0:
            raise ValueError(f"sigma must be a finite number > 0, got {self.sigma!r}")
        if self.class_weights == "auto":
            object.__setattr__(self, "class_weights", defaults["class_weights"])
        cw = self.class_weights
        if isinstance(cw, str):
            if cw not in CLASS_WEIGHTS:
                raise ValueError(f"class_weights must be one of {CLASS_WEIGHTS}, None or a "
                                 f"sequence of "
                                 f"floats, got {cw!r}")
        elif cw is not None:
            try:
                values = tuple(float(v) for v in cw)
            except (TypeError, ValueError):
                raise ValueError(f"class_weights must be one of {CLASS_WEIGHTS}, None or a "
                                 f"sequence of floats, got {cw!r}") from None
            if len(values) < 2 or not all(_finite(v) and v >= 0 for v in values):
                raise ValueError(f"class_weights need >= 2 finite values >= 0, got {cw!r}")
            object.__setattr__(self, "class_weights", values)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if int(self.validate_every) != self.validate_every or self.validate_every < 0:
            raise ValueError(f"validate_every must be an integer >= 0, got "
                             f"{self.validate_every!r}")
        if not _finite(self.preview_every_s) or self.preview_every_s < 0:
            raise ValueError(f"preview_every_s must be >= 0 seconds, got "
                             f"{self.preview_every_s!r}")
        if int(self.seed) != self.seed:
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if self.device not in DEVICE_CHOICES and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {self.device!r}")
        if self.workers != "auto" and (isinstance(self.workers, bool) or not isinstance(
                self.workers, (int, np.integer)) or not 0 <= self.workers <= 64):
            raise ValueError(f"workers must be 'auto' or an integer in [0, 64], got "
                             f"{self.workers!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(
                self.threads, (int, np.integer)) or self.threads < 1):
            raise ValueError(f"threads must be None or an integer >= 1, got {self.threads!r}")

    @property
    def step_limit(self) -> int:
        """``iterations``, or ``sys.maxsize`` for a time-boxed run without a step limit."""
        return sys.maxsize if self.iterations is None else self.iterations

    @classmethod
    def paper(cls, **overrides: Any) -> TrainConfig:
        """The paper's recipe (SGD, momentum 0.99, batch 1, 572-px tiles), with overrides."""
        return cls(**{"preset": "paper", **overrides})

    @classmethod
    def fast(cls, **overrides: Any) -> TrainConfig:
        """Adam, batch 4, 256-px tiles: quicker convergence for interactive training."""
        return cls(**{"preset": "fast", **overrides})

    @classmethod
    def finetune(cls, **overrides: Any) -> TrainConfig:
        """The fine-tuning recipe (see ``PRESETS["finetune"]``), with overrides."""
        return cls(**{"preset": "finetune", **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` (e.g. a checkpoint's ``meta.training``)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for checkpoints."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["augment"] = self.augment.to_dict()
        if isinstance(self.class_weights, tuple):
            out["class_weights"] = list(self.class_weights)
        return out

    def tile_for(self, model: UNet) -> int:
        """The input tile side for ``model``: checked for valid nets, rounded up for padded ones.

        Raises ``ValueError`` naming the nearest legal sizes when a valid net cannot take it.
        """
        if model.is_valid:
            model.output_shape((self.tile_size, self.tile_size))  # raises with nearest sizes
            return int(self.tile_size)
        return -(-int(self.tile_size) // model.divisor) * model.divisor

    def n_workers(self) -> int:
        """Worker processes this config asks for (``"auto"`` resolved for this machine)."""
        return auto_workers() if self.workers == "auto" else int(self.workers)


def _int_at_least(config: TrainConfig, name: str, minimum: int = 1) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    object.__setattr__(config, name, int(value))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) \
        and math.isfinite(float(value))


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


def validation_is_meaningful(samples: Any) -> tuple[bool, str]:
    """Whether the held-out part can choose the best model, and why (for the user).

    Rule: at least :data:`MIN_VALIDATION_PIXELS` annotated held-out pixels with both background
    and foreground among them, and in instance mode pieces of at least
    :data:`MIN_VALIDATION_OBJECTS` objects. Fewer than that, and the score jumps with one
    object's outline: picking the "best" step would pick noise.
    """
    items = list(samples.validation_items())
    pixels, objects, classes = 0, 0, set()
    instances = samples.mode == "instances"
    for item in items:
        _, labels, ignore = _patch_arrays(item)
        annotated = np.ones(labels.shape, bool) if ignore is None else ~ignore
        values = labels[annotated]
        pixels += int(values.size)
        if instances:
            objects += int(np.unique(values[values > 0]).size)
            classes.update({0} if (values == 0).any() else set())
            classes.update({1} if (values > 0).any() else set())
        else:
            classes.update(int(v) for v in np.unique(values))
    if not items:
        return False, "no held-out part"
    if pixels < MIN_VALIDATION_PIXELS:
        return False, (f"the held-out part has {pixels} annotated pixels (fewer than "
                       f"{MIN_VALIDATION_PIXELS})")
    if len(classes) < 2:
        return False, "the held-out part has only one class annotated"
    if instances and objects < MIN_VALIDATION_OBJECTS:
        return False, (f"the held-out part has {objects} object(s) (fewer than "
                       f"{MIN_VALIDATION_OBJECTS})")
    return True, f"{pixels} annotated pixels" + (f", {objects} objects" if instances else "")


def _patch_arrays(patch: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
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
class _ThreadSource:
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


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` torch CPU threads inside the block and restore the previous count after."""
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# -- the trainer -----------------------------------------------------------------------------
class Trainer:
    """Train ``model`` on ``samples``; iterate :meth:`events` to run.

    Parameters
    ----------
    model : UNet
        Trained in place (moved to the configured device).
    samples : napari_unet.core.training.trainingset.TrainingSet
        Images, labels and the held-out validation part; its labels may be updated while
        training runs (they reach the batch makers within ``config.prefetch + 1`` steps).
    config : TrainConfig, optional
        Defaults to ``TrainConfig()`` (the "fast" preset).
    checkpoint_state : Checkpoint or dict, optional
        Resume: a :class:`~core.model.checkpoint.Checkpoint` (or a dict with ``step`` and
        ``optimizer_state``, optionally ``live_state``) whose step count and optimizer state
        are restored. The model weights are taken from ``model`` (pass ``checkpoint.model``);
        when the checkpoint holds a moving average, also its live weights.
    clock : callable, optional
        Seconds as a float, monotonic (default :func:`time.monotonic`): the time budget,
        ETA and preview timing read it. Tests inject a fake one.

    Attributes
    ----------
    step : int
        Optimizer steps done so far.
    best_step : int or None
        Step of the best validation score kept in memory (None: no meaningful validation yet).
    tile : int
        Input tile side; the loss is computed on the ``output_hw`` centre of each tile.
    device : torch.device
    pixel_size : float or None
        Micrometres per pixel of the training images (saved in the model's meta).
    """

    def __init__(
        self,
        model: UNet,
        samples: Any,
        config: TrainConfig | None = None,
        checkpoint_state: Checkpoint | dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = TrainConfig() if config is None else config
        if not isinstance(self.config, TrainConfig):
            raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.model = model
        self.samples = samples
        self.clock = clock
        self._check_compatible()
        self.tile = self.config.tile_for(model)
        self.output_hw = model.output_shape((self.tile, self.tile))
        self.device = resolve_device(self.config.device)
        model.to(self.device)
        # the layout the config asks for, whatever the net came in (models loaded for the CPU
        # are channels-last: core.checkpoint)
        model.to(memory_format=torch.channels_last if self.config.channels_last
                 else torch.contiguous_format)
        self.optimizer = self._make_optimizer()
        # the starting weights, frozen: what the net already knew, for the distillation term
        self._teacher = None
        if self.config.distill > 0:
            self._teacher = copy.deepcopy(model).eval().requires_grad_(False)
        self.step = 0
        # the moving average of the weights (config.average), started when a run starts; while
        # no run is going on the model holds it, and the live weights wait in _live
        self._average: list[torch.Tensor] | None = None
        self._live: list[torch.Tensor] | None = None
        if checkpoint_state is not None:
            self._restore(checkpoint_state)
        self._has_dropout = any(isinstance(m, torch.nn.Dropout) and m.p > 0
                                for m in model.modules())
        self._source: weakref.ref | None = None
        self.best_step: int | None = None
        self.best_score: float | None = None
        self._best_state: dict[str, torch.Tensor] | None = None
        self._predicted_weights: Any = None
        self._start_step = self.step
        # Micrometres per pixel of the training images, stored with the model when known.
        self.pixel_size: float | None = getattr(samples, "pixel_size", None)

    # -- public --------------------------------------------------------------------------
    def events(
        self, preview: np.ndarray | None = None
    ) -> Iterator[Progress | LossReport | ValidationReport | Preview | Message]:
        """Run steps until ``config.iterations`` or ``config.minutes``, yielding after each step.

        Per step, in order: ``Progress(step, total, message, eta_s, rate)``,
        ``LossReport(step, loss, lr)``, then ``ValidationReport`` every ``validate_every`` steps
        and at the last step (when the samples have a validation part), then ``Preview`` when
        ``preview`` is given and ``preview_every_s`` seconds have passed since the last one (also
        after the first and the last step). ``Message`` events say why training stopped early
        and which weights :meth:`save` will write. With a time budget, ``total`` is the
        estimated number of steps the budget allows (at most ``iterations``).

        Parameters
        ----------
        preview : (h, w) or (C, h, w) array, optional
            A raw (un-normalised) image crop of at most 512 x 512 pixels to predict now and
            then; it is normalised with the samples' normalisation spec.

        Notes
        -----
        Calling ``events()`` again after stopping continues from :attr:`step` with a fresh
        time budget.
        """
        preview_input = self._prepare_preview(preview) if preview is not None else None
        self.close()
        cfg = self.config
        start_time = self.clock()
        budget = None if cfg.minutes is None else 60.0 * cfg.minutes
        if self.step >= cfg.step_limit:
            return
        meaningful, why = validation_is_meaningful(self.samples) if (
            cfg.keep_best and cfg.validate_every) else (False, "")
        if cfg.keep_best and cfg.validate_every and not meaningful:
            yield Message(f"keeping the last weights, not the best: {why}")
        cw = self.class_weights()
        if cfg.class_weights == "predicted" and isinstance(cw, tuple):
            yield Message("sparse labels: class weights "
                          f"{', '.join(f'{w:.2f}' for w in cw)} from the classes the model "
                          "sees in the whole images", data={"class_weights": cw})
        source = self._open_source(self.step, cfg.step_limit)
        if self._live is not None:  # the optimizer goes on from the weights it was stepping
            self._load_float(self._live)
            self._live = None
        if cfg.average > 0 and self._average is None:
            self._average = [v.detach().clone() for v in self._float_state()]
        with torch_threads(cfg.threads):
            yield from self._loop(source, preview_input, start_time, budget, meaningful)

    def _loop(self, source: Any, preview_input: np.ndarray | None, start_time: float,
              budget: float | None, meaningful: bool) -> Iterator[Any]:
        cfg = self.config
        total = cfg.step_limit
        last_preview = -math.inf
        first_step = self.step
        first_step_at: float | None = None  # the first step carries start-up: no rate sample
        rate: float | None = None
        validated_at = None
        try:
            while self.step < total:
                now = self.clock()
                step_s = 1.0 / rate if rate else 0.0
                if budget is not None and now - start_time + step_s > budget:
                    yield Message(f"time budget of {cfg.minutes:g} min reached after "
                                  f"{self.step - first_step} steps (step {self.step})",
                                  data={"reason": "minutes", "step": self.step})
                    if cfg.validate_every and self.step > first_step \
                            and validated_at != self.step and self._has_validation():
                        yield self._validate_and_track(meaningful)
                    break
                image, target, weights = source.get(self.step)
                loss = self._train_step(torch.from_numpy(image), torch.from_numpy(target),
                                        torch.from_numpy(weights))
                self._update_average()
                lr = float(self.optimizer.param_groups[0]["lr"])
                now = self.clock()
                done = self.step - first_step
                if done == 1:
                    first_step_at = now
                elif first_step_at is not None and now > first_step_at:
                    rate = (done - 1) / (now - first_step_at)
                shown_total, eta = self._estimate(total, budget, now - start_time, rate)
                yield Progress(self.step, shown_total, f"loss {loss:.4g}", eta_s=eta, rate=rate)
                yield LossReport(self.step, loss, lr)
                last = self.step == total
                if cfg.validate_every and (self.step % cfg.validate_every == 0 or last) \
                        and self._has_validation():
                    yield self._validate_and_track(meaningful)
                    validated_at = self.step
                t = self.clock()
                if preview_input is not None and (t - last_preview >= cfg.preview_every_s
                                                  or last):
                    last_preview = t
                    yield Preview(self.step, self._predict_foreground(preview_input))
        finally:
            source.close()
            if self._average is not None:  # the run gives the average
                self._live = [v.detach().clone() for v in self._float_state()]
                self._load_float(self._average)
        if self._best_state is not None and self.best_step != self.step:
            yield Message(f"best validation score {self.best_score:.3f} at step "
                          f"{self.best_step}: save() writes those weights",
                          data={"best_step": self.best_step, "score": self.best_score})

    def _estimate(self, total: int, budget: float | None, elapsed: float,
                  rate: float | None) -> tuple[int, float | None]:
        """``(total steps shown, seconds left)`` from the step budget, the time budget and the
        current rate."""
        if rate is None:
            if self.config.iterations is None and budget is not None and self.step:
                # no step limit and no rate yet: a first guess from the start-up step(s)
                total = max(self.step + 1, int(self.step * budget / max(elapsed, 1e-9)))
            return total, None if budget is None else max(0.0, budget - elapsed)
        steps_left = (total - self.step) / rate
        if budget is None:
            return total, steps_left
        time_left = max(0.0, budget - elapsed)
        if time_left < steps_left:
            return min(total, self.step + int(time_left * rate)), time_left
        return total, steps_left

    def _validate_and_track(self, meaningful: bool) -> ValidationReport:
        with self.evaluation_weights():
            report = self.validate()
            if meaningful and self.config.keep_best:
                score = _score(report.metrics)
                if score is not None and (self.best_score is None
                                          or score >= self.best_score):
                    self.best_score, self.best_step = score, self.step
                    self._best_state = {k: v.detach().to("cpu", copy=True)
                                        for k, v in self.model.state_dict().items()}
        return report

    @contextmanager
    def evaluation_weights(self) -> Iterator[UNet]:
        """Inside, :attr:`model` holds the weights a run gives at this step: the moving average
        (``config.average`` > 0), else the live weights; the live ones are back on exit."""
        if self._average is None:
            yield self.model
            return
        live = [v.detach().clone() for v in self._float_state()]
        self._load_float(self._average)
        try:
            yield self.model
        finally:
            self._load_float(live)

    def _live_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The weights the optimizer steps, as a state_dict, when the model a run gives is
        their moving average (else None: they are the same)."""
        if self._average is None:
            return None
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self._live is not None:  # between runs the model holds the average
            state.update(zip(self._float_keys(), (v.detach().clone() for v in self._live),
                             strict=True))
        return state

    def _float_keys(self) -> list[str]:
        """Names of the model's floating-point weights and buffers (not the batch counters),
        in the order of :meth:`_float_state`."""
        return [k for k, v in self.model.state_dict().items() if v.dtype.is_floating_point]

    def _float_state(self) -> list[torch.Tensor]:
        """The model's floating-point weights and buffers (not the batch counters)."""
        return [v for v in self.model.state_dict().values() if v.dtype.is_floating_point]

    @torch.no_grad()
    def _load_float(self, values: list[torch.Tensor]) -> None:
        for target, value in zip(self._float_state(), values, strict=True):
            target.copy_(value)

    @torch.no_grad()
    def _update_average(self) -> None:
        if self._average is None:
            return
        weight = 1.0 - self.config.average
        for avg, value in zip(self._average, self._float_state(), strict=True):
            avg.lerp_(value, weight)

    def validate(self) -> ValidationReport:
        """Loss and metrics on the samples' validation part (model left in train mode).

        Metrics: ``loss`` (the training loss), ``iou`` (foreground IoU in instance mode, mean
        IoU of the non-background classes in semantic mode) and, in instance mode on fully
        annotated items, ``ap50`` (average precision at IoU 0.5 of the instances).
        """
        from ..data.metrics import average_precision, iou_per_class, pixel_iou
        from ..inference.postprocess import instances_from_probability

        instances_mode = self.samples.mode == "instances"
        cfg = self.config
        sums: dict[str, list[float]] = {"loss": [], "iou": [], "ap50": []}
        self.model.eval()
        with torch.no_grad():
            for item in self._validation_items():
                image, labels, ignore = _patch_arrays(item)
                logits = self._forward_full(image)
                target, weights = targets_and_weights(
                    labels, ignore, instances_mode, self.model.num_classes, cfg.w0, cfg.sigma,
                    self.class_weights(), cfg.separate_touching)
                t = torch.from_numpy(target)[None].to(self.device)
                w = torch.from_numpy(weights)[None].to(self.device)
                sums["loss"].append(float(self._loss(logits[None], t, w)))
                probs = torch.softmax(logits, 0).cpu().numpy()
                annotated = np.ones(labels.shape, bool) if ignore is None else ~ignore
                if instances_mode:
                    fg = probs[1]
                    gt_fg = (labels > 0) & annotated
                    pred_fg = (fg > 0.5) & annotated
                    sums["iou"].append(float(pixel_iou(gt_fg, pred_fg)))
                    if ignore is None or not ignore.any():
                        pred = instances_from_probability(fg)
                        ap = average_precision(labels, pred, (0.5,))
                        sums["ap50"].append(float(_first(ap)))
                else:
                    ious = iou_per_class(labels, probs.argmax(0), self.model.num_classes,
                                         None if ignore is None else ignore)[1:]
                    if np.isfinite(ious).any():
                        sums["iou"].append(float(np.nanmean(ious)))
        self._train_mode()
        return ValidationReport(self.step, {k: float(np.mean(v)) for k, v in sums.items() if v})

    def save(self, path: Any, best: bool = True) -> Any:
        """Write the model with its meta (see :func:`napari_unet.core.model.checkpoint.save_model`).

        With ``best`` (default) and a best validation step kept in memory, the file holds those
        weights (``meta.step == meta.best_step``, no optimizer state: resuming restarts the
        optimizer); otherwise the current weights with their optimizer state. Returns the path.
        """
        if best and self._best_state is not None and self.best_step != self.step:
            current = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            try:
                self.model.load_state_dict(self._best_state)
                meta = self.meta().replace(step=int(self.best_step),
                                           best_step=int(self.best_step))
                return save_model(path, self.model, meta, None)
            finally:
                self.model.load_state_dict(current)
        meta = self.meta()
        if self.best_step is not None and self.best_step == self.step:
            meta = meta.replace(best_step=int(self.step))
        live = self._live_state_dict()
        with self.evaluation_weights():
            return save_model(path, self.model, meta, self.optimizer.state_dict(),
                              live_state=live)

    def restore_best(self) -> int | None:
        """Load the best validation weights into :attr:`model` (for predicting with them);
        returns their step, or None when there are none (the model is left as is)."""
        if self._best_state is None:
            return None
        self.model.load_state_dict(self._best_state)
        return self.best_step

    def meta(self) -> ModelMeta:
        """What a checkpoint of the current state says about the model."""
        s = self.samples
        extra: dict[str, Any] = {
            "mode": s.mode,
            "normalization": dict(s.normalization),
            "object_diameter": _optional_float(getattr(s, "object_diameter", None)),
            "pixel_size": _optional_float(self.pixel_size),
            "training": self.config.to_dict(),
            "step": int(self.step),
        }
        names = getattr(s, "class_names", None)
        if names:
            extra["class_names"] = tuple(names)
        return ModelMeta.for_model(self.model, **extra)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the running batch workers (empty without worker processes)."""
        source = self._source() if self._source is not None else None
        return list(getattr(source, "pids", []))

    def close(self) -> None:
        """Stop the batch preparation (worker processes or thread) of the current run."""
        source = self._source() if self._source is not None else None
        if source is not None:
            source.close()
        self._source = None

    # -- internals -----------------------------------------------------------------------
    def class_weights(self) -> Any:
        """The class weights in use: ``config.class_weights`` with ``"predicted"`` resolved
        (computed once: fixed weights from the predicted class shares when the labels are
        sparse, else ``"balanced"``)."""
        cw = self.config.class_weights
        if cw != "predicted":
            return cw
        if self._predicted_weights is None:
            self._predicted_weights = self._weights_from_prediction()
        return self._predicted_weights

    def _weights_from_prediction(self) -> Any:
        snapshot = self.samples.snapshot()
        if not snapshot.sparse or not snapshot.train:
            return "balanced"
        counts = np.zeros(self.model.num_classes)
        regions, side = snapshot.train, PREDICTED_WEIGHTS_SIDE
        pixels = np.mean([min(r.image.shape[-2], side) * min(r.image.shape[-1], side)
                          for r in regions])
        n = min(len(regions), max(1, int(np.ceil(PREDICTED_WEIGHTS_PIXELS / pixels))))
        self.model.eval()
        with torch.no_grad():
            for i in np.unique(np.linspace(0, len(regions) - 1, n).round().astype(int)):
                image = regions[i].image[:, :side, :side]
                probs = torch.softmax(self._forward_full(image), 0)
                counts += probs.sum(dim=(1, 2)).cpu().numpy()
        self._train_mode()
        share = counts / counts.sum()
        # like "balanced", the most frequent class weighs 1, but a rarer one only the square
        # root of its share ratio: the full ratio keeps object sizes yet merges touching nuclei
        # (sparse paint shows no gaps between them), the square root keeps both (TrainConfig
        # doc). Capped so a class the model barely sees does not dominate.
        ratio = share.max() / np.maximum(share, 1e-12)
        weights = np.minimum(np.sqrt(ratio), MAX_PREDICTED_WEIGHT)
        return tuple(float(w) for w in weights)

    def _open_source(self, start: int, stop: int) -> Any:
        cfg = self.config
        spec = batch_spec(cfg, self.model, self.samples.mode == "instances",
                          self.class_weights())
        n = cfg.n_workers()
        if n > 0:
            source = BatchWorkers(self.samples, spec, start, n, cfg.prefetch)
        else:
            source = _ThreadSource(self.samples, spec, start, stop, cfg.prefetch)
        self._source = weakref.ref(source)
        return source

    def _check_compatible(self) -> None:
        s, m = self.samples, self.model
        if not isinstance(m, UNet):
            raise ValueError(f"model must be a napari-unet UNet, got {type(m).__name__}")
        if s.in_channels != m.in_channels:
            raise ValueError(f"the images have {s.in_channels} channel(s) but the model expects "
                             f"{m.in_channels}")
        if s.mode == "instances" and m.num_classes != 2:
            raise ValueError(f"instance training needs a 2-class model, this one has "
                             f"{m.num_classes} classes")
        if s.mode != "instances" and s.num_classes != m.num_classes:
            raise ValueError(f"the labels have {s.num_classes} classes but the model has "
                             f"{m.num_classes}")

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        # what an earlier run on this model object froze trains again unless frozen here too
        self.model.requires_grad_(True)
        encoder = [p for mod in (self.model.inc, self.model.downs) for p in mod.parameters()]
        ids = {id(p) for p in encoder}
        rest = [p for p in self.model.parameters() if id(p) not in ids]
        groups = [{"params": rest, "lr_scale": 1.0}]
        frozen = frozen_parameters(self.model, cfg.frozen_levels)
        if cfg.encoder_lr_scale > 0:
            groups.append({"params": encoder, "lr_scale": float(cfg.encoder_lr_scale)})
        else:
            frozen = encoder + frozen
        # frozen: no gradients computed at all. The frozen levels stay in their groups (the
        # optimizer skips parameters without a gradient), so the optimizer state keeps one
        # layout whatever is frozen and checkpoints resume across that setting
        for p in frozen:
            p.requires_grad_(False)
        for g in groups:
            g["lr"] = cfg.lr * g["lr_scale"]
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def _set_lr(self) -> None:
        """Linear warm-up over ``warmup_steps`` (the step about to run is ``self.step + 1``)."""
        cfg = self.config
        factor = min(1.0, (self.step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        for g in self.optimizer.param_groups:
            g["lr"] = cfg.lr * g.get("lr_scale", 1.0) * factor

    def _restore(self, state: Checkpoint | dict[str, Any]) -> None:
        if isinstance(state, Checkpoint):
            step, opt, live = state.meta.step, state.optimizer_state, state.live_state
        else:
            step, opt = state.get("step", 0), state.get("optimizer_state")
            live = state.get("live_state")
        self.step = int(step or 0)
        if live is not None:
            # The model holds the moving average of the saved run; the optimizer state belongs
            # to the live weights. Averaging on, both go on; off, training goes on from the
            # live weights (the exact continuation) and the average is dropped.
            weights = [live[k].to(self.device) for k in self._float_keys()]
            if self.config.average > 0:
                self._average = [v.detach().clone() for v in self._float_state()]
                self._live = weights
            else:
                self._load_float(weights)
        if opt is not None:
            try:
                self.optimizer.load_state_dict(opt)
            except (ValueError, KeyError) as err:
                raise ValueError(
                    f"cannot resume: the saved optimizer state does not fit a "
                    f"{self.config.optimizer!r} optimizer on this model ({err})"
                ) from err

    def _train_mode(self) -> None:
        self.model.train()
        if self.config.freeze_norm:
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def _train_step(self, image: torch.Tensor, target: torch.Tensor,
                    weights: torch.Tensor) -> float:
        dev = self.device
        image = image.to(dev, non_blocking=True)
        if self.config.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        target = target.to(dev, non_blocking=True)
        weights = weights.to(dev, non_blocking=True)
        self._train_mode()
        self._set_lr()
        self.optimizer.zero_grad(set_to_none=True)
        if self._has_dropout:
            # Dropout masks seeded by (seed, step), so a resumed run repeats an uninterrupted
            # one; fork_rng keeps the caller's global torch RNG untouched.
            devices = [dev] if dev.type in ("cuda", "mps") else []
            with torch.random.fork_rng(devices=devices, device_type=dev.type
                                       if devices else "cuda"):
                torch.manual_seed(self.config.seed * 1_000_003 + self.step)
                loss = self._loss(self.model(image), target, weights, image)
                loss.backward()
        else:
            loss = self._loss(self.model(image), target, weights, image)
            loss.backward()
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    def _loss(self, logits: torch.Tensor, target: torch.Tensor,
              weights: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        loss = _losses.LOSSES[self.config.loss](logits, target, weights)
        if self._teacher is not None and image is not None and bool((weights == 0).any()):
            with torch.no_grad():
                teacher = self._teacher(image)
            loss = loss + self.config.distill * _losses.distillation(logits, teacher, weights)
        return loss

    def _has_validation(self) -> bool:
        return len(self._validation_items()) > 0

    def _validation_items(self) -> Sequence[Any]:
        return list(self.samples.validation_items())

    def _forward_full(self, image: np.ndarray) -> torch.Tensor:
        """Logits ``(K, H, W)`` of a whole normalised ``(C, H, W)`` image (eval mode, no grad).

        Valid nets see the image mirror-padded by their context (and up to a legal size).
        """
        return forward_full(self.model, image, self.device)

    def _prepare_preview(self, preview: np.ndarray) -> np.ndarray:
        arr = np.asarray(preview)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise ValueError(f"preview must be (h, w) or (C, h, w), got shape {arr.shape}")
        if arr.shape[0] != self.model.in_channels:
            raise ValueError(f"preview has {arr.shape[0]} channel(s) but the model expects "
                             f"{self.model.in_channels}")
        if max(arr.shape[-2:]) > MAX_PREVIEW or min(arr.shape[-2:]) < 1:
            raise ValueError(f"preview must be at most {MAX_PREVIEW}x{MAX_PREVIEW} pixels, got "
                             f"{arr.shape[-2]}x{arr.shape[-1]}")
        return np.asarray(normalize(arr, self.samples.normalization, 0), np.float32)

    def _predict_foreground(self, image: np.ndarray) -> np.ndarray:
        self.model.eval()
        with torch.no_grad(), self.evaluation_weights():
            probs = torch.softmax(self._forward_full(image), 0)
        self._train_mode()
        # Semantic nets: "foreground" = anything but class 0.
        return (1.0 - probs[0]).cpu().numpy().astype(np.float32)


def forward_full(model: UNet, image: np.ndarray, device: torch.device | str = "cpu"
                 ) -> torch.Tensor:
    """Logits ``(K, H, W)`` of a whole normalised ``(C, H, W)`` (or ``(H, W)``) image.

    Valid nets see the image mirror-padded by their context (and up to a legal size). The
    caller sets eval mode and ``torch.no_grad()``.
    """
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = image[None]
    h, w = image.shape[-2:]
    if model.is_valid:
        c = model.context
        th, tw = model.valid_input_shape((h + 2 * c, w + 2 * c))
        rows = mirror_indices(-c, th, h)
        cols = mirror_indices(-c, tw, w)
        image = image[:, rows[:, None], cols[None, :]]
    x = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
    logits = model(x)[0]
    return logits[:, :h, :w]


def _score(metrics: dict[str, float]) -> float | None:
    """The validation score the best model is chosen by: AP@0.5 where measured (fully
    annotated held-out part), else the foreground / mean class IoU."""
    for name in ("ap50", "iou"):
        if name in metrics and math.isfinite(metrics[name]):
            return float(metrics[name])
    return None


def _first(value: Any) -> float:
    if isinstance(value, dict):
        return float(next(iter(value.values())))
    arr = np.asarray(value, dtype=float).ravel()
    return float(arr[0])


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def train(
    model: UNet,
    samples: Any,
    config: TrainConfig | None = None,
    preview: np.ndarray | None = None,
) -> Iterator[Progress | LossReport | ValidationReport | Preview | Message]:
    """Convenience generator: ``Trainer(model, samples, config).events(preview)``."""
    yield from Trainer(model, samples, config).events(preview)


def warm_up_imports() -> None:
    """Import now what the first optimiser step imports: ``torch.optim`` loads
    ``torch._dynamo`` (with sympy, ~800 modules, ~3 s here) on its first ``step()``. The Train
    dock calls this in a background thread when it opens, so that the first training run does
    not hold the GIL for those seconds while the viewer waits (benchmarks/bench_gui_latency.py
    saw 0.4-1.9 s stalls in the first run only) and reaches its first step sooner."""
    import torch._dynamo  # noqa: F401


__all__ = [
    "CLASS_WEIGHTS",
    "FINETUNE_FROZEN_LEVELS",
    "LOSSES",
    "MAX_MINUTES",
    "MIN_VALIDATION_OBJECTS",
    "MIN_VALIDATION_PIXELS",
    "OPTIMIZERS",
    "PRESETS",
    "TrainConfig",
    "Trainer",
    "batch_spec",
    "forward_full",
    "frozen_parameters",
    "preset_for",
    "targets_and_weights",
    "torch_threads",
    "train",
    "validation_is_meaningful",
    "warm_up_imports",
]
