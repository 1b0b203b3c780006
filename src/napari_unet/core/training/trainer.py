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
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from ..events import LossReport, Message, Preview, Progress, ValidationReport
from ..model.checkpoint import Checkpoint, save_model
from ..model.meta import ModelMeta
from ..model.unet import UNet
from ..normalize import normalize
from ..runtime.device import resolve_device
from ..runtime.threads import torch_threads
from . import losses as _losses
from .batch_workers import BatchWorkers
from .config import (
    TrainConfig,
)
from .sampling import mirror_indices
from .sources import ThreadSource, batch_spec, patch_arrays
from .validation import validation_is_meaningful
from .weight_map import targets_and_weights

MAX_PREVIEW = 512
#: "predicted" class weights look at (at most) this many rows and columns of a plane, and at
#: planes spread over the training set until they have seen this many pixels (the finetune
#: preset's: it runs before the first step, so a big stack must not hold the start up) ...
PREDICTED_WEIGHTS_SIDE = 1024
PREDICTED_WEIGHTS_PIXELS = 1024 * 1024
#: ... and weigh a rare class at most this much more than the most frequent one.
MAX_PREDICTED_WEIGHT = 10.0

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
                image, labels, ignore = patch_arrays(item)
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
            source = ThreadSource(self.samples, spec, start, stop, cfg.prefetch)
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


__all__ = ["Trainer", "forward_full", "frozen_parameters", "train", "warm_up_imports"]
