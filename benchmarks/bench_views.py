"""What the side views (XZ and YZ slices, "2.5D") of a Z stack cost beside its XY pass.

For each stack (``Z x side x side`` uint16, synthetic nuclei of the trained size, shifted from
slice to slice) this predicts with the shipped default model at the Predict dock's defaults,
once from the XY slices alone (``orthogonal_views=False``) and once with the side views
(``orthogonal_views=True``), and reports the wall time and the pixels the net computed (every
input pixel of every net pass, counted at ``UNet.lean_forward``, and the time spent in those
passes). The views' cost is the difference; its ratio to the XY pass is what a user pays for
them (wall time includes the 3D labelling, which the views change too).

``--code DIR`` runs another checkout's ``src`` (e.g. a ``git worktree`` of an older commit)
in the same run, for a before/after on the same machine and load. Usage::

    git worktree add /tmp/base <commit>
    python benchmarks/bench_views.py --cases 4x2048 48x1024 --code /tmp/base

Prints one JSON line per run and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def one_run(z: int, side: int, views: bool, threads: int) -> dict:
    """Predict one stack in this process; the net's pixels and the time."""
    import time

    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from napari_unet.core.data.synthetic import synthetic_nuclei
    from napari_unet.core.inference.prediction import predict_image
    from napari_unet.core.model.checkpoint import resolve_model
    from napari_unet.core.model.unet import UNet

    plane = synthetic_nuclei((side, side), seed=0)[0]
    plane = ((plane - plane.min()) / (np.ptp(plane) or 1) * 4000 + 100).astype(np.uint16)
    stack = np.stack([np.roll(plane, 7 * i, axis=(0, 1)) for i in range(z)])
    model, meta = resolve_model("default")
    pixels, net_seconds = [0], [0.0]
    lean = UNet.lean_forward

    def counting(self, x, *args, **kwargs):
        pixels[0] += int(x.shape[0] * x.shape[-2] * x.shape[-1])
        started = time.perf_counter()
        try:
            return lean(self, x, *args, **kwargs)
        finally:
            net_seconds[0] += time.perf_counter() - started

    UNet.lean_forward = counting
    start = time.perf_counter()
    predict_image(model, stack, meta, axes="ZYX", orthogonal_views=views)
    return {"seconds": round(time.perf_counter() - start, 1), "net_pixels": pixels[0],
            "net_seconds": round(net_seconds[0], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=["4x2048", "48x1024"],
                        help="stacks as SLICESxSIDE")
    parser.add_argument("--code", nargs="*", default=[],
                        help="other checkouts (their src/) to run beside this one")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # z side views: a child run
    args = parser.parse_args()
    if args.one:
        z, side, views = int(args.one[0]), int(args.one[1]), args.one[2] == "1"
        print(json.dumps(one_run(z, side, views, args.threads)))
        return
    rows = []
    for case in args.cases:
        z, side = (int(n) for n in case.split("x"))
        for code in [str(HERE), *args.code]:
            row = {"case": case, "code": code}
            for views in (False, True):
                env = dict(os.environ, PYTHONPATH=str(Path(code) / "src"))
                out = subprocess.run(
                    [sys.executable, __file__, "--one", str(z), str(side), str(int(views)),
                     "--threads", str(args.threads)],
                    env=env, capture_output=True, text=True, check=True)
                row["views" if views else "xy"] = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("\n| stack | code | XY only (s) | with views (s) | views / XY: time | net time "
          "| net pixels |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        xy, both = r["xy"], r["views"]
        ratios = [(both[k] - xy[k]) / xy[k] for k in ("seconds", "net_seconds", "net_pixels")]
        print(f"| {r['case']} | {Path(r['code']).name} | {xy['seconds']} | {both['seconds']} "
              + "".join(f"| {v:.2f} " for v in ratios) + "|")


if __name__ == "__main__":
    main()
