"""Speed of overlap-tile prediction: overhead over the bare net, and MONAI's sliding window.

Three measurements, each as a ratio of times taken side by side in this process (interleaved
repeats, the median of each reported), on a padded net (MONAI handles padded nets only):

1. overhead: ``predict_image`` time / the sum of bare forward-pass times of the same tile
   batches (the batches our predictor ran, recorded, then re-run alone) -- target <= 1.10;
   for one image and for a stack;
2. same settings as MONAI's ``sliding_window_inference``: same model, tile (roi), overlap and
   batch of tiles -- target <= 1.0. Our time includes stitching and the arg-max labels,
   MONAI's only the probabilities; neither normalises nor makes instance labels;
3. our automatic settings (tile from the memory budget, exact overlap) vs MONAI's common ones
   (roi 256, overlap 0.25, sw_batch_size 4), with each method's max deviation from the
   un-tiled prediction (seams).

MONAI is imported only here (``pip install monai`` into the venv for this benchmark).

Usage::

    python benchmarks/bench_tiling.py                      # 1024x1024, base-4 depth-4 net
    python benchmarks/bench_tiling.py --size 2048 --stack 20 --stack-size 1024 --base 32
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from napari_unet.core.model import UNet
from napari_unet.core.prediction import predict_image
from napari_unet.core.tiles import receptive_radius

# no normalisation and no instance labels: what is timed is tiling, the net and stitching
RAW = {"normalization": {"method": "none"}, "mode": "semantic"}


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def record_batches(model: UNet, image: np.ndarray, **kwargs) -> list[tuple[int, ...]]:
    """Shapes of the batches ``predict_image`` feeds the net."""
    shapes: list[tuple[int, ...]] = []
    forward = model.forward

    def spy(x):
        shapes.append(tuple(x.shape))
        return forward(x)

    model.forward = spy
    try:
        predict_image(model, image, meta=RAW, device="cpu", **kwargs)
    finally:
        del model.forward
    return shapes


def bare_forward(model: UNet, shapes: list[tuple[int, ...]]) -> float:
    xs = [torch.randn(s) for s in shapes]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x in xs:
            torch.softmax(model(x), 1)
    return time.perf_counter() - t0


def overhead(model: UNet, image: np.ndarray, reps: int, **kwargs) -> dict:
    shapes = record_batches(model, image, **kwargs)  # also warms up these tile shapes
    bare_forward(model, shapes)
    ours, bare = [], []
    for _ in range(reps):
        ours.append(_timed(lambda: predict_image(model, image, meta=RAW, device="cpu",
                                                 **kwargs))[0])
        bare.append(bare_forward(model, shapes))
    o, b = statistics.median(ours), statistics.median(bare)
    return {"batches": len(shapes), "tile": shapes[0][-2:], "ours_s": o, "bare_s": b,
            "ratio": o / b}


def monai_probabilities(model: UNet, image: np.ndarray, roi: int, overlap: float,
                        batch: int) -> np.ndarray:
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(image)[None, None]
    with torch.inference_mode():
        out = sliding_window_inference(x, (roi, roi), batch,
                                       lambda t: torch.softmax(model(t), 1),
                                       overlap=overlap, mode="constant")
    return out[0].numpy()


def untiled(model: UNet, image: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.softmax(model(torch.from_numpy(image)[None, None]), 1)[0].numpy()


def compare(model, image, reps, ours_kwargs, monai_args, reference) -> dict:
    ours_t, theirs_t = [], []
    monai_probabilities(model, image, *monai_args)  # warm-up: first calls of a shape are slow
    for _ in range(reps):
        t, ours = _timed(lambda: predict_image(model, image, meta=RAW, device="cpu",
                                               **ours_kwargs))
        ours_t.append(t)
        t, theirs = _timed(lambda: monai_probabilities(model, image, *monai_args))
        theirs_t.append(t)
    o, m = statistics.median(ours_t), statistics.median(theirs_t)
    return {"ours_s": o, "monai_s": m, "ratio": o / m, "tile": ours.tile_size,
            "ours_seam": float(np.abs(ours.probabilities - reference).max()),
            "monai_seam": float(np.abs(theirs - reference).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="image side (px)")
    parser.add_argument("--stack", type=int, default=4, help="slices of the stack")
    parser.add_argument("--stack-size", type=int, default=512, help="stack slice side (px)")
    parser.add_argument("--base", type=int, default=4,
                        help="base channels of the depth-4 padded net (32 = UNet.small)")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = UNet.small(base_channels=args.base).eval()
    rng = np.random.default_rng(0)
    image = rng.normal(size=(args.size, args.size)).astype(np.float32)
    stack = rng.normal(size=(args.stack, args.stack_size, args.stack_size)).astype(np.float32)
    m = receptive_radius(model)
    same = dict(tile_size=args.tile, batch_size=args.batch)
    print(f"net: padded depth 4, base {args.base}; image {args.size}^2; stack {args.stack}x"
          f"{args.stack_size}^2; tile {args.tile}, overlap {m} px/side "
          f"({2 * m / args.tile:.3f} of the tile), batch {args.batch}, {args.reps} reps, "
          f"{args.threads} threads", flush=True)

    rows = []
    r = overhead(model, image, args.reps, **same)
    rows.append((f"overhead, image, tile {args.tile}", r["ours_s"], r["bare_s"], r["ratio"]))
    print("overhead image", r, flush=True)
    r = overhead(model, image, args.reps)
    rows.append((f"overhead, image, auto tile {r['tile'][0]}", r["ours_s"], r["bare_s"],
                 r["ratio"]))
    print("overhead image auto", r, flush=True)
    r = overhead(model, stack, args.reps, **same)
    rows.append((f"overhead, stack, tile {args.tile}", r["ours_s"], r["bare_s"], r["ratio"]))
    print("overhead stack", r, flush=True)

    reference = untiled(model, image)
    r = compare(model, image, args.reps, same, (args.tile, 2 * m / args.tile, args.batch),
                reference)
    rows.append(("vs MONAI, same tile/overlap/batch", r["ours_s"], r["monai_s"], r["ratio"]))
    print("same settings", r, flush=True)
    seams = [("ours (discard), same settings", r["ours_seam"]),
             ("MONAI (constant), same settings", r["monai_seam"])]
    r = compare(model, image, args.reps, {}, (256, 0.25, 4), reference)
    rows.append((f"ours auto (tile {r['tile'][0]}) vs MONAI 256/0.25/4", r["ours_s"],
                 r["monai_s"], r["ratio"]))
    print("auto vs common", r, flush=True)
    seams += [("ours, automatic settings", r["ours_seam"]),
              ("MONAI 256 / 0.25 (constant)", r["monai_seam"])]

    print("\n| measurement | ours (s) | reference (s) | ratio |")
    print("|---|---|---|---|")
    for name, a, b, ratio in rows:
        print(f"| {name} | {a:.1f} | {b:.1f} | {ratio:.3f} |")
    print("\n| method | max abs. deviation from the un-tiled prediction |")
    print("|---|---|")
    for name, err in seams:
        print(f"| {name} | {err:.2e} |")


if __name__ == "__main__":
    main()
