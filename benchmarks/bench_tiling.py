"""Speed of overlap-tile prediction against one whole-image forward pass and MONAI.

For each net and image size, side by side in one process (one run of each, in this order;
``--rounds N`` runs them N times, rounds interleaved, each round starting one row further on,
and reports the median):

1. ``whole``: one forward pass of the whole image (softmax included), the cost tiling adds to.
   When that pass would not fit in memory, the time of the largest square crop that does,
   scaled by the pixel ratio (marked "per-pixel"),
2. ``ours fast`` / ``ours exact``: ``predict_image`` with the settings users get (automatic
   tile, batch and overlap within the default memory budget; ``tiling="fast"`` is the
   default). Its time includes stitching and the arg-max labels,
3. ``MONAI 256/0.25 gaussian``: ``monai.inferers.sliding_window_inference`` at its common
   settings (roi 256, overlap 0.25, Gaussian blending, 4 windows per batch),
4. ``MONAI equal``: MONAI with our tile size, our overlap fraction and our batch,
5. ``MONAI 256/0.25, default layout``: row 3 with the net in the default (contiguous) layout,
6. ``ours fast, worker thread``: row 2 as the docks ran it until 2026-12-02: in a thread
   (glibc then maps and page-faults every big block again: :mod:`napari_unet.core.runtime.heap`),
   loading the net from its file first as the dock's job does,
7. ``ours fast, job process``: the same job as the Predict dock runs it now, in the docks' job
   process (:class:`napari_unet.core.runtime.processes.JobProcess`, started and warm before the
   timing): the time from handing over the job to having its result here, so it includes
   sending the image there and the result back.

``--pairs N`` runs only rows 2 and 4, alternating, N pairs (after one pair of warm-up), and
reports the median of each pair's ratio, of wall-clock and of CPU time (with several tiles a
row's spread between rounds, +-10-30 % on a shared machine, hides a few per cent between the
two, and a pair's two runs share the machine's load); then the stand-in pairs below.

Last, ``around a stand-in pass``: ours (row 2) and MONAI at equal tile/overlap (row 4) with the
net's pass replaced by a 1x1 convolution (:func:`stand_in`, same tile plan), in 30 alternating
pairs: what tiling and stitching add on each side, which the real rows bury under a pass ~100x
longer.

Every row runs in the main thread with freed memory kept for reuse
(``core.heap.reuse_freed_memory``, what ``predict_image`` does there), so all rows get the same
allocator; the last row shows what the docks' worker threads get instead.

On CPU ``predict_image`` runs a channels-last copy of the net (oneDNN's convolutions are much
faster that way here) through ``UNet.lean_forward`` (less memory per pixel, so larger tiles),
so rows 1, 3 and 4 run the same copy the same way: the ratios compare tiling and stitching, not
memory layouts or forward passes. What tiling decides is ours to count, though: ours asks each
tile for the part it keeps, and the net's expanding path skips the rows of the discarded
overlap (``UNet.lean_forward(x, keep)``); MONAI keeps every window whole. Row 5 is what a MONAI
user gets who passes a net as PyTorch builds it (default layout, ``forward``).

Each row also gives the input pixels the net was given (counted by a spy on the forward pass)
as a multiple of the image's, and, where the whole-image pass ran, the max and mean absolute
deviation of the foreground probability from it and the pixels whose class changed.

Neither side normalises or makes instance labels (the image is normalised once, beforehand):
what is timed is the net, the tiling and the stitching. MONAI is imported only here
(``pip install monai`` into the venv for this benchmark; it is not a dependency).

Usage::

    python benchmarks/bench_tiling.py                       # 1536 and 4096, both nets
    python benchmarks/bench_tiling.py --runs 1536:shipped 1536:small 4096:shipped
    python benchmarks/bench_tiling.py --runs 1536:shipped 1536:small --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import importlib
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from napari_unet.core.inference.prediction import predict_image
from napari_unet.core.inference.tiles import forward_bytes_per_pixel
from napari_unet.core.model.unet import UNet, kept_part
from napari_unet.core.runtime.heap import reuse_freed_memory

# no normalisation (done once before) and no instance labels
RAW = {"normalization": {"method": "none"}, "mode": "semantic"}
# a whole-image pass bigger than this (estimated) is replaced by a per-pixel extrapolation
WHOLE_LIMIT = 6 * 2**30


def load_net(name: str) -> UNet:
    """The net as the docks and the command line get it: loaded for the CPU, so channels-last
    (a net built in Python, in the default layout, costs ``predict_image`` a channels-last copy
    per call: ~50 ms for UNet.small, ~10 ms for the shipped net)."""
    if name == "small":
        torch.manual_seed(0)
        # random He weights: base 32, depth 4, padded
        return UNet.small().eval().to(memory_format=torch.channels_last)
    from napari_unet.core.model.checkpoint import resolve_model

    return resolve_model("default")[0].eval()


def nuclei_image(side: int) -> np.ndarray:
    """A normalised synthetic nuclei image: one 1024 px image mirrored to ``side``."""
    from napari_unet.core.data.synthetic import synthetic_nuclei
    from napari_unet.core.normalize import normalize

    tile, _ = synthetic_nuclei((1024, 1024), seed=11)
    reps = -(-side // 1024)
    big = np.pad(tile, ((0, 1024 * (reps - 1)),) * 2, mode="symmetric")[:side, :side]
    return np.ascontiguousarray(normalize(big, {"method": "percentile", "low": 1.0,
                                                "high": 99.8}), dtype=np.float32)


class Counter:
    """Counts the input pixels passed through ``model`` (a forward pre-hook on its first block,
    which both ``forward`` and ``lean_forward`` run; the predictor's channels-last copy of the
    net keeps it)."""

    def __init__(self, model: UNet):
        self.model, self.pixels = model, 0

    def __enter__(self) -> Counter:
        def spy(_module, args):
            x = args[0]
            self.pixels += int(x.shape[0] * x.shape[-2] * x.shape[-1])

        self.handle = self.model.inc.register_forward_pre_hook(spy)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def timed(model: UNet | None, fn: Callable[[], np.ndarray], keep_freed: bool = True
          ) -> tuple[float, int | None, np.ndarray]:
    counting = Counter(model) if model is not None else nullcontext()
    with counting as counter, reuse_freed_memory() if keep_freed else nullcontext():
        t0 = time.perf_counter()
        probs = fn()
        seconds = time.perf_counter() - t0
    return seconds, counter.pixels if counter is not None else None, probs


def in_thread(fn: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    """``fn`` run in a worker thread (as a dock's ``thread_worker`` runs it)."""
    def run() -> np.ndarray:
        out: list = []
        worker = threading.Thread(target=lambda: out.append(fn()))
        worker.start()
        worker.join()
        return out[0]

    return run


def dock_job(path: str, image: np.ndarray, tiling: str):
    """What the Predict dock's job does, timed in rows 6 and 7: load the net from its file, then
    ``predict_image`` (module level, so the job process can unpickle it)."""
    from napari_unet.core.model.checkpoint import resolve_model

    net, _ = resolve_model(path)
    yield predict_image(net.eval(), image, meta=RAW, device="cpu", tiling=tiling)


def importable(fn: Callable) -> Callable:
    """``fn`` named by this module's import name: the job process does not run the main script
    (``core.spawning.main_script_left_out``), so it finds functions by module."""
    if fn.__module__ == "__main__":
        return getattr(importlib.import_module("bench_tiling"), fn.__name__)
    return fn


def whole(model: UNet, image: np.ndarray) -> tuple[float, int, np.ndarray | None, str]:
    side = image.shape[0]
    if side * side * forward_bytes_per_pixel(model) <= WHOLE_LIMIT:
        def run():
            with torch.inference_mode():
                x = torch.from_numpy(image)[None, None]
                return torch.softmax(model.lean_forward(x), 1)[0].numpy()

        t, px, probs = timed(model, run)
        return t, px, probs, "whole image"
    crop = int((WHOLE_LIMIT / forward_bytes_per_pixel(model)) ** 0.5) // 16 * 16

    def run_crop():
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(image[:crop, :crop]))[None, None]
            return torch.softmax(model.lean_forward(x), 1)[0].numpy()

    t, px, _ = timed(model, run_crop)
    scale = side * side / (crop * crop)
    return t * scale, side * side, None, f"per-pixel from a {crop}^2 pass"


