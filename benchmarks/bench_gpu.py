"""The CUDA paths on a GPU machine: float16 "auto", tiling overhead and speed against the CPU.

Run where a GPU is (``python benchmarks/bench_gpu.py``); results go into docs/performance.md. With
the shipped model and the settings users get (``predict_image`` defaults: normalisation,
automatic tile/batch in the default memory budget, fast tiling, instance labels):

1. a 2048² varied synthetic nuclei image (ground truth known) on CUDA with ``half=False``,
   ``"auto"`` (the default) and ``True``, and on the CPU: time (after one warm-up), AP@0.5
   against the ground truth, the max/mean |Δp| of the foreground probability and the pixels
   whose class changed, each against CUDA float32; the notes ``"auto"`` printed;
2. tiling overhead on CUDA: semantic prediction of an already normalised 2048² and 4096² image
   against one whole-image forward pass (softmax included) of the same net.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_unet.core.data.metrics import average_precision
from napari_unet.core.data.synthetic import varied_nuclei
from napari_unet.core.inference.prediction import predict_image
from napari_unet.core.model.checkpoint import resolve_model
from napari_unet.core.normalize import normalize

RAW = {"normalization": {"method": "none"}, "mode": "semantic"}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str):
    fn()  # warm-up (cuDNN autotuning, allocator)
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def precision_rows(model, meta, side: int) -> None:
    image, truth = varied_nuclei((side, side), seed=12345, diameter=24.0)
    runs = {"cuda fp32": dict(device="cuda", half=False),
            "cuda auto": dict(device="cuda", half="auto"),
            "cuda fp16": dict(device="cuda", half=True),
            "cpu fp32": dict(device="cpu")}
    ref = None
    print(f"\n{side}x{side} varied synthetic nuclei, shipped model, predict_image defaults")
    print(f"{'run':<10} {'time s':>7} {'AP@0.5':>7} {'max|dp|':>8} {'mean|dp|':>9} "
          f"{'class changed':>14}  notes")
    for name, kw in runs.items():
        result, seconds = timed(lambda kw=kw: predict_image(model, image, meta=meta,
                                                            **kw), kw["device"])
        fg = np.asarray(result.probabilities[1], dtype=np.float32)
        sem = np.asarray(result.semantic)
        ap = average_precision(truth, np.asarray(result.instances), (0.5,))[0.5]
        if ref is None:
            ref = (fg, sem)
        dp = np.abs(fg - ref[0])
        changed = int((sem != ref[1]).sum())
        print(f"{name:<10} {seconds:7.2f} {ap:7.3f} {dp.max():8.2e} "
              f"{dp.mean():9.2e} {changed:>14}  {' | '.join(result.messages)}", flush=True)


def overhead_rows(model, side: int) -> None:
    rng_image, _ = varied_nuclei((1024, 1024), seed=7, diameter=24.0)
    tile = normalize(rng_image.astype(np.float32))
    reps = -(-side // 1024)
    image = np.tile(tile, (reps, reps))[:side, :side].copy()

    def whole():
        with torch.inference_mode():
            x = torch.from_numpy(image)[None, None].cuda()
            return torch.softmax(model(x), 1)[0, 1].cpu().numpy()

    def tiled():
        return predict_image(model, image, meta=RAW, device="cuda",
                             half=False)

    w, tw = timed(whole, "cuda")
    t, tt = timed(tiled, "cuda")
    dp = np.abs(np.asarray(t.probabilities[1]) - w)
    print(f"{side}x{side} normalised: whole forward {tw:.3f} s, predict_image (fast tiling, tile "
          f"{t.tile_size}) {tt:.3f} s = {tt / tw:.2f}x; max|dp| {dp.max():.2e}, "
          f"mean {dp.mean():.2e}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=2048)
    args = parser.parse_args()
    assert torch.cuda.is_available(), "no CUDA device"
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, "
          f"{torch.get_num_threads()} CPU threads")
    model, meta = resolve_model("default", device="cpu")
    model = model.eval()
    precision_rows(model, meta, args.side)
    model = model.cuda()
    print("\ntiling overhead on CUDA (float32)")
    for side in (2048, 4096):
        overhead_rows(model, side)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
