"""Seam error of padded-net tiling on the shipped model, as a function of the overlap margin.

For each margin ``m`` an image of ``256 + 2 * (256 - 2 * m)`` px a side is cut into 3 x 3 tiles
of 256 px whose kept parts meet exactly ``m`` px from a tile border: the worst case of a
layout with that margin (automatic layouts split overlaps half-way and are often wider). The
stitched foreground probability is compared with one whole-image pass: max and mean
``|dp|``, pixels whose thresholded class changed, and objects whose pixel set changed.

Two images: synthetic nuclei (``core.synthetic``, seed 7) and the shipped cells3d nuclei slice
(mirrored to the size). ``tiles.FAST_MARGIN_FRACTION`` was chosen from this table.

Usage::

    python benchmarks/bench_seams.py 16 32 48 64
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from napari_unet.core.data.synthetic import synthetic_nuclei
from napari_unet.core.inference.prediction import predict_image
from napari_unet.core.model.checkpoint import resolve_model

TILE = 256
CELLS3D = Path(__file__).parents[1] / "src/napari_unet/data/nuclei_cells3d_z30.tif"


def objects_changed(ref: np.ndarray, other: np.ndarray) -> int:
    """Objects of ``ref`` that are not exactly one object of ``other``."""
    n = 0
    for i in np.unique(ref)[1:]:
        mask = ref == i
        values = np.unique(other[mask])
        if len(values) != 1 or values[0] == 0 or np.count_nonzero(other == values[0]) \
                != np.count_nonzero(mask):
            n += 1
    return n


def main() -> None:
    import tifffile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("margins", nargs="+", type=int)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, meta = resolve_model("default")
    big = 3 * TILE
    images = {"synthetic": synthetic_nuclei((big, big), seed=7)[0],
              "cells3d": np.pad(tifffile.imread(CELLS3D), ((0, big - 256), (0, big - 256)),
                                mode="symmetric")}
    print("| margin | image | max abs dp | mean abs dp | px changed | objects changed |")
    print("|---|---|---|---|---|---|")
    for m in args.margins:
        side = TILE + 2 * (TILE - 2 * m)
        for name, image in images.items():
            img = image[:side, :side]
            ref = predict_image(model, img, meta=meta, tile_size=side, device="cpu")
            tiled = predict_image(model, img, meta=meta, tile_size=TILE, overlap=m,
                                  device="cpu")
            d = np.abs(tiled.probabilities[1] - ref.probabilities[1])
            px = np.count_nonzero((tiled.probabilities[1] > 0.5)
                                  != (ref.probabilities[1] > 0.5))
            n_obj = len(np.unique(ref.instances)) - 1
            print(f"| {m} | {name} {side}^2 | {d.max():.4f} | {d.mean():.1e} | {px} / "
                  f"{side * side} | {objects_changed(ref.instances, tiled.instances)} / "
                  f"{n_obj} |", flush=True)


if __name__ == "__main__":
    main()
