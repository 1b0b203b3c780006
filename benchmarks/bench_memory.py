"""Peak anonymous memory of predicting big memory-mapped uint16 TIFFs: stacks and huge planes.

For each case one process writes a uint16 TIFF (``Z x side x side``) into a temporary folder
through ``tifffile.memmap`` (nuclei from a 2048-px synthetic image, shifted copies) and exits;
a second, fresh process opens it with ``core.io.images.read_image`` as a read-only memory
map, runs :func:`core.inference.prediction.predict` at the default settings (batch's default
of not keeping the probabilities; instance and semantic labels into memory maps next to the
input) and reports the peak ``RssAnon`` above the level after the imports, sampled every 10 ms
from ``/proc/self/status`` by a thread. ``RssAnon`` leaves out the file-backed pages of the
memory maps, which the kernel can drop at any time. Planes larger than the block size
(2048 px) are predicted and labelled block by block, so the peak should not grow with the
plane's area, and stacks go slice by slice, so it should not grow with depth.

The net
    ``--net default`` runs the shipped model; on a 2-core CPU that is ~1 h for the 24 x 4096^2
    stack. ``--net cheap`` keeps the shipped model's geometry (depth 4, padded: the same tiles,
    context and blocks) but replaces its forward pass by a 5 x 5 box filter of the input, so the
    run measures everything but the net's own activations: normalisation, block windows,
    labelling, splitting and merging. ``--net default --first-block`` runs the real net on the
    first block window only (then stops the job), which measures the net's activations at the
    default tile and batch sizes: the peak of a full run is about the larger of the two.

Usage::

    python benchmarks/bench_memory.py --cases 6x4096 24x4096 1x4096 1x10240 --net cheap
    python benchmarks/bench_memory.py --cases 1x10240 --net default --first-block
    python benchmarks/bench_memory.py --cases 24x4096 --net cheap --slices 3

Prints one JSON line per case and a Markdown table. The temporary files are deleted after each
case.
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


def generate(path: str, n_z: int, side: int) -> dict:
    import numpy as np
    import tifffile

    from napari_unet.core.data.synthetic import synthetic_nuclei

    base, _ = synthetic_nuclei((2048, 2048), seed=0)
    base = (base * 3000 + 100).astype(np.uint16)
    axes = "ZYX" if n_z > 1 else "YX"
    shape = (n_z, side, side) if n_z > 1 else (side, side)
    stack = tifffile.memmap(path, shape=shape, dtype=np.uint16, imagej=True,
                            metadata={"axes": axes})
    rng = np.random.default_rng(0)
    for z in range(n_z):  # shifted copies of the base, tiled: different slices cheaply
        plane = stack[z] if n_z > 1 else stack
        for y in range(0, side, 2048):
            for x in range(0, side, 2048):
                tile = np.roll(base, (int(rng.integers(2048)), int(rng.integers(2048))), (0, 1))
                plane[y:y + 2048, x:x + 2048] = tile[:side - y, :side - x]
    stack.flush()
    del stack
    return {"bytes": os.path.getsize(path)}


def _cheap_net(model):
    """The shipped model's geometry with a box filter as its forward pass (see module doc)."""
    import torch
    import torch.nn.functional as F

    from napari_unet.core.model.unet import kept_part

    class BoxFilter(type(model)):
        def forward(self, x):
            fg = F.avg_pool2d(x[:, :1], 5, stride=1, padding=2, count_include_pad=False)
            logit = (fg - 0.3) * 20
            return torch.cat([-logit, logit], dim=1)

        def lean_forward(self, x, keep=None):  # what the predictors run
            return kept_part(self(x), keep)

    net = BoxFilter.from_config(dict(model.config))
    return net.eval()