def monai(model: UNet, image: np.ndarray, roi: tuple[int, int], overlap, batch: int,
          mode: str, lean: bool = True) -> np.ndarray:
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(image)[None, None]
    forward = model.lean_forward if lean else model
    with torch.inference_mode():
        out = sliding_window_inference(x, roi, batch, lambda t: torch.softmax(forward(t), 1),
                                       overlap=overlap, mode=mode)
    return out[0].numpy()


def run_one(size: int, net: str, rounds: int = 1, jobs=None, pairs: int = 0) -> list[tuple]:
    """The rows for one image size and net; with ``rounds`` > 1 every row runs once per round,
    rounds interleaved, and the median time is reported (the spread in brackets); with
    ``pairs`` only ours fast against MONAI equal, in that many alternating pairs."""
    from napari_unet.core.inference.tiles import tile_margin

    model = load_net(net)
    image = nuclei_image(size)
    n_px = size * size
    rows: list[tuple] = []

    def report(name: str, times: list[float], pixels: int, probs, ref, note: str = "") -> None:
        if ref is not None and probs is not None:
            d = np.abs(probs[1] - ref[1])
            changed = int(np.count_nonzero(probs.argmax(0) != ref.argmax(0)))
            seam = f"{d.max():.2e} | {d.mean():.1e} | {changed}"
        else:
            seam = "- | - | -"
        seconds = float(np.median(times))
        share = pixels / n_px if pixels is not None else None
        rows.append((name, seconds, share, seam, note))
        base = rows[0][1]
        spread = f" ({min(times):.1f}-{max(times):.1f})" if len(times) > 1 else ""
        computed = f"{share:.3f} px" if share is not None else "- px"
        print(f"{net} {size}^2 | {name} | {seconds:.1f} s{spread} | x{seconds / base:.3f} | "
              f"{computed} | {seam} | {note}", flush=True)

    # the layout predict_image runs on CPU, for the rows that compare tiling alone
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    # the net in the default layout (models loaded for the CPU come channels-last)
    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    with torch.inference_mode():  # warm-up of the allocator and kernels on MONAI's batches
        plain(torch.zeros(4, 1, 256, 256))
        fast.lean_forward(torch.zeros(4, 1, 256, 256))
    # and of predict_image at this size (its first pass at a new tile size pays ~0.5 s of
    # one-time set-up, as the "whole" row's pass does: neither is the cost of tiling)
    tile = tuple(predict_image(model, image, meta=RAW, device="cpu", tiling="fast").tile_size)
    overlap = tuple(min(0.99, 2 * tile_margin(model) / t) for t in tile)
    # MONAI imported before any timing (3-6 s here), not inside the first MONAI run
    importlib.import_module("monai.inferers")

    def ours(tiling):
        return lambda: predict_image(model, image, meta=RAW, device="cpu", tiling=tiling)

    if pairs:
        alternating_pairs({"ours fast": ours("fast"),
                           "MONAI equal": lambda: monai(fast, image, tile, overlap, 1,
                                                        "constant")},
                          pairs, f"{net} {size}^2 | the net's pass, tiles {tile[0]}x{tile[1]}")
        around_the_pass(model, image, tile, overlap, net, pairs=30)
        return rows

    # the docks' rows load the net from a file, as the Predict dock's job does
    from napari_unet.core.model.checkpoint import save_model

    path = str(Path(tempfile.mkdtemp(prefix="bench_tiling_")) / f"{net}.pt")
    save_model(path, model)

    # name, what runs, the net to count pixels on, freed memory kept, note
    plan: list[tuple] = [("whole", None, fast, True, "")]
    for tiling in ("fast", "exact") if size <= 2048 else ("fast",):
        plan.append((f"ours {tiling}", ours(tiling), model, True, "tile"))
    plan += [
        ("MONAI 256/0.25 gaussian", lambda: monai(fast, image, (256, 256), 0.25, 4, "gaussian"),
         fast, True, "batch 4"),
        ("MONAI equal tile/overlap", lambda: monai(fast, image, tile, overlap, 1, "constant"),
         fast, True, f"roi {tile}, overlap {overlap[0]:.3f}/{overlap[1]:.3f}, batch 1"),
        ("MONAI 256/0.25, default layout", lambda: monai(plain, image, (256, 256), 0.25, 4,
                                                         "gaussian", lean=False),
         plain, True, "batch 4, contiguous layout, forward"),
        ("ours fast, worker thread", in_thread(lambda: list(dock_job(path, image, "fast"))[-1]),
         None, False, "tile"),
    ]
    if jobs is not None:
        plan.append(("ours fast, job process (docks)",
                     lambda: list(jobs.run(importable(dock_job), path, image, "fast"))[-1],
                     None, False,
                     "tile"))
        list(jobs.run(importable(dock_job), path, image, "fast"))  # warm-up at this size
    times: dict[str, list[float]] = {name: [] for name, *_ in plan}
    last: dict[str, tuple] = {}
    note_of: dict[str, str] = {}
    for r in range(rounds):
        # each round starts one row further on, so no row always runs after the same one (the
        # row before leaves the allocator's pool and caches warm or cold: +-50 ms at 1536²)
        for name, fn, counted, keep, note in plan[r % len(plan):] + plan[:r % len(plan)]:
            if fn is None:
                t, px, probs, note = whole(fast, image)
            else:
                t, px, probs = timed(counted, fn, keep_freed=keep)
                if note == "tile":
                    note = f"tile {probs.tile_size[0]}x{probs.tile_size[1]}"
                    probs = probs.probabilities
            times[name].append(t)
            last[name], note_of[name] = (px, probs), note
    ref = last["whole"][1]
    for name, *_ in plan:
        px, probs = last[name]
        report(name, times[name], px, probs if name != "whole" else None,
               ref if name != "whole" else None, note_of[name])
    if rounds > 1:  # the same pass on both sides where one tile covers the plane: the ratio of
        # each round's pair is steadier than the ratio of two medians
        for name in ("ours fast", "ours exact"):
            if name in times:
                pairs = np.array(times[name]) / np.array(times["MONAI equal tile/overlap"])
                print(f"{net} {size}^2 | {name} / MONAI equal, per round | median "
                      f"{np.median(pairs):.3f} ({pairs.min():.3f}-{pairs.max():.3f}, "
                      f"{rounds} rounds)", flush=True)
    around_the_pass(model, image, tile, overlap, net, pairs=30)
    shutil.rmtree(Path(path).parent, ignore_errors=True)
    return rows


