"""How long Stop takes during prediction of a huge plane: with and without test-time augmentation.

A job stops between two of its events (the dock's Stop asks its worker to quit at the next
yield; the command line's Ctrl+C likewise). So the wait after Stop is the time until the next
event, plus the job's own clean-up when it is closed. For each setting this runs
:func:`core.inference.prediction.predict` with the shipped default model on a ``--side``²
uint16 plane (synthetic nuclei of the trained size, shifted copies, so every block has work)
at the Predict dock's defaults, in a worker thread as the dock does, and

* records when each event arrives, for ``--seconds`` after the first tile's event, then
* asks the job to stop (at that moment, wherever the job is) and measures until the worker
  has closed the job: the **stop wait**.

It reports the stop wait, the largest gap between two events (the worst wait a Stop can see)
and the mean wait of a Stop pressed at a random moment (``sum(gap²) / (2 sum(gap))``). Usage::

    python benchmarks/bench_stop.py --side 17000 --seconds 60 --code /tmp/base

(``--code DIR``: another checkout's ``src``, e.g. a ``git worktree`` of an older commit, run
in the same session for a before/after.)

Prints one JSON line per setting and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def big_plane(side: int):
    import numpy as np

    from napari_unet.core.data.synthetic import synthetic_nuclei

    tile = synthetic_nuclei((1024, 1024), seed=0)[0]
    tile = (tile - tile.min()) / (np.ptp(tile) or 1) * 4000 + 100
    reps = -(-side // 1024)
    return np.tile(tile.astype(np.uint16), (reps, reps))[:side, :side]


def measure(model, meta, image, tta: bool, seconds: float) -> dict:
    from napari_unet.core.events import Progress
    from napari_unet.core.inference.config import PredictConfig
    from napari_unet.core.inference.prediction import predict

    job = predict(model, image, PredictConfig(tta=tta), meta)
    times: list[float] = []
    first_tile = threading.Event()
    stop = threading.Event()
    closed: list[float] = []

    def consume() -> None:
        for event in job:
            times.append(time.perf_counter())
            if isinstance(event, Progress):
                first_tile.set()
            if stop.is_set():
                job.close()
                closed.append(time.perf_counter())
                return
        closed.append(time.perf_counter())

    start = time.perf_counter()
    worker = threading.Thread(target=consume)
    worker.start()
    first_tile.wait()
    setup = time.perf_counter() - start
    time.sleep(seconds)
    pressed = time.perf_counter()
    stop.set()
    worker.join()
    gaps = [b - a for a, b in zip(times[:-1], times[1:], strict=True) if a >= start + setup]
    return {"tta": tta, "setup_s": round(setup, 1), "events": len(gaps),
            "stop_wait_s": round(closed[0] - pressed, 2),
            "max_gap_s": round(max(gaps), 2) if gaps else None,
            "mean_wait_s": round(sum(g * g for g in gaps) / (2 * sum(gaps)), 2) if gaps else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=17000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--code", nargs="*", default=[],
                        help="other checkouts (their src/) to run beside this one")
    parser.add_argument("--one", choices=["0", "1"], help=argparse.SUPPRESS)  # a child: TTA
    args = parser.parse_args()
    if args.one is not None:
        import torch

        torch.set_num_threads(args.threads)
        from napari_unet.core.model.checkpoint import resolve_model

        model, meta = resolve_model("default")
        print(json.dumps(measure(model, meta, big_plane(args.side), args.one == "1",
                                 args.seconds)))
        return
    rows = []
    for code in [str(HERE), *args.code]:
        for tta in ("0", "1"):
            env = dict(os.environ, PYTHONPATH=str(Path(code) / "src"))
            out = subprocess.run([sys.executable, __file__, "--one", tta, "--side",
                                  str(args.side), "--seconds", str(args.seconds),
                                  "--threads", str(args.threads)],
                                 env=env, capture_output=True, text=True, check=True)
            row = {"code": Path(code).name, **json.loads(out.stdout.strip().splitlines()[-1])}
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n{args.side}² uint16 plane, shipped model, dock defaults, {args.threads} threads\n")
    print("| code | TTA | stop wait (s) | largest gap (s) | mean wait at a random moment (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['code']} | {'on' if r['tta'] else 'off'} | {r['stop_wait_s']} | "
              f"{r['max_gap_s']} | {r['mean_wait_s']} |")


if __name__ == "__main__":
    main()
