"""Peak anonymous memory of predicting big memory-mapped uint16 TIFF stacks.

For each stack size, one process writes a ZYX uint16 TIFF of that size into a temporary folder
(through ``tifffile.memmap``, slice by slice) and exits; a second, fresh process opens it with
``napari_unet.core.io.read_image`` (a read-only memory map for big files), predicts it with a
tiny net (the point is memory, not accuracy) and reports the peak ``RssAnon``, sampled every
10 ms from ``/proc/self/status`` by a thread. ``RssAnon`` leaves out the file-backed pages of the
memory maps (input and outputs), which the kernel can drop at any time; ``VmHWM`` would count
them. The input is opened as a memory map whatever its size (``read_image(lazy_bytes=0)``);
outputs (instance labels int32, semantic labels uint8) go to memory maps the caller
preallocates (``out=``), next to the stack; the float32
probabilities are not kept (``keep_probabilities=False``: they would be 8 bytes per pixel on
disk and are not needed for labels).

Usage::

    python benchmarks/bench_memory.py --sizes 0.25 0.5 1 --side 1024
    python benchmarks/bench_memory.py --sizes 4 --side 2048   # the issue's 4 GB target

Prints one line per size and a Markdown table for docs/benchmarks.md. The temporary files are
deleted after each size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time


def _rss_anon_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


class PeakSampler(threading.Thread):
    """Samples RssAnon of this process until stopped; ``peak`` in KiB."""

    def __init__(self, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, _rss_anon_kib())
            time.sleep(self.interval)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        self.peak = max(self.peak, _rss_anon_kib())
        return self.peak


def generate(path: str, gigabytes: float, side: int) -> dict:
    import numpy as np
    import tifffile

    from napari_unet.core.synthetic import synthetic_nuclei

    n_z = max(1, round(gigabytes * 2**30 / (side * side * 2)))
    base, _ = synthetic_nuclei((side, side), seed=0)
    base = (base * 3000 + 100).astype(np.uint16)
    stack = tifffile.memmap(path, shape=(n_z, side, side), dtype=np.uint16, imagej=True,
                            metadata={"axes": "ZYX"})
    rng = np.random.default_rng(0)
    for z in range(n_z):  # shifted copies: different slices without generating each
        stack[z] = np.roll(base, (int(rng.integers(side)), int(rng.integers(side))), (0, 1))
    stack.flush()
    del stack
    return {"slices": n_z, "bytes": os.path.getsize(path)}


def predict_file(path: str, threads: int) -> dict:
    sampler = PeakSampler()
    sampler.start()
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from napari_unet.core.events import Progress
    from napari_unet.core.io import read_image
    from napari_unet.core.model import UNet
    from napari_unet.core.prediction import PredictConfig, PredictionResult, predict

    torch.manual_seed(0)
    model = UNet(1, 2, base_channels=4, depth=2, padding="same").eval()
    data = read_image(path, lazy_bytes=0)  # always a memory map, as for a big file
    n_z, h, w = data.array.shape
    folder = os.path.dirname(path)
    out = {"instances": np.memmap(os.path.join(folder, "instances.dat"), np.int32, "w+",
                                  shape=(n_z, h, w)),
           "semantic": np.memmap(os.path.join(folder, "semantic.dat"), np.uint8, "w+",
                                 shape=(n_z, h, w))}
    baseline = _rss_anon_kib()
    t0 = time.perf_counter()
    config = PredictConfig(device="cpu", keep_probabilities=False, batch_size=1)
    result = None
    for event in predict(model, data.array, config, out=out):
        if isinstance(event, PredictionResult):
            result = event
        elif isinstance(event, Progress) and event.step == 1:
            first = time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    peak = sampler.stop()
    return {
        "array": type(data.array).__name__, "shape": list(data.array.shape),
        "labels_type": type(result.instances).__name__,
        "objects": int(np.asarray(result.instances[-1]).max()),
        "tile": list(result.tile_size), "seconds": seconds, "first_slice_s": first,
        "baseline_mib": baseline / 1024, "peak_mib": peak / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.25, 0.5, 1.0],
                        help="stack sizes in GiB")
    parser.add_argument("--side", type=int, default=1024, help="slice height = width (px)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tmp", default=None, help="folder for the temporary stacks")
    parser.add_argument("--_generate", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--_predict", nargs=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._generate:
        print(json.dumps(generate(args._generate[0], float(args._generate[1]),
                                  int(args._generate[2]))))
        return
    if args._predict:
        print(json.dumps(predict_file(args._predict[0], args.threads)))
        return

    rows = []
    for size in args.sizes:
        folder = tempfile.mkdtemp(prefix="napari-unet-bench-", dir=args.tmp)
        path = os.path.join(folder, "stack.tif")
        tmp_env = dict(os.environ, TMPDIR=folder)  # output memory maps go there too
        try:
            gen = json.loads(subprocess.run(
                [sys.executable, __file__, "--_generate", path, str(size), str(args.side)],
                check=True, capture_output=True, text=True).stdout)
            out = json.loads(subprocess.run(
                [sys.executable, __file__, "--threads", str(args.threads), "--_predict", path],
                check=True, capture_output=True, text=True, env=tmp_env).stdout)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        row = {"gib": gen["bytes"] / 2**30, "slices": gen["slices"], **out}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| stack (GiB) | slices | input array | seconds | RssAnon after imports (MiB) "
          "| peak RssAnon (MiB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['gib']:.2f} | {r['slices']} x {args.side}x{args.side} | {r['array']} | "
              f"{r['seconds']:.0f} | {r['baseline_mib']:.0f} | {r['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
