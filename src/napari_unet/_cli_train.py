"""``napari-unet train``: fine-tune or train a U-Net on image/label files.

One pair (``--image IMG --labels LAB``) or a data set of many (``--images DIR --masks DIR``,
matched by file stem; a mask may carry a ``_mask``/``_masks`` suffix). Shows a progress bar
with the loss; Ctrl-C stops early and still saves the model. Next to ``--out`` it writes
``<out>_curves.png`` (loss and validation metrics) and ``<out>_overlay.png`` (a validation
prediction over its image).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ._cli_common import (
    GracefulStop,
    add_out_argument,
    add_overwrite_argument,
    model_file,
    plan,
    save_figure,
)
from ._cli_settings import add_setting_options, settings_from_args

SUFFIXES = (".tif", ".tiff", ".png")
MASK_SUFFIXES = ("_mask", "_masks")


# -- arguments shared with ``eval`` --------------------------------------------------------
def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--image`` and ``--labels``: one image and its labels, or a folder of each (matched by
    file name). ``--images`` and ``--masks`` are older spellings of the same options."""
    parser.add_argument("--image", help="image file (TIFF or PNG), or a folder of them")
    parser.add_argument("--images", dest="image", help=argparse.SUPPRESS)
    parser.add_argument("--labels", metavar="LABELS",
                        help="its label image (same height and width), or a folder of label "
                             "images matched to the images by file name (a '_mask' suffix is "
                             "allowed: a.tif <-> a_mask.tif)")
    parser.add_argument("--masks", dest="labels", help=argparse.SUPPRESS)
    from .core.inference.config import PredictConfig  # the same words as predict's option

    add_setting_options(parser, PredictConfig, only=("channel_axis", "channel"))


