"""Cost of the training loop around the bare optimizer step.

Times one ``Trainer`` iteration (patch sampling, augmentation, weight map and target in the
background thread, then forward + backward + optimizer step, events) against the bare
``zero_grad / forward / weighted CE / backward / step`` of an identical model on a batch of the
same shape, in interleaved blocks so that load changes hit both alike. Prints the ratio of the
median times (target: <= 1.15).

    python benchmarks/bench_train_step.py [--tile 128] [--batch 4] [--base 16] [--blocks 5]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from napari_unet.core.data.synthetic import synthetic_dataset
from napari_unet.core.events import LossReport
from napari_unet.core.model.unet import UNet
from napari_unet.core.training.config import TrainConfig
from napari_unet.core.training.losses import weighted_cross_entropy
from napari_unet.core.training.sampling import make_batch
from napari_unet.core.training.sources import batch_spec
from napari_unet.core.training.trainer import Trainer
from napari_unet.core.training.trainingset import TrainingSet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--base", type=int, default=16, help="base channels of the net")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=5, help="interleaved repeats")
    parser.add_argument("--steps", type=int, default=8, help="steps per block")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--flush-denormal", action="store_true",
                        help="torch.set_flush_denormal(True) for both")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.flush_denormal:
        torch.set_flush_denormal(True)

    images, labels = synthetic_dataset(4, (256, 256), seed=1)
    samples = TrainingSet(list(images), list(labels), validation_fraction=0.0)
    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=args.base, depth=args.depth)
    bare_model = copy.deepcopy(model)
    total = (args.blocks + 1) * args.steps + 1
    config = TrainConfig.fast(iterations=total, tile_size=args.tile, batch_size=args.batch,
                              validate_every=0, device=args.device)
    trainer = Trainer(model, samples, config)
    device = trainer.device
    bare_model.to(device).train()
    optimizer = torch.optim.Adam(bare_model.parameters(), lr=config.lr)
    # The bare step trains on one real batch of the same pipeline (same values, same shapes).
    spec = batch_spec(config, model, True)
    x, y, w = (torch.from_numpy(a).to(device) for a in make_batch(samples.snapshot(), spec, 0))

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def bare(n: int) -> list[float]:
        times = []
        for _ in range(n):
            sync()
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = weighted_cross_entropy(bare_model(x), y, w)
            loss.backward()
            optimizer.step()
            float(loss.detach())  # the trainer reads the loss value every step too
            sync()
            times.append(time.perf_counter() - t0)
        return times

    events = trainer.events()

    def trained(n: int) -> list[float]:
        times = []
        sync()
        t0 = time.perf_counter()
        while len(times) < n:
            if isinstance(next(events), LossReport):
                sync()
                t1 = time.perf_counter()
                times.append(t1 - t0)
                t0 = t1
        return times

    trained(args.steps)  # warm-up: thread start, first allocations
    bare(args.steps)
    t_times, b_times = [], []
    for _ in range(args.blocks):
        t_times += trained(args.steps)
        b_times += bare(args.steps)
    t_med, b_med = float(np.median(t_times)), float(np.median(b_times))
    print(f"device {device}, torch threads {torch.get_num_threads()}, net base {args.base} "
          f"depth {args.depth}, batch {args.batch} x {args.tile}px, "
          f"{args.blocks} x {args.steps} steps each")
    print(f"Trainer step      median {1e3 * t_med:8.1f} ms")
    print(f"bare step         median {1e3 * b_med:8.1f} ms")
    print(f"ratio Trainer / bare: {t_med / b_med:.3f}  (target <= 1.15)")
    trainer.close()


if __name__ == "__main__":
    main()
