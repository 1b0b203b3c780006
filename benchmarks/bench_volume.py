"""3D objects from Z stacks: accuracy on seeded synthetic nuclei volumes with 2x z-spacing.

Each volume (:func:`napari_unet.core.data.synthetic_volume.synthetic_nuclei_volume`, slices twice as
far apart as pixels) is predicted with the shipped default model slice by slice, then turned
into 3D objects three ways, side by side:

* ``3d + views``: the default for Z stacks (``axes="ZYX", z_spacing=2``): the XZ and YZ
  slices are predicted too and folded into the foreground ("2.5D", ``orthogonal_views``: a
  voxel is foreground where all three views see it), which is labelled and split in 3D, block
  by block;
* ``3d``: the same from the XY slices alone (``orthogonal_views=False``);
* ``stitch 0.25``: 2D objects linked across slices by overlap (cellpose's stitch threshold);
* ``slices``: 2D objects per slice, as before (every slice a new object).

Scores: 3D instance AP at IoU 0.5 and 0.75 (core.metrics.average_precision works for any
dimension), and the fractions of true nuclei merged with another or split
(core.volume.merged_and_split). Usage::

    python benchmarks/bench_volume.py --seeds 1 2 3 --shape 32 256 256

With ``--zoom F [F ...]`` the volumes are rescaled in XY by each factor instead (the image
linearly, the labels by nearest voxel; the z spacing in lateral pixels follows), and predicted
with their true nucleus diameter given (``object_diameter``: the median of each nucleus's
largest XY section's equivalent diameter), so the model sees them at its training size: ``3d``
and ``3d + views`` side by side, as a user with a stack from another microscope gets them::

    python benchmarks/bench_volume.py --seeds 1 2 3 --shape 24 256 256 --zoom 0.5 2
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 256, 256])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--zoom", type=float, nargs="+", default=None,
                        help="rescale the volumes in XY by these factors, diameter given")
    args = parser.parse_args()
    if args.zoom:
        return zoomed(args)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from napari_unet.core.data.metrics import average_precision
    from napari_unet.core.data.synthetic_volume import synthetic_nuclei_volume
    from napari_unet.core.inference.prediction import predict_image
    from napari_unet.core.inference.predictor import drain
    from napari_unet.core.inference.volume import link_slices, merged_and_split
    from napari_unet.core.model.checkpoint import resolve_model

    model, meta = resolve_model("default")
    rows = []
    for seed in args.seeds:
        image, truth = synthetic_nuclei_volume(tuple(args.shape), seed=seed)
        t0 = time.perf_counter()
        res = predict_image(model, image, meta, device="cpu", axes="ZYX", z_spacing=2.0,
                            orthogonal_views=False)
        seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        views = predict_image(model, image, meta, device="cpu", axes="ZYX", z_spacing=2.0,
                              keep_probabilities=False)  # the default: with the views
        seconds_views = time.perf_counter() - t0
        flat = predict_image(model, image, meta, device="cpu", volume=False,
                             keep_probabilities=False)
        linked = np.zeros_like(flat.instances)
        drain(link_slices(flat.instances, linked, threshold=0.25))
        for method, labels in (("3d", res.instances), ("3d + views", views.instances),
                               ("stitch 0.25", linked),
                               ("slices", flat.instances)):
            ap = average_precision(truth, labels, (0.5, 0.75))
            ms = merged_and_split(truth, labels)
            row = {"seed": seed, "method": method, "ap50": ap[0.5], "ap75": ap[0.75],
                   "merged": ms["merged"], "split": ms["split"], "n_gt": ms["n_gt"],
                   "n_pred": ms["n_pred"],
                   "seconds": {"3d": seconds, "3d + views": seconds_views}.get(method)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| method | seeds | AP@0.5 | AP@0.75 | merged | split | merged + split | s / volume |")
    print("|---|---|---|---|---|---|---|---|")
    for method in ("3d", "3d + views", "stitch 0.25", "slices"):
        mine = [r for r in rows if r["method"] == method]
        mean = {k: float(np.mean([r[k] for r in mine])) for k in ("ap50", "ap75", "merged",
                                                                    "split")}
        secs = [r["seconds"] for r in mine if r["seconds"] is not None]
        print(f"| {method} | {len(mine)} | {mean['ap50']:.3f} | {mean['ap75']:.3f} | "
              f"{mean['merged']:.1%} | {mean['split']:.1%} | "
              f"{mean['merged'] + mean['split']:.1%} | "
              f"{f'{np.mean(secs):.1f}' if secs else '-'} |")


def largest_section_diameters(labels):
    """Each object's largest XY section's equivalent diameter (px): what a user measures."""
    import numpy as np

    best = np.zeros(int(labels.max()) + 1)
    for plane in labels:
        area = np.bincount(plane.ravel(), minlength=best.size)
        np.maximum(best, area, out=best)
    best = best[1:][best[1:] > 0]
    return 2.0 * np.sqrt(best / np.pi)


def zoomed(args) -> None:
    import numpy as np
    import torch
    from skimage.transform import resize

    torch.set_num_threads(args.threads)
    from napari_unet.core.data.metrics import average_precision
    from napari_unet.core.data.synthetic_volume import DEFAULT_Z_SPACING, synthetic_nuclei_volume
    from napari_unet.core.inference.prediction import predict_image
    from napari_unet.core.inference.volume import merged_and_split
    from napari_unet.core.model.checkpoint import resolve_model

    model, meta = resolve_model("default")
    rows = []
    for zoom in args.zoom:
        for seed in args.seeds:
            image, truth = synthetic_nuclei_volume(tuple(args.shape), seed=seed)
            hw = tuple(max(1, round(n * zoom)) for n in image.shape[1:])
            image = resize(image, (image.shape[0], *hw), order=1, preserve_range=True,
                           anti_aliasing=zoom < 1).astype(np.float32)
            truth = resize(truth, (truth.shape[0], *hw), order=0, preserve_range=True,
                           anti_aliasing=False).astype(np.int32)
            diameter = float(np.median(largest_section_diameters(truth)))
            settings = dict(device="cpu", axes="ZYX", z_spacing=DEFAULT_Z_SPACING * zoom,
                            object_diameter=diameter, keep_probabilities=False)
            for method, views in (("3d", False), ("3d + views", None)):
                t0 = time.perf_counter()
                res = predict_image(model, image, meta, orthogonal_views=views, **settings)
                seconds = time.perf_counter() - t0
                ap = average_precision(truth, res.instances, (0.5, 0.75))
                ms = merged_and_split(truth, res.instances)
                row = {"zoom": zoom, "seed": seed, "method": method, "diameter": diameter,
                       "ap50": ap[0.5], "ap75": ap[0.75], "merged": ms["merged"],
                       "split": ms["split"], "seconds": seconds}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| zoom | method | seeds | AP@0.5 | AP@0.75 | merged | split | s / volume |")
    print("|---|---|---|---|---|---|---|---|")
    for zoom in args.zoom:
        for method in ("3d", "3d + views"):
            mine = [r for r in rows if r["method"] == method and r["zoom"] == zoom]
            mean = {k: float(np.mean([r[k] for r in mine]))
                    for k in ("ap50", "ap75", "merged", "split", "seconds")}
            print(f"| {zoom:g} | {method} | {len(mine)} | {mean['ap50']:.3f} | "
                  f"{mean['ap75']:.3f} | {mean['merged']:.1%} | {mean['split']:.1%} | "
                  f"{mean['seconds']:.1f} |")


if __name__ == "__main__":
    main()
