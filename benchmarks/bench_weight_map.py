"""Windowed weight map vs the brute-force definition (one full-image EDT per object).

Both compute the whole map of eq. 2 (separation of touching objects, balanced class weights,
border term) on the same synthetic 512x512 image with ~125 touching / nearby nuclei; the script
prints the time of each, their ratio (target >= 50x) and the largest difference (<= 1e-3).

    python benchmarks/bench_weight_map.py [--size 512] [--objects 125] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage as ndi

from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.training.weight_map import separated_instances, weight_map


def brute_force_weight_map(instances: np.ndarray, w0: float = 10.0, sigma: float = 5.0):
    """Eq. 2 from the definition: d1, d2 from a full-image distance transform of every object."""
    labels = separated_instances(instances)
    foreground = labels > 0
    counts = np.bincount(foreground.ravel().astype(np.intp), minlength=2)
    class_w = (counts.max() / counts)[foreground.astype(np.intp)]
    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    for k in np.unique(labels[foreground]):
        dist = ndi.distance_transform_edt(labels != k)
        d2 = np.minimum(d2, np.maximum(d1, dist))
        d1 = np.minimum(d1, dist)
    border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
    return (class_w + np.where(foreground, 0.0, border)).astype(np.float32)


def timed(fn) -> tuple[float, float, np.ndarray]:
    """Wall-clock and CPU time of one call, and its result.

    CPU time (this process only) is printed too because the machine may be shared: waiting for
    a core inflates wall-clock time, unevenly between a 30 ms and a 2 s run.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--objects", type=int, default=125)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    _, labels = synthetic_nuclei((args.size, args.size), n_objects=args.objects, seed=args.seed)
    n = int(labels.max())
    n_touching = int(np.count_nonzero(separated_instances(labels) != labels))
    print(f"image {args.size}x{args.size}, {n} objects placed ({args.objects} tried), "
          f"{n_touching} boundary pixels between touching objects")

    weight_map(labels)  # warm-up (imports, caches)
    # Interleave the two so that both see the same load; keep the best of each.
    window_runs, brute_runs = [], []
    for _ in range(args.repeats):
        brute_runs.append(timed(lambda: brute_force_weight_map(labels)))
        window_runs += [timed(lambda: weight_map(labels)) for _ in range(5)]
    t_window, c_window = min(r[0] for r in window_runs), min(r[1] for r in window_runs)
    t_brute, c_brute = min(r[0] for r in brute_runs), min(r[1] for r in brute_runs)
    w_window, w_brute = window_runs[-1][2], brute_runs[-1][2]
    diff = float(np.abs(w_window - w_brute).max())
    print(f"{'':12s}  {'wall':>9s}  {'cpu':>9s}")
    print(f"{'windowed':12s}  {t_window * 1e3:7.1f}ms  {c_window * 1e3:7.1f}ms"
          f"  (best of {len(window_runs)})")
    print(f"{'brute force':12s}  {t_brute * 1e3:7.1f}ms  {c_brute * 1e3:7.1f}ms"
          f"  (best of {args.repeats})")
    print(f"{'speed-up':12s}  {t_brute / t_window:8.1f}x  {c_brute / c_window:8.1f}x"
          "  (target >= 50x)")
    print(f"max |diff|  : {diff:.2e}      (target <= 1e-3)")


if __name__ == "__main__":
    main()