def stand_in(model: UNet) -> UNet:
    """``model``'s geometry (padding, depth, classes: the same tile plan) with a 1x1
    convolution and softmax for its pass: timing it times what is done around the pass."""
    twin = copy.deepcopy(model)
    torch.manual_seed(0)
    head = torch.nn.Conv2d(model.in_channels, model.num_classes, 1).to(
        memory_format=torch.channels_last)

    def lean_forward(x, keep=None):  # what predict_image and the MONAI rows call
        return kept_part(head(x), keep)

    # in the instance's dict, where it hides the class's method
    object.__setattr__(twin, "lean_forward", lean_forward)
    return twin


def around_the_pass(model: UNet, image: np.ndarray, tile, overlap, net: str,
                    pairs: int) -> None:
    """Ours (``predict_image``, labels included) and MONAI at equal tile/overlap around a
    stand-in pass (:func:`stand_in`): the tiling and stitching each side adds, in alternating
    pairs (the real pass runs the same net and layout on the same input pixels on both sides;
    ours skips the discarded overlap's rows in the expanding path)."""
    twin = stand_in(model)
    alternating_pairs(
        {"ours fast": lambda: predict_image(twin, image, meta=RAW, device="cpu", tiling="fast"),
         "MONAI equal": lambda: monai(twin, image, tile, overlap, 1, "constant")},
        pairs, f"{net} {image.shape[0]}^2 | around a stand-in pass (1x1 conv)")