def data_pairs(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """The (image, labels) files named by the arguments; ``ValueError`` if unusable."""
    if args.image is None and args.labels is None:
        raise ValueError("no data: give --image and --labels (two files, or two folders)")
    if args.image is None or args.labels is None:
        raise ValueError("--image and --labels go together")
    image, labels = Path(args.image), Path(args.labels)
    for option, path in (("--image", image), ("--labels", labels)):
        if not path.exists():
            raise ValueError(f"{option} {str(path)!r} does not exist")
        if not (path.is_file() or path.is_dir()):
            raise ValueError(f"{option} {str(path)!r} is not a file or a folder")
    if image.is_dir() != labels.is_dir():
        raise ValueError("--image and --labels must both be files or both be folders")
    return match_folders(image, labels) if image.is_dir() else [(image, labels)]


def match_folders(images: Path, masks: Path) -> list[tuple[Path, Path]]:
    """Pair every image in ``images`` with the mask of the same stem (maybe + ``_mask``)."""
    for folder in (images, masks):
        if not folder.is_dir():
            raise ValueError(f"folder {str(folder)!r} does not exist")
    mask_files = {}
    for path in sorted(masks.iterdir()):
        stem = _stem(path)
        if stem is None:
            continue
        mask_files[stem] = path
        for suffix in MASK_SUFFIXES:
            if stem.endswith(suffix):
                mask_files.setdefault(stem[: -len(suffix)], path)
    pairs, missing = [], []
    for path in sorted(images.iterdir()):
        stem = _stem(path)
        if stem is None or (images == masks and path in mask_files.values()):
            continue
        if stem in mask_files and mask_files[stem] != path:
            pairs.append((path, mask_files[stem]))
        else:
            missing.append(path.name)
    if not pairs:
        raise ValueError(f"no image in {str(images)!r} has a matching mask in {str(masks)!r} "
                         f"(looked for TIFF/PNG files with the same name, optionally + '_mask')")
    if missing:
        print(f"note: {len(missing)} image(s) without a mask skipped: "
              f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}", file=sys.stderr)
    return pairs


def _stem(path: Path) -> str | None:
    name = path.name
    lower = name.lower()
    if not path.is_file() or name.startswith("."):
        return None
    for suffix in (".ome.tiff", ".ome.tif", *SUFFIXES):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def read_pair(image_path: Path, labels_path: Path,
              channel_axis: int | None) -> tuple[np.ndarray, np.ndarray, int | None, Any]:
    """``(image, labels, channel_axis, pixel_size)`` of one pair, shapes checked."""
    from .core.io.images import read_image

    data = read_image(image_path)
    image = np.asarray(data.array)
    if channel_axis is None:
        channel_axis = data.channel_axis
    labels = np.asarray(read_image(labels_path).array)
    if labels.ndim == image.ndim and channel_axis is None and labels.ndim == 3 \
            and image.shape[-1] in (3, 4) and labels.shape == image.shape:
        labels = labels[..., 0]  # an RGB(A) mask saved as colour: all channels are equal
    if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
        if np.all(np.mod(labels, 1) == 0):
            labels = labels.astype(np.int64)
        else:
            raise ValueError(f"{labels_path.name}: labels must be integers, got {labels.dtype}")
    spatial = image.shape if channel_axis is None else \
        tuple(s for i, s in enumerate(image.shape) if i != channel_axis % image.ndim)
    if labels.shape != spatial:
        raise ValueError(f"{labels_path.name}: labels shape {labels.shape} does not match image "
                         f"{image_path.name} {spatial} (without channels)")
    pixel_size = data.pixel_size[-1] if data.pixel_size else None
    return image, labels, channel_axis, pixel_size


# -- the command ---------------------------------------------------------------------------
#: Where this command starts elsewhere than ``TrainConfig``, as its help shows it: batches are
#: prepared in worker processes, and the recipe follows the starting model.
COMMAND_DEFAULTS = {"workers": "auto",
                    "preset": "finetune from a trained model, fast for a new net"}


def _train_config() -> type:
    from .core.training.config import TrainConfig

    return TrainConfig


def train_config(args: argparse.Namespace) -> Any:
    """The ``TrainConfig`` of the options: what was given, the command's own defaults, and the
    recipe that suits the starting model (``preset_for``)."""
    from .core.constants import ARCHITECTURES
    from .core.training.config import TrainConfig, preset_for

    options = settings_from_args(args, TrainConfig,
                                 defaults={"workers": COMMAND_DEFAULTS["workers"]})
    options.setdefault("preset", preset_for(from_trained=args.model not in ARCHITECTURES))
    return TrainConfig(preview_every_s=0, **options)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    add_out_argument(parser, "model file to write", metavar="MODEL.pt")
    add_overwrite_argument(parser, "model and curve/overlay PNGs")
    parser.add_argument("--model", default="default",
                        help="start from 'default' (the shipped model), a new 'original', "
                             "'modified' or 'small' net, or a model file (default: default)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the step count and optimizer state of --model (a file)")
    add_setting_options(parser, _train_config(), defaults=COMMAND_DEFAULTS)
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--sparse", action="store_true",
                        help="sparse labels: 0 = not annotated, 1 = background, 2.. objects "
                             "(with --classes: class c painted as c + 1)")
    labels.add_argument("--binary", action="store_true",
                        help="binary masks: objects are connected components")
    parser.add_argument("--classes", type=int, default=None, metavar="N",
                        help="semantic segmentation with N classes (0 = background, 255 = "
                             "ignore); default: instance segmentation")
    parser.add_argument("--validation-fraction", type=float, default=0.1,
                        help="share of annotated pixels held out for validation (0.1)")
    parser.add_argument("--no-plots", action="store_true",
                        help="do not write the curve and overlay PNGs")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .core.constants import ARCHITECTURES
    from .core.events import LossReport, Message, Progress, ValidationReport
    from .core.io.outputs import check_free_space
    from .core.model.checkpoint import load_checkpoint, resolve_model
    from .core.training.trainer import Trainer
    from .core.training.trainingset import TrainingSet

    out = Path(args.out)
    pairs = data_pairs(args)
    # Outputs checked before any work: never an input, no existing file without --overwrite,
    # a writable folder (training used to run every step, then fail to save).
    plots = [] if args.no_plots else [out.with_name(out.stem + "_curves.png"),
                                      out.with_name(out.stem + "_overlay.png")]
    plan([out, *plots], [model_file(args.model), *(p for pair in pairs for p in pair)],
         args.overwrite)
    config = train_config(args)
    semantic = args.classes is not None
    if args.binary and semantic:
        raise ValueError("--binary is for instance labels; drop it with --classes")
    convention = ("semantic-sparse" if args.sparse else "semantic") if semantic else \
        "sparse" if args.sparse else "binary" if args.binary else "dense"
    images, labels, pixel_sizes, axis = [], [], set(), None
    for i, (image_path, labels_path) in enumerate(pairs):
        image, lab, channel_axis, pixel_size = read_pair(image_path, labels_path,
                                                         args.channel_axis)
        if i and channel_axis != axis:
            raise ValueError(f"{image_path.name} has its channels on axis {channel_axis}, the "
                             f"first image on {axis}; use --channel-axis")
        axis = channel_axis
        images.append(image)
        labels.append(lab)
        pixel_sizes.add(pixel_size)
    samples = TrainingSet(images, labels, convention=convention, channel_axis=axis,
                          mode="semantic" if semantic else "instances",
                          num_classes=args.classes if semantic else 2,
                          validation_fraction=args.validation_fraction, seed=config.seed,
                          channel=args.channel)

    checkpoint_state = None
    if args.resume:
        if args.model in (*ARCHITECTURES, "default"):
            raise ValueError("--resume needs --model to be a model file written by training")
        checkpoint_state = load_checkpoint(args.model)
        model = checkpoint_state.model
    else:
        model, _ = resolve_model(args.model, in_channels=samples.in_channels,
                                 num_classes=samples.num_classes)
    trainer = Trainer(model, samples, config, checkpoint_state=checkpoint_state)
    check_free_space(out.parent, model_bytes_on_disk(model) + (4 * 2**20 if plots else 0),
                     f"the model {out.name}")
    if len(pixel_sizes) == 1:
        trainer.pixel_size = next(iter(pixel_sizes))
    print(f"training on {samples.n_samples} annotated plane(s) from {len(pairs)} file(s), "
          f"device {trainer.device}, tile {trainer.tile}, {config.preset} preset",
          file=sys.stderr)

    losses: list[tuple[int, float]] = []
    validations: list[tuple[int, dict[str, float]]] = []
    interrupted = False
    progress = None
    with tqdm(total=config.iterations, initial=trainer.step, unit="step", file=sys.stderr,
              desc="train") as bar, GracefulStop(lambda: trainer.updating) as stop:
        try:
            for event in trainer.events():
                if stop.requested:  # Ctrl-C (or a signal during a write): the model is whole
                    raise KeyboardInterrupt
                if isinstance(event, Progress):
                    bar.total = event.total  # a time budget: the steps it allows
                    bar.n = event.step
                    progress = event
                elif isinstance(event, Message):
                    tqdm.write(event.text, file=sys.stderr)
                elif isinstance(event, LossReport):
                    losses.append((event.step, event.loss))
                    bar.set_postfix_str(progress_text(progress, event.loss), refresh=False)
                    bar.refresh()
                elif isinstance(event, ValidationReport):
                    validations.append((event.step, dict(event.metrics)))
                    text = ", ".join(f"{k} {v:.3f}" for k, v in event.metrics.items())
                    tqdm.write(f"step {event.step}: validation {text}", file=sys.stderr)
        except KeyboardInterrupt:
            # The model is consistent after every completed step: save what we have.
            interrupted = True
    trainer.close()
    # checked again as it is written: a file that appeared there while training is kept
    trainer.save(out, overwrite=args.overwrite, hint="--overwrite")
    note = f" (interrupted at step {trainer.step})" if interrupted else ""
    print(f"wrote {out}{note}")
    if not args.no_plots and losses:
        curves = out.with_name(out.stem + "_curves.png")
        write_curves(curves, losses, validations)
        overlay = out.with_name(out.stem + "_overlay.png")
        write_overlay(overlay, trainer)
        print(f"wrote {curves} and {overlay}")
    return 130 if interrupted else 0


