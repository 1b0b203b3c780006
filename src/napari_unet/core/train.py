"""The training loop as a generator of events.

``Trainer(model, samples, config).events()`` runs optimizer steps and yields
:class:`~napari_unet.core.events.Progress`, :class:`~napari_unet.core.events.LossReport`,
:class:`~napari_unet.core.events.ValidationReport` and :class:`~napari_unet.core.events.Preview`
events. Every yield comes after ``optimizer.step()``, so the caller may stop iterating at any
yield (napari's ``worker.quit()`` just stops pulling) and then save a consistent model with
:meth:`Trainer.save`; nothing relies on ``finally``.

Patch preparation (sampling with the valid net's context margin, augmentation, the paper's
weight map and the 0/1 target) runs in a background thread that prefetches a few batches, so a
step costs little more than forward + backward. The patches of step ``s`` come from a generator
seeded with ``(seed, s)``: they do not depend on thread timing, and a run resumed at step ``s``
sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import math
import queue
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from . import data as _data
from .augment import AugmentConfig, augment
from .checkpoint import Checkpoint, default_meta, save_model
from .device import DEVICE_CHOICES, resolve_device
from .events import LossReport, Preview, Progress, ValidationReport
from .losses import crop_to_output, soft_dice_loss, weighted_cross_entropy
from .model import UNet
from .weights import class_weight_map, foreground_target, weight_map

LOSSES = ("weighted_ce", "dice", "weighted_ce+dice")
OPTIMIZERS = ("sgd", "adam")
MAX_PREVIEW = 512

# Preset defaults for the fields left as None. "paper": the paper's SGD with momentum 0.99,
# one big tile per step. "fast": Adam on a batch of smaller tiles, which converges in far fewer
# steps on a laptop (see docs/paper.md for the measurement behind the learning rates).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(optimizer="sgd", lr=1e-2, batch_size=1, tile_size=572, momentum=0.99,
                  augment=AugmentConfig.paper()),
    "fast": dict(optimizer="adam", lr=1e-3, batch_size=4, tile_size=256, momentum=0.9,
                 augment=AugmentConfig()),
}


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run. Fields left as None take the preset's value.

    Parameters
    ----------
    preset : {"paper", "fast"}
        ``"paper"``: SGD, momentum 0.99, batch 1, 572-px tiles, geometric augmentation only.
        ``"fast"``: Adam, batch 4, 256-px tiles, geometric + intensity augmentation.
    iterations : int
        Total number of optimizer steps (a resumed run continues up to this count).
    lr : float, optional
        Learning rate (constant).
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
    class_weights : "balanced", sequence of floats, or None
        Class balancing of the weight map (see :func:`napari_unet.core.weights.weight_map`).
    separate_touching : bool
        Train on a 1-px background gap between touching objects (instance mode).
    loss : {"weighted_ce", "dice", "weighted_ce+dice"}
        The paper's weighted cross-entropy, soft Dice, or their sum.
    augment : AugmentConfig or dict, optional
        Augmentation (``AugmentConfig.none()`` switches it off).
    validate_every : int
        Steps between validation passes on the held-out part (0 = never).
    preview_every_s : float
        Wall-clock seconds between preview predictions (0 = after every step).
    seed : int
        Seed of patch sampling, augmentation and dropout.
    device : {"auto", "cuda", "mps", "cpu"}
    prefetch : int
        Batches prepared ahead by the background thread.
    """

    preset: str = "fast"
    iterations: int = 500
    lr: float | None = None
    batch_size: int | None = None
    tile_size: int | None = None
    optimizer: str | None = None
    momentum: float | None = None
    weight_decay: float = 0.0
    w0: float = 10.0
    sigma: float = 5.0
    class_weights: str | tuple[float, ...] | None = "balanced"
    separate_touching: bool = True
    loss: str = "weighted_ce"
    augment: AugmentConfig | None = None
    validate_every: int = 50
    preview_every_s: float = 2.0
    seed: int = 0
    device: str = "auto"
    prefetch: int = 2

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {self.preset!r}")
        defaults = PRESETS[self.preset]
        for name in ("lr", "batch_size", "tile_size", "optimizer", "momentum", "augment"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, defaults[name])
        if isinstance(self.augment, dict):
            object.__setattr__(self, "augment", AugmentConfig(**self.augment))
        if not isinstance(self.augment, AugmentConfig):
            raise ValueError(f"augment must be an AugmentConfig, got {type(self.augment).__name__}")
        _positive_int(self, "iterations")
        _positive_int(self, "batch_size")
        _positive_int(self, "tile_size")
        _positive_int(self, "prefetch")
        if not _finite(self.lr) or self.lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
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
        cw = self.class_weights
        if isinstance(cw, str):
            if cw != "balanced":
                raise ValueError(f"class_weights must be 'balanced', None or a sequence of "
                                 f"floats, got {cw!r}")
        elif cw is not None:
            try:
                values = tuple(float(v) for v in cw)
            except (TypeError, ValueError):
                raise ValueError(f"class_weights must be 'balanced', None or a sequence of "
                                 f"floats, got {cw!r}") from None
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

    @classmethod
    def paper(cls, **overrides: Any) -> TrainConfig:
        """The paper's recipe (SGD, momentum 0.99, batch 1, 572-px tiles), with overrides."""
        return cls(**{"preset": "paper", **overrides})

    @classmethod
    def fast(cls, **overrides: Any) -> TrainConfig:
        """Adam, batch 4, 256-px tiles: quicker convergence for interactive fine-tuning."""
        return cls(**{"preset": "fast", **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` (e.g. a checkpoint's ``meta["training"]``)."""
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


def _positive_int(config: TrainConfig, name: str) -> None:
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    object.__setattr__(config, name, int(value))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) \
        and math.isfinite(float(value))


# -- data preparation (background thread) ----------------------------------------------------
class _BatchMaker:
    """Builds the batch of one step: ``(image (N, C, T, T), target (N, h, w), weights (N, h, w))``.

    Holds no reference to the :class:`Trainer`, so a waiting producer thread never keeps a
    trainer (and its model) alive.
    """

    def __init__(self, samples: Any, config: TrainConfig, tile: int, margin: int,
                 out_hw: tuple[int, int], num_classes: int) -> None:
        self.samples = samples
        self.config = config
        self.tile = tile
        self.margin = margin
        self.out_hw = out_hw
        self.num_classes = num_classes
        self.instances_mode = samples.mode == "instances"

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([int(self.config.seed), int(step)])
        items = [self.item(rng) for _ in range(self.config.batch_size)]
        image = torch.from_numpy(np.stack([i[0] for i in items]))
        target = torch.from_numpy(np.stack([i[1] for i in items]))
        weights = torch.from_numpy(np.stack([i[2] for i in items]))
        return image, target, weights

    def item(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cfg = self.config
        # The output region is sampled from the training part; a valid net's context around
        # it comes from the image where it exists and is mirrored beyond.
        image, labels, ignore = _patch_arrays(
            self.samples.sample_patch(rng, self.out_hw, self.margin))
        image, labels, ignore = augment(image, labels, ignore, rng, cfg.augment)
        # The weight map sees the whole tile, so objects in the context still count for d1/d2.
        target, weights = targets_and_weights(labels, ignore, self.instances_mode,
                                              self.num_classes, cfg)
        target = crop_to_output(target, self.out_hw)
        weights = crop_to_output(weights, self.out_hw)
        return (np.ascontiguousarray(image, np.float32),
                np.ascontiguousarray(target, np.int64),
                np.ascontiguousarray(weights, np.float32))


def targets_and_weights(
    labels: np.ndarray,
    ignore: np.ndarray | None,
    instances_mode: bool,
    num_classes: int,
    config: TrainConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Training target and per-pixel loss weights of one label patch.

    Parameters
    ----------
    labels : (H, W) int
        Instances (instance mode) or classes (semantic mode).
    ignore : (H, W) bool or None
        True = not annotated (weight 0).
    instances_mode : bool
        Instances -> 0/1 target with the paper's weight map; otherwise classes with class
        balancing.
    num_classes : int
        Classes of the net (semantic mode).
    config : TrainConfig
        ``w0``, ``sigma``, ``class_weights``, ``separate_touching``.

    Returns
    -------
    target : (H, W) int64
    weights : (H, W) float32
    """
    labels = np.asarray(labels)
    if ignore is not None and ignore.all():
        # A patch with nothing annotated contributes nothing (weight_map refuses it).
        return np.zeros(labels.shape, np.int64), np.zeros(labels.shape, np.float32)
    if instances_mode:
        target = foreground_target(labels, config.separate_touching)
        weights = weight_map(labels, config.w0, config.sigma, config.class_weights, ignore,
                             config.separate_touching)
    else:
        target = labels if ignore is None else np.where(ignore, 0, labels)
        weights = class_weight_map(labels, num_classes, config.class_weights, ignore)
    return target.astype(np.int64), weights.astype(np.float32)


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


class _Prefetcher:
    """A daemon thread filling a small queue with the batches of steps ``start .. stop - 1``.

    The thread stops when it has produced everything, when :meth:`stop` is called, or when this
    object is garbage-collected (the generator that owns it was dropped).
    """

    def __init__(self, make_batch: _BatchMaker, start: int, stop: int, depth: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_produce, args=(make_batch, start, stop, self._queue, self._stop),
            name="napari-unet-train-data", daemon=True,
        )
        weakref.finalize(self, self._stop.set)
        self._thread.start()

    def get(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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

    def stop(self) -> None:
        self._stop.set()


def _produce(make_batch: _BatchMaker, start: int, stop: int, out: queue.Queue,
             stopped: threading.Event) -> None:
    for step in range(start, stop):
        try:
            item = ("batch", make_batch(step))
        except Exception as err:  # handed to the training loop, which re-raises it
            item = ("error", err)
        while not stopped.is_set():
            try:
                out.put(item, timeout=0.2)
                break
            except queue.Full:
                continue
        if stopped.is_set() or item[0] == "error":
            return


# -- the trainer -----------------------------------------------------------------------------
class Trainer:
    """Train ``model`` on ``samples``; iterate :meth:`events` to run.

    Parameters
    ----------
    model : UNet
        Trained in place (moved to the configured device).
    samples : napari_unet.core.data.TrainingSet
        Images, labels and the held-out validation part; its labels may be updated while
        training runs (picked up within ``config.prefetch + 1`` steps).
    config : TrainConfig, optional
        Defaults to ``TrainConfig()`` (the "fast" preset).
    checkpoint_state : Checkpoint or dict, optional
        Resume: a :class:`~napari_unet.core.checkpoint.Checkpoint` (or a dict with ``step`` and
        ``optimizer_state``) whose step count and optimizer state are restored. The model
        weights are taken from ``model`` (pass ``checkpoint.model``).

    Attributes
    ----------
    step : int
        Optimizer steps done so far.
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
    ) -> None:
        self.config = TrainConfig() if config is None else config
        if not isinstance(self.config, TrainConfig):
            raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.model = model
        self.samples = samples
        self._check_compatible()
        self.tile = self.config.tile_for(model)
        self.output_hw = model.output_shape((self.tile, self.tile))
        self.device = resolve_device(self.config.device)
        model.to(self.device)
        self.optimizer = self._make_optimizer()
        self.step = 0
        if checkpoint_state is not None:
            self._restore(checkpoint_state)
        self._has_dropout = any(isinstance(m, torch.nn.Dropout) and m.p > 0
                                for m in model.modules())
        self._prefetcher: weakref.ref | None = None
        # Micrometres per pixel of the training images, stored with the model when known.
        self.pixel_size: float | None = getattr(samples, "pixel_size", None)

    # -- public --------------------------------------------------------------------------
    def events(
        self, preview: np.ndarray | None = None
    ) -> Iterator[Progress | LossReport | ValidationReport | Preview]:
        """Run steps until ``config.iterations``, yielding events after each optimizer step.

        Per step, in order: ``Progress(step, iterations)``, ``LossReport(step, loss, lr)``,
        then ``ValidationReport`` every ``validate_every`` steps and at the last step (when the
        samples have a validation part), then ``Preview`` when ``preview`` is given and
        ``preview_every_s`` seconds have passed since the last one (also after the first and
        the last step).

        Parameters
        ----------
        preview : (h, w) or (C, h, w) array, optional
            A raw (un-normalised) image crop of at most 512 x 512 pixels to predict now and
            then; it is normalised with the samples' normalisation spec.

        Notes
        -----
        Calling ``events()`` again after stopping continues from :attr:`step`.
        """
        preview_input = self._prepare_preview(preview) if preview is not None else None
        self.close()
        cfg = self.config
        total = cfg.iterations
        if self.step >= total:
            return
        maker = _BatchMaker(self.samples, cfg, self.tile, self.model.context, self.output_hw,
                            self.model.num_classes)
        prefetcher = _Prefetcher(maker, self.step, total, cfg.prefetch)
        self._prefetcher = weakref.ref(prefetcher)
        last_preview = -math.inf
        while self.step < total:
            image, target, weights = prefetcher.get()
            loss = self._train_step(image, target, weights)
            lr = float(self.optimizer.param_groups[0]["lr"])
            yield Progress(self.step, total, f"loss {loss:.4g}")
            yield LossReport(self.step, loss, lr)
            last = self.step == total
            if cfg.validate_every and (self.step % cfg.validate_every == 0 or last) \
                    and self._has_validation():
                yield self.validate()
            now = time.monotonic()
            if preview_input is not None and (now - last_preview >= cfg.preview_every_s
                                              or last):
                last_preview = now
                yield Preview(self.step, self._predict_foreground(preview_input))
        prefetcher.stop()

    def validate(self) -> ValidationReport:
        """Loss and metrics on the samples' validation part (model left in train mode).

        Metrics: ``loss`` (the training loss), ``iou`` (foreground IoU in instance mode, mean
        IoU of the non-background classes in semantic mode) and, in instance mode on fully
        annotated items, ``ap50`` (average precision at IoU 0.5 of the instances).
        """
        from .metrics import average_precision, iou_per_class, pixel_iou
        from .postprocess import instances_from_probability

        instances_mode = self.samples.mode == "instances"
        sums: dict[str, list[float]] = {"loss": [], "iou": [], "ap50": []}
        self.model.eval()
        with torch.no_grad():
            for item in self._validation_items():
                image, labels, ignore = _patch_arrays(item)
                logits = self._forward_full(image)
                target, weights = targets_and_weights(labels, ignore, instances_mode,
                                                      self.model.num_classes, self.config)
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
        self.model.train()
        return ValidationReport(self.step, {k: float(np.mean(v)) for k, v in sums.items() if v})

    def save(self, path: Any) -> Any:
        """Write the model with its meta and optimizer state (see
        :func:`napari_unet.core.checkpoint.save_model`); returns the path."""
        return save_model(path, self.model, self.meta(), self.optimizer.state_dict())

    def meta(self) -> dict[str, Any]:
        """What a checkpoint of the current state says about the model."""
        s = self.samples
        extra = {
            "mode": s.mode,
            "normalization": dict(s.normalization),
            "object_diameter": _optional_float(getattr(s, "object_diameter", None)),
            "pixel_size": _optional_float(self.pixel_size),
            "training": self.config.to_dict(),
            "step": int(self.step),
        }
        names = getattr(s, "class_names", None)
        if names:
            extra["class_names"] = list(names)
        return default_meta(self.model, **extra)

    def close(self) -> None:
        """Stop the background data thread of the current :meth:`events` run, if any."""
        prefetcher = self._prefetcher() if self._prefetcher is not None else None
        if prefetcher is not None:
            prefetcher.stop()
        self._prefetcher = None

    # -- internals -----------------------------------------------------------------------
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
        params = self.model.parameters()
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def _restore(self, state: Checkpoint | dict[str, Any]) -> None:
        if isinstance(state, Checkpoint):
            step, opt = state.meta.get("step", 0), state.optimizer_state
        else:
            step, opt = state.get("step", 0), state.get("optimizer_state")
        self.step = int(step or 0)
        if opt is not None:
            try:
                self.optimizer.load_state_dict(opt)
            except (ValueError, KeyError) as err:
                raise ValueError(
                    f"cannot resume: the saved optimizer state does not fit a "
                    f"{self.config.optimizer!r} optimizer on this model ({err})"
                ) from err

    def _train_step(self, image: torch.Tensor, target: torch.Tensor,
                    weights: torch.Tensor) -> float:
        dev = self.device
        image = image.to(dev, non_blocking=True)
        target = target.to(dev, non_blocking=True)
        weights = weights.to(dev, non_blocking=True)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        if self._has_dropout:
            # Dropout masks seeded by (seed, step), so a resumed run repeats an uninterrupted
            # one; fork_rng keeps the caller's global torch RNG untouched.
            devices = [dev] if dev.type in ("cuda", "mps") else []
            with torch.random.fork_rng(devices=devices, device_type=dev.type
                                       if devices else "cuda"):
                torch.manual_seed(self.config.seed * 1_000_003 + self.step)
                loss = self._loss(self.model(image), target, weights)
                loss.backward()
        else:
            loss = self._loss(self.model(image), target, weights)
            loss.backward()
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    def _loss(self, logits: torch.Tensor, target: torch.Tensor,
              weights: torch.Tensor) -> torch.Tensor:
        kind = self.config.loss
        total = logits.new_zeros(())
        if kind in ("weighted_ce", "weighted_ce+dice"):
            total = total + weighted_cross_entropy(logits, target, weights)
        if kind in ("dice", "weighted_ce+dice"):
            total = total + soft_dice_loss(logits, target, weights > 0)
        return total

    def _has_validation(self) -> bool:
        return len(self._validation_items()) > 0

    def _validation_items(self) -> Sequence[Any]:
        return list(self.samples.validation_items())

    def _forward_full(self, image: np.ndarray) -> torch.Tensor:
        """Logits ``(K, H, W)`` of a whole normalised ``(C, H, W)`` image (eval mode, no grad).

        Valid nets see the image mirror-padded by their context (and up to a legal size).
        """
        return _forward_full(self.model, image, self.device)

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
        return np.asarray(_data.normalize(arr, self.samples.normalization, 0), np.float32)

    def _predict_foreground(self, image: np.ndarray) -> np.ndarray:
        self.model.eval()
        with torch.no_grad():
            probs = torch.softmax(self._forward_full(image), 0)
        self.model.train()
        # Semantic nets: "foreground" = anything but class 0.
        return (1.0 - probs[0]).cpu().numpy().astype(np.float32)


def _forward_full(model: UNet, image: np.ndarray, device: torch.device) -> torch.Tensor:
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = image[None]
    h, w = image.shape[-2:]
    if model.is_valid:
        c = model.context
        th, tw = model.valid_input_shape((h + 2 * c, w + 2 * c))
        pad = ((0, 0), (c, th - h - c), (c, tw - w - c))
        image = _mirror_pad(image, pad)
    x = torch.from_numpy(np.ascontiguousarray(image))[None].to(device)
    logits = model(x)[0]
    return logits[:, :h, :w]


def _mirror_pad(image: np.ndarray, pad: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Symmetric mirror padding (the convention of core.data/augment); repeats the mirror for
    pads larger than the image."""
    while any(b > n or a > n for (a, b), n in zip(pad, image.shape, strict=True)):
        step = tuple((min(a, n), min(b, n)) for (a, b), n in zip(pad, image.shape, strict=True))
        image = np.pad(image, step, mode="symmetric")
        pad = tuple((a - s0, b - s1) for (a, b), (s0, s1) in zip(pad, step, strict=True))
    return np.pad(image, pad, mode="symmetric")


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
) -> Iterator[Progress | LossReport | ValidationReport | Preview]:
    """Convenience generator: ``Trainer(model, samples, config).events(preview)``."""
    yield from Trainer(model, samples, config).events(preview)


__all__ = ["LOSSES", "PRESETS", "TrainConfig", "Trainer", "targets_and_weights", "train"]