def alternating_pairs(runs: dict[str, Callable[[], object]], pairs: int, label: str) -> None:
    """Time the two ``runs`` in ``pairs`` alternating pairs (the first pair, a warm-up, not
    counted; which one goes first alternates) and print the medians and the per-pair ratio, of
    wall-clock time and of the process's CPU time (all threads: the work done, which time
    slices lost to other processes on a shared machine stretch less)."""
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(pairs + 1):
        for name in list(runs)[::1 if i % 2 else -1]:
            c0 = time.process_time()
            t, _, _ = timed(None, runs[name])
            if i:
                wall[name].append(t)
                cpu[name].append(time.process_time() - c0)
    (a, b) = list(runs)
    for kind, times in (("wall", wall), ("CPU", cpu)):
        ours, theirs = np.array(times[a]) * 1e3, np.array(times[b]) * 1e3
        ratio = ours / theirs
        print(f"{label}, {pairs} pairs, {kind} time | {a} {np.median(ours):.1f} ms, {b} "
              f"{np.median(theirs):.1f} ms | per pair median {np.median(ratio):.3f} "
              f"({ratio.min():.3f}-{ratio.max():.3f})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+",
                        default=["1536:shipped", "1536:small", "4096:shipped", "4096:small"],
                        help="SIZE:NET pairs (NET: small = UNet.small, shipped = the default "
                             "model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every row this many times, rounds interleaved, and report "
                             "the median (single-tile rows differ by ~10%% between runs)")
    parser.add_argument("--pairs", type=int, default=0,
                        help="only ours fast against MONAI at equal tiles, this many "
                             "alternating pairs (a steadier ratio where there are several "
                             "tiles)")
    parser.add_argument("--no-process", action="store_true",
                        help="leave out the job-process row (it starts a process: seconds)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    jobs = None
    if not args.no_process and not args.pairs:
        from napari_unet.core.runtime.processes import JobProcess

        jobs = JobProcess(preload=("napari_unet.core.inference.prediction",))
        jobs.start()
        while not jobs.ready:  # started and imported before any timing
            time.sleep(0.1)
    print(f"torch {torch.__version__}, {args.threads} threads, default memory budget; one run "
          "of each; columns: time, time / whole, computed px / image px, max |dp| | mean "
          "|dp| | pixels whose class changed (vs the whole-image pass)", flush=True)
    for run in args.runs:
        size, net = run.split(":")
        run_one(int(size), net, args.rounds, jobs, args.pairs)


if __name__ == "__main__":
    main()
