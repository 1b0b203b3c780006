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
something and can choose (:func:`.validation.validation_plan`), the weights of the best
validation score are kept in memory and :meth:`Trainer.save` writes those, recording their step as
``best_step``; otherwise the last weights, and a :class:`Message` says so.

**Data.** Patches (annotation-aware, :mod:`core.training.sampling`) are prepared ahead of the
step that needs them, in ``config.workers`` spawned processes (:mod:`napari_unet.core.
batchworkers`: the GIL-holding warps and weight maps never stall a viewer) or, with
``workers=0``, in one background thread. The patches of step ``s`` depend only on
``(seed, s)`` and the labels, never on timing.

**Collaborators.** The trainer runs the parts of a run in order; each lives in its own module:
the step (:mod:`.fitting`), the optimizer and its warm-up (:mod:`.optimizer`), the moving
average of the weights (:mod:`.averaging`), the "predicted" class weights
(:mod:`.class_weights`), the validation metrics and score (:mod:`.validation`), the step and
time budget with its ETA (:mod:`.budget`) and the batch sources (:mod:`.sources`).
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from ..events import LossReport, Message, Preview, Progress, ValidationReport
from ..io.resources import check_memory
from ..model.checkpoint import Checkpoint, save_model
from ..model.meta import ModelMeta
from ..model.unet import UNet
from ..normalize import normalize
from ..runtime.device import resolve_device
from ..runtime.threads import torch_threads
from .averaging import WeightAverage
from .batch_workers import BatchWorkers
from .budget import RunBudget
from .class_weights import predicted_class_weights
from .config import TrainConfig
from .fitting import Fitter, forward_full
from .gaps import StartModelGaps
from .hints import BackgroundHint, hint_events
from .optimizer import make_optimizer
from .sources import ThreadSource, batch_spec, training_bytes
from .validation import validation_metrics, validation_plan, validation_score
from .weight_map import targets_and_weights