def progress_text(event: Any, loss: float) -> str:
    """The bar's postfix: loss, steps/s and the ETA of the training's own estimate."""
    parts = [f"loss {loss:.4f}"]
    if event is not None and event.rate is not None:
        parts.append(f"{event.rate:.2f} steps/s")
    if event is not None and event.eta_s is not None:
        minutes, seconds = divmod(int(round(event.eta_s)), 60)
        parts.append(f"ETA {minutes}:{seconds:02d}")
    return ", ".join(parts)


def model_bytes_on_disk(model: Any) -> int:
    """A model file's size: the weights plus the optimizer state (at most two moments each)."""
    return 3 * sum(p.numel() * p.element_size() for p in model.parameters()) + 2**20


# -- plots (matplotlib's Agg canvas directly: no pyplot, no global backend switch) ---------
def write_curves(path: Path, losses: list[tuple[int, float]],
                 validations: list[tuple[int, dict[str, float]]]) -> None:
    """Training loss (raw and smoothed) and validation metrics against the step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_val = fig.subplots(1, 2)
    steps, values = np.array(losses).T
    ax_loss.plot(steps, values, color="0.75", lw=0.8, label="loss")
    if len(values) >= 10:
        k = max(len(values) // 20, 5)
        smooth = np.convolve(values, np.ones(k) / k, mode="valid")
        ax_loss.plot(steps[k - 1:], smooth, color="C0", label=f"mean of {k}")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_yscale("log" if values.min() > 0 else "linear")
    ax_loss.legend(loc="upper right", fontsize=8)
    if validations:
        names = sorted({k for _, m in validations for k in m})
        for i, name in enumerate(names):
            pts = [(s, m[name]) for s, m in validations if name in m]
            ax = ax_val.twinx() if name == "loss" else ax_val
            ax.plot(*zip(*pts, strict=True), marker="o", ms=3, color=f"C{i + 1}", label=name)
            if name == "loss":
                ax.set_ylabel("validation loss")
                ax.legend(loc="lower right", fontsize=8)
        ax_val.set_ylabel("validation metric")
        ax_val.legend(loc="upper left", fontsize=8)
    else:
        ax_val.text(0.5, 0.5, "no validation part", ha="center", va="center",
                    transform=ax_val.transAxes)
    ax_val.set_xlabel("step")
    fig.tight_layout()
    save_figure(fig, path)


def write_overlay(path: Path, trainer: Any) -> None:
    """The first validation crop (or a training crop) with predicted and true outlines."""
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from skimage.segmentation import find_boundaries

    from .core.inference.postprocess import instances_from_probability
    from .core.training.trainer import forward_full

    items = trainer.samples.validation_items()
    if items:
        image, truth, ignore = items[0]
    else:
        rng = np.random.default_rng(0)
        image, truth, ignore = trainer.samples.sample_patch(rng, (256, 256))
    image, truth = image[:, :512, :512], truth[:512, :512]
    model = trainer.model
    was_training = model.training
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(forward_full(model, image, trainer.device), 0).cpu().numpy()
    model.train(was_training)
    if trainer.samples.mode == "instances":
        pred = instances_from_probability(probs[1])
    else:
        pred = probs.argmax(0)
    gray = image.mean(0)
    lo, hi = np.percentile(gray, (1, 99.8))
    rgb = np.repeat(np.clip((gray - lo) / max(hi - lo, 1e-6), 0, 1)[..., None], 3, axis=-1)
    rgb[find_boundaries(truth, mode="inner")] = (0.1, 0.9, 0.1)
    rgb[find_boundaries(pred, mode="inner")] = (1.0, 0.2, 0.8)
    fig = Figure(figsize=(5, 5 * rgb.shape[0] / rgb.shape[1] + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(rgb, interpolation="nearest")
    ax.set_title(f"step {trainer.step}: prediction (magenta), labels (green)", fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    save_figure(fig, path)