def predict_file(path: str, threads: int, net_name: str, first_block: bool,
                 slices: int | None = None) -> dict:
    sampler = PeakSampler()
    sampler.start()
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from napari_unet.core.events import Progress
    from napari_unet.core.inference.config import PredictConfig, PredictionResult
    from napari_unet.core.inference.prediction import predict
    from napari_unet.core.io.images import read_image
    from napari_unet.core.model.checkpoint import resolve_model

    model, meta = resolve_model("default")
    if net_name == "cheap":
        model = _cheap_net(model)
    data = read_image(path, lazy_bytes=0)  # always a memory map, as for a big file
    shape = tuple(data.array.shape)
    folder = os.path.dirname(path)
    out = {"instances": np.memmap(os.path.join(folder, "instances.dat"), np.int32, "w+",
                                  shape=shape),
           "semantic": np.memmap(os.path.join(folder, "semantic.dat"), np.uint8, "w+",
                                 shape=shape)}
    baseline = _rss_anon_kib()
    t0 = time.perf_counter()
    config = PredictConfig(device="cpu", keep_probabilities=False)
    result = None
    job = predict(model, data.array, config, meta, out=out)
    steps = 0
    for event in job:
        if isinstance(event, PredictionResult):
            result = event
        elif isinstance(event, Progress):
            steps += 1
            if (first_block and "block" in event.message) or (
                    slices and event.message.startswith("slice") and event.step >= slices):
                job.close()
                break
    seconds = time.perf_counter() - t0
    peak = sampler.stop()
    objects = None if result is None else int(np.asarray(result.instances).max())
    return {
        "net": net_name + (" (first block)" if first_block else "")
        + (f" (first {slices} slices)" if slices else ""), "shape": list(shape),
        "objects": objects, "tile": None if result is None else list(result.tile_size),
        "seconds": seconds, "baseline_mib": baseline / 1024,
        "above_import_mib": (peak - baseline) / 1024, "peak_mib": peak / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=["6x4096", "24x4096", "1x4096", "1x10240"],
                        help="Z x side of each case (1 x side: one plane)")
    parser.add_argument("--net", choices=("cheap", "default"), default="cheap")
    parser.add_argument("--first-block", action="store_true")
    parser.add_argument("--slices", type=int, default=None,
                        help="stacks: stop after this many slices (each slice repeats the same "
                             "work, so the peak is reached by the second or third)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tmp", default=None, help="folder for the temporary files")
    parser.add_argument("--_generate", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--_predict", nargs=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._generate:
        print(json.dumps(generate(args._generate[0], int(args._generate[1]),
                                  int(args._generate[2]))))
        return
    if args._predict:
        print(json.dumps(predict_file(args._predict[0], args.threads, args.net,
                                      args.first_block, args.slices)))
        return

    rows = []
    for case in args.cases:
        n_z, side = (int(v) for v in case.lower().split("x"))
        folder = tempfile.mkdtemp(prefix="napari-unet-bench-", dir=args.tmp)
        path = os.path.join(folder, "image.tif")
        tmp_env = dict(os.environ, TMPDIR=folder)  # temporary memory maps go there too
        try:
            gen = json.loads(subprocess.run(
                [sys.executable, __file__, "--_generate", path, str(n_z), str(side)],
                check=True, capture_output=True, text=True).stdout)
            cmd = [sys.executable, __file__, "--threads", str(args.threads), "--net", args.net,
                   "--_predict", path] + (["--first-block"] if args.first_block else []) + (
                       ["--slices", str(args.slices)] if args.slices else [])
            out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True,
                                            env=tmp_env).stdout)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        row = {"case": case, "gib": gen["bytes"] / 2**30, **out}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| input (uint16) | GiB | net | seconds | RssAnon after imports (MiB) "
          "| peak above imports (MiB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {' x '.join(map(str, r['shape']))} | {r['gib']:.2f} | {r['net']} | "
              f"{r['seconds']:.0f} | {r['baseline_mib']:.0f} | {r['above_import_mib']:.0f} |")


if __name__ == "__main__":
    main()
