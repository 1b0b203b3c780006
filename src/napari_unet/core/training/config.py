"""Training settings: TrainConfig, its presets and the choices it checks."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..model.unet import UNet
from ..runtime.device import DEVICE_CHOICES, check_device_name
from ..settings import check_declared, number_or, setting
from . import losses as _losses
from .augment import AugmentConfig
from .batch_workers import auto_workers

LOSSES = tuple(_losses.LOSSES)
OPTIMIZERS = ("sgd", "adam")
CLASS_WEIGHTS = ("auto", "balanced", "predicted")
#: The longest time budget accepted (minutes): anything longer is a typo.
MAX_MINUTES = 24 * 60.0
#: Steps of a run given neither a step count nor a time budget. With a time budget and no step
#: count there is no step limit: "train for 3 minutes" means 3 minutes on any machine.
DEFAULT_ITERATIONS = 500

#: Top levels of the U the finetune preset keeps frozen (see ``TrainConfig.frozen_levels``).
FINETUNE_FROZEN_LEVELS = 2
#: Reach (px) of the gaps between objects the finetune preset keeps (``TrainConfig.keep_gaps``).
FINETUNE_GAP_RADIUS = 3
#: Share of the way back to the starting weights after each step (``TrainConfig.anchor``).
FINETUNE_ANCHOR = 0.01

# Preset defaults for the fields left as None. "paper": the paper's SGD with momentum 0.99,
# one big tile per step. "fast": Adam on a batch of smaller tiles, which converges in far fewer
# steps on a laptop (see docs/paper.md for the measurement behind the learning rates).
# "finetune": starting from a trained model on a few painted objects (benchmarks/
# bench_finetune.py): small tiles centred on the annotations, a short warm-up, and a lower
# rate for the contracting path and its top levels frozen, so the features the model already
# has survive, class weights from what the model predicts, so outlines keep their width, and
# the gaps the model sees between unpainted objects kept, so touching ones stay apart.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(optimizer="sgd", lr=1e-2, batch_size=1, tile_size=572, momentum=0.99,
                  augment=AugmentConfig.paper(), warmup_steps=0, encoder_lr_scale=1.0,
                  frozen_levels=0, channels_last=False, class_weights="balanced", distill=0.0,
                  average=0.0, keep_gaps=0, anchor=0.0),
    "fast": dict(optimizer="adam", lr=1e-3, batch_size=4, tile_size=256, momentum=0.9,
                 augment=AugmentConfig(), warmup_steps=0, encoder_lr_scale=1.0,
                 frozen_levels=0, channels_last=False, class_weights="balanced", distill=0.0,
                 average=0.0, keep_gaps=0, anchor=0.0),
    "finetune": dict(optimizer="adam", lr=1e-3, batch_size=4, tile_size=128, momentum=0.9,
                     augment=AugmentConfig(), warmup_steps=5, encoder_lr_scale=0.3,
                     frozen_levels=FINETUNE_FROZEN_LEVELS, channels_last=True,
                     class_weights="predicted", distill=0.0, average=0.995,
                     keep_gaps=FINETUNE_GAP_RADIUS, anchor=FINETUNE_ANCHOR),
}
_PRESET_FIELDS = ("lr", "batch_size", "tile_size", "optimizer", "momentum", "augment",
                  "warmup_steps", "encoder_lr_scale", "frozen_levels", "channels_last",
                  "distill", "average", "keep_gaps", "anchor")

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
        two lowest levels always train: more are capped). The deeper levels learn the new
        images' nuclei while the fine-detail layers keep what the model learned from many,
        and steps are faster (docs/decisions.md, "Fine-tuning preset: the two top levels
        frozen"). ``finetune``: ``FINETUNE_FROZEN_LEVELS``, the others 0.
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
        for ``finetune``). ``"predicted"``: fixed weights from the class shares the starting
        model predicts over the whole training images (the balance the images would have if
        fully painted), however much is painted: the most frequent class weighs 1, a rarer one
        the square root of how much rarer it is. Balancing each patch's few painted pixels
        thins every outline (and a dense cluster's seams shrink its nuclei), the full share
        ratio merges touching nuclei, the square root keeps both (docs/decisions.md, "Class
        weights from what the model predicts").
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
        (``core.training.losses.distillation``; 0 in every preset). Costs one forward pass of
        the starting net per step. It also holds the starting model's outlines where the paint
        corrects them: the finetune preset keeps only the gaps between objects instead
        (``keep_gaps``; docs/decisions.md).
    average : float, optional
        Decay of an exponential moving average of the weights, started at the run's first
        weights and updated after every step. Previews, validation (so the best model kept)
        and the model a run gives (saved, and in ``Trainer.model`` after the run) are the
        average; the optimizer steps the live weights (docs/decisions.md). ``finetune``: 0.995;
        the others 0 (the last weights). A checkpoint holds the average as its weights and the live
        weights beside them (``Checkpoint.live_state``), so a run resumed from it goes on
        exactly; calling ``events()`` again does too.
    keep_gaps : int, optional
        Reach in pixels of the gaps between objects kept as background where nothing is
        painted (:mod:`napari_unet.core.training.gaps`; ``finetune``: 3, the others 0). The
        same pass finds the paint the starting model gets wrong (:mod:`.sampling`).
    anchor : float, optional
        After every step the weights move this share of the way back to the weights the
        training started from (``finetune``: 0.01, the others 0): the paint moves them, but a
        long run cannot drift far (docs/decisions.md).
    """

    preset: str = setting(
        "fast", label="recipe", flag="--preset", dock=False,
        choices=(("finetune", "finetune"), ("fast", "fast"), ("paper", "paper")),
        help="A set of training settings. finetune: adapt a trained model to a few painted "
             "objects (the choice when starting from a trained model); fast: train a new "
             "network quickly; paper: the original paper's settings.")
    minutes: float | None = setting(
        None, label="train for", unit="minutes", kind="float", flag="--minutes", minimum=0.0,
        maximum=MAX_MINUTES, step=0.5, none_text="no time limit", dock_default=3.0,
        help="Time budget: training stops after this many minutes or the step count, "
             "whichever comes first, and the model is saved either way.")
    iterations: int | None = setting(
        None, label="at most", unit="steps", kind="int", flag="--iterations", minimum=0,
        maximum=10**7, step=50, none_text="no step limit", dock_default=None,
        help="Stop after this many training steps. With a time budget and no step count, "
             "training runs for the time given; with neither, for 500 steps.")
    lr: float | None = setting(
        None, label="learning rate", kind="float", flag="--lr", minimum=0.0, maximum=1.0,
        step=1e-4, decimals=6, advanced=True,
        help="How big each training step is. The recipe's value suits most cases; lower it "
             "if the loss jumps around, raise it if it falls very slowly.")
    warmup_steps: int | None = setting(
        None, label="warm-up", unit="steps", kind="int", flag="--warmup-steps", minimum=0,
        maximum=10**6, advanced=True, dock=False,
        help="Steps over which the learning rate rises from zero, so the first steps do not "
             "upset a trained model.")
    encoder_lr_scale: float | None = setting(
        None, label="encoder learning-rate factor", kind="float", flag="--encoder-lr-scale",
        minimum=0.0, maximum=10.0, advanced=True, dock=False,
        help="The learning rate of the network's first half (which reads the image) relative "
             "to the rest; 0 keeps it as it is.")
    frozen_levels: int | None = setting(
        None, label="frozen levels", kind="int", flag="--frozen-levels", minimum=0,
        maximum=8, advanced=True, dock=False,
        help="How many of the network's finest levels keep their trained weights. Fine-tuning "
             "on a few objects then changes only the coarser levels, and steps are faster.")
    batch_size: int | None = setting(
        None, label="batch size", kind="int", flag="--batch-size", minimum=1, maximum=256,
        advanced=True,
        help="How many image pieces one training step looks at. Larger batches give steadier "
             "steps but each takes longer.")
    tile_size: int | None = setting(
        None, label="tile size", unit="px", kind="int", flag="--tile-size", aliases=("--tile",),
        minimum=16, maximum=4096, step=16, advanced=True,
        help="Side of the image pieces the network trains on. Larger pieces show more context "
             "and take longer per step.")
    optimizer: str | None = setting(
        None, label="optimizer", flag="--optimizer", advanced=True, dock=False,
        choices=tuple((o, o) for o in OPTIMIZERS),
        help="sgd: the paper's gradient descent with momentum; adam: adapts the step size "
             "itself and usually learns faster.")
    momentum: float | None = setting(
        None, label="momentum", kind="float", flag="--momentum", minimum=0.0, maximum=1.0,
        advanced=True, dock=False,
        help="sgd only: how much of the previous steps carries into the next (0.99 in the "
             "paper).")
    weight_decay: float = setting(
        0.0, label="weight decay", flag="--weight-decay", minimum=0.0, maximum=1.0,
        advanced=True, dock=False,
        help="A small pull of all weights towards zero that can reduce overfitting; 0 is off.")
    w0: float = setting(
        10.0, label="border weight", flag="--border-weight", minimum=0.0, maximum=1000.0,
        step=0.5, advanced=True,
        help="How much more the narrow gaps between touching objects count in the loss than "
             "other pixels (the paper uses 10). Raise it when touching objects merge.")
    sigma: float = setting(
        5.0, label="border width", unit="px", flag="--border-width", minimum=0.0,
        maximum=1000.0, step=0.5, advanced=True,
        help="How far from a gap between objects its extra weight reaches, in pixels (the "
             "paper uses 5).")
    class_weights: str | tuple[float, ...] | None = setting(
        "auto", label="class balance", flag="--class-weights", advanced=True, dock=False,
        choices=tuple((c, c) for c in CLASS_WEIGHTS),
        help="How background and objects are weighed against each other. balanced: equally "
             "within each piece; predicted: by how much of each the model sees in the whole "
             "images, however much is painted; auto: what the recipe uses.")
    separate_touching: bool = setting(
        True, label="gap between touching objects", flag="--separate-touching",
        advanced=True, dock=False,
        help="Teach a one-pixel background gap between touching objects, so that they come "
             "out as separate objects.")
    loss: str = setting(
        "weighted_ce", label="loss", flag="--loss", advanced=True,
        choices=tuple((name, name.replace("weighted_ce", "weighted cross-entropy")
                       .replace("+", " + ")) for name in LOSSES),
        help="What training minimises: the paper's weighted cross-entropy, the Dice overlap, "
             "or both added.")
    augment: AugmentConfig | None = None
    annotated_bias: float | None = setting(
        None, label="share of pieces on painted pixels", kind="float",
        flag="--annotated-bias", minimum=0.0, maximum=1.0, none_text="auto", advanced=True,
        dock=False,
        help="Share of training pieces centred on a painted pixel (the rest anywhere). Auto "
             "centres every piece on something painted.")
    freeze_norm: bool = setting(
        False, label="keep normalisation statistics", flag="--freeze-norm", advanced=True,
        dock=False,
        help="Keep the trained model's batch-normalisation statistics, which a few painted "
             "pieces would otherwise overwrite.")
    keep_best: bool = setting(
        True, label="keep the best model", flag="--keep-best", advanced=True, dock=False,
        help="Keep the weights that scored best on the held-out part of the paint when it can "
             "tell (objects: 20 or more, painted all over); otherwise the last weights are kept.")
    validate_every: int = setting(
        50, label="validate every", unit="steps", flag="--validate-every", minimum=0,
        maximum=10**6, step=10, advanced=True,
        help="How often the model is scored on the held-out part of the paint; 0 never.")
    preview_every_s: float = setting(
        2.0, label="preview every", unit="s", minimum=0.0, maximum=3600.0, step=0.5,
        decimals=1, advanced=True,
        help="How often the live preview of the view is updated while training.")
    seed: int = setting(
        0, label="random seed", flag="--seed", minimum=0, maximum=2**31 - 1, advanced=True,
        dock=False,
        help="Start of the random choices (pieces, augmentation); the same seed and settings "
             "repeat a run.")
    device: str = setting(
        "auto", label="device", flag="--device", kind="choice", advanced=True,
        choices=tuple((d, d) for d in DEVICE_CHOICES), parse=check_device_name,
        metavar="auto|cpu|cuda|cuda:N|mps",
        help="Where the network trains. Auto takes an NVIDIA GPU, then an Apple GPU, then the "
             "processor.")
    prefetch: int = setting(
        2, label="batches ahead", flag="--prefetch", minimum=1, maximum=64, advanced=True,
        dock=False,
        help="How many batches are prepared ahead of the training step.")
    workers: int | str = setting(
        0, label="batch processes", kind="text", flag="--workers",
        parse=number_or("auto", int, "a whole number"), metavar="N|auto", advanced=True,
        dock=False, dock_default="auto",
        help="Processes that prepare batches beside the training: a number (0 prepares them "
             "in a thread) or auto.")
    threads: int | None = setting(
        None, label="threads", kind="int", flag="--threads", minimum=0, maximum=1024,
        none_text="as set", advanced=True, dock=False,
        help="Processor threads the network uses while training (given back afterwards).")
    channels_last: bool | None = setting(
        None, label="channels-last memory layout", flag="--channels-last", kind="choice",
        advanced=True, dock=False,
        choices=((None, "the recipe's"), (True, "on"), (False, "off")),
        help="A memory layout that makes steps faster on most processors.")
    distill: float | None = setting(
        None, label="keep what was not painted", kind="float", flag="--distill", minimum=0.0,
        maximum=100.0, advanced=True, dock=False,
        help="How strongly the unpainted parts of each piece are held to what the starting "
             "model predicted there, so that a few painted objects do not make it forget the "
             "rest; 0 is off.")
    average: float | None = setting(
        None, label="weight averaging", kind="float", flag="--average", minimum=0.0,
        maximum=0.99999, advanced=True, dock=False,
        help="Keep a running average of the weights over the last steps (0.995 averages about "
             "the last 200); the average is what is previewed and saved. 0 is off.")
    keep_gaps: int | None = setting(
        None, label="keep the gaps between objects", kind="int", flag="--keep-gaps", minimum=0,
        maximum=50, advanced=True, dock=False,
        help="Unpainted background with two of the starting model's objects within this many "
             "pixels is trained as background, so that touching objects stay apart, and half "
             "the pieces of densely painted images show what it got wrong; 0 is off.")
    anchor: float | None = setting(
        None, label="stay near the starting model", kind="float", flag="--anchor", minimum=0.0,
        maximum=0.5, advanced=True, dock=False,
        help="After each step the weights go this share of the way back to those the training "
             "started from, so that a long run on a few painted objects does not drift from "
             "what the model knew; 0 is off.")

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
        _int_at_least(self, "keep_gaps", minimum=0)
        if not _finite(self.anchor) or not 0 <= self.anchor <= 0.5:
            raise ValueError(f"anchor must be a share in [0, 0.5], got {self.anchor!r}")
        object.__setattr__(self, "anchor", float(self.anchor))
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
        check_declared(self)  # the declared kinds and ranges: the docks' and options' bounds

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