MAX_PREVIEW = 512


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
        check_memory(training_bytes(model, self.tile, self.config, self.device.type),  # refused
                     f"training on batches of {self.config.batch_size} tiles of {self.tile} px")
        model.to(self.device)
        # the layout the config asks for, whatever the net came in (models loaded for the CPU
        # are channels-last: core.model.checkpoint)
        model.to(memory_format=torch.channels_last if self.config.channels_last
                 else torch.contiguous_format)
        self.optimizer = make_optimizer(model, self.config)
        # the step, with a frozen copy of the starting weights when distilling
        self._fitter = Fitter(model, self.optimizer, self.config, self.device)
        self.step = 0
        # the moving average of the weights (config.average), started when a run starts; while
        # no run is going on the model holds it, and the live weights wait there
        self._averaging = WeightAverage(model, self.config.average, self._fitter.writing)
        # the starting weights' gaps and foreground (config.keep_gaps), for the first run
        self._gaps = BackgroundHint(StartModelGaps(model, self.config.keep_gaps, self.device)) \
            if self.config.keep_gaps and samples.mode == "instances" \
            and hasattr(samples, "set_background_hint") else None
        if checkpoint_state is not None:
            self._restore(checkpoint_state)
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
        budget = RunBudget(cfg.step_limit, cfg.minutes, cfg.iterations is not None, self.clock(),
                           self.step)
        if self.step >= cfg.step_limit:
            return
        # a held-out part too small to measure anything gives no figure at all (a score of 0
        # or 1 from one object's outline would mislead); a small one gives figures only
        meaningful, chooses, note = validation_plan(self.samples, cfg.validate_every,
                                                    cfg.keep_best)
        cw = self.class_weights()
        if cfg.class_weights == "predicted" and isinstance(cw, tuple):
            yield Message("class weights "
                          f"{', '.join(f'{w:.2f}' for w in cw)} from the classes the model "
                          "sees in the whole images", data={"class_weights": cw})
        if self._gaps is not None:  # (a stop mid-way leaves the planes done in it)
            yield from hint_events(self._gaps, self.samples)
            self._gaps = None  # (the samples keep it for planes painted later)
        if note:  # last: the dock shows the latest note
            yield Message(note)
        source = self._open_source(self.step, cfg.step_limit)
        self._averaging.begin()
        with torch_threads(cfg.threads):
            yield from self._loop(source, preview_input, budget, meaningful, chooses)

    def _loop(self, source: Any, preview_input: np.ndarray | None, budget: RunBudget,
              meaningful: bool, chooses: bool) -> Iterator[Any]:
        cfg = self.config
        total = cfg.step_limit
        last_preview = -math.inf
        first_step = budget.first_step
        validated_at = None
        try:
            while self.step < total:
                if budget.out_of_time(self.clock()):
                    yield Message(f"time budget of {cfg.minutes:g} min reached after "
                                  f"{self.step - first_step} steps (step {self.step})",
                                  data={"reason": "minutes", "step": self.step})
                    if meaningful and self.step > first_step \
                            and validated_at != self.step and self._has_validation():
                        yield self._validate_and_track(chooses)
                    break
                image, target, weights = source.get(self.step)
                loss = self._train_step(torch.from_numpy(image), torch.from_numpy(target),
                                        torch.from_numpy(weights))
                lr = float(self.optimizer.param_groups[0]["lr"])
                shown_total, eta = budget.step_done(self.step, self.clock())
                if shown_total is not None:  # (a time budget: once the rate is measured)
                    yield Progress(self.step, shown_total, f"loss {loss:.4g}", eta_s=eta,
                                   rate=budget.rate)
                yield LossReport(self.step, loss, lr)
                last = self.step == total
                if meaningful and (self.step % cfg.validate_every == 0 or last) \
                        and self._has_validation():
                    yield self._validate_and_track(chooses)
                    validated_at = self.step
                t = self.clock()
                if preview_input is not None and (t - last_preview >= cfg.preview_every_s
                                                  or last):
                    last_preview = t
                    yield Preview(self.step, self._predict_foreground(preview_input))
        finally:
            source.close()
            self._averaging.end()  # the run gives the average
        if self._best_state is not None and self.best_step != self.step:
            yield Message(f"best validation score {self.best_score:.3f} at step "
                          f"{self.best_step}: save() writes those weights",
                          data={"best_step": self.best_step, "score": self.best_score})

    def _validate_and_track(self, choose: bool) -> ValidationReport:
        with self.evaluation_weights():
            report = self.validate()
            if choose:
                score = validation_score(report.metrics)
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
        with self._averaging.evaluation_weights():
            yield self.model

    @contextmanager
    def kept_weights(self) -> Iterator[UNet]:
        """Inside, :attr:`model` holds the weights :meth:`save` writes: those of the best
        validation score when kept from an earlier step, else :meth:`evaluation_weights`."""
        if self._best_state is None or self.best_step == self.step:
            with self.evaluation_weights():
                yield self.model
            return
        current = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        try:
            self.model.load_state_dict(self._best_state)
            yield self.model
        finally:
            self.model.load_state_dict(current)

    def validate(self) -> ValidationReport:
        """Loss and metrics on the samples' validation part (model left in train mode).

        Metrics: ``loss`` (the training loss), ``iou`` (foreground IoU in instance mode, mean
        IoU of the non-background classes in semantic mode) and, in instance mode on fully
        annotated items, ``ap50`` (average precision at IoU 0.5 of the instances).
        """
        metrics = validation_metrics(self.model, self._validation_items(),
                                     self.samples.mode == "instances", self._forward_full,
                                     self._validation_loss)
        self._fitter.train_mode()
        return ValidationReport(self.step, metrics)

    def _validation_loss(self, logits: torch.Tensor, labels: np.ndarray,
                         ignore: np.ndarray | None) -> float:
        cfg = self.config
        target, weights = targets_and_weights(
            labels, ignore, self.samples.mode == "instances", self.model.num_classes, cfg.w0,
            cfg.sigma, self.class_weights(), cfg.separate_touching)
        t = torch.from_numpy(target)[None].to(self.device)
        w = torch.from_numpy(weights)[None].to(self.device)
        return float(self._fitter.loss(logits[None], t, w))

    def save(self, path: Any, best: bool = True, overwrite: bool = True,
             hint: str = "overwrite=True") -> Any:
        """Write the model with its meta (see :func:`napari_unet.core.model.checkpoint.save_model`,
        which takes ``overwrite`` and ``hint``).

        With ``best`` (default) and a best validation step kept in memory, the file holds those
        weights (``meta.step == meta.best_step``, no optimizer state: resuming restarts the
        optimizer); otherwise the current weights with their optimizer state. Returns the path.
        """
        if best and self._best_state is not None and self.best_step != self.step:
            with self.kept_weights():
                meta = self.meta().replace(step=int(self.best_step),
                                           best_step=int(self.best_step))
                return save_model(path, self.model, meta, None, overwrite=overwrite, hint=hint)
        meta = self.meta()
        if self.best_step is not None and self.best_step == self.step:
            meta = meta.replace(best_step=int(self.step))
        live = self._averaging.live_state_dict()
        with self.evaluation_weights():
            return save_model(path, self.model, meta, self.optimizer.state_dict(),
                              overwrite=overwrite, hint=hint, live_state=live)

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
        if getattr(s, "channel", None) is not None:
            extra["channel"] = int(s.channel)
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
        (computed once: fixed weights from the class shares the starting model predicts)."""
        cw = self.config.class_weights
        if cw != "predicted":
            return cw
        if self._predicted_weights is None:
            self._predicted_weights = predicted_class_weights(
                self.samples.snapshot(), self.model.num_classes, self._eval_logits)
        return self._predicted_weights

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

    def _restore(self, state: Checkpoint | dict[str, Any]) -> None:
        if isinstance(state, Checkpoint):
            step, opt, live = state.meta.step, state.optimizer_state, state.live_state
        else:
            step, opt = state.get("step", 0), state.get("optimizer_state")
            live = state.get("live_state")
        self.step = int(step or 0)
        if live is not None:  # the model holds the moving average of the saved run
            self._averaging.resume(live, self.device)
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
        loss = self._fitter.gradients(image, target, weights, self.step)
        with self._fitter.writing():  # the step, its count and the average: all or nothing
            self._fitter.apply()
            self.step += 1
            self._averaging.update()
        return loss

    @property
    def updating(self) -> bool:
        """Whether the weights are being written now (see :meth:`Fitter.writing`): a stop
        request from a signal handler waits for the end; stopped at any other moment, the
        model is that of the last whole step."""
        return self._fitter.updating

    def _has_validation(self) -> bool:
        return len(self._validation_items()) > 0

    def _validation_items(self) -> Sequence[Any]:
        return list(self.samples.validation_items())

    def _forward_full(self, image: np.ndarray) -> torch.Tensor:
        """Logits ``(K, H, W)`` of a whole normalised ``(C, H, W)`` image (eval mode, no grad).

        Valid nets see the image mirror-padded by their context (and up to a legal size).
        """
        return forward_full(self.model, image, self.device)

    def _eval_logits(self, image: np.ndarray) -> torch.Tensor:
        """:meth:`_forward_full` in eval mode without gradients (train mode again after)."""
        self.model.eval()
        with torch.no_grad():
            logits = self._forward_full(image)
        self._fitter.train_mode()
        return logits

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
        self._fitter.train_mode()
        # Semantic nets: "foreground" = anything but class 0.
        return (1.0 - probs[0]).cpu().numpy().astype(np.float32)


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


__all__ = ["Trainer", "forward_full", "train", "warm_up_imports"]
